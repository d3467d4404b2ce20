"""Publishing the CoolPilot daemon's metrics: what each event sets, on a registry the caller owns.

Operators judge an autonomous controller by what it exposes: what it decided, why it
fell back to rules, how good its forecasts turned out, how much it saved and whether
it is alive. The series themselves (names, units, label sets) are
`controller.service.metric_series`; `CoolpilotMetrics` adds the methods the daemon
calls. Label values come only from bounded sets (a value outside one is counted under
``other``, or not at all, with a warning: metrics must never stop the control loop).
Values arrive in the controller's units (kW, C) and are converted here.

`serve` exposes a registry over HTTP on 127.0.0.1 by default and returns a handle
with a clean shutdown.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server

from controller.bounds import SetpointEnvelope
from controller.config import MODES
from controller.decision import REASON_CODES
from controller.service.metric_series import OUTCOMES, RETRAINING_REASONS, MetricSeries
from db.roles import SETPOINT_ROLES, pue

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9109

_W_PER_KW = 1000.0
_NAN = float("nan")


@dataclass(frozen=True)
class CycleObservation:
    """What one control cycle observed and chose, in controller units (kW, C, s).

    ``None`` means "not available this cycle" (e.g. no forecast in fallback) and shows
    as NaN, so dashboards show a gap rather than a stale value. ``fallback_reason``
    is ``None`` when the optimiser's setpoints were used.
    """

    mode: str
    outcome: str
    ts_s: float  # end of the cycle [s since the Unix epoch]
    fallback_reason: str | None = None
    setpoints_c: Mapping[str, float] = field(default_factory=dict)  # the cycle's new setpoints [C]
    cycle_duration_s: float | None = None  # wall time of the cycle [s]
    cycle_period_s: float | None = None  # time until the next cycle [s]; default: the constructor's
    it_power_kw: float | None = None  # measured [kW]
    cooling_power_kw: float | None = None  # measured [kW]
    facility_power_kw: float | None = None  # measured by a facility meter [kW]; None: no meter (IT + cooling)
    pue_measured: float | None = None  # [-]; derived from the powers when None (`db.roles.pue`)
    pue_predicted: float | None = None  # [-]; derived from the powers with the cooling forecast when None
    cooling_power_pred_kw: float | None = None  # forecast mean for the chosen setpoints [kW]
    cooling_power_pred_lo_kw: float | None = None  # lower interval bound [kW]
    cooling_power_pred_hi_kw: float | None = None  # upper interval bound [kW]
    interval_level: float | None = None  # central interval level, e.g. 0.9 [-]
    rack_inlet_max_c: float | None = None  # measured hottest rack inlet [C]
    rack_inlet_pred_hi_c: float | None = None  # upper bound of the forecast max [C]
    rack_inlet_limit_c: float | None = None  # the configured hard limit [C]
    ood_score: float | None = None  # [-], < 1 like the training data
    savings_kw: float | None = None  # predicted rules power minus chosen power [kW], signed
    savings_lo_kw: float | None = None  # lower bound of its interval [kW]
    savings_hi_kw: float | None = None  # upper bound of its interval [kW]


_OBSERVATION_FIELDS = frozenset(f.name for f in dataclasses.fields(CycleObservation))



def _opt(value: float | None, scale: float = 1.0) -> float:
    return _NAN if value is None else float(value) * scale


class CoolpilotMetrics(MetricSeries):
    """Every CoolPilot series (`MetricSeries`) and the methods the daemon calls to set them.

    ``cycle_period_s``: the default control period [s], for the savings energy
    counter when an observation does not give its own.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        modes: Iterable[str] = MODES,
        outcomes: Iterable[str] = OUTCOMES,
        fallback_reasons: Iterable[str] = REASON_CODES,
        setpoint_roles: Iterable[str] = SETPOINT_ROLES,
        cycle_period_s: float | None = None,
        build_version: str | None = None,
    ) -> None:
        super().__init__(registry, modes=modes, outcomes=outcomes, fallback_reasons=fallback_reasons,
                         setpoint_roles=setpoint_roles, build_version=build_version)
        self.cycle_period_s = cycle_period_s
        self._warned: set[tuple[str, str]] = set()
        self.interval_coverage = self._gauge(
            "coolpilot_prediction_interval_coverage_ratio",
            "Share of the model's matured forecasts (last week, per target) inside the interval they were "
            "issued with; kept near the interval level by online calibration [ratio]", ["target"])
        self.retention_partitions = self._counter(
            "coolpilot_retention_dropped_partitions",
            "Monthly readings partitions dropped by the daily retention job (PostgreSQL) [1]")
        self.retention_rows = self._counter(
            "coolpilot_retention_deleted_rows",
            "Reading rows deleted by the daily retention job (SQLite; PostgreSQL's default partition) [1]")
        self.retention_last = self._gauge(
            "coolpilot_retention_last_success_timestamp_seconds",
            "End of the last successful retention run; NaN until one ran [s since epoch]")
        self.retention_last.set(_NAN)

    def _bounded(self, kind: str, value: str, allowed: tuple[str, ...]) -> str | None:
        if value in allowed:
            return value
        fallback = "other" if "other" in allowed else None
        if (kind, value) not in self._warned:
            self._warned.add((kind, value))
            log.warning("metrics: unknown %s %r (allowed: %s); counted as %s",
                        kind, value, ", ".join(allowed), fallback or "nothing")
        return fallback

    # -- the control cycle ------------------------------------------------------------
    def observe_decision(self, decision: CycleObservation | Mapping[str, Any] | None = None, /,
                         **values: Any) -> None:
        """Record one control cycle: a `CycleObservation`, a mapping of its fields, or keywords.

        Unknown keys raise `TypeError` naming them (a typo would otherwise hide a series).
        """
        d = _as_observation(decision, values)
        mode = self._bounded("mode", d.mode, self.modes)
        for m in self.modes:
            self.mode.labels(mode=m).set(1.0 if m == mode else 0.0)
        outcome = self._bounded("outcome", d.outcome, self.outcomes)
        if outcome is not None:
            self.decisions.labels(outcome=outcome).inc()
        reason = None if d.fallback_reason is None else self._bounded(
            "fallback reason", d.fallback_reason, self.fallback_reasons)
        self.fallback_active.set(0.0 if d.fallback_reason is None else 1.0)
        for r in self.fallback_reasons:
            self.fallback_reason.labels(reason=r).set(1.0 if r == reason else 0.0)
        if reason is not None:
            self.fallbacks.labels(reason=reason).inc()
        for role in self.setpoint_roles:
            self.setpoint.labels(role=role).set(_opt(d.setpoints_c.get(role)))
        unknown_roles = set(d.setpoints_c) - set(self.setpoint_roles)
        for role in sorted(unknown_roles):
            self._bounded("setpoint role", role, self.setpoint_roles)

        period_s = self.cycle_period_s if d.cycle_period_s is None else d.cycle_period_s
        self._observe_power(d, period_s)
        self.cooling_pred.set(_opt(d.cooling_power_pred_kw, _W_PER_KW))
        self.cooling_pred_lo.set(_opt(d.cooling_power_pred_lo_kw, _W_PER_KW))
        self.cooling_pred_hi.set(_opt(d.cooling_power_pred_hi_kw, _W_PER_KW))
        self.interval_level.set(_opt(d.interval_level))
        self.rack_inlet.set(_opt(d.rack_inlet_max_c))
        self.rack_inlet_limit.set(_opt(d.rack_inlet_limit_c))
        limit = d.rack_inlet_limit_c
        self.rack_margin.set(_NAN if limit is None or d.rack_inlet_max_c is None else limit - d.rack_inlet_max_c)
        self.rack_margin_pred.set(
            _NAN if limit is None or d.rack_inlet_pred_hi_c is None else limit - d.rack_inlet_pred_hi_c)
        self.ood.set(_opt(d.ood_score))
        self._observe_savings(d, period_s)
        if d.cycle_duration_s is not None:
            self.cycle_duration.observe(d.cycle_duration_s)
        if d.outcome != "error":
            self.last_cycle.set(d.ts_s)

    def _observe_power(self, d: CycleObservation, period_s: float | None) -> None:
        """Measured power, energy and PUE (one definition: `db.roles.pue`), and the estimated PUE."""
        it, cooling, metered = d.it_power_kw, d.cooling_power_kw, d.facility_power_kw
        self.it_power.set(_opt(it, _W_PER_KW))
        self.cooling_power.set(_opt(cooling, _W_PER_KW))
        facility = metered if metered is not None else (
            None if it is None or cooling is None else it + cooling)
        self.facility_power.set(_opt(facility, _W_PER_KW))
        self.facility_metered.set(1.0 if metered is not None else 0.0)
        pue_measured = d.pue_measured
        if pue_measured is None and it is not None and cooling is not None:
            pue_measured = pue(it, cooling, metered)
        self.pue.set(_opt(pue_measured))
        pue_predicted = d.pue_predicted
        if pue_predicted is None and it is not None and d.cooling_power_pred_kw is not None:
            other_kw = metered - it - cooling if metered is not None and cooling is not None else 0.0
            pue_predicted = pue(it, d.cooling_power_pred_kw, other_losses_kw=other_kw)
        self.pue_pred.set(_opt(pue_predicted))
        if period_s is None or period_s <= 0:
            return
        for counter, kw in ((self.it_energy, it), (self.cooling_energy, cooling), (self.facility_energy, facility)):
            if kw is not None and math.isfinite(kw) and kw >= 0:
                counter.inc(kw * _W_PER_KW * period_s)

    def _observe_savings(self, d: CycleObservation, period_s: float | None) -> None:
        """The model's signed savings estimate against the rules and its bounds; energies add them up."""
        values = (d.savings_kw, d.savings_lo_kw, d.savings_hi_kw)
        for gauge, kw in zip((self.savings, self.savings_lo, self.savings_hi), values, strict=True):
            gauge.set(_opt(kw, _W_PER_KW))
        if period_s is None or period_s <= 0 or d.savings_kw is None or not math.isfinite(d.savings_kw):
            return
        lo = d.savings_kw if d.savings_lo_kw is None else d.savings_lo_kw
        hi = d.savings_kw if d.savings_hi_kw is None else d.savings_hi_kw
        for gauge, kw in zip((self.savings_energy, self.savings_energy_lo, self.savings_energy_hi),
                             (d.savings_kw, lo, hi), strict=True):
            if math.isfinite(kw):
                gauge.inc(kw * _W_PER_KW * period_s)

    def set_data_age(self, age_s: float) -> None:
        """Age of the newest plant row the cycle used [s]."""
        self.data_age.set(age_s)

    def set_envelope(self, envelope: SetpointEnvelope) -> None:
        """Publish the operator's setpoint bounds (at start and after each reload)."""
        for role in self.setpoint_roles:
            b = envelope.bounds(role)
            self.setpoint_min.labels(role=role).set(b.min_c)
            self.setpoint_max.labels(role=role).set(b.max_c)

    def observe_matured_forecast(
        self, actual_kw: float, predicted_kw: float, lo_kw: float | None = None, hi_kw: float | None = None
    ) -> None:
        """Compare a forecast with what happened once its horizon has passed [kW]."""
        if not (math.isfinite(actual_kw) and math.isfinite(predicted_kw)):
            return
        self.forecast_error.set((actual_kw - predicted_kw) * _W_PER_KW)
        if actual_kw <= 0:  # no relative error; keeps misses/count a coverage ratio
            return
        self.forecast_rel_error.observe(abs(actual_kw - predicted_kw) / actual_kw)
        if lo_kw is not None and hi_kw is not None and not lo_kw <= actual_kw <= hi_kw:
            self.forecast_misses.inc()

    def set_interval_coverage(self, coverage: Mapping[str, float | None]) -> None:
        """Rolling interval coverage per forecast target [ratio] (None: nothing matured yet)."""
        for target, value in coverage.items():
            self.interval_coverage.labels(target=target).set(_opt(value))

    def set_forecast_drift(self, recent_error: float | None, active: bool) -> None:
        """The model's recent mean relative forecast error [-] and whether it is withdrawn for drift."""
        self.forecast_recent_error.set(_opt(recent_error))
        self.forecast_drift.set(1.0 if active else 0.0)

    def retraining_requested(self, reason: str) -> None:
        """Count a training run the daemon asked for outside the schedule (``RETRAINING_REASONS``)."""
        label = self._bounded("retraining reason", reason, RETRAINING_REASONS)
        if label is not None:
            self.retraining_requests.labels(reason=label).inc()

    # -- training, model, config, errors ----------------------------------------------
    def observe_training(
        self,
        ok: bool,
        ts_s: float,
        duration_s: float,
        *,
        val_cooling_power_mae_kw: float | None = None,
        val_rack_inlet_mae_c: float | None = None,
    ) -> None:
        """Record a finished training run; ``ts_s`` is its end [s since epoch]."""
        self.training_runs.labels(result="success" if ok else "failure").inc()
        self.training_duration.set(duration_s)
        if ok:
            self.training_failures.set(0)
            self.last_training.set(ts_s)
            self.val_cooling_mae.set(_opt(val_cooling_power_mae_kw, _W_PER_KW))
            self.val_rack_mae.set(_opt(val_rack_inlet_mae_c))
        else:
            self.training_failures.inc()

    def set_model_info(self, version: str, kind: str = "ensemble", trained_ts_s: float | None = None) -> None:
        """Publish the model now in use (its registry version label is replaced)."""
        self.model_info.info({"version": version, "kind": kind})
        self.model_trained.set(_opt(trained_ts_s))

    def observe_reload(self, ok: bool, ts_s: float) -> None:
        """Record a configuration (re)load at ``ts_s`` [s since epoch]."""
        self.reload_ok.set(1 if ok else 0)
        self.reloads.labels(result="success" if ok else "failure").inc()
        if ok:
            self.reload_ts.set(ts_s)

    def db_error(self) -> None:
        self.db_errors.inc()

    def actuator_error(self) -> None:
        self.actuator_errors.inc()

    def observe_retention(self, partitions_dropped: int, rows_deleted: int, ts_s: float) -> None:
        """Count what one successful retention run removed; ``ts_s`` is its end [s since epoch]."""
        self.retention_partitions.inc(partitions_dropped)
        self.retention_rows.inc(rows_deleted)
        self.retention_last.set(ts_s)


def _as_observation(decision: CycleObservation | Mapping[str, Any] | None,
                    values: Mapping[str, Any]) -> CycleObservation:
    if isinstance(decision, CycleObservation):
        return dataclasses.replace(decision, **values) if values else decision
    merged = {**(decision or {}), **values}
    unknown = sorted(set(merged) - _OBSERVATION_FIELDS)
    if unknown:
        raise TypeError(f"observe_decision: unknown field(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(_OBSERVATION_FIELDS))}")
    missing = sorted(k for k in ("mode", "outcome", "ts_s") if k not in merged)
    if missing:
        raise TypeError(f"observe_decision: missing required field(s) {', '.join(missing)}")
    return CycleObservation(**merged)


class MetricsServer:
    """A running /metrics HTTP server; `shutdown` stops it and frees the port."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port = int(self._httpd.server_port)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout_s)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve(registry: CollectorRegistry, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> MetricsServer:
    """Serve ``registry`` on http://host:port/metrics (port 0 picks a free one).

    Loopback by default: expose it beyond the host only on purpose (see docs/deploy.md).
    """
    return MetricsServer(host, port, registry)
