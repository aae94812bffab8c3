"""`memstack dashboards ...`: the kit's Grafana dashboards without a Grafana. `snapshot` runs
every panel's queries against the live Prometheus and draws each dashboard to a PNG with
matplotlib, so the latency of the last load run can be seen over time."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from memstack.errors import MemstackError
from memstack.load import check_http_url, new_results_dir, output_dir

GENERATED = Path(__file__).resolve().parents[1] / "dashboards" / "generated"
# What Grafana substitutes before a query runs: the rate interval (at least 4 scrapes of the
# local stack's 5 s, with room for a late one), and each template variable at "All".
SUBSTITUTIONS = {"$__rate_interval": "1m", "$instance": ".*"}
_UNITS = {"s": "seconds", "percentunit": "fraction", "reqps": "requests/s", "ops": "operations/s", "bytes": "bytes"}

# The `job` label of the memstack processes on the local stack's Prometheus.
SERVICE_JOB = "memory-service"
WORKER_JOB = "memstack-worker"

app = typer.Typer(help="The kit's Grafana dashboards, read without a Grafana.", no_args_is_help=True)


@contextlib.contextmanager
def scraped_locally(job: str, host: str, port: int) -> Iterator[None]:
    """While the block runs, the local stack's Prometheus scrapes host:port as `job`, if the
    stack's home ($MEMSTACK_HOME or ./.memstack) has one; otherwise nothing happens."""
    from memstack.local.prometheus_server import TARGETS_DIR, register_target, unregister_target
    from memstack.local.state import default_home

    home = default_home()
    if not port or not (home / TARGETS_DIR).is_dir():
        yield
        return
    name = f"{job}-{port}"
    register_target(home, name, f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}", job)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    # uvicorn ends by re-raising the signal that stopped it, to the handler it found: this one,
    # which removes the target and then lets the signal do what it would have done.
    def on_signal(signum, frame):
        unregister_target(home, name)
        signal.signal(signum, previous[signum])
        signal.raise_signal(signum)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        unregister_target(home, name)


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def load_dashboards(directory: Path = GENERATED) -> list[dict]:
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise MemstackError(f"no dashboards in {directory}; run `python -m dashboards` in the repository")
    return [json.loads(p.read_text()) for p in paths]


def panels(board: dict) -> list[dict]:
    """The panels that show data (rows are headings)."""
    return [p for p in board["panels"] if p.get("type") != "row"]


def prometheus_get(base: str, path: str, params: dict[str, str | float]) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            return json.load(exc)
        except ValueError:
            raise MemstackError(f"Prometheus at {base} answered {exc.code} to {path}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MemstackError(f"Prometheus at {base} does not answer: {exc}") from None


def legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template or "")
    return text.strip() or ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def _limit(panel: dict) -> float | None:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    values = [s["value"] for s in steps if s.get("value") is not None]
    return values[0] if values else None


def snapshot(prometheus_url: str, out: Path, minutes: float, step_s: float, directory: Path = GENERATED) -> list[Path]:
    """Draw each dashboard over the last `minutes` to `out/<uid>.png`; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time()
    start = end - minutes * 60
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for board in load_dashboards(directory):
        shown = panels(board)
        columns = 3
        rows = math.ceil(len(shown) / columns)
        figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.2 * rows), squeeze=False)
        figure.suptitle(f"{board['title']} - last {minutes:g} min (UTC {time.strftime('%H:%M', time.gmtime(end))})")
        for ax, panel in zip(axes.flat, shown):
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
            ax.set_title(panel["title"], fontsize=9)
            ax.set_ylabel(_UNITS.get(unit, unit), fontsize=8)
            ax.tick_params(labelsize=7)
            drawn = 0
            for target in panel.get("targets", []):
                answer = prometheus_get(
                    prometheus_url,
                    "/api/v1/query_range",
                    {"query": substitute(target["expr"]), "start": start, "end": end, "step": step_s},
                )
                if answer.get("status") != "success":
                    raise MemstackError(f"{board['title']} / {panel['title']}: {answer.get('error')}")
                for series in answer["data"]["result"]:
                    xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                    ys = [float(v) for _, v in series["values"]]
                    ax.plot(xs, ys, linewidth=1, label=legend(target.get("legendFormat", ""), series["metric"]))
                    drawn += 1
            limit = _limit(panel)
            if limit is not None and drawn:
                ax.axhline(limit, color="red", linestyle="--", linewidth=0.8, label=f"limit {limit:g}")
            if drawn:
                ax.legend(fontsize=6, loc="upper left")
                ax.set_xlabel("minutes ago", fontsize=7)
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        for ax in list(axes.flat)[len(shown) :]:
            ax.axis("off")
        figure.tight_layout()
        path = out / f"{board['uid']}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        written.append(path)
    return written


@app.command("snapshot")
def snapshot_command(
    out: Annotated[
        Path | None, typer.Option(help="Directory for the PNGs (default $MEMSTACK_HOME/snapshots/<time>)")
    ] = None,
    minutes: Annotated[float, typer.Option(min=1, help="How far back to draw")] = 15,
    step: Annotated[float, typer.Option(min=1, help="Seconds between points")] = 5,
    prometheus_url: Annotated[str | None, typer.Option(help="Default: the local stack's Prometheus")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="process | containers | external")] = None,
) -> None:
    """Render each dashboard's panels from the live Prometheus to PNG."""
    if prometheus_url is None:
        from memstack.local.backend import get_backend

        prometheus_url = get_backend(backend).endpoints().prometheus_url
        if prometheus_url is None:
            raise MemstackError(
                "no Prometheus runs in the local stack; start it with `memstack up --with prometheus` or pass --prometheus-url"
            )
    check_http_url(prometheus_url, "--prometheus-url")
    directory = (out or new_results_dir("snapshots")).resolve()
    made = not directory.exists()
    output_dir(directory, "--out")
    try:
        written = snapshot(prometheus_url.rstrip("/"), directory, minutes, step)
    except BaseException:
        if made:  # no directory of pictures that are not there
            shutil.rmtree(directory, ignore_errors=True)
        raise
    for path in written:
        print(path)
