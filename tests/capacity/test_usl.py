"""The USL fitter against the reference implementations' published data set, on synthetic data
with noise, and the refusals of `memstack capacity` (one line, exit 2)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from memstack.capacity.usl import fit, read_csv
from memstack.errors import MemstackError

# The measurements of codahale/usl's README and example CSV, with its published model.
CONCURRENCY = [1, 18, 36, 72, 108, 144, 216]
THROUGHPUT = [65, 996, 1652, 1853, 1829, 1775, 1702]


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", "from memstack.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_golden_fit_matches_the_reference_implementation():
    model = fit(CONCURRENCY, THROUGHPUT)
    # The reference implementations state agreement within 0.02 %.
    assert model.sigma == pytest.approx(0.0277299, rel=2e-4)
    assert model.kappa == pytest.approx(0.000104343, rel=2e-4)
    assert model.lam == pytest.approx(89.9878, rel=2e-4)
    assert math.floor(model.peak_concurrency) == 96
    assert float(model.throughput(96)) == pytest.approx(1883.76, rel=2e-4)
    assert 0.98 < model.r_squared < 1


def test_synthetic_noisy_data_recovers_known_parameters():
    sigma, kappa, lam = 0.05, 0.0008, 400.0
    rng = np.random.default_rng(20261201)
    n = np.array([1, 2, 4, 6, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96], dtype=float)
    clean = lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))
    noisy = clean * (1 + rng.normal(0, 0.01, size=n.shape))  # 1 % measurement noise
    model = fit(n, noisy)
    assert model.sigma == pytest.approx(sigma, rel=0.05)
    assert model.kappa == pytest.approx(kappa, rel=0.05)
    assert model.lam == pytest.approx(lam, rel=0.05)
    assert model.peak_concurrency == pytest.approx(math.sqrt((1 - sigma) / kappa), rel=0.05)


def test_throughput_that_never_rises_peaks_at_one_client():
    # Every added client costs throughput: σ stops at 1 (all work serialised), N* is 1.
    model = fit([1, 2, 3, 4, 6, 8], [900, 700, 620, 600, 560, 540])
    assert 0 <= model.sigma <= 1 and model.peak_concurrency == 1.0
    assert model.max_throughput == pytest.approx(model.lam)


def test_fewer_than_six_points_are_refused():
    with pytest.raises(MemstackError, match="at least 6 steps, got 5"):
        fit(CONCURRENCY[:5], THROUGHPUT[:5])


def test_fit_cli_reads_a_csv_with_a_header(tmp_path):
    path = tmp_path / "steps.csv"
    path.write_text(
        "step,concurrency,throughput\n"
        + "".join(f"{i},{n},{x}\n" for i, (n, x) in enumerate(zip(CONCURRENCY, THROUGHPUT)))
    )
    run = _cli("capacity", "fit", "--csv", str(path))
    assert run.returncode == 0, run.stderr
    assert '"sigma": 0.0277' in run.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,65\n2,120\n3,170\n", "needs at least 6 steps, got 3"),
        ("1,65\n2,abc\n", "line 2: expected two numbers"),
        ("1,1\n" * 6, "needs at least 3 distinct concurrency levels, got 1"),
        ("1,1\n2,2\n" * 3, "needs at least 3 distinct concurrency levels, got 2"),
        ("users,rps\n1,2\n", "must name the columns 'concurrency' and 'throughput'"),
        ("1\n2\n", "line 1: expected two numbers"),
        ("", "no rows"),
    ],
)
def test_bad_csv_is_refused_with_the_line_at_fault(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(MemstackError, match=message.replace("(", r"\(")):
        fit(*read_csv(path))


def test_a_refusal_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1,65\n2,abc\n")
    run = _cli("capacity", "fit", "--csv", str(path))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"memstack: {path}: line 2: expected two numbers (concurrency, throughput), got ['2', 'abc']"
    ]
    run = _cli("capacity", "plan", "--peak-rps", "0", cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == ["memstack: --peak-rps must be above 0, got 0"]


def test_fit_reads_the_steps_csv_that_measure_writes(tmp_path):
    """`capacity measure` writes achieved_rps, not throughput, in steps.csv; the docs fit that file."""
    from memstack.capacity.measure import CSV_COLUMNS

    path = tmp_path / "steps.csv"
    rows = [",".join(CSV_COLUMNS)]
    for i, (n, x) in enumerate(zip(CONCURRENCY, THROUGHPUT), start=1):
        values = {"step": i, "users": n, "concurrency": n, "achieved_rps": x, "offered_rps": x * 1.1}
        rows.append(",".join(str(values.get(column, "")) for column in CSV_COLUMNS))
    path.write_text("\n".join(rows) + "\n")
    run = _cli("capacity", "fit", "--csv", str(path))
    assert run.returncode == 0, run.stderr
    assert '"sigma": 0.0277' in run.stdout


def test_linear_data_has_neither_peak_nor_ceiling():
    n = [1, 2, 3, 4, 5, 6]
    model = fit(n, [100 * v for v in n])
    assert model.as_dict()["peak_concurrency"] is None
    assert model.as_dict()["max_throughput"] is None
    assert "no ceiling" in model.describe()


def test_a_binary_csv_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00")
    run = _cli("capacity", "fit", "--csv", str(path))
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [f"memstack: {path}: not a CSV text file"]
