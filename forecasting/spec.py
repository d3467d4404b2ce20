"""What a forecaster learns from: roles, setpoints, targets, lags and role masking.

A `FeatureSpec` is stored with every model as plain JSON. Its defaults are the
original spec (every role, the three setpoints, two targets, no masking), so that a
model saved before the spec grew its later fields loads unchanged.
`FeatureSpec.for_history` builds the spec of a site from its history instead: only
the roles it has (with enough coverage and some variation), only the setpoints it
controls, IT power as a third target when metered, and masking of every role group
that is not indispensable (see `forecasting.features`).

A role *group* is a state role's current value, its lags and its rolling mean. A
group can be masked: its columns are imputed with the training mean and its
indicator column ``<role>@masked`` is 1. The current values of ``ESSENTIAL_ROLES``
(cooling power, hottest rack inlet) are never imputed; only their lags and rolling
means form their group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from db.roles import SETPOINT_ROLES

STEP_MIN = 5
TARGETS: tuple[str, str] = ("cooling_power_kw", "rack_inlet_max_c")
"""(mean cooling power over the horizon [kW], max rack inlet over the horizon [C])."""
IT_TARGET = "it_power_kw"
"""Third target where IT power is metered: mean IT power over the horizon [kW]."""
ALL_TARGETS: tuple[str, ...] = (*TARGETS, IT_TARGET)
ESSENTIAL_ROLES: tuple[str, ...] = TARGETS
"""Roles whose current value the model cannot do without (never imputed)."""
MIN_COVERAGE = 0.5
"""A role with a smaller share of finite rows in the history is left out by `FeatureSpec.for_history`."""

WETBULB = "outdoor_wetbulb_c"
DRYBULB, RH = "outdoor_drybulb_c", "outdoor_rh_pct"
STATE_ROLES: tuple[str, ...] = (
    "it_power_kw", "cooling_power_kw", DRYBULB, RH, WETBULB,
    "chw_supply_c", "chw_return_c", "cw_supply_c", "supply_air_c", "rack_inlet_max_c",
    "rack_inlet_mean_c", "chillers_running", "economizer_active",
)
LAGGED_ROLES: tuple[str, ...] = (
    "it_power_kw", "cooling_power_kw", "rack_inlet_max_c", "supply_air_c", "chw_supply_c", WETBULB,
)
ROLLING_ROLES: tuple[str, ...] = ("it_power_kw", "cooling_power_kw", "rack_inlet_max_c", WETBULB)


class FeatureError(ValueError):
    """History that cannot make features: missing roles, too little data, mostly gaps."""


def _unique_subset(name: str, values: tuple[str, ...], allowed: Sequence[str]) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"{name} repeats a role: {values}")
    extra = [v for v in values if v not in allowed]
    if extra:
        raise ValueError(f"{name} holds {', '.join(extra)}, not among {', '.join(allowed)}")


@dataclass(frozen=True)
class FeatureSpec:
    """How features and targets are built; stored with every model as plain JSON.

    ``horizon_steps`` 5-minute rows ahead (12 = 60 min); lags in rows [5 min each].
    ``setpoint_roles``: the controllable setpoints, the column order of candidates.
    ``targets``: ``TARGETS`` or ``ALL_TARGETS`` (with mean IT power). ``mask_roles``:
    state roles whose group may be masked (each adds an indicator feature).
    """

    horizon_steps: int = 12
    lag_steps: tuple[int, ...] = (1, 3, 6, 12)
    rolling_steps: int = 12
    state_roles: tuple[str, ...] = STATE_ROLES
    lagged_roles: tuple[str, ...] = LAGGED_ROLES
    rolling_roles: tuple[str, ...] = ROLLING_ROLES
    derive_wetbulb: bool = True  # compute wet-bulb from dry-bulb and RH (psychrolib) instead of a sensor
    setpoint_roles: tuple[str, ...] = SETPOINT_ROLES
    targets: tuple[str, ...] = TARGETS
    mask_roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.horizon_steps < 1:
            raise ValueError(f"horizon_steps must be >= 1, got {self.horizon_steps}")
        if not self.lag_steps or min(self.lag_steps) < 1:
            raise ValueError(f"lag_steps must be positive, got {self.lag_steps}")
        for name in TARGETS:
            if name not in self.state_roles:
                raise ValueError(f"state_roles must include the target role {name!r}")
        if not self.setpoint_roles:
            raise ValueError("setpoint_roles must name at least one controllable setpoint")
        _unique_subset("setpoint_roles", self.setpoint_roles, SETPOINT_ROLES)
        if self.targets not in (TARGETS, ALL_TARGETS):
            raise ValueError(f"targets must be {TARGETS} or {ALL_TARGETS}, got {self.targets}")
        if IT_TARGET in self.targets and IT_TARGET not in self.state_roles:
            raise ValueError(f"the {IT_TARGET!r} target needs {IT_TARGET!r} among the state roles")
        _unique_subset("lagged_roles", self.lagged_roles, self.state_roles)
        _unique_subset("rolling_roles", self.rolling_roles, self.state_roles)
        _unique_subset("mask_roles", self.mask_roles, self.state_roles)
        empty = [r for r in self.mask_roles if not self.group_columns(r)]
        if empty:
            raise ValueError(f"mask_roles {', '.join(empty)} have nothing to mask (essential, no lags)")

    @classmethod
    def for_history(cls, frame: pd.DataFrame, setpoint_roles: Sequence[str] | None = None, *,
                    min_coverage: float = MIN_COVERAGE, masking: bool = True, horizon_steps: int = 12,
                    lag_steps: tuple[int, ...] = (1, 3, 6, 12), rolling_steps: int = 12) -> FeatureSpec:
        """The spec of the site whose history ``frame`` is (wide, one column per role).

        Keeps the state roles with at least ``min_coverage`` finite rows that are not
        constant; wet-bulb from a sensor when it has coverage, else derived when dry-bulb
        and RH are kept. ``setpoint_roles`` default: the setpoints with coverage that
        vary. Raises `FeatureError` when cooling power, rack inlet or a listed setpoint
        lacks coverage.
        """
        usable = {r: _coverage(frame, r) >= min_coverage for r in (*STATE_ROLES, *SETPOINT_ROLES)}
        varying = {r for r, ok in usable.items() if ok and not _constant(frame[r])}
        sps = (tuple(setpoint_roles) if setpoint_roles is not None
               else tuple(r for r in SETPOINT_ROLES if r in varying))
        short = [r for r in (*ESSENTIAL_ROLES, *sps) if not usable.get(r, False)]
        if short or not sps:
            raise FeatureError(
                f"history lacks role(s) {', '.join(short) or 'any varying setpoint'} with at least "
                f"{min_coverage:.0%} of rows filled; the forecaster needs {', '.join((*ESSENTIAL_ROLES, *sps))}"
            )
        sensor = WETBULB in varying
        derive = not sensor and DRYBULB in varying and RH in varying
        state = tuple(r for r in STATE_ROLES
                      if r in ESSENTIAL_ROLES or (r in varying and r != WETBULB) or (r == WETBULB and (sensor or derive)))
        lagged = tuple(r for r in LAGGED_ROLES if r in state)
        rolling = tuple(r for r in ROLLING_ROLES if r in state)
        targets = ALL_TARGETS if IT_TARGET in state else TARGETS
        masks = tuple(r for r in state if r not in ESSENTIAL_ROLES or r in lagged or r in rolling) if masking else ()
        return cls(horizon_steps=horizon_steps, lag_steps=tuple(lag_steps), rolling_steps=rolling_steps,
                   state_roles=state, lagged_roles=lagged, rolling_roles=rolling, derive_wetbulb=derive,
                   setpoint_roles=sps, targets=targets, mask_roles=masks)

    @property
    def horizon_min(self) -> int:
        """Forecast horizon [min]."""
        return self.horizon_steps * STEP_MIN

    def history_needed(self) -> int:
        """Rows of history (including the current row) that one state needs."""
        return max(*self.lag_steps, self.rolling_steps) + 1

    def required_roles(self) -> tuple[str, ...]:
        """Roles the model reads (wet-bulb only when the model uses a wet-bulb sensor)."""
        measured = tuple(r for r in self.state_roles if r != WETBULB or not self.derive_wetbulb)
        return measured + tuple(self.setpoint_roles)

    def essential_roles(self) -> tuple[str, ...]:
        """Roles that must be present with a current reading; the others can be masked."""
        return tuple(r for r in self.required_roles()
                     if r in ESSENTIAL_ROLES or r in self.setpoint_roles or r not in self.mask_roles)

    def group_columns(self, role: str) -> tuple[str, ...]:
        """Feature names of a role's group (without its indicator): value, lags, rolling mean."""
        cols = [] if role in ESSENTIAL_ROLES else [role]
        if role in self.lagged_roles:
            cols += [f"{role}@lag{lag}" for lag in self.lag_steps]
        if role in self.rolling_roles:
            cols.append(f"{role}@mean{self.rolling_steps}")
        return tuple(cols)

    def mask_groups(self) -> dict[str, tuple[str, ...]]:
        """Group columns of every maskable role, in ``mask_roles`` order."""
        return {r: self.group_columns(r) for r in self.mask_roles}

    def state_names(self) -> list[str]:
        names = list(self.state_roles)
        names += [f"{sp}@now" for sp in self.setpoint_roles]
        names += [f"{r}@lag{lag}" for r in self.lagged_roles for lag in self.lag_steps]
        names += [f"{r}@mean{self.rolling_steps}" for r in self.rolling_roles]
        names += ["tod_sin", "tod_cos"]
        names += [indicator_name(r) for r in self.mask_roles]
        return names

    def candidate_names(self) -> list[str]:
        sps = self.setpoint_roles
        return [f"{sp}@horizon" for sp in sps] + [f"{sp}@change" for sp in sps] + [f"{sp}@end" for sp in sps]

    def feature_names(self) -> list[str]:
        return self.state_names() + self.candidate_names()

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Rebuild a stored spec; fields it lacks (older models) take their defaults."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature-spec fields: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


def indicator_name(role: str) -> str:
    """The mask indicator feature of a role group (1 = imputed)."""
    return f"{role}@masked"


def _coverage(frame: pd.DataFrame, role: str) -> float:
    """Share of the frame's rows with a finite reading of ``role`` [-]; 0 when absent."""
    if role not in frame.columns or len(frame) == 0:
        return 0.0
    values = pd.to_numeric(frame[role], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return float(np.isfinite(values).mean())


def _constant(series: pd.Series) -> bool:
    """True when every finite reading is the same value (the role carries no information)."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    values = values[np.isfinite(values)]
    return values.size == 0 or float(values.max() - values.min()) <= 1e-9 * max(1.0, float(np.abs(values).max()))
