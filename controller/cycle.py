"""One control cycle: sensor window in, one safe setpoint vector and its decision record out.

``decide`` is the whole decision as a function of its inputs (config, window, time,
model, last applied setpoints); ``run_cycle`` adds the edges (read the historian,
record the decision, send the setpoints), all passed in. Whatever goes wrong (bad
data, no model, a model error, a verification veto, a database error) the rules
decide and the reason is recorded, and every vector leaves through the safety gate
(``controller.safety``), in every mode.

Reference setpoints (for rate limits and "hold"): in modes that apply, the last
applied setpoints, unless the measured setpoint shows that someone else moved it;
in advisory mode the measured setpoints first, because nothing this controller
decided was applied.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from controller.bounds import SetpointEnvelope
from controller.candidates import block_reversals, latest_move_signs, to_mapping, to_vector, tower_floor
from controller.config import Config
from controller.decision import Decision, Outcome, Prediction
from controller.optimizer import ModelError, OptimisationResult, optimise, take, what_if_rows
from controller.quality import (
    QualityIssue,
    QualityReport,
    check_window,
    clock_problem,
    mask_out_of_range,
    usable_window,
)
from controller.safety import allowed_box, clamped_reference, gate, hot_guard_active, verify
from controller.seams import ActuationResult, Actuator, ReadingSource, Recorder
from db.grid import GRID, GRID_FREQ, floor_to_grid
from db.psychro import wetbulb_c
from db.roles import REQUIRED_MEASUREMENT_ROLES, ROLES, SETPOINT_ROLES
from forecasting.protocol import Forecaster

log = logging.getLogger(__name__)

RACK_INLET = "rack_inlet_max_c"
WETBULB = "outdoor_wetbulb_c"
RULE_INPUTS = (*REQUIRED_MEASUREMENT_ROLES, WETBULB)
ForecasterSource = Forecaster | Callable[[], Forecaster | None] | None


def _latest(frame: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[str(col)] = float(finite[-1]) if len(finite) else math.nan
    return out


def _reference(mode: str, last_applied: Mapping[str, float] | None, measured: Mapping[str, float],
               envelope: SetpointEnvelope) -> dict[str, float]:
    """The setpoints in force as far as we know [C], per role (absent when unknown).

    Advisory mode: the measured setpoint first. Other modes: the last applied one,
    unless the measured setpoint is more than one step away from it, which means
    someone else (an operator, the BMS) moved it: then the measured value is the truth.
    """
    ref: dict[str, float] = {}
    for role in SETPOINT_ROLES:
        applied = _finite((last_applied or {}).get(role))
        # an impossible readback is a bad reading (NaN from _plausible), not someone else's move
        seen = _finite(_plausible({role: measured.get(role, math.nan)})[role])
        if seen is not None and (mode == "advisory" or applied is None
                                 or abs(seen - applied) > envelope.bounds(role).max_step_k + 1e-9):
            ref[role] = seen
        elif applied is not None:
            ref[role] = applied
    return ref


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _plausible(measured: Mapping[str, float]) -> dict[str, float]:
    """Readings outside their role's physical range become NaN (the rules treat NaN conservatively)."""
    out = {}
    for name, value in measured.items():
        r = ROLES.get(name)
        ok = math.isfinite(value) and (r is None or r.physical_min <= value <= r.physical_max)
        out[name] = value if ok else math.nan
    return out


def _wetbulb(readings: Mapping[str, float]) -> float:
    """The outdoor wet-bulb [C]: measured, else from dry-bulb and humidity (NaN when neither)."""
    measured = readings.get(WETBULB, math.nan)
    if math.isfinite(measured):
        return measured
    return float(wetbulb_c(readings.get("outdoor_drybulb_c", math.nan), readings.get("outdoor_rh_pct", math.nan)))


def _rules(config: Config, measured: Mapping[str, float], reference: Mapping[str, float]) -> tuple[dict[str, float], str]:
    """The rule-based proposal; a failing rules module holds the reference instead."""
    readings = {**dict.fromkeys(RULE_INPUTS, math.nan), **_plausible(measured), **reference}
    readings[WETBULB] = _wetbulb(readings)  # the tuned rules reset condenser water on wet-bulb
    try:
        from controller.rules import rule_setpoints

        return dict(rule_setpoints(config.cycle.fallback_preset, readings, config.envelope())), ""
    except Exception as exc:  # the fallback of the fallback is to hold
        log.exception("rule-based controller failed; holding")
        return dict(reference), f"; rules failed ({type(exc).__name__}: {exc}), holding"


class ModelWithdrawn(Exception):
    """Raised by a model source that has a model but withholds it (e.g. its forecasts drifted); says why."""


def _resolve(forecaster: ForecasterSource) -> tuple[Forecaster | None, str | None]:
    if forecaster is None or isinstance(forecaster, Forecaster):
        return forecaster, None
    try:
        return forecaster(), None
    except ModelWithdrawn as exc:
        return None, f"model withdrawn: {exc}"
    except Exception as exc:  # loading a model is I/O plus untrusted files: fall back, never crash
        return None, f"cannot load model: {type(exc).__name__}: {exc}"


@dataclass
class _Plan:
    """The pre-gate proposal and everything known about how it came about."""

    proposal: Mapping[str, float]
    outcome: Outcome
    reason: str
    reason_code: str | None = None
    opt: OptimisationResult | None = None
    violations: tuple[str, ...] = ()
    model_usable: bool = False


def _fallback(config: Config, measured: Mapping[str, float], reference: Mapping[str, float], code: str,
              why: str, *, model_usable: bool = False, opt: OptimisationResult | None = None,
              violations: tuple[str, ...] = ()) -> _Plan:
    proposal, note = _rules(config, measured, reference)
    return _Plan(proposal, "fallback", f"rules ({config.cycle.fallback_preset}): {why}{note}", code,
                 opt=opt, violations=violations, model_usable=model_usable)


def _plan(config: Config, report: QualityReport, measured: Mapping[str, float], reference: dict[str, float],
          hot: bool, model: Forecaster | None, model_problem: str | None, state: pd.DataFrame,
          read_error: str | None, rng: np.random.Generator, move_signs: Mapping[str, int]) -> _Plan:
    if config.mode == "manual":
        return _Plan(reference, "manual", "manual mode: holding operator pins " + ", ".join(
            f"{r}={v}" for r, v in config.pins().items()))
    if config.mode == "rules":
        return _fallback(config, measured, reference, "mode_rules", "operator selected rules mode")
    if read_error is not None:
        return _fallback(config, measured, reference, "db_error", f"cannot read sensor history: {read_error}")
    unknown = [r for r in SETPOINT_ROLES if r not in reference]
    if unknown:
        return _fallback(config, measured, reference, "other", "current setpoints unknown for " + ", ".join(unknown))
    if not report.ok:
        return _fallback(config, measured, reference, "bad_data", "bad data: " + report.summary())
    rack, limit = measured.get(RACK_INLET, math.nan), config.safety.rack_inlet_limit_c
    if rack >= limit:  # the plant is not where any model put it: the rules cool, the hot guard allows only that
        return _fallback(config, measured, reference, "verification_veto",
                         f"measured rack inlet {rack:.2f} C is at or above the {limit} C limit")
    if model is None:
        return _fallback(config, measured, reference, "no_model" if model_problem is None else "model_error",
                         model_problem or "no trained model available")
    env = config.envelope()
    hold = gate(reference, reference, env, pins=config.pins(), hot_guard=hot).setpoints
    box = allowed_box(clamped_reference(reference, env), env, hot_guard=hot)
    if not hot:
        box = block_reversals(box, hold, move_signs)
    box = tower_floor(box, _wetbulb(_plausible(measured)), config.coupling.min_tower_approach_k)
    box.update({r: (hold[r], hold[r]) for r in config.pins()})
    try:
        opt = optimise(model, state, to_vector(hold), box, config, rng)
    except ModelError as exc:
        return _fallback(config, measured, reference, "model_error", str(exc))
    sel = opt.selection
    if sel.index is None:
        code = ("ood" if "ood" in sel.hold_failures
                else "model_error" if "non_finite" in sel.hold_failures else "uncertain")
        return _fallback(config, measured, reference, code, sel.reason, model_usable=True, opt=opt)
    proposal = to_mapping(opt.candidates[sel.index])
    check = verify(proposal, reference, env, rack_inlet_max_c=measured.get(RACK_INLET),
                   rack_inlet_limit_c=config.safety.rack_inlet_limit_c,
                   near_limit_margin_k=config.safety.near_limit_margin_k)
    if not check.ok:
        return _fallback(config, measured, reference, "verification_veto",
                         "verification veto: " + "; ".join(check.violations), model_usable=True, opt=opt,
                         violations=check.violations)
    outcome: Outcome = "optimised" if sel.outcome == "optimised" else "hold"
    return _Plan(proposal, outcome, sel.reason, None, opt=opt, model_usable=True)


def _scored(opt: OptimisationResult | None, new: Mapping[str, float],
            hold: Mapping[str, float]) -> tuple[Prediction, Prediction] | None:
    """Predictions for ``new`` and ``hold`` if the search already scored exactly these vectors."""
    if opt is None or len(hold) != len(SETPOINT_ROLES):
        return None
    found = []
    for vector in (to_vector(new), to_vector(hold)):
        rows = np.flatnonzero(np.all(np.abs(opt.candidates - vector) <= 1e-12, axis=1))
        if len(rows) == 0:
            return None
        found.append(Prediction.from_forecast_row(take(opt.forecast, int(rows[0]))))
    return found[0], found[1]


def model_state(frame: pd.DataFrame, model: Forecaster) -> pd.DataFrame:
    """The roles and rows of the cycle's window that ``model`` scores.

    Everything that asks the model about this cycle passes this same frame, so the
    model's per-state feature cache is hit instead of recomputed.
    """
    wanted = set(model.required_roles())
    return frame[[c for c in frame.columns if c in wanted]].tail(max(model.history_needed(), 1))


def decide(
    config: Config,
    frame: pd.DataFrame | None,
    now: datetime,
    forecaster: Forecaster | None,
    last_applied: Mapping[str, float] | None,
    *,
    read_error: str | None = None,
    model_problem: str | None = None,
    clock_error: str | None = None,
    rng: np.random.Generator | None = None,
) -> Decision:
    """The decision of one cycle; pure apart from calling the forecaster.

    ``read_error``: why the window could not be read (then ``frame`` is None);
    ``model_problem``: why ``forecaster`` is None although one was expected;
    ``clock_error``: why the clock cannot be trusted (``clock_problem``): the window is
    ignored and the cycle is a ``bad_data`` fallback.
    """
    model = None if config.mode in ("rules", "manual") else forecaster
    if clock_error is not None:
        frame = None
    frame = frame if frame is not None else pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
    frame, window_problem = usable_window(frame)
    checked = tuple(dict.fromkeys((RACK_INLET, *(model.required_roles() if model is not None else ()))))
    frame, masked = mask_out_of_range(frame)
    found = check_window(frame, checked, now, config.cycle.interval_s, config.quality)
    report = QualityReport(issues=(), latest=found.latest).adding(
        None if window_problem is None else QualityIssue("window", "format", window_problem),
        None if clock_error is None else QualityIssue("clock", "freshness", clock_error),
    ).adding(*found.issues)
    bad = {i.role for i in report.issues}
    measured = {r: (math.nan if r in bad else v) for r, v in _latest(frame).items()}
    env = config.envelope()
    reference = _reference(config.mode, last_applied, measured, env)
    safety = config.safety
    hot = hot_guard_active(measured.get(RACK_INLET), safety.rack_inlet_limit_c, safety.near_limit_margin_k)
    if rng is None:
        rng = np.random.default_rng(config.optimizer.seed if config.optimizer.seed is not None
                                    else abs(int(now.timestamp())))  # numpy refuses negative seeds
    state = frame
    if model is not None:  # only the roles the model asked for: an all-NaN optional column is not data
        state = model_state(frame, model)
        if len(state) < model.history_needed():
            report = report.adding(QualityIssue(
                "history", "completeness", f"the model needs {model.history_needed()} rows of 5-minute history, "
                                           f"the window holds {len(state)}"))
    move_signs = latest_move_signs(frame, config.optimizer.reversal_dwell_cycles)
    plan = _plan(config, report, measured, reference, hot, model, model_problem, state, read_error, rng, move_signs)

    gated = gate(plan.proposal, reference, env, pins=config.pins(), hot_guard=hot)
    final_check = verify(gated.setpoints, reference, env, rack_inlet_max_c=measured.get(RACK_INLET),
                         rack_inlet_limit_c=safety.rack_inlet_limit_c, near_limit_margin_k=safety.near_limit_margin_k)
    new, adjustments = gated.setpoints, gated.adjustments
    if not final_check.ok and reference:
        held = gate(reference, reference, env, hot_guard=hot)  # the reference itself was unsafe: hold, re-clamped
        new = held.setpoints
        adjustments = (*adjustments, "final check failed; holding the re-clamped reference", *held.adjustments)
    chosen = hold_pred = None
    what_if: tuple[dict[str, Any], ...] = ()
    interval_level = None
    reused = None if config.optimizer.what_if else _scored(plan.opt, new, clamped_reference(reference, env))
    if reused is not None:  # both vectors were scored in the search: no second model call
        chosen, hold_pred = reused
        interval_level = None if plan.opt is None else float(plan.opt.forecast.interval_level)
    elif plan.model_usable and model is not None:
        try:
            rows = what_if_rows(model, state, to_vector(new), to_vector(clamped_reference(reference, env)), env,
                                moves=config.optimizer.what_if)
            chosen = Prediction.from_forecast_row(rows[0])
            hold_pred = Prediction.from_forecast_row(rows[1])
            what_if = tuple(rows[2:])
            interval_level = float(rows[0]["interval_level"])
        except ModelError as exc:
            adjustments += (f"no predictions for the emitted setpoints: {exc}",)
    runner_ups: tuple[dict[str, Any], ...] = ()
    opt = plan.opt
    if opt is not None:
        runner_ups = tuple({"setpoints": to_mapping(opt.candidates[i]), **take(opt.forecast, i)}
                           for i in opt.selection.runner_ups)
    saving = None
    if chosen is not None and hold_pred is not None:
        saving = hold_pred.cooling_power_kw - chosen.cooling_power_kw
    return Decision(
        ts=now, site_id=config.site_id, mode=config.mode, outcome=plan.outcome, reason=plan.reason,
        previous=dict(reference), new=dict(new), reason_code=plan.reason_code,
        model_version=None if model is None else str(model.version),
        chosen=chosen, hold=hold_pred, expected_saving_kw=saving, interval_level=interval_level,
        verification_ok=not plan.violations and final_check.ok,
        violations=plan.violations + final_check.violations, gate_adjustments=adjustments,
        quality_issues=tuple(str(i) for i in report.issues) + masked,
        binding=() if opt is None else opt.selection.binding, runner_ups=runner_ups, what_if=what_if,
        candidates_scored=0 if opt is None else len(opt.candidates),
        rejected={} if opt is None else dict(opt.selection.rejected),
        measured=measured, rack_inlet_limit_c=safety.rack_inlet_limit_c, hot_guard=hot,
        apply=config.mode != "advisory", actuation="pending" if config.mode != "advisory" else "not sent (advisory)",
    )




def required_roles(config: Config, model: Forecaster | None) -> tuple[str, ...]:
    """Roles the cycle reads: the rules' inputs, the setpoints and whatever the model needs."""
    extra = model.required_roles() if model is not None else ()
    return tuple(dict.fromkeys((*RULE_INPUTS, *SETPOINT_ROLES, *extra)))


def window_rows(config: Config, model: Forecaster | None) -> int:
    return max(config.quality.window_rows, model.history_needed() if model is not None else 0)


def run_cycle(
    config: Config,
    source: ReadingSource,
    forecaster: ForecasterSource,
    actuator: Actuator | None,
    recorder: Recorder,
    clock: Callable[[], datetime],
    last_applied: Mapping[str, float] | None,
    *,
    timer: Callable[[], float] = time.perf_counter,
    rng: np.random.Generator | None = None,
) -> Decision:
    """Read, decide, record, actuate. Never raises for plant, model or database trouble.

    The returned decision carries the actuation status and the decision id; the caller
    merges ``decision.sent`` (the setpoints the plant side confirmed) into ``last_applied``.
    """
    started = timer()
    now = clock()
    model, model_problem = (None, None) if config.mode in ("rules", "manual") else _resolve(forecaster)
    frame: pd.DataFrame | None = None
    read_error = None
    clock_error = clock_problem(source, now)
    # the grid row labelled t holds readings in (t - 5 min, t]: end just after the last full row
    end = floor_to_grid(now) + GRID
    start = end - window_rows(config, model) * GRID
    try:
        frame = source.read_wide(required_roles(config, model), start, end, GRID_FREQ).frame
    except Exception as exc:  # a historian failure must become a fallback, not a dead loop
        read_error = str(exc)
    decision = decide(config, frame, now, model, last_applied, read_error=read_error,
                      model_problem=model_problem, clock_error=clock_error, rng=rng)
    decision = replace(decision, duration_s=timer() - started)
    decision_id = recorder.record(decision)
    decision = replace(decision, decision_id=decision_id)
    if decision.apply:
        if actuator is None:
            result = ActuationResult(ok=False, status="skipped (no actuator configured)")
        else:
            try:
                result = actuator.send(decision.new, ts=now, decision_id=decision_id,
                                       reason=f"{decision.outcome}: {decision.reason}"[:500])
            except Exception as exc:  # an actuator bug must not stop the loop; nothing is claimed as sent
                log.exception("actuator failed")
                result = ActuationResult(ok=False, status=f"failed: {type(exc).__name__}: {exc}")
        decision = replace(decision, actuation=result.status, sent=result.sent, duration_s=timer() - started)
        recorder.set_actuation(decision_id, decision)
    return decision
