"""The series of the CoolPilot daemon: names, units, HELP texts and bounded label sets.

Why apart from publishing (`controller.service.metrics`): this is what an operator's
dashboard and alert rules are written against, so it is one list to read. Every
series has its base unit in the name (``_watts``, ``_celsius``, ``_seconds``,
``_joules_total``, ``_ratio``) and in its HELP text, lives on an injected
`CollectorRegistry` (never the global one), and is labelled only by bounded sets:
the config's modes, the decision's outcomes (plus ``error`` for a cycle that
failed), the decision's reason codes and the setpoint roles. Every labelled child is
created at start, so that series exist before the first event.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from controller.config import MODES
from controller.decision import OUTCOMES as DECISION_OUTCOMES
from controller.decision import REASON_CODES
from db.roles import SETPOINT_ROLES

#: What a control cycle ended with: the decision's outcome, or ``error`` when the cycle failed.
OUTCOMES: tuple[str, ...] = (*DECISION_OUTCOMES, "error")
TRAINING_RESULTS: tuple[str, ...] = ("success", "failure")
#: Why the daemon asked for a training run outside the schedule.
RETRAINING_REASONS: tuple[str, ...] = ("drift", "model_error", "unfamiliar")

#: Control-cycle latency buckets [s]: cycles normally take well under a second.
CYCLE_BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Relative forecast error buckets [-] (|actual - predicted| / actual).
ERROR_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

_NAN = float("nan")


class MetricSeries:
    """Every CoolPilot series, registered on ``registry`` and set to its start value.

    The bounded label sets default to the module constants (``MODES``: the config's
    modes, ``OUTCOMES``, ``REASON_CODES``: the decision's); a daemon whose config
    defines others passes its own (still bounded) tuples.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        modes: Iterable[str] = MODES,
        outcomes: Iterable[str] = OUTCOMES,
        fallback_reasons: Iterable[str] = REASON_CODES,
        setpoint_roles: Iterable[str] = SETPOINT_ROLES,
        build_version: str | None = None,
    ) -> None:
        self.registry = registry
        self.modes = tuple(modes)
        self.outcomes = tuple(outcomes)
        self.fallback_reasons = tuple(fallback_reasons)
        self.setpoint_roles = tuple(setpoint_roles)
        self._define_decisions()
        self._define_plant()
        self._define_forecast_quality()
        self._define_training_and_config()
        self._initialise(build_version)

    def _gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(name, doc, labelnames=tuple(labels), registry=self.registry)

    def _counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(name, doc, labelnames=tuple(labels), registry=self.registry)

    def _define_decisions(self) -> None:
        """Identity, mode and decisions."""
        r = self.registry
        # Identity
        self.build_info = Info("coolpilot_build", "CoolPilot build: package and Python versions [info]", registry=r)
        self.model_info = Info("coolpilot_model", "Forecast model in use: registry version and kind [info]", registry=r)
        # Mode and decisions
        self.mode = self._gauge("coolpilot_mode", "Current operating mode: 1 for the active mode, else 0 [bool]", ["mode"])
        self.fallback_active = self._gauge(
            "coolpilot_fallback_active", "1 while rule-based fallback setpoints are in use, else 0 [bool]"
        )
        self.fallback_reason = self._gauge(
            "coolpilot_fallback_reason", "Reason of the current fallback: 1 for the active reason, else 0 [bool]",
            ["reason"],
        )
        self.fallbacks = self._counter(
            "coolpilot_fallbacks", "Control cycles that fell back to rule-based setpoints, by reason [cycles]",
            ["reason"],
        )
        self.decisions = self._counter("coolpilot_decisions", "Control cycles by outcome [cycles]", ["outcome"])
        self.setpoint = self._gauge("coolpilot_setpoint_celsius", "Setpoint chosen in the last cycle [C]", ["role"])
        self.setpoint_min = self._gauge("coolpilot_setpoint_min_celsius", "Operator lower bound of the setpoint [C]", ["role"])
        self.setpoint_max = self._gauge("coolpilot_setpoint_max_celsius", "Operator upper bound of the setpoint [C]", ["role"])

    def _define_plant(self) -> None:
        """Plant state and forecasts for the chosen setpoints."""
        # Plant state and forecasts
        self.it_power = self._gauge("coolpilot_it_power_watts", "Measured IT electrical power [W]")
        self.cooling_power = self._gauge("coolpilot_cooling_power_watts", "Measured cooling plant electrical power [W]")
        self.facility_power = self._gauge(
            "coolpilot_facility_power_watts",
            "Measured facility power: the facility meter where there is one, else IT + cooling power [W]",
        )
        self.facility_metered = self._gauge(
            "coolpilot_facility_power_metered",
            "1 when facility power (and PUE) come from a facility meter, 0 when they are IT + cooling [bool]",
        )
        self.pue = self._gauge(
            "coolpilot_pue_ratio",
            "Measured PUE = facility / IT power; facility from the facility meter where there is one, "
            "else IT + cooling (see coolpilot_facility_power_metered) [ratio]",
        )
        self.pue_pred = self._gauge(
            "coolpilot_pue_predicted_ratio",
            "Estimated PUE for the chosen setpoints: measured facility power with the model's cooling power "
            "forecast in place of the measured cooling power [ratio]",
        )
        self.it_energy = self._counter("coolpilot_it_energy_joules", "Measured IT energy, sampled once per cycle [J]")
        self.cooling_energy = self._counter(
            "coolpilot_cooling_energy_joules", "Measured cooling plant energy, sampled once per cycle [J]"
        )
        self.facility_energy = self._counter(
            "coolpilot_facility_energy_joules",
            "Measured facility energy (meter, else IT + cooling), sampled once per cycle [J]",
        )
        self.cooling_pred = self._gauge(
            "coolpilot_cooling_power_predicted_watts", "Predicted mean cooling power for the chosen setpoints [W]"
        )
        self.cooling_pred_lo = self._gauge(
            "coolpilot_cooling_power_predicted_lower_watts", "Lower bound of the predicted cooling power interval [W]"
        )
        self.cooling_pred_hi = self._gauge(
            "coolpilot_cooling_power_predicted_upper_watts", "Upper bound of the predicted cooling power interval [W]"
        )
        self.interval_level = self._gauge(
            "coolpilot_prediction_interval_level_ratio", "Coverage level of the central prediction intervals [ratio]"
        )
        self.rack_inlet = self._gauge("coolpilot_rack_inlet_max_celsius", "Measured hottest rack-inlet air temperature [C]")
        self.rack_inlet_limit = self._gauge("coolpilot_rack_inlet_limit_celsius", "Configured rack-inlet hard limit [C]")
        self.rack_margin = self._gauge(
            "coolpilot_rack_inlet_margin_celsius", "Limit minus measured hottest rack inlet; below 0 is a breach [K]"
        )
        self.rack_margin_pred = self._gauge(
            "coolpilot_rack_inlet_predicted_margin_celsius",
            "Limit minus the upper bound of the predicted hottest rack inlet [K]",
        )
        self.ood = self._gauge(
            "coolpilot_ood_score", "Out-of-distribution score of the current inputs; below 1 is like training [1]"
        )
        self._define_savings()

    def _define_savings(self) -> None:
        """Estimated (by the model, not measured) savings against the fallback rules, signed, with bounds."""
        what = "cooling power saved against the fallback rules' setpoints (model estimate; negative: costs more)"
        self.savings = self._gauge("coolpilot_savings_estimated_watts", f"Estimated {what}, last cycle [W]")
        self.savings_lo = self._gauge(
            "coolpilot_savings_estimated_lower_watts", f"Lower bound of the interval of the estimated {what} [W]")
        self.savings_hi = self._gauge(
            "coolpilot_savings_estimated_upper_watts", f"Upper bound of the interval of the estimated {what} [W]")
        energy = "cooling energy saved against the fallback rules since start (model estimate; can go down)"
        self.savings_energy = self._gauge("coolpilot_savings_estimated_energy_joules", f"Estimated {energy} [J]")
        self.savings_energy_lo = self._gauge(
            "coolpilot_savings_estimated_energy_lower_joules", f"Lower bound of the estimated {energy} [J]")
        self.savings_energy_hi = self._gauge(
            "coolpilot_savings_estimated_energy_upper_joules", f"Upper bound of the estimated {energy} [J]")

    def _define_forecast_quality(self) -> None:
        """Forecast quality (checked when forecasts mature) and loop health."""
        r = self.registry
        # Forecast quality, checked when forecasts mature
        self.forecast_error = self._gauge(
            "coolpilot_forecast_error_watts", "Last matured forecast: actual minus predicted cooling power [W]"
        )
        self.forecast_rel_error = Histogram(
            "coolpilot_forecast_relative_error_ratio",
            "Matured forecasts: |actual - predicted| / actual cooling power [ratio]",
            buckets=ERROR_BUCKETS, registry=r,
        )
        self.forecast_misses = self._counter(
            "coolpilot_forecast_interval_misses",
            "Matured forecasts whose actual cooling power fell outside the predicted interval [forecasts]",
        )
        self.forecast_recent_error = self._gauge(
            "coolpilot_forecast_recent_relative_error_ratio",
            "Mean relative error of the last matured cooling-power forecasts of the model in use [ratio]",
        )
        self.forecast_drift = self._gauge(
            "coolpilot_forecast_drift_active",
            "1 while the model is withdrawn because its recent forecasts drifted past the limit, else 0 [bool]",
        )
        self.retraining_requests = self._counter(
            "coolpilot_retraining_requests",
            "Training runs requested outside the schedule, by reason: drift or model_error [runs]", ["reason"],
        )
        # Loop health
        self.cycle_duration = Histogram(
            "coolpilot_cycle_duration_seconds", "Wall time of one control cycle [s]", buckets=CYCLE_BUCKETS_S, registry=r
        )
        self.data_age = self._gauge("coolpilot_data_age_seconds", "Age of the newest plant data used by the last cycle [s]")
        self.last_cycle = self._gauge(
            "coolpilot_last_cycle_success_timestamp_seconds",
            "End of the last control cycle that did not fail [s since epoch]",
        )

    def _define_training_and_config(self) -> None:
        """Training, config reloads and I/O errors."""
        # Training
        self.training_runs = self._counter("coolpilot_training_runs", "Model training runs by result [runs]", ["result"])
        self.training_failures = self._gauge(
            "coolpilot_training_consecutive_failures", "Training runs failed since the last success [runs]"
        )
        self.last_training = self._gauge(
            "coolpilot_last_training_success_timestamp_seconds", "End of the last successful training [s since epoch]"
        )
        self.training_duration = self._gauge(
            "coolpilot_training_duration_seconds", "Wall time of the last training run [s]"
        )
        self.val_cooling_mae = self._gauge(
            "coolpilot_model_validation_cooling_power_mae_watts",
            "Validation mean absolute error of cooling power, last successful training [W]",
        )
        self.val_rack_mae = self._gauge(
            "coolpilot_model_validation_rack_inlet_mae_celsius",
            "Validation mean absolute error of the hottest rack inlet, last successful training [K]",
        )
        self.model_trained = self._gauge(
            "coolpilot_model_trained_timestamp_seconds", "When the model in use was trained [s since epoch]"
        )
        # Config and I/O errors
        self.reload_ok = self._gauge(
            "coolpilot_config_last_reload_successful", "1 if the last configuration reload succeeded, else 0 [bool]"
        )
        self.reload_ts = self._gauge(
            "coolpilot_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully [s since epoch]",
        )
        self.reloads = self._counter("coolpilot_config_reloads", "Configuration reloads by result [reloads]", ["result"])
        self.db_errors = self._counter("coolpilot_db_errors", "Database errors (connect, read or write) [errors]")
        self.actuator_errors = self._counter(
            "coolpilot_actuator_errors", "Failures to write setpoints to the plant [errors]"
        )

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
        for g in (self.it_power, self.cooling_power, self.facility_power, self.facility_metered, self.pue,
                  self.pue_pred, self.cooling_pred,
                  self.cooling_pred_lo, self.cooling_pred_hi, self.interval_level, self.rack_inlet,
                  self.rack_inlet_limit, self.rack_margin, self.rack_margin_pred, self.ood, self.savings,
                  self.savings_lo, self.savings_hi,
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

