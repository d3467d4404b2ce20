"""From one cycle's decision to the daemon's metrics: every series an operator watches.

Why apart from the daemon: this is the one place that says what each metric means
in terms of a `Decision` (mode, fallback, setpoints, predictions, margins, savings
against the rules, data age, errors, the model in use, and how forecasts made a
horizon ago turned out), so the daemon loop stays about scheduling and signals.

"Savings against the rules" is an estimate, not a measurement: the model's predicted
cooling power for what the rules would have emitted this cycle (through the same
safety gate) minus its prediction for the chosen setpoints, signed (negative when the
choice is predicted to cost more); 0 when the rules decided. Its interval combines the
two forecasts' intervals as if their errors were independent, which is conservative:
both come from one model, so their errors largely cancel in the difference.

Health timestamps (last good cycle) are wall-clock time from the injected
``wall_clock``; the data (readings, decision times, data age) stays in plant time,
which in the demo runs accelerated and in the past.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from controller.cycle import model_state
from controller.decision import Decision
from controller.rules import rule_setpoints
from controller.safety import gate
from controller.seams import ReadingSource, Recorder
from controller.service.forecast_check import (
    COOLING,
    CalibrationFeed,
    DriftCheck,
    ForecastLedger,
    PendingForecast,
    anchor_row,
)
from controller.service.metrics import CoolpilotMetrics
from db.engine import DatabaseError
from db.grid import GRID, GRID_FREQ
from db.roles import REQUIRED_MEASUREMENT_ROLES, SETPOINT_ROLES
from forecasting.protocol import Forecaster

log = logging.getLogger(__name__)

FACILITY = "facility_power_kw"


class RecordingSource:
    """Passes reads through and keeps the cycle's frame (for data age and matured forecasts)."""

    def __init__(self, inner: ReadingSource) -> None:
        self.inner = inner
        self.frame: pd.DataFrame | None = None

    def read_wide(self, roles: Any, start: datetime, end: datetime, freq: str = GRID_FREQ) -> Any:
        self.frame = None
        wide = self.inner.read_wide(roles, start, end, freq)
        self.frame = wide.frame
        return wide

    def latest_timestamp(self) -> datetime | None:
        """The inner source's newest reading time (the cycle's clock check), None if it cannot tell."""
        latest: Callable[[], Any] | None = getattr(self.inner, "latest_timestamp", None)
        value = latest() if callable(latest) else None
        return value if isinstance(value, datetime) else None


def latest_row(frame: pd.DataFrame | None, column: str | None = None) -> datetime | None:
    """The newest grid row holding any reading (of ``column`` if given), None when empty."""
    if frame is None or frame.empty:
        return None
    if column is not None and column not in frame.columns:
        return None
    part = frame[[column]] if column is not None else frame
    has = part.notna().any(axis=1).to_numpy()
    if not has.any():
        return None
    stamp: datetime = pd.Timestamp(frame.index[np.flatnonzero(has)[-1]]).to_pydatetime()
    return stamp


@dataclass(frozen=True)
class SavingsEstimate:
    """The model's estimated saving against the rules [kW], signed, with its interval [kW]."""

    kw: float
    lo_kw: float
    hi_kw: float

    @classmethod
    def of(cls, rules_kw: float, rules_lo_kw: float, rules_hi_kw: float, chosen_kw: float, chosen_lo_kw: float,
           chosen_hi_kw: float) -> SavingsEstimate:
        """Rules minus chosen; each bound adds the two forecasts' half-widths in quadrature."""
        kw = rules_kw - chosen_kw
        below = math.hypot(rules_kw - rules_lo_kw, chosen_hi_kw - chosen_kw)
        above = math.hypot(rules_hi_kw - rules_kw, chosen_kw - chosen_lo_kw)
        return cls(kw, kw - below, kw + above)


NO_SAVING = SavingsEstimate(0.0, 0.0, 0.0)


def rules_setpoints_for(config: Any, decision: Decision) -> dict[str, float] | None:
    """What the rules would have emitted this cycle (through the same gate), or None."""
    previous = decision.previous
    if any(r not in previous or not math.isfinite(previous[r]) for r in SETPOINT_ROLES):
        return None
    env = config.envelope()
    readings = {**dict.fromkeys(REQUIRED_MEASUREMENT_ROLES, math.nan), **decision.measured, **previous}
    proposal = rule_setpoints(config.cycle.fallback_preset, readings, env)
    return gate(proposal, previous, env, pins=config.pins(), hot_guard=decision.hot_guard).setpoints


class CyclePublisher:
    """Sets the metrics of each cycle; keeps the forecasts that wait for their horizon.

    ``source`` is the cycle's `RecordingSource`; ``forecaster`` the daemon's model
    source (its ``info``, when it has one, names the model in use); ``period_s`` the
    plant time per cycle [s] (for the energy series); ``wall_clock`` the time of the
    health timestamps [s since epoch].
    """

    def __init__(self, metrics: CoolpilotMetrics, source: RecordingSource, forecaster: Any, recorder: Recorder,
                 period_s: float, wall_clock: Callable[[], float] = time.time) -> None:
        self.metrics, self.source, self.forecaster, self.recorder = metrics, source, forecaster, recorder
        self.period_s = period_s
        self.wall_clock = wall_clock
        self.ledger = ForecastLedger()
        self.drift = DriftCheck()
        self.calibration_feed = CalibrationFeed()
        self._drift_version: str | None = None
        self._published_model: str | None = None

    def publish(self, config: Any, decision: Decision, model: Forecaster | None) -> float | None:
        """All metrics of one decision; returns the savings estimate against the rules [kW]."""
        m = self.metrics
        estimate = self.savings_estimate(config, decision, model)
        fields = decision.metrics_fields()
        fields.update(cycle_period_s=self.period_s, ts_s=self.wall_clock(),
                      facility_power_kw=self._facility_kw(decision),
                      savings_kw=None if estimate is None else estimate.kw,
                      savings_lo_kw=None if estimate is None else estimate.lo_kw,
                      savings_hi_kw=None if estimate is None else estimate.hi_kw)
        m.observe_decision(**fields)
        newest = self._newest_reading()
        if newest is not None:
            m.set_data_age(max((decision.ts - newest).total_seconds(), 0.0))
        if decision.reason_code == "db_error" or int(getattr(self.recorder, "queued", 0)):
            m.db_error()
        if decision.actuation.startswith("failed"):
            m.actuator_error()
        self._publish_model(model)
        if decision.chosen is not None and model is not None:
            c = decision.chosen
            self.ledger.add(PendingForecast(anchor_row(decision.ts), int(model.horizon_min),
                                            c.cooling_power_kw, c.cooling_power_lo_kw, c.cooling_power_hi_kw))
            self.calibration_feed.add(decision.ts, model, c)
        self._check_forecasts()
        self._check_calibration(model)
        limit = config.thresholds.max_forecast_error_frac
        m.set_forecast_drift(self.drift.mean_error(), self.drift.drifted(limit) is not None)
        return None if estimate is None else estimate.kw

    def _facility_kw(self, decision: Decision) -> float | None:
        """The facility meter's reading of the last 15 minutes [kW], None where the site has no meter.

        The cycle reads it only when the model needs it; otherwise one small read here.
        """
        frame = self.source.frame
        if frame is None or FACILITY not in frame:
            end = pd.Timestamp(anchor_row(decision.ts)) + GRID
            try:
                frame = self.source.inner.read_wide([FACILITY], end - 3 * GRID, end).frame
            except Exception as exc:  # a metric must never fail the cycle
                log.debug("no facility meter reading: %s", exc)
                return None
        if FACILITY not in frame:
            return None
        finite = frame[FACILITY].astype(float).dropna()
        value = float(finite.iloc[-1]) if len(finite) else math.nan
        return value if math.isfinite(value) and value > 0 else None

    def model_drift(self, config: Any, model: Forecaster) -> str | None:
        """Why ``model`` must be withdrawn because its forecasts drifted, or None.

        A new model version starts a fresh check (and forgets the forecasts still
        pending from the one before: they are not the new model's).
        """
        version = str(model.version)
        if version != self._drift_version:
            if self._drift_version is not None:
                self.ledger = ForecastLedger()
            self.drift.reset()
            self._drift_version = version
        self.drift.resize(config.thresholds.forecast_error_window)
        return self.drift.drifted(config.thresholds.max_forecast_error_frac)

    def _newest_reading(self) -> datetime | None:
        """Time of the newest reading: from the source when it can tell, else the window's last row."""
        latest: Callable[[], Any] | None = getattr(self.source.inner, "latest_timestamp", None)
        if callable(latest):
            try:
                value = latest()
            except DatabaseError as exc:
                log.debug("no newest-reading time: %s", exc)
            else:
                return value if isinstance(value, datetime) else None
        return latest_row(self.source.frame)

    def savings_vs_rules(self, config: Any, decision: Decision, model: Forecaster | None) -> float | None:
        """Predicted cooling power of the rules' setpoints minus that of the chosen ones [kW]."""
        estimate = self.savings_estimate(config, decision, model)
        return None if estimate is None else estimate.kw

    def savings_estimate(self, config: Any, decision: Decision, model: Forecaster | None) -> SavingsEstimate | None:
        """The rules' predicted cooling power minus the chosen setpoints', with its interval [kW]."""
        if decision.outcome == "fallback":
            return NO_SAVING  # the rules' setpoints are the ones in use
        frame, chosen = self.source.frame, decision.chosen
        if chosen is None or model is None or frame is None:
            return None
        try:
            rules = rules_setpoints_for(config, decision)
            if rules is None:
                return None
            vector = np.array([[rules[r] for r in SETPOINT_ROLES]], dtype=np.float64)
            f = model.predict(model_state(frame, model), vector)
            estimate = SavingsEstimate.of(float(f.cooling_power_kw[0]), float(f.cooling_power_lo_kw[0]),
                                          float(f.cooling_power_hi_kw[0]), chosen.cooling_power_kw,
                                          chosen.cooling_power_lo_kw, chosen.cooling_power_hi_kw)
        except Exception as exc:  # an estimate for a metric must never fail the cycle
            log.debug("no savings estimate: %s", exc)
            return None
        return estimate if math.isfinite(estimate.kw) else None

    def _publish_model(self, model: Forecaster | None) -> None:
        info = getattr(self.forecaster, "info", None)
        if info is not None:
            if info.version != self._published_model:
                self.metrics.set_model_info(info.version, info.kind, info.trained_ts_s)
                self._published_model = info.version
        elif model is not None and str(model.version) != self._published_model:
            self.metrics.set_model_info(str(model.version), "forecaster")
            self._published_model = str(model.version)

    def _check_calibration(self, model: Forecaster | None) -> None:
        """Feed matured forecasts to the model's online calibration; publish and save it."""
        cal = getattr(model, "calibration", None)
        frame, due = self.source.frame, self.calibration_feed.earliest_due()
        newest = latest_row(frame)
        if cal is None or frame is None or due is None or newest is None or due.matures_at > newest:
            return
        if pd.Timestamp(due.anchor) + GRID < frame.index[0]:  # the window does not reach back to the anchor
            try:
                frame = self.source.inner.read_wide(list(cal.targets), due.anchor, newest + GRID).frame
            except Exception as exc:
                log.warning("cannot read the plant to calibrate forecasts: %s", exc)
                return
        if self.calibration_feed.mature(frame, newest, model):
            self.metrics.set_interval_coverage(cal.coverage())
            save = getattr(self.forecaster, "save_calibration", None)
            if callable(save):
                save()

    def _check_forecasts(self) -> None:
        frame = self.source.frame
        due = self.ledger.earliest_due()
        newest = latest_row(frame, COOLING)
        if due is None or newest is None or frame is None or due.matures_at > newest:
            return
        series = frame[COOLING]
        if pd.Timestamp(due.anchor) + GRID < frame.index[0]:  # the window does not reach back far enough
            try:
                series = self.source.inner.read_wide([COOLING], due.anchor, newest + GRID).frame[COOLING]
            except Exception as exc:
                log.warning("cannot read cooling power to check forecasts: %s", exc)
                return
        for matured in self.ledger.mature(series, newest):
            f = matured.forecast
            self.metrics.observe_matured_forecast(matured.actual_kw, f.mean_kw, f.lo_kw, f.hi_kw)
            self.drift.observe(matured)
