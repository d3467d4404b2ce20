"""Why a decision came out as it did, for operators: ``coolpilot explain``.

Everything shown comes from the stored decision row (no model is re-run), so the
explanation is of what the controller actually knew at the time: the constraint
that bound, the runner-up candidates, and a what-if table of each setpoint moved by
one step either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from controller.decision import Decision
from db.roles import SETPOINT_ROLES

_SHORT = {"chw_supply_sp_c": "chw", "supply_air_sp_c": "sa", "cw_supply_sp_c": "cw"}


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):.{digits}f}"


def _vector(setpoints: Mapping[str, Any]) -> str:
    """The setpoints a vector has, short names; roles the site does not control are left out."""
    return " ".join(f"{_SHORT[r]}={_f(setpoints.get(r))}" for r in SETPOINT_ROLES if r in setpoints)


def _distinct(rows: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Runner-ups that differ as shown (to 0.01 C): a list of near-copies explains nothing."""
    seen: set[str] = set()
    out = []
    for r in rows:
        key = _vector(r.get("setpoints", {}))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def explanation(decision: Decision) -> dict[str, Any]:
    """The JSON form: the decision plus the parts ``explain`` highlights."""
    d = decision
    return {
        "decision_id": d.decision_id,
        "ts": d.ts,
        "mode": d.mode,
        "outcome": d.outcome,
        "reason_code": d.reason_code,
        "reason": d.reason,
        "previous": d.previous,
        "new": d.new,
        "binding": list(d.binding),
        "violations": list(d.violations),
        "gate_adjustments": list(d.gate_adjustments),
        "quality_issues": list(d.quality_issues),
        "runner_ups": list(d.runner_ups),
        "what_if": list(d.what_if),
        "rejected": d.rejected,
        "candidates_scored": d.candidates_scored,
        "chosen": d.chosen,
        "hold": d.hold,
        "expected_saving_kw": d.expected_saving_kw,
        "it_change_set_aside_kw": d.it_change_set_aside_kw,
        "objective": d.objective,
        "degraded_inputs": list(d.degraded_inputs),
        "model_version": d.model_version,
        "interval_level": d.interval_level,
        "interval_coverage": dict(d.interval_coverage),
        "actuation": d.actuation,
    }


def render(decision: Decision) -> str:
    """The human-readable explanation."""
    d = decision
    out = [d.summary(), ""]
    if d.binding:
        out.append("what bound the choice:")
        out.extend(f"  - {b}" for b in d.binding)
    if d.rejected:
        out.append(f"candidates scored: {d.candidates_scored}; rejected by first failing check: "
                   + ", ".join(f"{k} {v}" for k, v in d.rejected.items()))
    if d.gate_adjustments:
        out.append("safety gate changes:")
        out.extend(f"  - {a}" for a in d.gate_adjustments)
    if d.hot_guard:
        out.append("hot guard active: rack inlet near the limit or unknown, only cooling-increasing moves allowed")
    if d.objective:
        out.append(f"objective: lowest predicted {'cooling + IT' if d.objective == 'facility' else 'cooling'} power")
    if d.interval_coverage:
        level = f"{d.interval_level:.0%} " if d.interval_level is not None else ""
        out.append(f"{level}intervals covered (last week's matured forecasts): "
                   + ", ".join(f"{t} {c:.0%}" for t, c in d.interval_coverage.items()))
    if d.degraded_inputs:
        out.append("ran without suspect inputs (masked for the model): " + ", ".join(d.degraded_inputs))
    runner_ups = _distinct(d.runner_ups)
    if runner_ups:
        out += ["", "runner-up candidates:", f"  {'setpoints [C]':<34} {'power kW':>9} {'inlet C':>8} {'inlet+hi':>8}"]
        for r in runner_ups:
            out.append(f"  {_vector(r['setpoints']):<34} {_f(r.get('cooling_power_kw'), 1):>9} "
                       f"{_f(r.get('rack_inlet_max_c')):>8} {_f(r.get('rack_inlet_hi_c')):>8}")
    if d.what_if:
        base = d.chosen.cooling_power_kw if d.chosen is not None else math.nan
        out += ["", "what if (each setpoint moved by one step from the emitted setpoints):",
                f"  {'move':<24} {'power kW':>9} {'vs new':>8} {'inlet C':>8} {'inlet hi':>8}"]
        for r in d.what_if:
            label = f"{r['role']} {float(r['step_k']):+.2f} K"
            power = r.get("cooling_power_kw")
            delta = None if power is None else float(power) - base
            out.append(f"  {label:<24} {_f(power, 1):>9} {_f(delta, 1):>8} {_f(r.get('rack_inlet_max_c')):>8} "
                       f"{_f(r.get('rack_inlet_hi_c')):>8}")
    elif d.outcome == "fallback":
        out += ["", "no what-if table: the model was not usable for this cycle"]
    return "\n".join(out)
