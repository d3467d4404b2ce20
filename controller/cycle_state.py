"""Stage 1 of the cycle: the historian window checked once into a `CheckedState`.

Why one stage: range plausibility, quality, the reference setpoints, derived
quantities (wet-bulb), the hot guard and the look-ahead outlook are each computed
here exactly once, and every later stage (plan, search, guard, record) reads them
from the `CheckedState` instead of recomputing them from raw readings.

Degrade by role, not by cycle: a quality issue of a safety input (the hottest rack
inlet, IT power), of the window itself (clock, shape, history length) or a controlled
setpoint's readback *blocks* the model and the rules decide. A suspect non-safety
input is *degraded*: its column is blanked in the model's state, the model runs
without it (feature masking) and the decision names it.

Reference setpoints (for rate limits and "hold"): in modes that apply, the last
applied setpoints, unless the measured setpoint shows that someone else moved it;
in advisory mode the measured setpoints first, because nothing this controller
decided was applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from controller.bounds import SetpointEnvelope
from controller.candidates import latest_move_signs
from controller.config import Config
from controller.quality import (
    QualityIssue,
    QualityReport,
    check_window,
    collapse_missing,
    mask_out_of_range,
    usable_window,
)
from controller.safety import (
    LOOK_BACK_ROWS,
    InletOutlook,
    clamped_reference,
    hot_guard_active,
    look_ahead_ceilings,
)
from db.psychro import wetbulb_c
from db.roles import ROLES, SETPOINT_ROLES
from forecasting.protocol import Forecaster

RACK_INLET = "rack_inlet_max_c"
IT_POWER = "it_power_kw"
SUPPLY_AIR_C = "supply_air_c"
WETBULB = "outdoor_wetbulb_c"
#: Inputs without which neither the model nor the guard can be trusted: their issues force the rules.
SAFETY_ROLES = frozenset({RACK_INLET, IT_POWER})
#: Issues that are about the window, not one role.
WINDOW_ISSUES = frozenset({"window", "clock", "history"})


@dataclass(frozen=True)
class CheckedState:
    """What one cycle knows after the checks; every later stage reads it, none recomputes it.

    ``measured``: latest plausible reading per role (NaN when unknown or suspect) [role units];
    ``reference``: the setpoints in force as far as we know [C] (absent when unknown);
    ``degraded``: suspect non-safety roles the model runs without this cycle;
    ``state``: the model's state frame (its roles and rows, degraded columns blanked).
    """

    frame: pd.DataFrame
    report: QualityReport
    masked_notes: tuple[str, ...]
    measured: dict[str, float]
    reference: dict[str, float]
    wetbulb_c: float
    hot: bool
    ceilings: dict[str, float]
    move_signs: dict[str, int]
    degraded: tuple[str, ...]
    blocking: tuple[QualityIssue, ...]
    state: pd.DataFrame

    @property
    def rack_inlet_c(self) -> float:
        return self.measured.get(RACK_INLET, math.nan)


def latest_values(frame: pd.DataFrame) -> dict[str, float]:
    """Per column, the newest finite value (NaN when there is none)."""
    out: dict[str, float] = {}
    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[str(col)] = float(finite[-1]) if len(finite) else math.nan
    return out


def plausible(measured: Mapping[str, float]) -> dict[str, float]:
    """Readings outside their role's physical range become NaN (the rules treat NaN conservatively)."""
    out = {}
    for name, value in measured.items():
        r = ROLES.get(name)
        ok = math.isfinite(value) and (r is None or r.physical_min <= value <= r.physical_max)
        out[name] = value if ok else math.nan
    return out


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def reference_setpoints(mode: str, last_applied: Mapping[str, float] | None, measured: Mapping[str, float],
                        envelope: SetpointEnvelope) -> dict[str, float]:
    """The setpoints in force as far as we know [C], per controlled role (absent when unknown).

    Advisory mode: the measured setpoint first. Other modes: the last applied one,
    unless the measured setpoint is more than one step away from it, which means
    someone else (an operator, the BMS) moved it: then the measured value is the truth.
    """
    ref: dict[str, float] = {}
    for role in envelope.setpoint_roles:
        applied = _finite((last_applied or {}).get(role))
        # an impossible readback is a bad reading (NaN), not someone else's move
        seen = _finite(plausible({role: measured.get(role, math.nan)})[role])
        if seen is not None and (mode == "advisory" or applied is None
                                 or abs(seen - applied) > envelope.bounds(role).max_step_k + 1e-9):
            ref[role] = seen
        elif applied is not None:
            ref[role] = applied
    return ref


def outdoor_wetbulb(readings: Mapping[str, float]) -> float:
    """The outdoor wet-bulb [C]: measured, else from dry-bulb and humidity (NaN when neither)."""
    measured = readings.get(WETBULB, math.nan)
    if math.isfinite(measured):
        return measured
    return float(wetbulb_c(readings.get("outdoor_drybulb_c", math.nan), readings.get("outdoor_rh_pct", math.nan)))


def inlet_outlook(frame: pd.DataFrame, measured: Mapping[str, float]) -> InletOutlook:
    """Inlet-over-supply offset [K] and the hottest inlet's rise over the last half hour [K].

    The offset is the largest (hottest inlet minus supply air) over the window and now:
    while the inlet still lags a recent supply-air rise the current difference
    understates where it will settle, and the window's steady rows do not.
    """
    offsets = [measured.get(RACK_INLET, math.nan) - measured.get(SUPPLY_AIR_C, math.nan)]
    if RACK_INLET in frame.columns and SUPPLY_AIR_C in frame.columns:
        rack = pd.to_numeric(frame[RACK_INLET], errors="coerce").to_numpy(dtype=np.float64)
        supply = pd.to_numeric(frame[SUPPLY_AIR_C], errors="coerce").to_numpy(dtype=np.float64)
        offsets.extend((rack - supply)[np.isfinite(rack - supply)].tolist())
    finite = [o for o in offsets if math.isfinite(o)]
    offset = max(finite) if finite else math.nan
    rise = math.nan
    if RACK_INLET in frame.columns:
        values = pd.to_numeric(frame[RACK_INLET], errors="coerce").to_numpy(dtype=np.float64)
        recent = values[-(LOOK_BACK_ROWS + 1):]
        recent = recent[np.isfinite(recent)]
        if len(recent) >= 2:
            rise = float(recent[-1] - recent.min())
    return InletOutlook(inlet_over_supply_k=offset, inlet_rise_k=rise)


def model_state(frame: pd.DataFrame, model: Forecaster) -> pd.DataFrame:
    """The roles and rows of the cycle's window that ``model`` scores.

    Everything that asks the model about this cycle passes this same frame, so the
    model's per-state feature cache is hit instead of recomputed.
    """
    wanted = set(model.required_roles())
    return frame[[c for c in frame.columns if c in wanted]].tail(max(model.history_needed(), 1))


def _is_blocking(issue: QualityIssue, controlled: tuple[str, ...]) -> bool:
    return issue.role in SAFETY_ROLES or issue.role in WINDOW_ISSUES or issue.role in controlled


def _checked_roles(model: Forecaster | None, controlled: tuple[str, ...]) -> tuple[str, ...]:
    model_roles = model.required_roles() if model is not None else ()
    return tuple(dict.fromkeys((RACK_INLET, *model_roles, *(r for r in controlled if r in model_roles))))


def check_state(config: Config, frame: pd.DataFrame | None, now: datetime, model: Forecaster | None,
                last_applied: Mapping[str, float] | None, *, clock_error: str | None = None,
                profile: Any = None, history_age: str | None = None) -> CheckedState:
    """Stage 1: the window checked, the latest values, reference and guard inputs, once.

    ``clock_error``: why the clock cannot be trusted; the window is then ignored.
    ``history_age``: the source's newest reading is before the window ("newest reading
    ... N days old"): said once instead of one "missing" issue per role.
    ``profile``: the site's learned data profile (``forecasting.data_profile``), or None.
    """
    if clock_error is not None:
        frame = None
    frame = frame if frame is not None else pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
    frame, window_problem = usable_window(frame)
    frame, masked_notes = mask_out_of_range(frame)
    env = config.envelope()
    controlled = env.setpoint_roles
    found = check_window(frame, _checked_roles(model, controlled), now, config.cycle.interval_s, config.quality,
                         profile=profile)
    report = QualityReport(issues=(), latest=found.latest).adding(
        None if window_problem is None else QualityIssue("window", "format", window_problem),
        None if clock_error is None else QualityIssue("clock", "freshness", clock_error),
    ).adding(*collapse_missing(found.issues, history_age))
    suspect = {i.role for i in report.issues}
    measured = {r: (math.nan if r in suspect else v) for r, v in latest_values(frame).items()}
    reference = reference_setpoints(config.mode, last_applied, measured, env)
    safety = config.safety
    hot = hot_guard_active(measured.get(RACK_INLET), safety.rack_inlet_limit_c, safety.near_limit_margin_k)
    ceilings = look_ahead_ceilings(
        clamped_reference(reference, env), env, inlet_outlook(frame, measured),
        rack_inlet_max_c=measured.get(RACK_INLET), rack_inlet_limit_c=safety.rack_inlet_limit_c,
        near_limit_margin_k=safety.near_limit_margin_k, rising_band_k=safety.rising_band_k,
        rising_k=safety.rising_k)
    state = frame
    if model is not None:
        state = model_state(frame, model)
        if len(state) < model.history_needed():
            report = report.adding(QualityIssue(
                "history", "completeness", f"the model needs {model.history_needed()} rows of 5-minute history, "
                                           f"the window holds {len(state)}"))
    blocking = tuple(i for i in report.issues if _is_blocking(i, controlled))
    degraded = tuple(dict.fromkeys(i.role for i in report.issues if not _is_blocking(i, controlled)))
    if degraded and model is not None:
        state = state.copy()
        for role in degraded:
            if role in state.columns:
                state[role] = np.nan  # the model masks the whole role group
    return CheckedState(
        frame=frame, report=report, masked_notes=masked_notes, measured=measured, reference=reference,
        wetbulb_c=outdoor_wetbulb(plausible(measured)), hot=hot, ceilings=ceilings,
        move_signs=latest_move_signs(frame, config.optimizer.reversal_dwell_cycles), degraded=degraded,
        blocking=blocking, state=state,
    )


#: Setpoint roles a model scores when it does not say (models trained before setpoint subsets).
DEFAULT_MODEL_SETPOINTS: tuple[str, ...] = SETPOINT_ROLES
