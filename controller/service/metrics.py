"""Prometheus metrics of the CoolPilot daemon, on a registry the caller owns.

Operators judge an autonomous controller by what it exposes: what it decided, why it
fell back to rules, how good its forecasts turned out, how much it saved and whether
it is alive. `CoolpilotMetrics` creates every series once, with base units in the
names (``_watts``, ``_celsius``, ``_seconds``, ``_joules_total``, ``_ratio``) and the unit
in each HELP text, on an injected `CollectorRegistry` (never the global one). Label
values come only from bounded sets (modes, outcomes, fallback reasons, setpoint roles),
and every labelled child is created at start so that series exist before the first
event. Values arrive in the controller's units (kW, C) and are converted here.

`serve` exposes a registry over HTTP on 127.0.0.1 by default and returns a handle
with a clean shutdown.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from controller.bounds import SetpointEnvelope
from db.roles import SETPOINT_ROLES, pue

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9109

#: Operating modes: ``ai`` applies optimised setpoints (config mode ``auto``),
#: ``advisory`` computes them for the operator without applying, ``rules`` is
#: operator-selected rule-based control, ``manual`` holds the operator's pinned setpoints.
MODES: tuple[str, ...] = ("ai", "advisory", "rules", "manual")

#: Why a cycle used rule-based setpoints instead of the optimiser's.
FALLBACK_REASONS: tuple[str, ...] = (
    "bad_data",  # missing, stale or out-of-range inputs
    "no_model",  # no trained model yet
    "model_error",  # the model raised or returned non-finite values
    "uncertain",  # predictive interval too wide
    "ood",  # inputs unlike the training data
    "verification_veto",  # the independent safety re-check rejected the proposal
    "db_error",  # history could not be read
    "actuator_error",  # setpoints could not be written
    "no_saving",  # the optimiser found nothing better than the rules
    "mode_rules",  # the operator selected rule-based mode
    "other",
)

#: What a control cycle ended with.
OUTCOMES: tuple[str, ...] = (
    "applied",  # optimised setpoints written to the plant
    "advised",  # optimised setpoints computed, not written (advisory mode)
    "fallback",  # rule-based setpoints used (see the fallback reason)
    "unchanged",  # nothing written: already at the chosen setpoints
    "error",  # the cycle failed
)

TRAINING_RESULTS: tuple[str, ...] = ("success", "failure")
#: Why the daemon asked for a training run outside the schedule.
RETRAINING_REASONS: tuple[str, ...] = ("drift", "model_error")

#: Control-cycle latency buckets [s]: cycles normally take well under a second.
CYCLE_BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Relative forecast error buckets [-] (|actual - predicted| / actual).
ERROR_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

_W_PER_KW = 1000.0
_NAN = float("nan")


@dataclass(frozen=True)
class Decision:
    """What one control cycle observed and chose, in controller units (kW, C, s).

    ``None`` means "not available this cycle" (e.g. no forecast in fallback) and shows
    as NaN, so dashboards show a gap rather than a stale value. ``fallback_reason``
    is ``None`` when the optimiser's setpoints were used.
    """

    mode: str
    outcome: str
    ts_s: float  # end of the cycle [s since the Unix epoch]
    fallback_reason: str | None = None
    setpoints_c: Mapping[str, float] = field(default_factory=dict)  # applied/advised [C]
    cycle_duration_s: float | None = None  # wall time of the cycle [s]
    cycle_period_s: float | None = None  # time until the next cycle [s]; default: the constructor's
    it_power_kw: float | None = None  # measured [kW]
    cooling_power_kw: float | None = None  # measured [kW]
    pue_measured: float | None = None  # [-]; derived from the powers when None
    pue_predicted: float | None = None  # [-]; derived from IT power + prediction when None
    cooling_power_pred_kw: float | None = None  # forecast mean for the chosen setpoints [kW]
    cooling_power_pred_lo_kw: float | None = None  # lower interval bound [kW]
    cooling_power_pred_hi_kw: float | None = None  # upper interval bound [kW]
    interval_level: float | None = None  # central interval level, e.g. 0.9 [-]
    rack_inlet_max_c: float | None = None  # measured hottest rack inlet [C]
    rack_inlet_pred_hi_c: float | None = None  # upper bound of the forecast max [C]
    rack_inlet_limit_c: float | None = None  # the configured hard limit [C]
    ood_score: float | None = None  # [-], < 1 like the training data
    savings_kw: float | None = None  # predicted rules power minus chosen power [kW]


_DECISION_FIELDS = frozenset(f.name for f in dataclasses.fields(Decision))


def _opt(value: float | None, scale: float = 1.0) -> float:
    return _NAN if value is None else float(value) * scale


class CoolpilotMetrics:
    """Every CoolPilot series, registered on ``registry``; methods the daemon calls.

    The bounded label sets default to the module constants; a daemon whose config
    defines other modes or reasons passes its own (still bounded) tuples. A value
    outside its set is counted under ``other`` (where present) with a warning, never
    raised: metrics must not stop the control loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        modes: Iterable[str] = MODES,
        outcomes: Iterable[str] = OUTCOMES,
        fallback_reasons: Iterable[str] = FALLBACK_REASONS,
        setpoint_roles: Iterable[str] = SETPOINT_ROLES,
        cycle_period_s: float | None = None,
        build_version: str | None = None,
    ) -> None:
        self.registry = registry
        self.cycle_period_s = cycle_period_s  # default control period [s], for savings energy
        self.modes = tuple(modes)
        self.outcomes = tuple(outcomes)
        self.fallback_reasons = tuple(fallback_reasons)
        self.setpoint_roles = tuple(setpoint_roles)
        self._warned: set[tuple[str, str]] = set()
        r = registry

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(name, doc, labelnames=tuple(labels), registry=r)

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, labelnames=tuple(labels), registry=r)

        # Identity
        self.build_info = Info("coolpilot_build", "CoolPilot build: package and Python versions [info]", registry=r)
        self.model_info = Info("coolpilot_model", "Forecast model in use: registry version and kind [info]", registry=r)
        # Mode and decisions
        self.mode = gauge("coolpilot_mode", "Current operating mode: 1 for the active mode, else 0 [bool]", ["mode"])
        self.fallback_active = gauge(
            "coolpilot_fallback_active", "1 while rule-based fallback setpoints are in use, else 0 [bool]"
        )
        self.fallback_reason = gauge(
            "coolpilot_fallback_reason", "Reason of the current fallback: 1 for the active reason, else 0 [bool]",
            ["reason"],
        )
        self.fallbacks = counter(
            "coolpilot_fallbacks", "Control cycles that fell back to rule-based setpoints, by reason [cycles]",
            ["reason"],
        )
        self.decisions = counter("coolpilot_decisions", "Control cycles by outcome [cycles]", ["outcome"])
        self.setpoint = gauge("coolpilot_setpoint_celsius", "Setpoint chosen in the last cycle [C]", ["role"])
        self.setpoint_min = gauge("coolpilot_setpoint_min_celsius", "Operator lower bound of the setpoint [C]", ["role"])
        self.setpoint_max = gauge("coolpilot_setpoint_max_celsius", "Operator upper bound of the setpoint [C]", ["role"])
        # Plant state and forecasts
        self.it_power = gauge("coolpilot_it_power_watts", "Measured IT electrical power [W]")
        self.cooling_power = gauge("coolpilot_cooling_power_watts", "Measured cooling plant electrical power [W]")
        self.pue = gauge("coolpilot_pue_ratio", "Measured power usage effectiveness, facility/IT power [ratio]")
        self.pue_pred = gauge(
            "coolpilot_pue_predicted_ratio", "Predicted power usage effectiveness for the chosen setpoints [ratio]"
        )
        self.cooling_pred = gauge(
            "coolpilot_cooling_power_predicted_watts", "Predicted mean cooling power for the chosen setpoints [W]"
        )
        self.cooling_pred_lo = gauge(
            "coolpilot_cooling_power_predicted_lower_watts", "Lower bound of the predicted cooling power interval [W]"
        )
        self.cooling_pred_hi = gauge(
            "coolpilot_cooling_power_predicted_upper_watts", "Upper bound of the predicted cooling power interval [W]"
        )
        self.interval_level = gauge(
            "coolpilot_prediction_interval_level_ratio", "Coverage level of the central prediction intervals [ratio]"
        )
        self.rack_inlet = gauge("coolpilot_rack_inlet_max_celsius", "Measured hottest rack-inlet air temperature [C]")
        self.rack_inlet_limit = gauge("coolpilot_rack_inlet_limit_celsius", "Configured rack-inlet hard limit [C]")
        self.rack_margin = gauge(
            "coolpilot_rack_inlet_margin_celsius", "Limit minus measured hottest rack inlet; below 0 is a breach [K]"
        )
        self.rack_margin_pred = gauge(
            "coolpilot_rack_inlet_predicted_margin_celsius",
            "Limit minus the upper bound of the predicted hottest rack inlet [K]",
        )
        self.ood = gauge(
            "coolpilot_ood_score", "Out-of-distribution score of the current inputs; below 1 is like training [1]"
        )
        self.savings = gauge(
            "coolpilot_savings_estimated_watts",
            "Estimated cooling power saved against the rule-based setpoints, last cycle [W]",
        )
        self.savings_energy = counter(
            "coolpilot_savings_estimated_joules",
            "Estimated cooling energy saved against the rule-based setpoints; negative estimates count 0 [J]",
        )
        # Forecast quality, checked when forecasts mature
        self.forecast_error = gauge(
            "coolpilot_forecast_error_watts", "Last matured forecast: actual minus predicted cooling power [W]"
        )
        self.forecast_rel_error = Histogram(
            "coolpilot_forecast_relative_error_ratio",
            "Matured forecasts: |actual - predicted| / actual cooling power [ratio]",
            buckets=ERROR_BUCKETS, registry=r,
        )
        self.forecast_misses = counter(
            "coolpilot_forecast_interval_misses",
            "Matured forecasts whose actual cooling power fell outside the predicted interval [forecasts]",
        )
        self.forecast_recent_error = gauge(
            "coolpilot_forecast_recent_relative_error_ratio",
            "Mean relative error of the last matured cooling-power forecasts of the model in use [ratio]",
        )
        self.forecast_drift = gauge(
            "coolpilot_forecast_drift_active",
            "1 while the model is withdrawn because its recent forecasts drifted past the limit, else 0 [bool]",
        )
        self.retraining_requests = counter(
            "coolpilot_retraining_requests",
            "Training runs requested outside the schedule, by reason: drift or model_error [runs]", ["reason"],
        )
        # Loop health
        self.cycle_duration = Histogram(
            "coolpilot_cycle_duration_seconds", "Wall time of one control cycle [s]", buckets=CYCLE_BUCKETS_S, registry=r
        )
        self.data_age = gauge("coolpilot_data_age_seconds", "Age of the newest plant data used by the last cycle [s]")
        self.last_cycle = gauge(
            "coolpilot_last_cycle_success_timestamp_seconds",
            "End of the last control cycle that did not fail [s since epoch]",
        )
        # Training
        self.training_runs = counter("coolpilot_training_runs", "Model training runs by result [runs]", ["result"])
        self.training_failures = gauge(
            "coolpilot_training_consecutive_failures", "Training runs failed since the last success [runs]"
        )
        self.last_training = gauge(
            "coolpilot_last_training_success_timestamp_seconds", "End of the last successful training [s since epoch]"
        )
        self.training_duration = gauge(
            "coolpilot_training_duration_seconds", "Wall time of the last training run [s]"
        )
        self.val_cooling_mae = gauge(
            "coolpilot_model_validation_cooling_power_mae_watts",
            "Validation mean absolute error of cooling power, last successful training [W]",
        )
        self.val_rack_mae = gauge(
            "coolpilot_model_validation_rack_inlet_mae_celsius",
            "Validation mean absolute error of the hottest rack inlet, last successful training [K]",
        )
        self.model_trained = gauge(
            "coolpilot_model_trained_timestamp_seconds", "When the model in use was trained [s since epoch]"
        )
        # Config and I/O errors
        self.reload_ok = gauge(
            "coolpilot_config_last_reload_successful", "1 if the last configuration reload succeeded, else 0 [bool]"
        )
        self.reload_ts = gauge(
            "coolpilot_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully [s since epoch]",
        )
        self.reloads = counter("coolpilot_config_reloads", "Configuration reloads by result [reloads]", ["result"])
        self.db_errors = counter("coolpilot_db_errors", "Database errors (connect, read or write) [errors]")
        self.actuator_errors = counter(
            "coolpilot_actuator_errors", "Failures to write setpoints to the plant [errors]"
        )
        self._initialise(build_version)

    def _initialise(self, build_version: str | None) -> None:
        """Create every labelled child and set start values, so series exist at once."""
        for m in self.modes:
            self.mode.labels(mode=m).set(0)
        for reason in self.fallback_reasons:
            self.fallback_reason.labels(reason=reason).set(0)
            self.fallbacks.labels(reason=reason)
        for outcome in self.outcomes:
            self.decisions.labels(outcome=outcome)
        for role in self.setpoint_roles:
            for g in (self.setpoint, self.setpoint_min, self.setpoint_max):
                g.labels(role=role).set(_NAN)
        for result in TRAINING_RESULTS:
            self.training_runs.labels(result=result)
            self.reloads.labels(result=result)
        for reason in RETRAINING_REASONS:
            self.retraining_requests.labels(reason=reason)
        for g in (self.it_power, self.cooling_power, self.pue, self.pue_pred, self.cooling_pred,
                  self.cooling_pred_lo, self.cooling_pred_hi, self.interval_level, self.rack_inlet,
                  self.rack_inlet_limit, self.rack_margin, self.rack_margin_pred, self.ood, self.savings,
                  self.forecast_error, self.forecast_recent_error, self.data_age, self.training_duration,
                  self.val_cooling_mae, self.val_rack_mae, self.model_trained):
            g.set(_NAN)
        # Timestamps stay 0 until the event first happens (alert rules test > 0).
        self.reload_ok.set(1)
        if build_version is None:
            try:
                build_version = metadata.version("coolpilot")
            except metadata.PackageNotFoundError:
                build_version = "unknown"
        self.build_info.info({"version": build_version, "python_version": platform.python_version()})
        self.model_info.info({"version": "", "kind": ""})

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
    def observe_decision(self, decision: Decision | Mapping[str, Any] | None = None, /, **values: Any) -> None:
        """Record one control cycle: a `Decision`, a mapping of its fields, or keywords.

        Unknown keys raise `TypeError` naming them (a typo would otherwise hide a series).
        """
        d = _as_decision(decision, values)
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

        self.it_power.set(_opt(d.it_power_kw, _W_PER_KW))
        self.cooling_power.set(_opt(d.cooling_power_kw, _W_PER_KW))
        pue_measured = d.pue_measured
        if pue_measured is None and d.it_power_kw is not None and d.cooling_power_kw is not None:
            pue_measured = pue(d.it_power_kw, d.cooling_power_kw)
        self.pue.set(_opt(pue_measured))
        pue_predicted = d.pue_predicted
        if pue_predicted is None and d.it_power_kw is not None and d.cooling_power_pred_kw is not None:
            pue_predicted = pue(d.it_power_kw, d.cooling_power_pred_kw)
        self.pue_pred.set(_opt(pue_predicted))
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
        self.savings.set(_opt(d.savings_kw, _W_PER_KW))
        period_s = self.cycle_period_s if d.cycle_period_s is None else d.cycle_period_s
        if d.savings_kw is not None and period_s is not None and math.isfinite(d.savings_kw):
            self.savings_energy.inc(max(d.savings_kw, 0.0) * _W_PER_KW * max(period_s, 0.0))
        if d.cycle_duration_s is not None:
            self.cycle_duration.observe(d.cycle_duration_s)
        if d.outcome != "error":
            self.last_cycle.set(d.ts_s)

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


def _as_decision(decision: Decision | Mapping[str, Any] | None, values: Mapping[str, Any]) -> Decision:
    if isinstance(decision, Decision):
        return dataclasses.replace(decision, **values) if values else decision
    merged = {**(decision or {}), **values}
    unknown = sorted(set(merged) - _DECISION_FIELDS)
    if unknown:
        raise TypeError(f"observe_decision: unknown field(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(_DECISION_FIELDS))}")
    missing = sorted(k for k in ("mode", "outcome", "ts_s") if k not in merged)
    if missing:
        raise TypeError(f"observe_decision: missing required field(s) {', '.join(missing)}")
    return Decision(**merged)


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
