"""Checking forecasts against what happened, once their horizon has passed.

Why: an autonomous controller is only as trustworthy as its forecasts, and the only
honest test of a forecast is the plant's own later readings. Each cycle that used the
model leaves its cooling-power forecast here; when the horizon has been observed, the
forecast is compared with the actual mean cooling power over the same rows.

The forecast made at grid row ``t`` predicts the mean cooling power over the rows
``t + 5 min`` .. ``t + horizon`` (``forecasting.features``: rows t+1..t+H). Pure
functions plus a bounded ledger; no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from db.grid import floor_to_grid

COOLING = "cooling_power_kw"


@dataclass(frozen=True)
class PendingForecast:
    """A cooling-power forecast waiting for its horizon [kW]."""

    anchor: datetime  # the grid row the state ended at (UTC)
    horizon_min: int  # forecast horizon [min]
    mean_kw: float
    lo_kw: float | None = None
    hi_kw: float | None = None

    @property
    def matures_at(self) -> datetime:
        """The last grid row of the horizon."""
        return self.anchor + timedelta(minutes=self.horizon_min)


@dataclass(frozen=True)
class MaturedForecast:
    """A forecast and the actual mean cooling power over its horizon [kW]."""

    forecast: PendingForecast
    actual_kw: float
    rows_observed: int


def anchor_row(ts: datetime) -> datetime:
    """The grid row a cycle at ``ts`` decided from: ``ts`` floored to 5 minutes."""
    return floor_to_grid(ts)


def actual_mean_kw(series: pd.Series, forecast: PendingForecast, min_share: float = 0.5) -> float | None:
    """Mean of ``series`` over the forecast's horizon rows, or None with too few readings.

    ``series``: cooling power [kW] on the 5-minute grid (UTC index, NaN = gap).
    """
    if series.empty:
        return None
    start = pd.Timestamp(forecast.anchor)
    end = pd.Timestamp(forecast.matures_at)
    part = series.loc[(series.index > start) & (series.index <= end)]
    values = pd.to_numeric(part, errors="coerce").to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    rows = max(forecast.horizon_min // 5, 1)
    if len(finite) < max(1, math.ceil(min_share * rows)):
        return None
    return float(finite.mean())


class ForecastLedger:
    """Forecasts waiting to mature, oldest first; bounded so a long outage cannot grow it."""

    def __init__(self, max_pending: int = 2016) -> None:
        self._pending: deque[PendingForecast] = deque(maxlen=max_pending)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, forecast: PendingForecast) -> None:
        if not math.isfinite(forecast.mean_kw):
            return
        if self._pending and self._pending[-1].anchor == forecast.anchor:
            self._pending[-1] = forecast  # one forecast per grid row: the latest decision wins
        else:
            self._pending.append(forecast)

    def earliest_due(self) -> PendingForecast | None:
        return self._pending[0] if self._pending else None

    def mature(self, series: pd.Series, latest_row: datetime) -> list[MaturedForecast]:
        """Forecasts whose horizon ends at or before ``latest_row``, compared with ``series``.

        Matured forecasts leave the ledger whether or not enough readings exist
        (a gap is not retried: later readings of a past row are rare and late).
        """
        out: list[MaturedForecast] = []
        while self._pending and self._pending[0].matures_at <= latest_row:
            forecast = self._pending.popleft()
            actual = actual_mean_kw(series, forecast)
            if actual is not None:
                rows = int(((series.index > pd.Timestamp(forecast.anchor))
                            & (series.index <= pd.Timestamp(forecast.matures_at))).sum())
                out.append(MaturedForecast(forecast, actual, rows))
        return out


class DriftCheck:
    """Rolling mean relative error of the model's matured cooling-power forecasts.

    Why: a model whose forecasts have drifted away from the plant (new equipment, a
    season it never saw, a broken sensor it learned from) still looks sure of itself;
    only its own matured forecasts show it. ``drifted`` tells the daemon to withdraw
    the model and request retraining; ``reset`` starts over for a new model.
    """

    def __init__(self, window: int = 12) -> None:
        self._errors: deque[float] = deque(maxlen=max(int(window), 1))

    def __len__(self) -> int:
        return len(self._errors)

    def observe(self, matured: MaturedForecast) -> None:
        """Add one matured forecast (skipped when the actual power is not positive)."""
        actual = matured.actual_kw
        if actual > 0 and math.isfinite(actual) and math.isfinite(matured.forecast.mean_kw):
            self._errors.append(abs(actual - matured.forecast.mean_kw) / actual)

    def resize(self, window: int) -> None:
        """Keep the newest errors under a new window length (after a config reload)."""
        window = max(int(window), 1)
        if window != self._errors.maxlen:
            self._errors = deque(list(self._errors)[-window:], maxlen=window)

    def mean_error(self) -> float | None:
        """Mean relative error over the errors held [-], None when there are none."""
        return float(np.mean(self._errors)) if self._errors else None

    def drifted(self, limit_frac: float) -> str | None:
        """Why the model counts as drifted (a full window whose mean error exceeds the limit), else None."""
        mean = self.mean_error()
        if mean is None or len(self._errors) < (self._errors.maxlen or 1) or mean <= limit_frac:
            return None
        return (f"forecast drift: the last {len(self._errors)} matured cooling-power forecasts were off by "
                f"{mean:.0%} on average (limit {limit_frac:.0%})")

    def reset(self) -> None:
        self._errors.clear()


#: Per target: the `controller.decision.Prediction` fields of its mean and sigma.
_PREDICTION_FIELDS: dict[str, tuple[str, str]] = {
    "cooling_power_kw": ("cooling_power_kw", "cooling_power_std_kw"),
    "rack_inlet_max_c": ("rack_inlet_max_c", "rack_inlet_std_c"),
    "it_power_kw": ("it_power_kw", "it_power_std_kw"),
}


@dataclass(frozen=True)
class PendingTargets:
    """One cycle's forecast for the emitted setpoints, per target: (mean, model sigma, factor issued)."""

    anchor: datetime
    horizon_min: int
    version: str
    values: dict[str, tuple[float, float, float]]

    @property
    def matures_at(self) -> datetime:
        return self.anchor + timedelta(minutes=self.horizon_min)


def actual_target(series: pd.Series, target: str, anchor: datetime, horizon_min: int,
                  min_share: float = 0.5) -> float | None:
    """What the model's target was over rows anchor+5 min .. anchor+horizon: the max for the
    hottest rack inlet [C], else the mean [kW]; None with fewer than ``min_share`` of the rows."""
    part = series.loc[(series.index > pd.Timestamp(anchor))
                      & (series.index <= pd.Timestamp(anchor + timedelta(minutes=horizon_min)))]
    values = pd.to_numeric(part, errors="coerce").to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) < max(1, math.ceil(min_share * max(horizon_min // 5, 1))):
        return None
    return float(finite.max() if target == "rack_inlet_max_c" else finite.mean())


class CalibrationFeed:
    """Feeds the matured forecasts of the emitted setpoints to the model's online calibration.

    Why here: only the daemon (or an evaluation loop) sees both the decision and, a
    horizon later, the plant's readings. ``model`` is a
    `forecasting.online_calibration.CalibratedForecaster` (anything with a ``calibration``);
    other models are skipped. Forecasts of an earlier model version are dropped unmatured.
    """

    def __init__(self, max_pending: int = 2016) -> None:
        self._pending: deque[PendingTargets] = deque(maxlen=max_pending)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, ts: datetime, model: Any, chosen: Any) -> None:
        """Remember the forecast a cycle at ``ts`` made for its emitted setpoints (``chosen``: a Prediction)."""
        cal = getattr(model, "calibration", None)
        if cal is None or chosen is None:
            return
        values: dict[str, tuple[float, float, float]] = {}
        for target in cal.targets:
            mean_f, std_f = _PREDICTION_FIELDS.get(target, (target, ""))
            mean, std, factor = getattr(chosen, mean_f, math.nan), getattr(chosen, std_f, math.nan), cal.factor(target)
            if factor and all(isinstance(v, float) and math.isfinite(v) for v in (mean, std)):
                values[target] = (mean, std, factor)  # the model's own sigma (intervals carry the factor)
        anchor = anchor_row(ts)
        if values:
            if self._pending and self._pending[-1].anchor == anchor:
                self._pending.pop()  # one forecast per grid row: the latest decision wins
            self._pending.append(PendingTargets(anchor, int(model.horizon_min), str(model.version), values))

    def earliest_due(self) -> PendingTargets | None:
        return self._pending[0] if self._pending else None

    def mature(self, frame: pd.DataFrame, latest_row: datetime, model: Any) -> int:
        """Update ``model``'s calibration with every forecast due by ``latest_row``; returns how many.

        ``frame``: the plant's readings on the 5-minute grid, reaching back to the oldest due anchor.
        """
        cal = getattr(model, "calibration", None)
        done = 0
        while self._pending and self._pending[0].matures_at <= latest_row:
            p = self._pending.popleft()
            if cal is None or p.version != cal.version:
                continue
            for target, (mean, std, factor) in p.values.items():
                actual = actual_target(frame[target], target, p.anchor, p.horizon_min) if target in frame else None
                if actual is not None and cal.update(target, mean, std, actual, factor) is not None:
                    done += 1
        return done
