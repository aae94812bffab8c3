"""`memstack capacity report`: one self-contained HTML page (plots inlined as PNG data, also
written beside it) of a measurement, its plan and the benchmark results of benchmarks/."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from memstack.capacity.usl import UslModel

COMPONENTS = ("service", "redis", "postgres", "neo4j")
GI = 2**30


def _save(fig, ax, path: Path, title: str, xlabel: str, ylabel: str, legend_size: int = 7) -> Path:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_throughput(measurement: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for profile, result in measurement["profiles"].items():
        steps = result["step_results"]
        n = [s["concurrency"] for s in steps]
        x = [s["achieved_rps"] for s in steps]
        points = ax.plot(n, x, "o", label=f"{profile}: measured")[0]
        fit = result.get("fit")
        if fit:
            model = UslModel.from_dict(fit)
            peak = model.peak_concurrency
            # N* far beyond the measured range (a flat curve: κ near 0) would squash the data.
            show_peak = math.isfinite(peak) and peak <= 4 * max(n)
            top = max(max(n), peak if show_peak else 0) * 1.2
            grid = np.linspace(min(n) * 0.5, top, 200)
            ax.plot(
                grid,
                model.throughput(grid),
                "-",
                color=points.get_color(),
                label=f"{profile}: USL σ={fit['sigma']:.3g} κ={fit['kappa']:.2g} λ={fit['lam']:.3g}",
            )
            if show_peak:
                ax.axvline(peak, color=points.get_color(), linestyle=":", label=f"{profile}: N*={peak:.1f}")
    return _save(
        fig,
        ax,
        path,
        "Throughput against concurrency, one service process",
        f"concurrency ({'users' if measurement['step_by'] == 'users' else 'requests in flight'})",
        "throughput (req/s)",
    )


def plot_latency(measurement: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    by_rate = measurement["step_by"] == "rate"
    for profile, result in measurement["profiles"].items():
        steps = result["step_results"]
        load = [s["offered_rps"] if by_rate else s["users"] for s in steps]
        for q, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
            ax.plot(load, [s["working"][q] for s in steps], style, marker=".", label=f"{profile} {q[:3]}")
    slo = measurement["slo"]["working_p99_ms"]
    ax.axhline(slo, color="red", label=f"SLO: p99 {slo:g} ms")
    ax.set_yscale("log")
    return _save(
        fig,
        ax,
        path,
        "Working-memory latency against load",
        "offered load (req/s)" if by_rate else "load (closed-loop users)",
        "working-memory latency (ms)",
    )


def plot_cpu(measurement: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    profiles = list(measurement["profiles"])
    width = 0.8 / max(len(profiles), 1)
    for i, profile in enumerate(profiles):
        cpu = measurement["profiles"][profile].get("cpu_s_per_request") or {}
        values = [(cpu.get(c) or 0) * 1000 for c in COMPONENTS]
        ax.bar(np.arange(len(COMPONENTS)) + i * width, values, width, label=profile)
    ax.set_xticks(np.arange(len(COMPONENTS)) + width * (len(profiles) - 1) / 2, COMPONENTS)
    return _save(
        fig,
        ax,
        path,
        "CPU per request per component, at the per-pod SLO throughput",
        "component",
        "CPU ms per request",
        legend_size=10,
    )


def plot_storage(plan: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    series = plan["stores"]["series"]
    days = [r["day"] for r in series]
    for store in ("redis", "postgres", "neo4j"):
        line = ax.plot(days, [r[f"{store}_disk"] / GI for r in series], label=f"{store} disk")[0]
        ax.axhline(
            plan["stores"][store]["volume"] / GI,
            color=line.get_color(),
            linestyle="--",
            label=f"{store} volume {plan['stores'][store]['volume'] / GI:g} Gi",
        )
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-3)
    return _save(fig, ax, path, "Storage growth per store against the stack's volume sizes", "days from today", "GiB")


# The processes whose CPU per request the service-efficiency benchmark reads, in table order.
CPU_PROCESSES = ("service", "floor", "redis", "postgres", "neo4j", "locust")


def benchmark_rows(results: Path) -> list[dict]:
    """One row per benchmark of the benchmarks' results file, with its target verdict; a run of
    the service-efficiency benchmark also carries its CPU per request by process (us) and its
    ratios to the floor app and to Redis."""
    if not results.exists():
        return []
    rows = []
    for section, entries in json.loads(results.read_text()).items():
        for name, values in entries.items():
            cpu = {p: values[f"cpu_{p}_us"] for p in CPU_PROCESSES if values.get(f"cpu_{p}_us") is not None}
            rows.append(
                {
                    "section": section,
                    "name": name,
                    "p50_ms": values.get("p50_ms"),
                    "p95_ms": values.get("p95_ms"),
                    "p99_ms": values.get("p99_ms"),
                    "target": values.get("target"),
                    "passed": values.get("passed"),
                    "achieved_rps": values.get("achieved_rps"),
                    "cpu_us_per_request": cpu,
                    "ratio_to_floor": values.get("cpu_ratio_to_floor"),
                    "ratio_to_redis": values.get("cpu_ratio_to_redis"),
                }
            )
    return rows


def _cpu_table(bench: list[dict]) -> str:
    """CPU per request by process, and the ratios, of the rows that measured CPU."""
    measured = [b for b in bench if b["cpu_us_per_request"]]
    if not measured:
        return ""
    return "<h3>CPU per request (us), by process</h3>" + _table(
        ["suite", "benchmark", "req/s", *CPU_PROCESSES, "to floor", "to Redis"],
        [
            [
                b["section"],
                b["name"],
                b["achieved_rps"],
                *(b["cpu_us_per_request"].get(p) for p in CPU_PROCESSES),
                b["ratio_to_floor"],
                b["ratio_to_redis"],
            ]
            for b in measured
        ],
    )


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _verdict(passed) -> str:
    return "-" if passed is None else "pass" if passed else "FAIL"


def write(directory: Path, measurement: dict, plan: dict | None, benchmarks: Path) -> Path:
    """Write report.html and the PNGs into `directory`; return the page's path."""
    pictures = [
        plot_throughput(measurement, directory / "throughput.png"),
        plot_latency(measurement, directory / "latency.png"),
        plot_cpu(measurement, directory / "cpu.png"),
    ]
    if plan and plan.get("stores"):
        pictures.append(plot_storage(plan, directory / "storage.png"))
    sections = [
        f"<h1>memstack capacity report</h1><p>Measured {html.escape(measurement['started'])}, steps by "
        f"{html.escape(measurement['step_by'])}, {measurement['step_s']:g} s per step "
        f"({measurement['step_warmup_s']:g} s warm-up); SLO working-memory p99 &lt; "
        f"{measurement['slo']['working_p99_ms']:g} ms, failures &le; {measurement['slo']['max_failure_ratio']:.1%}.</p>"
    ]
    for profile, result in measurement["profiles"].items():
        rows = [
            [
                s["step"],
                s["users"],
                s["concurrency"],
                s["offered_rps"],
                s["achieved_rps"],
                s["working"]["p50_ms"],
                s["working"]["p95_ms"],
                s["working"]["p99_ms"],
                s["send_lag_p99_ms"],
                *[
                    None if s["cpu_s_per_request"].get(c) is None else s["cpu_s_per_request"][c] * 1000
                    for c in COMPONENTS
                ],
                _verdict(s["passed"]),
            ]
            for s in result["step_results"]
        ]
        fit = result.get("fit")
        fit_text = UslModel.from_dict(fit).describe() if fit else f"no USL fit: {result.get('fit_skipped')}"
        loads = [s["load_average_1m"] for s in result["step_results"] if s.get("load_average_1m") is not None]
        machine = f" Machine load average during the steps: {min(loads):.1f} to {max(loads):.1f}." if loads else ""
        sections.append(
            f"<h2>{html.escape(profile)} profile</h2><p>{html.escape(fit_text)}. Per pod at the SLO: "
            f"{_cell(result['throughput_at_slo_rps'])} req/s ({html.escape(result['throughput_at_slo_source'])})."
            f"{machine}</p>"
            + _table(
                [
                    "step",
                    "users",
                    "N",
                    "offered/s",
                    "achieved/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "lag p99",
                    *[f"CPU ms/req {c}" for c in COMPONENTS],
                    "SLO",
                ],
                rows,
            )
        )
    sections.append("<h2>Pictures</h2>" + "".join(_png(p) for p in pictures))
    if plan:
        sections.append(
            "<h2>Plan</h2>"
            + _table(
                ["figure", "value", "unit", "source"],
                [[f["name"], f["value"], f["unit"], f["source"]] for f in plan["figures"]],
            )
        )
        if plan.get("stores"):
            rows = [
                [
                    store,
                    *[plan["stores"][store][f"{kind}_day{d}"] / GI for kind in ("ram", "disk") for d in (0, 90, 365)],
                    plan["stores"][store]["volume"] / GI,
                    plan["stores"][store]["volume_runs_out"],
                ]
                for store in ("redis", "postgres", "neo4j")
            ]
            sections.append(
                _table(
                    [
                        "store",
                        "RAM GiB day 0",
                        "day 90",
                        "day 365",
                        "disk GiB day 0",
                        "day 90",
                        "day 365",
                        "volume GiB",
                        "volume full on",
                    ],
                    rows,
                )
            )
        sections.append(
            "<h3>Proposed stack keys</h3>" + _table(["key", "value"], [[k, v] for k, v in plan["proposed"].items()])
        )
    bench = benchmark_rows(benchmarks)
    sections.append(
        "<h2>Benchmarks</h2>"
        + (
            _table(
                ["suite", "benchmark", "p50 ms", "p95 ms", "p99 ms", "target", "verdict"],
                [
                    [b["section"], b["name"], b["p50_ms"], b["p95_ms"], b["p99_ms"], b["target"], _verdict(b["passed"])]
                    for b in bench
                ],
            )
            + _cpu_table(bench)
            if bench
            else f"<p>no results in {html.escape(str(benchmarks))}: run <code>make bench</code></p>"
        )
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0;"
        "font-size:13px}td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}th{background:#eee}"
        "img{max-width:100%;margin:0.5em 0;display:block}"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>memstack capacity report</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = directory / "report.html"
    path.write_text(page)
    return path
