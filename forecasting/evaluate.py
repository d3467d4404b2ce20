"""Validation metrics and the single score that decides champion versus challenger.

The score weighs each target's error against its acceptance target (cooling power
MAPE 2 %, rack-inlet MAE 0.3 K) and adds them: lower is better, 2.0 means "exactly
on target for both". Both models are scored on the same recent window of history.
IT power (the third target, where metered) is measured and reported like the others
but left out of the score, so that models with and without it compare fairly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

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


class WindowSamples(NamedTuple):
    """A model's own feature rows for the sample times in a window."""

    index_ns: npt.NDArray[np.int64]  # sample times [ns since epoch, UTC]
    x: FloatArray
    y: FloatArray


#: A closed interval of sample times [start, end].
Span = tuple[pd.Timestamp, pd.Timestamp]


def window_samples(model: EnsembleForecaster, frame: pd.DataFrame, start: pd.Timestamp,
                   end: pd.Timestamp) -> WindowSamples:
    """Samples with times in [start, end], from ``model``'s own features; ValueError if none."""
    (s,) = samples_in(model, frame, [[(start, end)]])
    if not len(s.index_ns):
        raise ValueError(f"no complete samples between {start.isoformat()} and {end.isoformat()}")
    return s


def samples_in(model: EnsembleForecaster, frame: pd.DataFrame,
               windows: Sequence[Sequence[Span]]) -> list[WindowSamples]:
    """For each window (a list of spans), ``model``'s own samples with times in any of its
    spans, possibly none; features are built once for all windows."""
    fs = build_samples(frame, model.spec)
    out = []
    for spans in windows:
        mask = np.zeros(len(fs.index), dtype=bool)
        for start, end in spans:
            mask |= (fs.index >= start) & (fs.index <= end)
        out.append(WindowSamples(fs.index[mask].as_unit("ns").asi8, fs.x[mask], fs.y[mask]))
    return out


def evaluate_on_window(model: EnsembleForecaster, frame: pd.DataFrame, start: pd.Timestamp,
                       end: pd.Timestamp, samples: WindowSamples | None = None) -> dict[str, Any]:
    """Metrics of any stored model on samples with times in [start, end], from its own features
    (``samples``: that model's `window_samples`, when the caller has them already)."""
    s = samples if samples is not None else window_samples(model, frame, start, end)
    return ensemble_metrics(model, s.x, s.y)


#: The baselines an ensemble must not lose to (persistence is reported, never decides).
PROMOTION_BASELINES: tuple[str, ...] = ("hist_gradient_boosting", "ridge")
#: One block of the promotion comparison: an hour of 5-minute samples (errors within an hour are correlated).
PROMOTION_BLOCK_SAMPLES = 12
#: One-sided confidence of "the ensemble is worse than a baseline" (a normal quantile of block means).
PROMOTION_Z = 1.645


def compare_with_baselines(y: FloatArray, ensemble: FloatArray,
                           baselines: dict[str, FloatArray]) -> dict[str, dict[str, Any]]:
    """Per target, the ensemble's MAE against each baseline's on the same held-out rows.

    ``worse`` is True only where the ensemble's excess absolute error is positive with
    95 % one-sided confidence over hourly blocks (paired: the same rows, the same
    hours). Why not the plain MAE order: a day or two of held-out data is a few dozen
    correlated hours, and a difference of a few per cent is noise; a model must not
    be refused, or promoted, on noise.
    """
    out: dict[str, dict[str, Any]] = {}
    for j, target in enumerate(_targets(y)):
        e_ens = np.abs(y[:, j] - ensemble[:, j])
        row: dict[str, Any] = {"samples": len(y), "ensemble_mae": float(np.mean(e_ens)) if len(y) else float("nan"),
                               "baselines": {}}
        for name, pred in baselines.items():
            e_base = np.abs(y[:, j] - pred[:, j])
            row["baselines"][name] = {"mae": float(np.mean(e_base)) if len(y) else float("nan"),
                                      **_paired_excess(e_ens - e_base)}
        out[target] = row
    return out


def _paired_excess(d: FloatArray) -> dict[str, Any]:
    """Mean excess absolute error (target unit), its one-sided lower bound, and whether that is above 0."""
    n_blocks = len(d) // PROMOTION_BLOCK_SAMPLES
    if n_blocks < 2:
        return {"excess": float(np.mean(d)) if len(d) else float("nan"), "excess_low": float("nan"),
                "blocks": n_blocks, "worse": bool(len(d) and np.mean(d) > 0)}
    blocks = d[: n_blocks * PROMOTION_BLOCK_SAMPLES].reshape(n_blocks, PROMOTION_BLOCK_SAMPLES).mean(axis=1)
    low = float(blocks.mean() - PROMOTION_Z * blocks.std(ddof=1) / np.sqrt(n_blocks))
    return {"excess": float(blocks.mean()), "excess_low": low, "blocks": n_blocks, "worse": low > 0.0}


def compare_models(challenger: EnsembleForecaster, champion: EnsembleForecaster, a: WindowSamples,
                   b: WindowSamples) -> dict[str, dict[str, Any]]:
    """Per scored target, the challenger's excess absolute error over the champion's, paired.

    ``a`` and ``b`` are each model's own samples (`samples_in`); only the sample times
    both can score count, in hourly blocks (`_paired_excess`): ``worse`` means worse
    beyond noise. Why: a challenger that has learned the newest days is judged partly on
    an older window; losing there by a fraction of a per cent is no reason to keep a
    champion that has never seen the plant as it is now. ValueError if no time is common.
    """
    a, b = common_samples(a, b)
    if not len(a.index_ns):
        raise ValueError("no samples both models can score")
    pred_a = challenger.predict_rows(a.x, with_ood=False).mean
    pred_b = champion.predict_rows(b.x, with_ood=False).mean
    y = a.y
    return {t: {"samples": len(y), **_paired_excess(np.abs(y[:, j] - pred_a[:, j]) - np.abs(y[:, j] - pred_b[:, j]))}
            for j, t in enumerate(TARGETS)}


def common_samples(a: WindowSamples, b: WindowSamples) -> tuple[WindowSamples, WindowSamples]:
    """Both models' rows restricted to the sample times both have (each in time order)."""
    _, ia, ib = np.intersect1d(a.index_ns, b.index_ns, return_indices=True)
    return (WindowSamples(a.index_ns[ia], a.x[ia], a.y[ia]), WindowSamples(b.index_ns[ib], b.x[ib], b.y[ib]))


def concat_samples(*parts: WindowSamples) -> WindowSamples:
    """One set of rows from several (for a paired test over two windows)."""
    return WindowSamples(np.concatenate([p.index_ns for p in parts]), np.concatenate([p.x for p in parts]),
                         np.concatenate([p.y for p in parts]))
