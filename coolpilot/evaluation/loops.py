"""The closed loops of an evaluation: one frame per controller, CoolPilot through the real cycle.

``run_frame`` drives a plant record by record under a control callable; ``CoolPilotLoop``
is CoolPilot's control (historian write, ``controller.cycle.run_cycle``, actuation);
``baseline_control`` the rule presets and the oracle behind the same safety gate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
import pandas as pd

from controller.bounds import SetpointEnvelope
from controller.config import Config
from controller.decision import Decision
from controller.rules import Preset, TunedRules
from controller.service.forecast_check import CalibrationFeed
from controller.service.unfamiliar import UnfamiliarWatch, held_unfamiliar
from coolpilot.evaluation import kpis as ev
from db.roles import MEASUREMENT_ROLES
from simulator.plant import Plant, SteadyStatePlant


def run_frame(plant: Plant, control: Callable[[], None], records: int) -> tuple[pd.DataFrame, dict[str, float]]:
    """Drive ``records`` record intervals; one row per record.

    Row t: the noise-free values at t where the plant offers them (``true_record``), else
    its readings; the setpoints in force after ``control`` decided at t; and the energy
    booked over [t, t + interval) where the plant keeps exact totals (the twin's
    ``totals()``, EnergyPlus's ``energy_kwh()``; differenced per record) [kWh]. Also
    returns the setpoints in force before the first record.
    """
    from coolpilot.harness.sim_bridge import plant_energy_totals

    initial = dict(plant.setpoints())
    true_record = getattr(plant, "true_record", None)
    keys = (*ev.ENERGY_COLUMNS, ev.OTHER_ENERGY)
    times: list[datetime] = []
    rows: list[dict[str, float]] = []
    for _ in range(records):
        times.append(plant.now)
        truth = true_record() if callable(true_record) else plant.read()
        before = plant_energy_totals(plant)
        control()
        row = {r: float(truth.get(r, math.nan)) for r in MEASUREMENT_ROLES if r in truth}
        row.update(plant.setpoints())
        plant.advance(plant.record_interval_s)
        after = plant_energy_totals(plant) if before is not None else None
        if before is not None and after is not None:
            row.update({k: after[k] - before.get(k, 0.0) for k in keys if k in after})
        rows.append(row)
    index = pd.DatetimeIndex(pd.to_datetime(times, utc=True), name="time")
    return pd.DataFrame(rows, index=index, dtype=np.float64), initial


class CoolPilotLoop:
    """CoolPilot's control for `run_frame`: historian write, the real cycle, actuation.

    Each record goes to the database through ``write_wide`` (as a site historian would),
    then ``run_cycle`` reads it back through ``InternalSource``, decides, records the
    decision and applies what the actuator delivered to the plant.
    """

    def __init__(self, plant: Plant, engine: Any, config: Config, forecaster: Any, *,
                 retrain: Callable[[], Any] | None = None, retrain_every_s: float = 86400.0) -> None:
        """``retrain``: the daemon's nightly retraining (a ``Retrainer``), run every
        ``retrain_every_s`` of plant time from the window's start, so that CoolPilot learns
        from the periods it controlled; the champion provider picks up a promoted model."""
        from controller.service.actuators import DbActuator
        from controller.service.recorder import DecisionRecorder
        from coolpilot.harness.sim_bridge import PlantActuator
        from db.historian import InternalSource

        self.plant, self.engine, self.config, self.forecaster = plant, engine, config, forecaster
        self.source = InternalSource(engine, config.site_id)
        self.recorder = DecisionRecorder(engine, config.site_id)
        self.actuator = PlantActuator(plant, DbActuator(engine, config.site_id, retries=0))
        self.last_applied: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []
        self.calibration = CalibrationFeed()  # matured forecasts -> the model's online calibration
        self._recent: deque[pd.DataFrame] = deque(maxlen=48)  # the last 4 h of records written
        self.retrain, self.retrain_every_s = retrain, retrain_every_s
        self._next_retrain: datetime | None = None
        self.retrainings: list[dict[str, Any]] = []  # one entry per retraining: when, why, version, promoted
        self.unfamiliar = UnfamiliarWatch()  # the daemon's retraining request when the model keeps saying `ood`

    def __call__(self) -> None:
        from controller.cycle import run_cycle
        from coolpilot.harness.sim_bridge import plant_record
        from db.ingest import write_wide

        self._maybe_retrain()
        record = plant_record(self.plant)
        write_wide(self.engine, record, self.config.site_id)
        d = run_cycle(self.config, self.source, self.forecaster, self.actuator, self.recorder,
                      lambda: self.plant.now, dict(self.last_applied))
        self.last_applied.update(d.sent)
        if self.unfamiliar.observe(d.model_version, held_unfamiliar(d), self.config.retraining.unfamiliar_after,
                                   self.config.retraining.unfamiliar_retry_after):
            self._retrain("unfamiliar")
        row = _decision_row(d)
        row.update(self._calibrate(record, d))
        self.rows.append(row)

    def _maybe_retrain(self) -> None:
        """Retrain once every ``retrain_every_s`` of plant time, on history that includes CoolPilot's own."""
        if self.retrain is None or self.retrain_every_s <= 0:
            return
        now = self.plant.now
        if self._next_retrain is None:
            self._next_retrain = now + timedelta(seconds=self.retrain_every_s)
            return
        if now < self._next_retrain:
            return
        self._next_retrain = now + timedelta(seconds=self.retrain_every_s)
        self._retrain("schedule")

    def _retrain(self, trigger: str) -> None:
        """One retraining now (``trigger``: schedule | unfamiliar), recorded in ``retrainings``."""
        if self.retrain is None or self.retrain_every_s <= 0:
            return
        now = self.plant.now
        outcome = self.retrain()
        self.retrainings.append({"ts": now.isoformat(), "trigger": trigger, "ok": bool(getattr(outcome, "ok", False)),
                                 "version": getattr(outcome, "version", None),
                                 "promoted": bool(getattr(outcome, "promoted", False)),
                                 "reason": getattr(outcome, "reason", None) or getattr(outcome, "error", None),
                                 "seconds": float(getattr(outcome, "duration_s", math.nan))})

    def _calibrate(self, record: pd.DataFrame, d: Decision) -> dict[str, float]:
        """Mature forecasts against the records written, as the daemon does; the rolling coverage per target."""
        self._recent.append(record)
        model = getattr(self.forecaster, "current", self.forecaster)
        cal = getattr(model, "calibration", None)
        if cal is None:
            return {}
        self.calibration.add(d.ts, model, d.chosen)
        frame = pd.concat(list(self._recent))
        self.calibration.mature(frame, pd.Timestamp(frame.index[-1]).to_pydatetime(), model)
        return {f"interval_coverage_{t}": math.nan if c is None else c for t, c in cal.coverage().items()}

    def decisions(self) -> pd.DataFrame:
        """One row per cycle: outcome, reason code, predictions for the emitted setpoints, duration [s]."""
        index = pd.DatetimeIndex(pd.to_datetime([r["ts"] for r in self.rows], utc=True), name="time")
        return pd.DataFrame([{k: v for k, v in r.items() if k != "ts"} for r in self.rows], index=index)


def _decision_row(d: Decision) -> dict[str, Any]:
    chosen = d.chosen

    def pick(name: str) -> float:
        value = getattr(chosen, name, math.nan) if chosen is not None else math.nan
        return float(value) if isinstance(value, int | float) else math.nan

    return {"ts": d.ts, "outcome": d.outcome, "reason_code": d.reason_code,
            "objective": getattr(d, "objective", None),
            "degraded_inputs": len(getattr(d, "degraded_inputs", ()) or ()),
            "interval_level": d.interval_level if d.interval_level is not None else math.nan,
            "predicted_cooling_power_kw": pick("cooling_power_kw"),
            "predicted_cooling_power_lo_kw": pick("cooling_power_lo_kw"),
            "predicted_cooling_power_hi_kw": pick("cooling_power_hi_kw"),
            "predicted_it_power_kw": pick("it_power_kw"),
            "predicted_it_power_lo_kw": pick("it_power_lo_kw"),
            "predicted_it_power_hi_kw": pick("it_power_hi_kw"),
            "predicted_rack_inlet_max_c": pick("rack_inlet_max_c"),
            "predicted_rack_inlet_lo_c": pick("rack_inlet_lo_c"),
            "predicted_rack_inlet_hi_c": pick("rack_inlet_hi_c"),
            "duration_s": d.duration_s if d.duration_s is not None else math.nan}


def baseline_control(name: str, plant: Plant, envelope: SetpointEnvelope, rack_inlet_limit_c: float, *,
                     tuned: TunedRules | None = None) -> Callable[[], None] | str:
    """A `run_frame` control for a rule preset, the oracle or the plant's own controls, or
    why that controller cannot run.

    The rules decide only the setpoints the plant has, with ``tuned`` as the tuned
    preset's constants. The oracle searches the plant's own steady-state model, so it
    runs only on a ``simulator.plant.SteadyStatePlant``; ``own_controls`` only on a plant
    built to keep its own controls (an EnergyPlus plant with ``own_controls``), where it
    applies nothing. Otherwise this returns the note that the summary keeps under
    ``skipped``.
    """
    from coolpilot.harness.history import rules_decide
    from coolpilot.harness.oracle import oracle_decide

    if name == "own_controls":
        if not getattr(plant, "own_controls", False):
            return (f"the plant ({type(plant).__name__}) has no controls of its own to keep "
                    "(only EnergyPlus models built with own_controls do)")
        return lambda: None
    if name != "oracle":
        return _applying(plant, rules_decide(cast(Preset, name), envelope, tuned=tuned,
                                             rack_inlet_limit_c=rack_inlet_limit_c))
    if not isinstance(plant, SteadyStatePlant):
        return (f"the plant ({type(plant).__name__}) does not implement simulator.plant.SteadyStatePlant: "
                "it has no steady_state() model for the oracle to search")
    return _applying(plant, oracle_decide(plant, envelope, rack_inlet_limit_c))


def _applying(plant: Plant,
              decide: Callable[[dict[str, float], dict[str, float]], dict[str, float]]) -> Callable[[], None]:
    """A `run_frame` control that applies a decide function's setpoints to the plant."""

    def control() -> None:
        plant.apply(decide(plant.read(), plant.setpoints()))

    return control
