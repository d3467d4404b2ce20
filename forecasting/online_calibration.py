"""Intervals kept calibrated in closed loop: adaptive conformal inference on matured forecasts.

Why: the split-conformal factors of `forecasting.calibration` are fitted on the
training history, which the plant leaves as soon as the model controls it (other
setpoints, other weather); in closed loop the 90 % intervals then miss far more than
10 % of outcomes. Adaptive conformal inference (Gibbs and Candes 2021) repairs that
online, per target: each matured forecast adds its normalised score |y - mu| / sigma
to a window of recent scores, and the miss rate steers the working level

    alpha_{t+1} = alpha_t + gamma * (alpha - err_t),

the interval factor being the (1 - alpha_t) quantile of the recent scores. Whatever
the plant does, the long-run miss rate is held near alpha. Forecasts mature a horizon
after they were made (delayed feedback); a small gamma keeps that stable.

`CalibratedForecaster` applies the factors to a model's forecasts: intervals become
mean -/+ factor * sigma (sigma stays the model's own). The controller's rack-inlet
safety bound takes the higher of mean + k * sigma and the calibrated upper end, so a
plant that runs hotter than the model thought tightens it; the "is the model sure"
std gates keep judging the model's own spread. Pure logic, JSON round trip, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from forecasting.protocol import FloatArray, Forecast

#: One week of 5-minute forecasts: the window of scores and of the rolling coverage.
DEFAULT_WINDOW = 2016
#: ACI step size [-]: with ~288 matured forecasts a day, a run of misses widens within hours.
DEFAULT_GAMMA = 0.005
#: Scores needed before the online quantile replaces the training factor.
MIN_SCORES = 24
#: Per target: the Forecast fields of (mean, std, lo, hi).
TARGET_FIELDS: dict[str, tuple[str, str, str, str]] = {
    "cooling_power_kw": ("cooling_power_kw", "cooling_power_std_kw", "cooling_power_lo_kw", "cooling_power_hi_kw"),
    "rack_inlet_max_c": ("rack_inlet_max_c", "rack_inlet_std_c", "rack_inlet_lo_c", "rack_inlet_hi_c"),
    "it_power_kw": ("it_power_kw", "it_power_std_kw", "it_power_lo_kw", "it_power_hi_kw"),
}
FORMAT = "coolpilot-aci/1"


def gaussian_z(level: float) -> float:
    """Half-width of a central Gaussian interval at ``level`` in sigmas (1.645 at 0.9)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must lie in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


class AdaptiveInterval:
    """Adaptive conformal inference for one target: the interval factor on sigma [-]."""

    def __init__(self, level: float, initial_factor: float, *, gamma: float = DEFAULT_GAMMA,
                 window: int = DEFAULT_WINDOW) -> None:
        gaussian_z(level)  # validates the level
        if not (math.isfinite(initial_factor) and initial_factor > 0):
            raise ValueError(f"initial interval factor must be positive, got {initial_factor}")
        if not 0.0 < gamma < 1.0 or window < MIN_SCORES:
            raise ValueError(f"gamma must lie in (0, 1) and window be >= {MIN_SCORES}: {gamma}, {window}")
        self.level, self.initial_factor, self.gamma = level, float(initial_factor), gamma
        self.alpha_t = 1.0 - level
        self.scores: deque[float] = deque(maxlen=window)
        self.hits: deque[bool] = deque(maxlen=window)

    def factor(self) -> float:
        """Current multiplier on sigma: the (1 - alpha_t) conformal quantile of recent scores."""
        n = len(self.scores)
        if n < MIN_SCORES:
            return self.initial_factor
        if self.alpha_t <= 0.0:
            return float(max(self.scores))  # ACI's infinite interval, capped at the widest miss seen
        if self.alpha_t >= 1.0:
            return 0.0
        rank = min(math.ceil((n + 1) * (1.0 - self.alpha_t)), n)
        return float(np.partition(np.fromiter(self.scores, float, n), rank - 1)[rank - 1])

    def update(self, mean: float, std: float, actual: float, factor_used: float) -> bool | None:
        """Add one matured forecast (raw model ``std``, the factor its interval was issued with).

        Returns whether the issued interval covered ``actual``; None (ignored) for non-finite input.
        """
        if not all(math.isfinite(v) for v in (mean, std, actual, factor_used)) or std <= 0:
            return None
        score = abs(actual - mean) / std
        covered = score <= factor_used
        self.alpha_t = min(max(self.alpha_t + self.gamma * ((1.0 - self.level) - (0.0 if covered else 1.0)), 0.0), 1.0)
        self.scores.append(score)
        self.hits.append(covered)
        return covered

    def coverage(self) -> float | None:
        """Share of the recent matured forecasts inside their issued interval [-]; None before any."""
        return float(np.mean(self.hits)) if self.hits else None

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "initial_factor": self.initial_factor, "gamma": self.gamma,
                "window": self.scores.maxlen, "alpha_t": self.alpha_t,
                "scores": list(self.scores), "hits": [int(h) for h in self.hits]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AdaptiveInterval:
        try:
            out = cls(float(data["level"]), float(data["initial_factor"]), gamma=float(data["gamma"]),
                      window=int(data["window"]))
            out.alpha_t = min(max(float(data["alpha_t"]), 0.0), 1.0)
            out.scores.extend(float(s) for s in data["scores"])
            out.hits.extend(bool(h) for h in data["hits"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"online calibration state lacks or garbles field {exc}") from None
        return out


class OnlineCalibration:
    """Per-target `AdaptiveInterval`s of one model version, with a JSON round trip."""

    def __init__(self, version: str, level: float, targets: Mapping[str, AdaptiveInterval]) -> None:
        self.version, self.level = version, level
        self.z = gaussian_z(level)
        self.targets = dict(targets)

    @classmethod
    def for_model(cls, model: Any, *, gamma: float = DEFAULT_GAMMA, window: int = DEFAULT_WINDOW) -> OnlineCalibration:
        """Start from a model's training-time conformal factors (the Gaussian z where it has none)."""
        level = float(getattr(model, "interval_level", 0.9))
        names: Sequence[str] = tuple(getattr(model, "targets", ("cooling_power_kw", "rack_inlet_max_c")))
        factors = tuple(getattr(model, "conformal_factors", ())) or (gaussian_z(level),) * len(names)
        return cls(str(model.version), level, {
            t: AdaptiveInterval(level, f, gamma=gamma, window=window) for t, f in zip(names, factors, strict=False)})

    def carried_to(self, model: Any) -> OnlineCalibration:
        """This state, for a newly promoted ``model`` of the same plant.

        Why: the closed-loop regime that made the old model's intervals miss is still
        there; starting the new model from its training factor repeats a day of misses.
        Targets the new model adds start from its training factor; the level must match.
        """
        fresh = OnlineCalibration.for_model(model)
        if fresh.level != self.level:
            return fresh
        kept = {t: AdaptiveInterval.from_json(self.targets[t].to_json()) for t in fresh.targets if t in self.targets}
        return OnlineCalibration(fresh.version, fresh.level, {**fresh.targets, **kept})

    def factor(self, target: str) -> float | None:
        a = self.targets.get(target)
        return None if a is None else a.factor()

    def update(self, target: str, mean: float, std: float, actual: float, factor_used: float) -> bool | None:
        """One matured forecast of ``target``; see `AdaptiveInterval.update`."""
        a = self.targets.get(target)
        return None if a is None else a.update(mean, std, actual, factor_used)

    def coverage(self) -> dict[str, float | None]:
        """Rolling coverage per target over the window [-]."""
        return {t: a.coverage() for t, a in self.targets.items()}

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "level": self.level,
                "targets": {t: a.to_json() for t, a in self.targets.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OnlineCalibration:
        if data.get("format") != FORMAT:
            raise ValueError(f"unsupported online calibration format {data.get('format')!r}, expected {FORMAT!r}")
        try:
            targets = {str(t): AdaptiveInterval.from_json(a) for t, a in dict(data["targets"]).items()}
            return cls(str(data["version"]), float(data["level"]), targets)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"online calibration state lacks or garbles field {exc}") from None


class CalibratedForecaster:
    """A `Forecaster` whose intervals follow its `OnlineCalibration`.

    Everything else (version, roles, data profile, ...) is the inner model's.
    """

    def __init__(self, inner: Any, calibration: OnlineCalibration) -> None:
        if str(inner.version) != calibration.version:
            raise ValueError(f"online calibration is for model {calibration.version}, not {inner.version}")
        self.inner, self.calibration = inner, calibration

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def version(self) -> str:
        return str(self.inner.version)

    @property
    def horizon_min(self) -> int:
        return int(self.inner.horizon_min)

    def required_roles(self) -> tuple[str, ...]:
        return tuple(self.inner.required_roles())

    def setpoint_roles(self) -> tuple[str, ...]:
        return tuple(self.inner.setpoint_roles())

    def history_needed(self) -> int:
        return int(self.inner.history_needed())

    def predict(self, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
        return self.recalibrate(self.inner.predict(state, candidates))

    def recalibrate(self, forecast: Forecast) -> Forecast:
        """``forecast`` with each target's interval at the online factor; sigma stays the model's own.

        Why sigma stays: the controller's "is the model sure" gates (rack-inlet and power
        std limits) compare the model's spread with what it learned; a plant whose
        outcomes scatter more than the model thought widens the intervals (reported,
        and the rack-inlet safety bound takes the calibrated upper end), without
        turning every candidate "unsure" on a plant with noisy on/off equipment.
        """
        changes: dict[str, Any] = {}
        for target, (m, s, lo, hi) in TARGET_FIELDS.items():
            mean, std, f = getattr(forecast, m), getattr(forecast, s), self.calibration.factor(target)
            if mean is None or std is None or f is None:
                continue
            changes.update({lo: mean - f * std, hi: mean + f * std})
        return dataclasses.replace(forecast, **changes)
