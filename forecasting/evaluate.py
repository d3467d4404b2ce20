"""Validation metrics and the single score that decides champion versus challenger.

The score weighs each target's error against its acceptance target (cooling power
MAPE 2 %, rack-inlet MAE 0.3 K) and adds them: lower is better, 2.0 means "exactly
on target for both". Both models are scored on the same recent window of history.
IT power (the third target, where metered) is measured and reported like the others
but left out of the score, so that models with and without it compare fairly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from forecasting.calibration import coverage, mae, mape_pct
from forecasting.features import ALL_TARGETS, TARGETS, build_samples
from forecasting.model import EnsembleForecaster

FloatArray = npt.NDArray[np.float64]

COOLING_MAPE_TARGET_PCT = 2.0
RACK_MAE_TARGET_K = 0.3


def _targets(y: FloatArray) -> tuple[str, ...]:
    """Names of the columns of y: the first y.shape[1] of ALL_TARGETS."""
    return ALL_TARGETS[: y.shape[1]]


def point_metrics(y: FloatArray, pred: FloatArray) -> dict[str, dict[str, float]]:
    """MAE (target unit) and MAPE [%] per target (every column of y)."""
    return {t: {"mae": mae(y[:, j], pred[:, j]), "mape_pct": mape_pct(y[:, j], pred[:, j])}
            for j, t in enumerate(_targets(y))}


def interval_metrics(y: FloatArray, lo: FloatArray, hi: FloatArray) -> dict[str, dict[str, float]]:
    """Coverage [-] and mean width (target unit) of the intervals, per target."""
    return {t: {"coverage": coverage(y[:, j], lo[:, j], hi[:, j]),
                "interval_width": float(np.mean(hi[:, j] - lo[:, j])) if len(y) else float("nan")}
            for j, t in enumerate(_targets(y))}


def score(metrics: dict[str, dict[str, float]]) -> float:
    """Champion/challenger score [-], lower is better (see module docstring)."""
    return (metrics[TARGETS[0]]["mape_pct"] / COOLING_MAPE_TARGET_PCT
            + metrics[TARGETS[1]]["mae"] / RACK_MAE_TARGET_K)


def ensemble_metrics(model: EnsembleForecaster, x: FloatArray, y: FloatArray) -> dict[str, Any]:
    """Point and interval metrics of a forecaster on full feature rows, plus its score."""
    p = model.predict_rows(x, with_ood=True)
    pm = point_metrics(y, p.mean)
    im = interval_metrics(y, p.lo, p.hi)
    out: dict[str, Any] = {t: {**pm[t], **im[t]} for t in _targets(y)}
    out["ood_share_above_1"] = float(np.mean(p.ood_score >= 1.0)) if len(y) else float("nan")
    out["samples"] = len(y)
    out["score"] = score(pm)
    return out


def evaluate_on_window(model: EnsembleForecaster, frame: pd.DataFrame, start: pd.Timestamp,
                       end: pd.Timestamp) -> dict[str, Any]:
    """Metrics of any stored model on samples with times in [start, end], from its own features."""
    fs = build_samples(frame, model.spec)
    mask = (fs.index >= start) & (fs.index <= end)
    if not mask.any():
        raise ValueError(f"no complete samples between {start.isoformat()} and {end.isoformat()}")
    return ensemble_metrics(model, fs.x[mask], fs.y[mask])
