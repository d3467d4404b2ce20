"""The record of one control cycle: what it saw, chose, predicted and why.

Why one dataclass: the same object is written as the decision row, printed by
``coolpilot decide``, rebuilt by ``coolpilot explain`` and read by the daemon to set
metrics, so the four can never disagree. Temperatures in C, powers in kW.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from db.jsonable import jsonable
from db.roles import SETPOINT_ROLES

Outcome = Literal["optimised", "fallback", "manual", "hold"]
#: Every outcome a decision can have, in display order (the metrics label decisions by these names).
OUTCOMES: tuple[Outcome, ...] = ("optimised", "hold", "fallback", "manual")

#: Why the rules decided (``Decision.reason_code``); the metrics label fallbacks by these.
REASON_CODES: tuple[str, ...] = (
    "bad_data",  # missing, stale or out-of-range inputs
    "no_model",  # no trained model yet
    "model_error",  # the model could not be loaded, raised, returned non-finite values or drifted
    "uncertain",  # predictive interval too wide
    "ood",  # inputs unlike the training data
    "verification_veto",  # the independent safety re-check rejected the proposal (or the rack inlet is at the limit)
    "db_error",  # history could not be read
    "mode_rules",  # the operator selected rule-based mode
    "setpoint_unknown",  # a controlled setpoint's current value is unknown: nothing is written
    "other",
)


@dataclass(frozen=True)
class Prediction:
    """The model's view of one setpoint vector: means and central intervals."""

    cooling_power_kw: float
    cooling_power_lo_kw: float
    cooling_power_hi_kw: float
    rack_inlet_max_c: float
    rack_inlet_lo_c: float
    rack_inlet_hi_c: float
    rack_inlet_std_c: float
    cooling_power_std_kw: float
    ood_score: float
    it_power_kw: float = math.nan  # NaN: the model does not forecast IT power
    it_power_lo_kw: float = math.nan
    it_power_hi_kw: float = math.nan
    it_power_std_kw: float = math.nan

    @classmethod
    def from_forecast_row(cls, row: Mapping[str, float]) -> Prediction:
        return cls(**{f.name: float(row.get(f.name, math.nan)) for f in fields(cls)})

    def objective_kw(self, objective: str | None) -> float:
        """The power the decision minimised [kW]: cooling + IT for ``facility``, else cooling."""
        if objective == "facility" and math.isfinite(self.it_power_kw):
            return self.cooling_power_kw + self.it_power_kw
        return self.cooling_power_kw


@dataclass(frozen=True)
class Decision:
    """One cycle's decision; ``new`` is what left the safety gate, ``previous`` its reference."""

    ts: datetime
    site_id: str
    mode: str
    outcome: Outcome
    reason: str
    previous: dict[str, float]
    new: dict[str, float]
    reason_code: str | None = None  # one of REASON_CODES when the rules decided
    model_version: str | None = None
    chosen: Prediction | None = None  # prediction for ``new``
    hold: Prediction | None = None  # prediction for holding ``previous``
    expected_saving_kw: float | None = None  # objective's power over holding, as the search counted it [kW]
    it_change_set_aside_kw: float | None = None  # predicted IT change over holding not counted [kW]
    objective: str | None = None  # facility (cooling + IT) | cooling: what the search minimised
    fallback_held: tuple[str, ...] = ()  # setpoints an unsure fallback held where the rules would warm them
    degraded_inputs: tuple[str, ...] = ()  # suspect non-safety roles the model ran without this cycle
    interval_level: float | None = None
    interval_coverage: dict[str, float] = field(default_factory=dict)  # per target, last week's matured [-]
    verification_ok: bool = True
    violations: tuple[str, ...] = ()  # what the independent check vetoed
    gate_adjustments: tuple[str, ...] = ()  # what the final gate changed
    quality_issues: tuple[str, ...] = ()
    binding: tuple[str, ...] = ()  # constraints that stopped the optimiser going cheaper
    runner_ups: tuple[dict[str, Any], ...] = ()  # {"setpoints": {...}, **prediction}
    what_if: tuple[dict[str, Any], ...] = ()  # {"role", "step_k", "setpoints", **prediction}
    candidates_scored: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)  # latest readings used [units of db.roles]
    rack_inlet_limit_c: float | None = None
    hot_guard: bool = False
    apply: bool = True  # False in advisory mode: decided and recorded, not sent
    actuation: str = "pending"  # pending | sent | failed: ... | not sent (advisory) | skipped ...
    sent: dict[str, float] = field(default_factory=dict)  # setpoints the plant side confirmed [C]
    duration_s: float | None = None
    decision_id: int | None = None

    @property
    def ood_score(self) -> float | None:
        return None if self.chosen is None else self.chosen.ood_score

    def details(self) -> dict[str, Any]:
        """Everything except the row's own columns, JSON-ready (NaN/inf become None)."""
        own = {"ts", "site_id", "mode", "outcome", "reason", "previous", "new", "model_version", "decision_id"}
        return {k: jsonable(v) for k, v in asdict(self).items() if k not in own}

    def to_row(self) -> dict[str, Any]:
        """Column values of the decisions table."""
        return {
            "site_id": self.site_id,
            "ts": self.ts,
            "mode": self.mode,
            "outcome": self.outcome,
            "reason": self.reason,
            "model_version": self.model_version,
            "previous_json": json.dumps(jsonable(self.previous), sort_keys=True),
            "new_json": json.dumps(jsonable(self.new), sort_keys=True),
            "details_json": json.dumps(self.details(), sort_keys=True),
        }

    def to_json(self) -> dict[str, Any]:
        """The whole decision as one JSON-ready object (for ``--json``)."""
        return jsonable({**asdict(self), "ood_score": self.ood_score})  # type: ignore[no-any-return]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Decision:
        """Rebuild a decision from a decisions-table row (what ``explain`` reads)."""
        details = _loads(row.get("details_json"))
        kwargs: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for key, value in details.items():
            if key not in names:
                continue
            if key in ("chosen", "hold") and value is not None:
                value = Prediction(**{k: _num(v) for k, v in value.items()})
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        ts = row["ts"]
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return cls(
            ts=ts, site_id=str(row.get("site") or row["site_id"]), mode=str(row["mode"]), outcome=row["outcome"],
            reason=str(row["reason"]), model_version=row.get("model_version"),
            previous={k: _num(v) for k, v in _loads(row.get("previous_json")).items()},
            new={k: _num(v) for k, v in _loads(row.get("new_json")).items()},
            decision_id=row.get("id"), **kwargs,
        )

    def metrics_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``controller.service.metrics.CoolpilotMetrics.observe_decision``."""
        chosen = self.chosen
        return {
            "mode": self.mode,
            "outcome": self.outcome,
            "ts_s": self.ts.timestamp(),
            "fallback_reason": self.reason_code if self.outcome == "fallback" else None,
            "setpoints_c": dict(self.new),
            "cycle_duration_s": self.duration_s,
            "it_power_kw": _finite_or_none(self.measured.get("it_power_kw")),
            "cooling_power_kw": _finite_or_none(self.measured.get("cooling_power_kw")),
            "cooling_power_pred_kw": None if chosen is None else chosen.cooling_power_kw,
            "cooling_power_pred_lo_kw": None if chosen is None else chosen.cooling_power_lo_kw,
            "cooling_power_pred_hi_kw": None if chosen is None else chosen.cooling_power_hi_kw,
            "interval_level": self.interval_level,
            "rack_inlet_max_c": _finite_or_none(self.measured.get("rack_inlet_max_c")),
            "rack_inlet_pred_hi_c": None if chosen is None else chosen.rack_inlet_hi_c,
            "rack_inlet_limit_c": self.rack_inlet_limit_c,
            "ood_score": self.ood_score,
            "savings_kw": self.expected_saving_kw,
        }

    def summary(self) -> str:
        """Human-readable lines for ``coolpilot decide``."""
        lines = [
            f"{self.ts.isoformat()}  site {self.site_id}  mode {self.mode}  outcome {self.outcome}"
            + (f" ({self.reason_code})" if self.reason_code else ""),
            f"reason: {self.reason}",
        ]
        for role in SETPOINT_ROLES:
            if role not in self.previous and role not in self.new:
                continue  # not a setpoint this site controls
            old, new = self.previous.get(role, math.nan), self.new.get(role, math.nan)
            move = f"({new - old:+.2f} K)" if math.isfinite(old) and math.isfinite(new) else ""
            lines.append(f"  {role:<18} {_temp(old)} -> {_temp(new)}  {move}".rstrip())
        if self.chosen is not None:
            c = self.chosen
            lines.append(
                f"predicted cooling power {c.cooling_power_kw:.1f} kW [{c.cooling_power_lo_kw:.1f}, "
                f"{c.cooling_power_hi_kw:.1f}], rack inlet max {c.rack_inlet_max_c:.2f} C "
                f"[{c.rack_inlet_lo_c:.2f}, {c.rack_inlet_hi_c:.2f}], OOD {c.ood_score:.2f}"
            )
            if math.isfinite(c.it_power_kw):
                lines.append(f"predicted IT power {c.it_power_kw:.1f} kW [{c.it_power_lo_kw:.1f}, "
                             f"{c.it_power_hi_kw:.1f}]")
        if self.expected_saving_kw is not None:
            what = "cooling + IT" if self.objective == "facility" else "cooling"
            lines.append(f"expected saving over holding: {self.expected_saving_kw:.1f} kW ({what} power)")
        if self.it_change_set_aside_kw:
            lines.append(f"predicted IT change not counted (not resolved, or against the inlet's move): "
                         f"{self.it_change_set_aside_kw:+.1f} kW")
        if self.degraded_inputs:
            lines.append("model ran without suspect inputs: " + ", ".join(self.degraded_inputs))
        if not self.verification_ok:
            lines.append("verification veto: " + "; ".join(self.violations))
        if self.quality_issues:
            lines.append("data quality: " + "; ".join(self.quality_issues))
        lines.append(f"model {self.model_version or 'none'}; actuation: {self.actuation}")
        return "\n".join(lines)


def _temp(value: float) -> str:
    """A temperature for display: 'unknown' rather than 'nan'."""
    return f"{value:7.2f} C" if math.isfinite(value) else "unknown"


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _loads(text: Any) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    loaded = json.loads(text)
    return loaded if isinstance(loaded, dict) else {}
