"""One control cycle as a straight pipeline: window -> checked state -> plan -> search -> guard -> record -> act.

Each stage is a function of the previous stage's product:

1. ``check_state`` (``controller.cycle_state``): quality, latest values, reference
   setpoints, wet-bulb, hot guard and look-ahead ceilings, computed once.
2. ``plan``: what this cycle may do: hold the operator's pins (manual), hand over to the
   rules (and why), or search a box of setpoints around the reference.
3. ``search``: the model-based search in that box (``controller.optimizer``); a failed
   search is a rules proposal with its reason.
4. ``guard``: one independent verification and the safety gate (``controller.safety``)
   on whatever was proposed, in every mode; a veto hands over to the rules.
5. ``record`` builds the decision; ``run_cycle`` adds the edges (read the historian,
   store the decision, send the setpoints), all passed in.

``decide`` runs stages 1-5 as a pure function of its inputs (apart from calling the
forecaster). Whatever goes wrong (bad data, no model, a model error, a veto, a
database error) the rules decide and the reason is recorded. When a controlled
setpoint's current value is unknown, nothing is written at all: a step from an
unknown setpoint to a bound can trip a chiller.
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

from controller.candidates import block_reversals, to_mapping, to_vector, tower_floor
from controller.config import Config, QualitySettings
from controller.cycle_state import (
    RACK_INLET,
    WETBULB,
    CheckedState,
    check_state,
    model_state,
    plausible,
)
from controller.decision import Decision, Outcome
from controller.fallback_moves import cool_down, no_warming
from controller.model_view import SetpointView, predictions
from controller.optimizer import ModelError, OptimisationResult, optimise, take
from controller.quality import clock_problem, history_age_problem, stuck_threshold_rows
from controller.rules import TunedRules, rule_setpoints
from controller.safety import (
    SUPPLY_AIR,
    GateResult,
    Verification,
    allowed_box,
    clamped_reference,
    gate,
    verify,
)
from controller.seams import ActuationResult, Actuator, ReadingSource, Recorder
from controller.selection import power_std_floor_kw, warming_costs_it
from db.grid import GRID, GRID_FREQ, floor_to_grid
from db.roles import REQUIRED_MEASUREMENT_ROLES, SETPOINT_ROLES
from forecasting.protocol import Forecaster

__all__ = ["ForecasterSource", "ModelWithdrawn", "decide", "model_state", "required_roles", "run_cycle",
           "window_rows"]

log = logging.getLogger(__name__)

RULE_INPUTS = (*REQUIRED_MEASUREMENT_ROLES, WETBULB)
ForecasterSource = Forecaster | Callable[[], Forecaster | None] | None


class ModelWithdrawn(Exception):
    """Raised by a model source that has a model but withholds it (e.g. its forecasts drifted); says why."""


class NoChampion(Exception):
    """Raised by a model source that has no model to offer for a reason worth saying (none beat its baselines)."""


NO_CHAMPION = "no champion model: "


def interval_coverage(model: Forecaster | None) -> dict[str, float]:
    """Per target, the share of the model's recent matured forecasts inside their interval (online calibration)."""
    cal = getattr(model, "calibration", None)
    coverage = getattr(cal, "coverage", None)
    return {} if not callable(coverage) else {t: float(c) for t, c in coverage().items() if c is not None}


def _resolve(forecaster: ForecasterSource) -> tuple[Forecaster | None, str | None]:
    if forecaster is None or isinstance(forecaster, Forecaster):
        return forecaster, None
    try:
        return forecaster(), None
    except ModelWithdrawn as exc:
        return None, f"model withdrawn: {exc}"
    except NoChampion as exc:
        return None, f"{NO_CHAMPION}{exc}"
    except Exception as exc:  # loading a model is I/O plus untrusted files: fall back, never crash
        return None, f"cannot load model: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Plan:
    """Stage 2: either a search box around ``hold``, or a fixed proposal with its reason."""

    hold: dict[str, float]
    box: dict[str, tuple[float, float]] | None = None
    proposal: Mapping[str, float] | None = None
    outcome: Outcome = "fallback"
    reason: str = ""
    reason_code: str | None = None
    write: bool = True  # False: the current setpoints are unknown; nothing may be written


@dataclass(frozen=True)
class Proposal:
    """Stage 3: the pre-gate setpoints and everything known about how they came about."""

    setpoints: Mapping[str, float]
    outcome: Outcome
    reason: str
    reason_code: str | None = None
    opt: OptimisationResult | None = None
    violations: tuple[str, ...] = ()
    model_usable: bool = False
    held: tuple[str, ...] = ()  # setpoints an unsure fallback held where the rules would warm them


def _rules(config: Config, checked: CheckedState, design_it_kw: float | None) -> tuple[dict[str, float], str]:
    """The rule-based proposal; a failing rules module holds the reference instead."""
    readings = {**dict.fromkeys(RULE_INPUTS, math.nan), **plausible(checked.measured), **checked.reference}
    readings[WETBULB] = checked.wetbulb_c  # the tuned rules reset condenser water on wet-bulb
    try:
        tuned = TunedRules(design_it_kw=config.rules.design_it_kw or design_it_kw)
        return dict(rule_setpoints(config.cycle.fallback_preset, readings, config.envelope(), tuned=tuned)), ""
    except Exception as exc:  # the fallback of the fallback is to hold
        log.exception("rule-based controller failed; holding")
        return dict(checked.reference), f"; rules failed ({type(exc).__name__}: {exc}), holding"


def _fallback(config: Config, checked: CheckedState, code: str, why: str, *, design_it_kw: float | None = None,
              **extra: Any) -> Proposal:
    setpoints, note = _rules(config, checked, design_it_kw)
    return Proposal(setpoints, "fallback", f"rules ({config.cycle.fallback_preset}): {why}{note}", code, **extra)


def plan(config: Config, checked: CheckedState, model: Forecaster | None, model_problem: str | None,
         read_error: str | None) -> Plan:
    """Stage 2: manual, rules (with the reason), or a search box around the reference."""
    env = config.envelope()
    hold = gate(checked.reference, checked.reference, env, pins=config.pins(), hot_guard=checked.hot,
                ceilings=checked.ceilings).setpoints
    unknown = [r for r in env.setpoint_roles if r not in checked.reference]
    if unknown and config.mode != "advisory":  # the root cause first: a database that cannot be read
        code, text = (("db_error", f"cannot read sensor history: {read_error}") if read_error is not None
                      else ("setpoint_unknown", "current setpoints unknown for " + ", ".join(unknown)))
        return Plan(hold, reason=text + "; nothing written until the current setpoints are known",
                    reason_code=code, write=False)
    if config.mode == "manual":
        return Plan(hold, proposal=checked.reference, outcome="manual", reason="manual mode: holding operator pins "
                    + ", ".join(f"{r}={v}" for r, v in config.pins().items()))
    why = _rules_reason(config, checked, model, model_problem, read_error, unknown)
    if why is not None:
        return Plan(hold, reason=why[1], reason_code=why[0])
    box = allowed_box(clamped_reference(checked.reference, env), env, hot_guard=checked.hot,
                      ceilings=checked.ceilings)
    if not checked.hot:
        box = block_reversals(box, hold, checked.move_signs)
    box = tower_floor(box, checked.wetbulb_c, config.coupling.min_tower_approach_k)
    box.update({r: (hold[r], hold[r]) for r in config.pins()})
    return Plan(hold, box=box)


def _rules_reason(config: Config, checked: CheckedState, model: Forecaster | None, model_problem: str | None,
                  read_error: str | None, unknown: list[str]) -> tuple[str, str] | None:
    """Why the rules must decide this cycle (reason code, text), or None when the model may search."""
    if config.mode == "rules":
        return "mode_rules", "operator selected rules mode"
    if read_error is not None:
        return "db_error", f"cannot read sensor history: {read_error}"
    if unknown:
        return "setpoint_unknown", "current setpoints unknown for " + ", ".join(unknown)
    if checked.blocking:
        return "bad_data", "bad data: " + "; ".join(str(i) for i in checked.blocking)
    rack, limit = checked.rack_inlet_c, config.safety.rack_inlet_limit_c
    if rack >= limit:  # the plant is not where any model put it: the rules cool, the hot guard allows only that
        return "verification_veto", f"measured rack inlet {rack:.2f} C is at or above the {limit} C limit"
    if model is None:
        no_model = model_problem is None or model_problem.startswith(NO_CHAMPION)
        return ("no_model" if no_model else "model_error"), model_problem or "no trained model available"
    return None


def search(config: Config, checked: CheckedState, planned: Plan, model: Forecaster | None,
           rng: np.random.Generator) -> Proposal:
    """Stage 3: the planned proposal, the rules, or the model's best sure candidate."""
    design = _design_it_kw(model)
    if planned.proposal is not None:
        return Proposal(planned.proposal, planned.outcome, planned.reason)
    if planned.box is None or model is None:
        return _fallback(config, checked, planned.reason_code or "other", planned.reason, design_it_kw=design)
    roles = config.envelope().setpoint_roles
    try:
        view = SetpointView(model, roles, checked.measured | checked.reference)
        opt = optimise(view, checked.state, to_vector(planned.hold, roles), planned.box, _scaled(config, model), rng,
                       objective_setting=config.control.objective)
    except ModelError as exc:
        return _fallback(config, checked, "model_error", str(exc), design_it_kw=design)
    sel = opt.selection
    if sel.index is None:
        code = ("ood" if "ood" in sel.hold_failures
                else "model_error" if "non_finite" in sel.hold_failures else "uncertain")
        fallback = _fallback(config, checked, code, sel.reason, design_it_kw=design, model_usable=True, opt=opt)
        if "rack_inlet" in sel.hold_failures:  # the model fears heat where the rules may not: cool
            return _bent(fallback, *cool_down(fallback.setpoints, checked.reference, config.envelope()),
                         "predicted too hot at the current setpoints: cooling")
        held = _unsure_holds(config, opt) if code in ("ood", "uncertain") else ()
        if held is None or held:
            setpoints, kept = no_warming(fallback.setpoints, checked.reference, held)
            return replace(_bent(fallback, setpoints, kept, "unsure: no warming, held"), held=tuple(kept))
        return fallback
    outcome: Outcome = "optimised" if sel.outcome == "optimised" else "hold"
    return Proposal(to_mapping(opt.candidates[sel.index], roles), outcome, sel.reason, opt=opt, model_usable=True)


def _unsure_holds(config: Config, opt: OptimisationResult) -> tuple[str, ...] | None:
    """The setpoints an unsure fallback does not warm (``cycle.unsure_fallback``); None: all of them.

    ``it_aware``: supply air, where the model resolves that warmer air costs IT power
    (`controller.selection.warming_costs_it`, over the candidates the search scored).
    """
    setting = config.cycle.unsure_fallback
    if setting == "no_warming":
        return None
    roles = config.envelope().setpoint_roles
    if setting == "rules" or SUPPLY_AIR not in roles or opt.objective != "facility":
        return ()
    column = opt.candidates[:, roles.index(SUPPLY_AIR)]
    return (SUPPLY_AIR,) if warming_costs_it(opt.forecast, column, 0, config.thresholds.it_saving_sigma) else ()


def _bent(fallback: Proposal, setpoints: dict[str, float], roles: list[str], why: str) -> Proposal:
    """The fallback with ``controller.fallback_moves``' setpoints, and why, where they changed any role."""
    if not roles:
        return fallback
    return replace(fallback, setpoints=setpoints, reason=f"{fallback.reason}; {why} {', '.join(roles)}")


def _scaled(config: Config, model: Forecaster) -> Config:
    """The config with the power-uncertainty floor set from the plant's scale, where the config leaves it unset."""
    if config.thresholds.max_power_std_floor_kw is not None:
        return config
    profile = getattr(model, "data_profile", None)
    cooling = profile.role("cooling_power_kw") if profile is not None else None
    scale = getattr(cooling, "level_p99", None)
    floor = power_std_floor_kw(config.thresholds, scale if isinstance(scale, float) else None)
    return config.model_copy(update={"thresholds": config.thresholds.model_copy(
        update={"max_power_std_floor_kw": floor})})


def _design_it_kw(model: Forecaster | None) -> float | None:
    """The tuned rules' design IT load [kW] from the model's data profile (99th percentile), if any."""
    profile = getattr(model, "data_profile", None)
    design = getattr(profile, "design_it_kw", None)
    return float(design) if isinstance(design, int | float) and math.isfinite(design) and design > 0 else None


def _verify(config: Config, checked: CheckedState, setpoints: Mapping[str, float]) -> Verification:
    return verify(setpoints, checked.reference, config.envelope(), rack_inlet_max_c=checked.measured.get(RACK_INLET),
                  rack_inlet_limit_c=config.safety.rack_inlet_limit_c,
                  near_limit_margin_k=config.safety.near_limit_margin_k, ceilings=checked.ceilings)


def guard(config: Config, checked: CheckedState, proposal: Proposal, model: Forecaster | None) -> tuple[
        Proposal, GateResult, Verification]:
    """Stage 4: one independent verification of a model proposal (a veto hands over to the rules),
    then the safety gate on whatever is proposed, re-verified."""
    if proposal.model_usable and proposal.outcome in ("optimised", "hold"):
        check = _verify(config, checked, proposal.setpoints)
        if not check.ok:
            proposal = _fallback(config, checked, "verification_veto", "verification veto: " + "; ".join(
                check.violations), design_it_kw=_design_it_kw(model), model_usable=True, opt=proposal.opt,
                violations=check.violations)
    env = config.envelope()
    gated = gate(proposal.setpoints, checked.reference, env, pins=config.pins(), hot_guard=checked.hot,
                 ceilings=checked.ceilings)
    final = _verify(config, checked, gated.setpoints)
    if not final.ok and checked.reference:
        held = gate(checked.reference, checked.reference, env, hot_guard=checked.hot)  # unsafe reference: hold
        gated = GateResult(held.setpoints, (*gated.adjustments, "final check failed; holding the re-clamped "
                                            "reference", *held.adjustments))
    return proposal, gated, final


def record(config: Config, now: datetime, checked: CheckedState, planned: Plan, proposal: Proposal,
           gated: GateResult, final: Verification, model: Forecaster | None) -> Decision:
    """Stage 5: the decision record of this cycle."""
    new = dict(gated.setpoints)
    preds = predictions(config, checked, proposal.opt, proposal.model_usable, new, model)
    opt = proposal.opt
    roles = config.envelope().setpoint_roles
    objective = None if opt is None else opt.objective
    saving = set_aside = None
    if preds.chosen is not None and preds.hold is not None:
        set_aside = preds.it_set_aside_kw
        saving = preds.hold.objective_kw(objective) - preds.chosen.objective_kw(objective) + (set_aside or 0.0)
    applies = config.mode != "advisory" and planned.write
    return Decision(
        ts=now, site_id=config.site_id, mode=config.mode, outcome=proposal.outcome, reason=proposal.reason,
        previous=dict(checked.reference), new=new, reason_code=proposal.reason_code,
        model_version=None if model is None else str(model.version),
        chosen=preds.chosen, hold=preds.hold, expected_saving_kw=saving, it_change_set_aside_kw=set_aside,
        objective=objective, fallback_held=proposal.held,
        degraded_inputs=checked.degraded if proposal.model_usable else (),
        interval_level=preds.interval_level, interval_coverage=interval_coverage(model),
        verification_ok=not proposal.violations and final.ok,
        violations=proposal.violations + final.violations,
        gate_adjustments=gated.adjustments + ((preds.note,) if preds.note else ()),
        quality_issues=tuple(str(i) for i in checked.report.issues) + checked.masked_notes,
        binding=() if opt is None else opt.selection.binding,
        runner_ups=() if opt is None else tuple({"setpoints": to_mapping(opt.candidates[i], roles), **take(
            opt.forecast, i)} for i in opt.selection.runner_ups),
        what_if=preds.what_if, candidates_scored=0 if opt is None else len(opt.candidates),
        rejected={} if opt is None else dict(opt.selection.rejected), measured=checked.measured,
        rack_inlet_limit_c=config.safety.rack_inlet_limit_c, hot_guard=checked.hot, apply=applies,
        actuation=("pending" if applies else "not sent (advisory)" if config.mode == "advisory"
                   else "not sent (current setpoints unknown)"),
    )


def decide(config: Config, frame: pd.DataFrame | None, now: datetime, forecaster: Forecaster | None,
           last_applied: Mapping[str, float] | None, *, problems: Mapping[str, str | None] | None = None,
           rng: np.random.Generator | None = None, profile: Any = None) -> Decision:
    """The decision of one cycle; pure apart from calling the forecaster.

    ``problems``: what the edges found: ``read`` (why the window could not be read; then
    ``frame`` is None), ``model`` (why ``forecaster`` is None although one was expected),
    ``clock`` (why the clock cannot be trusted: the window is ignored, ``bad_data``),
    ``history_age`` (the newest reading is before the window: said once, not per role).
    """
    found = dict(problems or {})
    model = None if config.mode in ("rules", "manual") else forecaster
    checked = check_state(config, frame, now, model, last_applied, clock_error=found.get("clock"),
                          history_age=found.get("history_age"),
                          profile=profile if profile is not None else getattr(model, "data_profile", None))
    if rng is None:
        rng = np.random.default_rng(config.optimizer.seed if config.optimizer.seed is not None
                                    else abs(int(now.timestamp())))  # numpy refuses negative seeds
    planned = plan(config, checked, model, found.get("model"), found.get("read"))
    proposal, gated, final = guard(config, checked, search(config, checked, planned, model, rng), model)
    if not planned.write:
        gated = GateResult({}, ("nothing written: current setpoints unknown",))  # nothing leaves
    return record(config, now, checked, planned, proposal, gated, final, model)


def required_roles(config: Config, model: Forecaster | None) -> tuple[str, ...]:
    """Roles the cycle reads: the rules' inputs, the setpoints and whatever the model needs."""
    extra = model.required_roles() if model is not None else ()
    return tuple(dict.fromkeys((*RULE_INPUTS, *SETPOINT_ROLES, "supply_air_c", *extra)))


#: The most rows a cycle reads so that the stuck check can see a long flat run (12 hours),
#: to bound each cycle's read and check; a longer learned run is not checked for.
MAX_STUCK_WINDOW_ROWS = 144


def window_rows(quality: QualitySettings, model: Forecaster | None) -> int:
    """Rows the cycle reads: the quality window, the model's history and, where the model
    carries the site's data profile, enough for a learned stuck run (at most 12 hours)."""
    rows = max(quality.window_rows, model.history_needed() if model is not None else 0)
    profile = getattr(model, "data_profile", None)
    if profile is not None and model is not None:
        learned = [stuck_threshold_rows(r, quality, profile) for r in model.required_roles()
                   if profile.role(r) is not None]
        rows = max(rows, min(max(learned, default=0), MAX_STUCK_WINDOW_ROWS))
    return rows


def _actuate(decision: Decision, actuator: Actuator | None, now: datetime) -> ActuationResult:
    if actuator is None:
        return ActuationResult(ok=False, status="skipped (no actuator configured)")
    try:
        return actuator.send(decision.new, ts=now, decision_id=decision.decision_id,
                             reason=f"{decision.outcome}: {decision.reason}"[:500])
    except Exception as exc:  # an actuator bug must not stop the loop; nothing is claimed as sent
        log.exception("actuator failed")
        return ActuationResult(ok=False, status=f"failed: {type(exc).__name__}: {exc}")


def _history_age(source: ReadingSource, frame: pd.DataFrame | None, now: datetime, start: datetime) -> str | None:
    """How old the newest reading is, asked only when the window holds no reading at all."""
    if frame is None or frame.notna().to_numpy().any():
        return None
    return history_age_problem(source, now, start)


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
    # the grid row labelled t holds readings in (t - 5 min, t]: end just after the last full row
    end = floor_to_grid(now) + GRID
    start = end - window_rows(config.quality, model) * GRID
    try:
        frame = source.read_wide(required_roles(config, model), start, end, GRID_FREQ).frame
    except Exception as exc:  # a historian failure must become a fallback, not a dead loop
        read_error = str(exc)
    problems = {"read": read_error, "model": model_problem, "clock": clock_problem(source, now),
                "history_age": _history_age(source, frame, now, start)}
    decision = decide(config, frame, now, model, last_applied, problems=problems, rng=rng)
    decision = replace(decision, duration_s=timer() - started)
    decision = replace(decision, decision_id=recorder.record(decision))
    if decision.apply:
        result = _actuate(decision, actuator, now)
        decision = replace(decision, actuation=result.status, sent=result.sent, duration_s=timer() - started)
        recorder.set_actuation(decision.decision_id, decision)
    return decision
