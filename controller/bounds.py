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

#: (chilled water, supply air): supply air must stay the coil approach above chilled water.
COIL_ROLES: tuple[str, str] = ("chw_supply_sp_c", "supply_air_sp_c")


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
        unknown = [r for r in self.roles if r not in SETPOINT_ROLES]
        if unknown:
            raise ValueError(f"setpoint envelope names unknown setpoint role(s) {', '.join(unknown)}; "
                             f"known: {', '.join(SETPOINT_ROLES)}")
        if not self.roles:
            raise ValueError("setpoint envelope needs bounds for at least one setpoint role")

    @property
    def setpoint_roles(self) -> tuple[str, ...]:
        """The setpoints this site lets CoolPilot control, in ``db.roles.SETPOINT_ROLES`` order.

        Why a subset: many sites have no chilled-water plant, or leave condenser water
        to the BMS. Every vector, box and candidate array follows this order.
        """
        return tuple(r for r in SETPOINT_ROLES if r in self.roles)

    @property
    def coupled(self) -> bool:
        """True when both coil-approach roles (chilled water and supply air) are controlled."""
        return COIL_ROLES[0] in self.roles and COIL_ROLES[1] in self.roles

    def bounds(self, role: str) -> RoleBounds:
        return self.roles[role]
