"""Pure feature building: wide sensor frame -> feature matrix and horizon targets.

A sample is one 5-minute row t. Its features are the plant state at t (load, weather,
temperatures, the setpoints in force, lags and hourly means) plus the setpoints that
hold over the horizon; its targets are the mean cooling power and the maximum rack
inlet over rows t+1..t+H. State columns come first and candidate (setpoint-dependent)
columns last, so that at inference the state part is computed once and broadcast.

Row convention (``coolpilot.harness.history.run_closed_loop`` and the historian): row t holds
the readings sampled at t and the setpoints commanded at t, in force until t+1. So the
setpoints in force while the readings of row t were taken are those of row t-1, and
the setpoints that hold over the horizon (t, t+H] are those of rows t..t+H-1: the
decision being made at t. The latest row's setpoints are never needed at inference.

Gaps are never filled: a sample whose state, horizon setpoints or targets touch a gap
is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from db.grid import GRID
from db.psychro import wetbulb_c
from db.roles import SETPOINT_ROLES
from forecasting.cleaning import drop_outliers

FloatArray = npt.NDArray[np.float64]

STEP = pd.Timedelta(GRID)
STEP_MIN = 5
TARGETS: tuple[str, str] = ("cooling_power_kw", "rack_inlet_max_c")
"""(mean cooling power over the horizon [kW], max rack inlet over the horizon [C])."""

WETBULB = "outdoor_wetbulb_c"
STATE_ROLES: tuple[str, ...] = (
    "it_power_kw", "cooling_power_kw", "outdoor_drybulb_c", "outdoor_rh_pct", WETBULB,
    "chw_supply_c", "chw_return_c", "cw_supply_c", "supply_air_c", "rack_inlet_max_c",
    "rack_inlet_mean_c", "chillers_running", "economizer_active",
)
LAGGED_ROLES: tuple[str, ...] = (
    "it_power_kw", "cooling_power_kw", "rack_inlet_max_c", "supply_air_c", "chw_supply_c", WETBULB,
)
ROLLING_ROLES: tuple[str, ...] = ("it_power_kw", "cooling_power_kw", "rack_inlet_max_c", WETBULB)


class FeatureError(ValueError):
    """History that cannot make features: missing roles, too little data, mostly gaps."""


@dataclass(frozen=True)
class FeatureSpec:
    """How features and targets are built; stored with every model as plain JSON.

    ``horizon_steps`` 5-minute rows ahead (12 = 60 min); lags in rows [5 min each].
    """

    horizon_steps: int = 12
    lag_steps: tuple[int, ...] = (1, 3, 6, 12)
    rolling_steps: int = 12
    state_roles: tuple[str, ...] = STATE_ROLES
    lagged_roles: tuple[str, ...] = LAGGED_ROLES
    rolling_roles: tuple[str, ...] = ROLLING_ROLES
    derive_wetbulb: bool = True  # compute wet-bulb from dry-bulb and RH (psychrolib) instead of a sensor

    def __post_init__(self) -> None:
        if self.horizon_steps < 1:
            raise ValueError(f"horizon_steps must be >= 1, got {self.horizon_steps}")
        if not self.lag_steps or min(self.lag_steps) < 1:
            raise ValueError(f"lag_steps must be positive, got {self.lag_steps}")
        for name in TARGETS:
            if name not in self.state_roles:
                raise ValueError(f"state_roles must include the target role {name!r}")

    @property
    def horizon_min(self) -> int:
        """Forecast horizon [min]."""
        return self.horizon_steps * STEP_MIN

    def history_needed(self) -> int:
        """Rows of history (including the current row) that one state needs."""
        return max(*self.lag_steps, self.rolling_steps) + 1

    def required_roles(self) -> tuple[str, ...]:
        """Roles the history must hold (wet-bulb only when the model uses a wet-bulb sensor)."""
        measured = tuple(r for r in self.state_roles if r != WETBULB or not self.derive_wetbulb)
        return measured + tuple(SETPOINT_ROLES)

    def state_names(self) -> list[str]:
        names = list(self.state_roles)
        names += [f"{sp}@now" for sp in SETPOINT_ROLES]
        names += [f"{r}@lag{lag}" for r in self.lagged_roles for lag in self.lag_steps]
        names += [f"{r}@mean{self.rolling_steps}" for r in self.rolling_roles]
        names += ["tod_sin", "tod_cos"]
        return names

    def candidate_names(self) -> list[str]:
        return ([f"{sp}@horizon" for sp in SETPOINT_ROLES] + [f"{sp}@change" for sp in SETPOINT_ROLES]
                + [f"{sp}@end" for sp in SETPOINT_ROLES])

    def feature_names(self) -> list[str]:
        return self.state_names() + self.candidate_names()

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature-spec fields: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class GapReport:
    """What was dropped while building samples, and why (counts of 5-minute rows)."""

    rows: int
    missing_grid_rows: int
    outliers_removed: int  # readings (not rows) set to NaN as out of range or spikes
    dropped_state: int
    dropped_horizon: int
    samples: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class FeatureSet:
    """Samples ready for a model: X (n, d), y (n, 2) in TARGETS order, row times."""

    x: FloatArray
    y: FloatArray
    index: pd.DatetimeIndex
    names: list[str]
    n_state: int
    gaps: GapReport = field(repr=False)


@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation, stored as plain numbers with the model."""

    mean: FloatArray
    std: FloatArray

    @classmethod
    def fit(cls, x: FloatArray) -> Scaler:
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std > 1e-9, std, 1.0)  # constant column: leave it centred, unscaled
        return cls(mean=mean.astype(np.float64), std=std.astype(np.float64))

    def transform(self, x: FloatArray) -> FloatArray:
        return (x - self.mean) / self.std

    def inverse(self, z: FloatArray) -> FloatArray:
        return z * self.std + self.mean

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_json(cls, data: Mapping[str, Sequence[float]]) -> Scaler:
        mean = np.asarray(data["mean"], dtype=np.float64)
        std = np.asarray(data["std"], dtype=np.float64)
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError("scaler mean and std must be equal-length lists")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("scaler holds non-finite or non-positive values")
        return cls(mean=mean, std=std)


def check_roles(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    """Raise `FeatureError` naming every role the frame lacks."""
    missing = [r for r in spec.required_roles() if r not in frame.columns]
    if spec.derive_wetbulb and WETBULB in spec.state_roles:
        missing += [r for r in ("outdoor_drybulb_c", "outdoor_rh_pct") if r not in frame.columns and r not in missing]
    if missing:
        raise FeatureError(
            f"history lacks role(s) {', '.join(missing)}; the forecaster needs "
            f"{', '.join(spec.required_roles())}"
        )


def uses_wetbulb_sensor(frame: pd.DataFrame) -> bool:
    """True when the history holds a wet-bulb sensor with data (else wet-bulb is derived)."""
    return WETBULB in frame.columns and bool(frame[WETBULB].notna().any())


def regular_grid(frame: pd.DataFrame) -> pd.DataFrame:
    """Put a frame on the 5-minute UTC grid so that shifts are time shifts; gaps -> NaN rows."""
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise FeatureError("history frame must have a timezone-aware DatetimeIndex (UTC)")
    if frame.index.has_duplicates:
        dup = frame.index[frame.index.duplicated()][0]
        raise FeatureError(f"history frame has duplicate timestamps, first at {dup.isoformat()}")
    idx = frame.index.tz_convert("UTC")
    if (idx != idx.floor(STEP)).any():
        bad = idx[idx != idx.floor(STEP)][0]
        raise FeatureError(f"history frame is not on the 5-minute grid, e.g. {bad.isoformat()}")
    out = frame.set_axis(idx).sort_index()
    if out.empty:
        return out
    grid = pd.date_range(out.index[0], out.index[-1], freq=STEP, tz="UTC")
    return out.reindex(grid)


def _with_wetbulb(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Derived wet-bulb replaces any sensor column when the spec says so (same in training and use)."""
    if not spec.derive_wetbulb or WETBULB not in spec.state_roles:
        return frame
    out = frame.copy()
    out[WETBULB] = wetbulb_c(frame["outdoor_drybulb_c"].to_numpy(float), frame["outdoor_rh_pct"].to_numpy(float))
    return out


def _state_block(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """State columns for every row of a gridded frame (NaN where history has a gap)."""
    cols: dict[str, pd.Series] = {}
    for r in spec.state_roles:
        cols[r] = frame[r].astype(float)
    for sp in SETPOINT_ROLES:
        cols[f"{sp}@now"] = frame[sp].astype(float).shift(1)  # in force while row t was sampled
    for r in spec.lagged_roles:
        s = frame[r].astype(float)
        for lag in spec.lag_steps:
            cols[f"{r}@lag{lag}"] = s.shift(lag)
    for r in spec.rolling_roles:
        cols[f"{r}@mean{spec.rolling_steps}"] = frame[r].astype(float).rolling(spec.rolling_steps).mean()
    idx = pd.DatetimeIndex(frame.index)
    minutes = idx.hour.to_numpy() * 60 + idx.minute.to_numpy()
    angle = 2 * np.pi * minutes / 1440.0
    cols["tod_sin"] = pd.Series(np.sin(angle), index=frame.index)
    cols["tod_cos"] = pd.Series(np.cos(angle), index=frame.index)
    return pd.DataFrame(cols, index=frame.index)[spec.state_names()]


def candidate_block(current_sp_c: FloatArray, horizon_sp_c: FloatArray,
                    end_sp_c: FloatArray | None = None) -> FloatArray:
    """Setpoint-dependent columns: horizon mean [C], its change from now [K], value at the end [C].

    ``current_sp_c`` (n, 3) or (3,), ``horizon_sp_c`` and ``end_sp_c`` (n, 3); all in
    SETPOINT_ROLES order. In training the setpoints move within the horizon (the rules
    adjust them every cycle), and where they end says more about the hottest inlet than
    their mean; a candidate held over the horizon has end = mean (``end_sp_c`` None).
    """
    horizon = np.asarray(horizon_sp_c, dtype=np.float64)
    end = horizon if end_sp_c is None else np.asarray(end_sp_c, dtype=np.float64)
    return np.concatenate([horizon, horizon - np.asarray(current_sp_c, dtype=np.float64), end], axis=-1)


def build_samples(frame: pd.DataFrame, spec: FeatureSpec, clean: bool = True) -> FeatureSet:
    """All complete samples of a history frame (pure; gaps dropped and counted).

    ``clean``: first set out-of-range readings and isolated spikes to NaN
    (`forecasting.cleaning`), so that samples touching them are dropped too.
    """
    check_roles(frame, spec)
    raw_rows = len(frame)
    grid = regular_grid(frame)
    removed = 0
    if clean:
        grid, removed = drop_outliers(grid)
    grid = _with_wetbulb(grid, spec)
    h = spec.horizon_steps
    state = _state_block(grid, spec)
    setpoints = grid[list(SETPOINT_ROLES)].astype(float)
    cur_sp = setpoints.shift(1).to_numpy(float)
    hor_sp = setpoints.rolling(h).mean().shift(-(h - 1)).to_numpy(float)  # rows t..t+h-1
    y_cool = grid[TARGETS[0]].astype(float).rolling(h).mean().shift(-h).to_numpy()
    y_rack = grid[TARGETS[1]].astype(float).rolling(h).max().shift(-h).to_numpy()
    x_state = state.to_numpy(float)
    end_sp = setpoints.shift(-(h - 1)).to_numpy(float)
    x = np.concatenate([x_state, candidate_block(cur_sp, hor_sp, end_sp)], axis=1)
    y = np.stack([y_cool, y_rack], axis=1)
    state_ok = np.isfinite(x_state).all(axis=1)
    horizon_ok = np.isfinite(hor_sp).all(axis=1) & np.isfinite(end_sp).all(axis=1) & np.isfinite(y).all(axis=1)
    keep = state_ok & horizon_ok
    gaps = GapReport(
        rows=len(grid),
        missing_grid_rows=len(grid) - raw_rows,
        outliers_removed=removed,
        dropped_state=int((~state_ok).sum()),
        dropped_horizon=int((state_ok & ~horizon_ok).sum()),
        samples=int(keep.sum()),
    )
    return FeatureSet(
        x=x[keep], y=y[keep], index=pd.DatetimeIndex(grid.index[keep]), names=spec.feature_names(),
        n_state=x_state.shape[1], gaps=gaps,
    )


def require_enough(fs: FeatureSet, min_samples: int, max_gap_share: float = 0.5) -> None:
    """Refuse history that is too short or mostly gaps, saying what is needed."""
    g = fs.gaps
    unusable = g.rows - g.samples
    if g.rows and unusable / g.rows > max_gap_share:
        raise FeatureError(
            f"history window is mostly gaps: {unusable} of {g.rows} 5-minute rows cannot make a sample "
            f"({g.missing_grid_rows} rows absent, {g.dropped_state} with gaps in the state or its lags, "
            f"{g.dropped_horizon} with gaps in the next hour); at most {max_gap_share:.0%} may be unusable"
        )
    if g.samples < min_samples:
        days = min_samples * STEP_MIN / 1440.0
        raise FeatureError(
            f"too little history: {g.samples} usable samples from {g.rows} 5-minute rows; training needs "
            f"at least {min_samples} (about {days:.1f} days of gap-free 5-minute history)"
        )


def bridge_single_gaps(frame: pd.DataFrame, *, carry_newest: bool = False) -> pd.DataFrame:
    """Fill each isolated one-record gap with the mean of its two neighbours (inference only).

    A historian routinely drops a single 5-minute record; without this, one dropout
    leaves the lag and rolling features of the next hour incomplete and the controller
    falls back for an hour. Only gaps with a reading on both sides are bridged, and runs
    of two or more missing records stay gaps. The newest row is filled only with
    ``carry_newest``, by its predecessor (a reading one record old, which the quality
    check's freshness rule accepts anyway). Training never uses this.
    """
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if not pd.api.types.is_numeric_dtype(s):
            continue
        prev, nxt = s.shift(1), s.shift(-1)
        lone = s.isna() & prev.notna() & nxt.notna()
        if lone.any():
            out.loc[lone, col] = ((prev + nxt) / 2.0)[lone]
        if carry_newest and len(s) >= 2 and pd.isna(s.iloc[-1]) and pd.notna(s.iloc[-2]):
            out.loc[out.index[-1], col] = s.iloc[-2]
    return out


def state_vector(history: pd.DataFrame, spec: FeatureSpec) -> FloatArray:
    """The state columns for the most recent row of a history frame, as a (n_state,) vector.

    Isolated one-record gaps are bridged and a lone missing newest record carries its
    predecessor forward (`bridge_single_gaps`); raises `FeatureError` naming the
    offending columns when the latest state still has gaps.
    """
    check_roles(history, spec)
    need = spec.history_needed()
    grid = regular_grid(history)
    if len(grid) < need:
        raise FeatureError(f"state needs {need} rows of 5-minute history, got {len(grid)}")
    # one row more than needed, so that a lone gap in the oldest needed row has both neighbours
    tail = _with_wetbulb(bridge_single_gaps(grid.iloc[-need - 1:], carry_newest=True).iloc[-need:], spec)
    row = _state_block(tail, spec).iloc[-1]
    bad = [str(name) for name, v in row.items() if not np.isfinite(v)]
    if bad:
        raise FeatureError(
            f"latest state at {tail.index[-1].isoformat()} has gaps in {', '.join(bad[:8])}"
            + (" ..." if len(bad) > 8 else "")
        )
    return row.to_numpy(float)


def current_setpoints(history: pd.DataFrame) -> FloatArray:
    """Setpoints in force while the latest readings were taken [C] (row t-1), SETPOINT_ROLES order."""
    grid = regular_grid(history)
    if len(grid) < 2:
        raise FeatureError("current setpoints need at least two rows of history")
    return grid[list(SETPOINT_ROLES)].iloc[-2].to_numpy(float)
