"""The model-based search of one cycle: generate, score in batches, refine, select.

Only this module talks to the ``Forecaster``; it validates every forecast (shape and
finiteness) so that a broken model becomes a ``ModelError`` (and a fallback), never
a setpoint. It never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd

from controller.bounds import SetpointEnvelope
from controller.candidates import (
    FloatArray,
    box_arrays,
    initial_candidates,
    neighbours,
    refine_candidates,
    to_mapping,
)
from controller.config import Config
from controller.selection import Objective, Selection, resolve_objective, risk_adjusted_kw, select
from forecasting.protocol import MEMBER_FIELDS, Forecast, Forecaster

#: The number of setpoints the optimizer settings' candidate counts are sized for: a site
#: controlling fewer searches a smaller box and gets proportionally fewer random and
#: refined candidates (one setpoint: a 9-point grid plus 1,000 random and 500 refined).
FULL_DIMENSION = 3
#: Forecast fields that are not per-candidate (N,) arrays.
_NOT_ARRAYS = frozenset({"interval_level", "masked_roles", *MEMBER_FIELDS})


def _array_fields(forecast: Forecast) -> tuple[str, ...]:
    """The per-candidate array fields this forecast has (optional targets may be None)."""
    return tuple(f.name for f in fields(Forecast)
                 if f.name not in _NOT_ARRAYS and getattr(forecast, f.name) is not None)


def _member_fields(forecast: Forecast) -> tuple[str, ...]:
    """The (M, N) per-member fields this forecast has."""
    return tuple(name for name in MEMBER_FIELDS if getattr(forecast, name) is not None)


class ModelError(Exception):
    """The forecaster failed or returned something unusable."""


def score(forecaster: Forecaster, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
    """One batched prediction, checked for shape; exceptions become ModelError."""
    try:
        forecast = forecaster.predict(state, candidates)
    except Exception as exc:  # any failure inside a model is a reason to fall back, not to crash
        raise ModelError(f"model {getattr(forecaster, 'version', '?')} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(forecast, Forecast):
        raise ModelError(f"model returned {type(forecast).__name__}, not a Forecast")
    for name in _array_fields(forecast):
        arr = np.asarray(getattr(forecast, name))
        if arr.shape != (len(candidates),):
            raise ModelError(f"forecast field {name} has shape {arr.shape}, expected ({len(candidates)},)")
    for name in _member_fields(forecast):
        arr = np.asarray(getattr(forecast, name))
        if arr.ndim != 2 or arr.shape[1] != len(candidates):
            raise ModelError(f"forecast field {name} has shape {arr.shape}, expected (members, {len(candidates)})")
    return forecast


def concat_forecasts(parts: list[Forecast]) -> Forecast:
    """Stack forecasts of consecutive candidate batches."""
    arrays: dict[str, Any] = {name: np.concatenate([np.asarray(getattr(p, name), dtype=np.float64) for p in parts])
                              for name in _array_fields(parts[0])}
    for name in _member_fields(parts[0]):
        arrays[name] = np.concatenate([np.asarray(getattr(p, name), dtype=np.float64) for p in parts], axis=1)
    return replace(parts[0], **arrays)


def take(forecast: Forecast, index: int) -> dict[str, float]:
    """One candidate's prediction as plain floats, keyed by Forecast field name."""
    return {name: float(np.asarray(getattr(forecast, name))[index]) for name in _array_fields(forecast)}


@dataclass(frozen=True)
class OptimisationResult:
    candidates: FloatArray  # (N, K) [C] over the controlled setpoints; row 0 is the hold vector
    forecast: Forecast
    selection: Selection
    objective: Objective = "cooling"


def _edge_notes(chosen: FloatArray, box: Mapping[str, tuple[float, float]], envelope: SetpointEnvelope,
                pins: Mapping[str, float]) -> tuple[str, ...]:
    notes = []
    for i, role in enumerate(envelope.setpoint_roles):
        lo, hi = box[role]
        b = envelope.bounds(role)
        if role in pins:
            notes.append(f"{role} pinned by the operator at {pins[role]} C")
        elif lo == hi:
            continue
        elif chosen[i] >= hi - 1e-6:
            notes.append(f"{role} at its {'upper bound' if hi >= b.max_c - 1e-9 else 'rate limit (up)'} {hi:.2f} C")
        elif chosen[i] <= lo + 1e-6:
            notes.append(f"{role} at its {'lower bound' if lo <= b.min_c + 1e-9 else 'rate limit (down)'} {lo:.2f} C")
    return tuple(notes)


def optimise(
    forecaster: Forecaster,
    state: pd.DataFrame,
    hold: FloatArray,
    box: Mapping[str, tuple[float, float]],
    config: Config,
    rng: np.random.Generator,
    objective_setting: str = "cooling",
) -> OptimisationResult:
    """Search the box around ``hold`` (row 0) and select; raises ModelError on a bad model.

    ``objective_setting``: ``facility``, ``cooling`` or ``auto`` (see ``resolve_objective``).
    """
    opt = config.optimizer
    roles = config.envelope().setpoint_roles
    lo, hi = box_arrays(box, roles)
    approach = config.coupling.min_coil_approach_k
    share = len(roles) / FULL_DIMENSION  # the random and refined counts are set for three setpoints
    pool = initial_candidates(hold, lo, hi, min_coil_approach_k=approach,
                              grid_points_per_role=opt.grid_points_per_role,
                              random_candidates=round(opt.random_candidates * share), rng=rng, roles=roles)
    batches = [pool]
    forecasts = [score(forecaster, state, pool)]
    objective = resolve_objective(objective_setting, forecasts[0])
    per_round = round(opt.refine_candidates * share) // max(opt.refine_iterations, 1)
    for _ in range(opt.refine_iterations):
        cands = np.vstack(batches)
        fc = concat_forecasts(forecasts)
        sel = select(fc, 0, config.safety, config.thresholds, runner_ups=0, objective=objective)
        n_elite = max(5, int(opt.elite_fraction * len(cands)))
        if sel.sure.any():
            sure_idx = np.flatnonzero(sel.sure)
            elites = cands[sure_idx[np.argsort(risk_adjusted_kw(fc, config.thresholds, objective)[sure_idx])][:n_elite]]
        else:  # search toward safety: the coolest upper bounds
            elites = cands[np.argsort(np.nan_to_num(sel.rack_inlet_upper_c, nan=np.inf))[:n_elite]]
        extra = refine_candidates(elites, lo, hi, min_coil_approach_k=approach, n=per_round, rng=rng, roles=roles)
        if len(extra) == 0:
            break
        batches.append(extra)
        forecasts.append(score(forecaster, state, extra))
    candidates = np.vstack(batches)
    forecast = concat_forecasts(forecasts)
    if not np.all(np.isfinite([forecast.cooling_power_kw[0], forecast.rack_inlet_max_c[0]])):
        raise ModelError("model returned a non-finite prediction for holding the current setpoints")
    selection = select(forecast, 0, config.safety, config.thresholds, runner_ups=opt.runner_ups, objective=objective)
    if selection.index is not None and selection.outcome == "optimised":
        notes = _edge_notes(candidates[selection.index], box, config.envelope(), config.pins())
        selection = replace(selection, binding=selection.binding + notes)
    return OptimisationResult(candidates=candidates, forecast=forecast, selection=selection, objective=objective)


def what_if_rows(
    forecaster: Forecaster, state: pd.DataFrame, center: FloatArray, hold: FloatArray, envelope: SetpointEnvelope,
    *, moves: bool = True,
) -> list[dict[str, Any]]:
    """Predictions for ``center``, for ``hold``, then (``moves``) for ``center`` with each role moved by -/+ one step.

    One step is the role's rate limit; moved values stay inside the bounds. Each row
    holds "role" (None for center and hold), "step_k", "setpoints" and the prediction.
    """
    roles = envelope.setpoint_roles
    lo = np.array([envelope.bounds(r).min_c for r in roles])
    hi = np.array([envelope.bounds(r).max_c for r in roles])
    steps = np.array([envelope.bounds(r).max_step_k for r in roles])
    rows, labels = neighbours(center, steps, lo, hi)
    if not moves:
        rows, labels = rows[:0], []
    batch = np.vstack([center[None, :], hold[None, :], rows])
    fc = score(forecaster, state, batch)
    out: list[dict[str, Any]] = []
    for i, (role_index, step) in enumerate([(None, 0.0), (None, 0.0), *labels]):
        out.append({
            "role": None if role_index is None else roles[role_index],
            "step_k": step,
            "setpoints": to_mapping(batch[i], roles),
            **take(fc, i),
            "interval_level": float(fc.interval_level),
        })
    return out
