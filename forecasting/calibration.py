"""Split-conformal calibration of the ensemble's intervals, and interval metrics.

The ensemble's Gaussian intervals are only as honest as its variance estimates. On a
held-out recent window we measure the normalised residual |y - mu| / sigma and take its
conformal quantile (Vovk et al.; Romano et al. 2019 for the normalised form): scaling
sigma by that factor makes central intervals cover about ``level`` of new data, as
long as the recent window resembles the near future.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def conformal_factor(y: FloatArray, mu: FloatArray, sigma: FloatArray, level: float) -> float:
    """Multiplier on sigma [-] so that mu +/- factor*sigma covers ``level`` of (y, mu, sigma).

    Uses the finite-sample quantile ceil((n+1)*level)/n of the normalised residuals.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must lie in (0, 1), got {level}")
    y, mu, sigma = (np.asarray(a, dtype=np.float64).ravel() for a in (y, mu, sigma))
    if not (y.shape == mu.shape == sigma.shape):
        raise ValueError("y, mu and sigma must have the same length")
    n = y.size
    rank = math.ceil((n + 1) * level)
    if rank > n:
        raise ValueError(
            f"{n} calibration samples are too few for a {level:.0%} interval; need at least "
            f"{math.ceil(level / (1.0 - level))}"
        )
    scores = np.abs(y - mu) / np.maximum(sigma, 1e-12)
    return float(np.partition(scores, rank - 1)[rank - 1])


def interval(mu: FloatArray, sigma: FloatArray, factor: float) -> tuple[FloatArray, FloatArray]:
    """Central interval (lo, hi) = mu -/+ factor * sigma."""
    return mu - factor * sigma, mu + factor * sigma


def coverage(y: FloatArray, lo: FloatArray, hi: FloatArray) -> float:
    """Share of truths inside [lo, hi] [-]."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((y >= lo) & (y <= hi))) if y.size else float("nan")


def mae(y: FloatArray, pred: FloatArray) -> float:
    """Mean absolute error, in the target's unit."""
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(pred))))


def mape_pct(y: FloatArray, pred: FloatArray) -> float:
    """Mean absolute percentage error [%]; rows with |y| < 1e-9 are left out."""
    y = np.asarray(y, dtype=np.float64)
    ok = np.abs(y) > 1e-9
    return float(100.0 * np.mean(np.abs((y[ok] - np.asarray(pred)[ok]) / y[ok]))) if ok.any() else float("nan")
