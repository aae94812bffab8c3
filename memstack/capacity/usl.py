"""The Universal Scalability Law, X(N) = λN / (1 + σ(N−1) + κN(N−1)), fitted by least squares.

σ is contention (the serial share), κ coherency (crosstalk between the N in flight), λ the
throughput of one. Throughput peaks at N* = √((1−σ)/κ) and falls beyond it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from memstack.errors import MemstackError

MIN_POINTS = 6
MIN_LEVELS = 3
# Below this the coherency cost is zero as far as floating point tells: the curve only levels off
# (at λ/σ), and its "peak" would be a meaningless astronomical N.
NEGLIGIBLE_KAPPA = 1e-12
# Below this the serial share is zero as far as the fit can tell (linear data fits σ of 1e-12 to
# 1e-14): the level λ/σ would be a meaningless astronomical throughput, so there is none.
NEGLIGIBLE_SIGMA = 1e-9
# The throughput column by the names it goes by: `capacity measure` writes achieved_rps in steps.csv.
THROUGHPUT_COLUMNS = ("throughput", "achieved_rps")


@dataclass(frozen=True)
class UslModel:
    sigma: float
    kappa: float
    lam: float
    r_squared: float
    points: int

    def throughput(self, n):
        n = np.asarray(n, dtype=float)
        return self.lam * n / (1 + self.sigma * (n - 1) + self.kappa * n * (n - 1))

    @property
    def peak_concurrency(self) -> float:
        """N*; infinite when there is no coherency cost (throughput only levels off), and 1 when
        contention is total (σ = 1: a second client never adds throughput)."""
        if self.kappa <= NEGLIGIBLE_KAPPA:
            return math.inf
        return max(1.0, math.sqrt(max(1 - self.sigma, 0.0) / self.kappa))

    @property
    def max_throughput(self) -> float:
        n = self.peak_concurrency
        if math.isinf(n):
            return self.lam / self.sigma if self.sigma > NEGLIGIBLE_SIGMA else math.inf
        return float(self.throughput(n))

    def as_dict(self) -> dict:
        """Fields for JSON: an unbounded peak (no coherency cost) is None, as JSON has no infinity."""

        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            **asdict(self),
            "peak_concurrency": finite(self.peak_concurrency),
            "max_throughput": finite(self.max_throughput),
        }

    def describe(self) -> str:
        if math.isfinite(self.peak_concurrency):
            peak = f"N*={self.peak_concurrency:.1f}, max {self.max_throughput:.0f} req/s"
        elif math.isfinite(self.max_throughput):
            peak = f"no peak (κ≈0), levels off at {self.max_throughput:.0f} req/s"
        else:
            peak = "no peak and no ceiling (σ≈κ≈0): throughput rose in proportion to concurrency"
        return f"USL σ={self.sigma:.4g}, κ={self.kappa:.4g}, λ={self.lam:.4g}, R²={self.r_squared:.3f}, {peak}" + (
            " (a poor fit: the steps do not follow the USL)" if self.r_squared < 0.8 else ""
        )

    @classmethod
    def from_dict(cls, values: dict) -> UslModel:
        return cls(values["sigma"], values["kappa"], values["lam"], values["r_squared"], values["points"])


def fit(concurrency, throughput) -> UslModel:
    """Least squares (scipy, trust-region reflective) on the throughput residuals, with
    0 ≤ σ ≤ 1 (σ is a share of the work that serialises) and κ, λ ≥ 0.
    Starting point as the reference implementations take it: σ 0.1, κ 0.01, λ the best X/N seen."""
    n = np.asarray(concurrency, dtype=float)
    x = np.asarray(throughput, dtype=float)
    if n.shape != x.shape or n.ndim != 1:
        raise MemstackError("concurrency and throughput must be two columns of the same length")
    if len(n) < MIN_POINTS:
        raise MemstackError(f"a USL fit needs at least {MIN_POINTS} steps, got {len(n)}")
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(x))) or np.any(n <= 0) or np.any(x < 0):
        raise MemstackError("a USL fit needs concurrency > 0 and throughput >= 0 in every step")
    # Three parameters: fewer distinct levels leave the curve undetermined, and the solver
    # would return its starting point as if it were a fit.
    levels = len(np.unique(n))
    if levels < MIN_LEVELS:
        raise MemstackError(f"a USL fit needs at least {MIN_LEVELS} distinct concurrency levels, got {levels}")
    lam0 = float(np.max(x / n))
    if lam0 <= 0:
        raise MemstackError("a USL fit needs some throughput above 0")

    def residuals(p):
        sigma, kappa, lam = p
        return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1)) - x

    # Scaled so that the three parameters, orders of magnitude apart, move alike.
    result = least_squares(
        residuals,
        x0=[0.1, 0.01, lam0],
        bounds=([0, 0, 0], [1, np.inf, np.inf]),
        x_scale=[0.01, 1e-4, lam0],
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
        max_nfev=10_000,
    )
    sigma, kappa, lam = (float(v) for v in result.x)
    ss_res = float(np.sum(result.fun**2))
    ss_tot = float(np.sum((x - x.mean()) ** 2))
    r_squared = 1 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return UslModel(sigma=sigma, kappa=kappa, lam=lam, r_squared=r_squared, points=len(n))


def read_csv(path: Path) -> tuple[list[float], list[float]]:
    """(concurrency, throughput) from a CSV: two numeric columns, with or without a header row
    (a header names the columns `concurrency` and `throughput`, which may sit among others;
    `achieved_rps` stands for throughput, so the steps.csv of `capacity measure` is read as is)."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except OSError as exc:
        raise MemstackError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error):
        raise MemstackError(f"{path}: not a CSV text file") from None
    if not rows:
        raise MemstackError(f"{path}: no rows")
    columns, first_line = (0, 1), 1
    header = [cell.strip().lower() for cell in rows[0]]
    if not _numeric(header[0]):
        throughput = next((name for name in THROUGHPUT_COLUMNS if name in header), None)
        if "concurrency" not in header or throughput is None:
            raise MemstackError(
                f"{path}: the header must name the columns 'concurrency' and 'throughput' (or 'achieved_rps')"
            )
        columns = (header.index("concurrency"), header.index(throughput))
        rows, first_line = rows[1:], 2
    n, x = [], []
    for number, row in enumerate(rows, start=first_line):
        cells = [row[i].strip() if i < len(row) else "" for i in columns]
        if not all(_numeric(c) for c in cells):
            raise MemstackError(f"{path}: line {number}: expected two numbers (concurrency, throughput), got {row!r}")
        n.append(float(cells[0]))
        x.append(float(cells[1]))
    return n, x


def _numeric(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
