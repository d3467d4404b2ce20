"""Operator setpoint envelope: hard bounds, rate limits and coupling rules.

This is the one definition of "allowed setpoints", shared by the safety layer, the
optimiser's candidate generator, the rule-based fallback, history exploration and the
simulator's oracle. It is plain data plus pure checks; the config module builds it
from the operator's TOML file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from db.roles import SETPOINT_ROLES


@dataclass(frozen=True)
class RoleBounds:
    """Bounds for one setpoint role [C] and its largest move per control cycle [K]."""

    min_c: float
    max_c: float
    max_step_k: float

    def __post_init__(self) -> None:
        if not self.min_c <= self.max_c:
            raise ValueError(f"min_c {self.min_c} must not exceed max_c {self.max_c}")
        if not self.max_step_k > 0:
            raise ValueError(f"max_step_k {self.max_step_k} must be positive")


def _default_roles() -> dict[str, RoleBounds]:
    return {
        "chw_supply_sp_c": RoleBounds(min_c=6.0, max_c=16.0, max_step_k=0.5),
        "supply_air_sp_c": RoleBounds(min_c=16.0, max_c=25.0, max_step_k=0.5),
        "cw_supply_sp_c": RoleBounds(min_c=16.0, max_c=32.0, max_step_k=1.0),
    }


@dataclass(frozen=True)
class SetpointEnvelope:
    """Everything that bounds a setpoint vector, independent of any model.

    ``min_coil_approach_k``: supply-air setpoint must exceed the chilled-water setpoint
    by at least this much [K] (a coil cannot cool air below the water temperature).
    """

    roles: Mapping[str, RoleBounds] = field(default_factory=_default_roles)
    min_coil_approach_k: float = 3.0

    def __post_init__(self) -> None:
        missing = [r for r in SETPOINT_ROLES if r not in self.roles]
        if missing:
            raise ValueError(f"setpoint envelope lacks bounds for {', '.join(missing)}")

    def bounds(self, role: str) -> RoleBounds:
        return self.roles[role]
