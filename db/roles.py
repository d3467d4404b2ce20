"""Canonical point roles: the contract between db, simulator, forecasting and controller.

Every site maps its own historian tag names to these roles (a tag map). Everything
downstream of ingest speaks roles only. Each role has one unit; values in any other
unit are rejected at ingest, never converted silently.

The physical range is the widest span a healthy sensor of that role can report; a
reading outside it is a bad reading (data-quality checks use it). It is not a
control limit: those live in the controller config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RoleKind = Literal["measurement", "setpoint"]


@dataclass(frozen=True)
class Role:
    """One canonical point role."""

    name: str
    unit: str
    kind: RoleKind
    description: str
    optional: bool
    physical_min: float
    physical_max: float


def _m(name: str, unit: str, description: str, lo: float, hi: float, optional: bool = False) -> Role:
    return Role(name, unit, "measurement", description, optional, lo, hi)


def _sp(name: str, description: str, lo: float, hi: float) -> Role:
    return Role(name, "C", "setpoint", description, False, lo, hi)


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        _m("it_power_kw", "kW", "IT (server) electrical power", 0.0, 100_000.0),
        _m("cooling_power_kw", "kW", "Whole cooling plant electrical power (chillers, towers, pumps, CRAH fans)", 0.0, 100_000.0),
        _m("facility_power_kw", "kW", "Whole facility electrical power, where a meter exists", 0.0, 200_000.0, optional=True),
        _m("chiller_power_kw", "kW", "Chiller compressor electrical power", 0.0, 100_000.0, optional=True),
        _m("tower_fan_power_kw", "kW", "Cooling-tower fan electrical power", 0.0, 20_000.0, optional=True),
        _m("pump_power_kw", "kW", "Chilled- and condenser-water pump electrical power", 0.0, 20_000.0, optional=True),
        _m("crah_fan_power_kw", "kW", "Air-handler (CRAH) fan electrical power", 0.0, 20_000.0, optional=True),
        _m("outdoor_drybulb_c", "C", "Outdoor dry-bulb air temperature", -60.0, 60.0),
        _m("outdoor_rh_pct", "%", "Outdoor relative humidity", 0.0, 100.0),
        _m("outdoor_wetbulb_c", "C", "Outdoor wet-bulb temperature (derived from dry-bulb and RH when absent)", -60.0, 45.0, optional=True),
        _m("chw_supply_c", "C", "Chilled-water supply (leaving chillers / economiser) temperature", 0.0, 30.0),
        _m("chw_return_c", "C", "Chilled-water return temperature", 0.0, 40.0),
        _m("cw_supply_c", "C", "Condenser-water supply temperature (leaving the cooling towers)", 0.0, 50.0),
        _m("supply_air_c", "C", "Air-handler supply air temperature", 5.0, 40.0),
        _m("rack_inlet_max_c", "C", "Hottest rack-inlet air temperature in the hall", 5.0, 55.0),
        _m("rack_inlet_mean_c", "C", "Mean rack-inlet air temperature in the hall", 5.0, 50.0),
        _m("chillers_running", "count", "Number of chillers running", 0.0, 50.0),
        _m("economizer_active", "fraction", "Share of the load carried by the waterside economiser (0 off, 1 full free cooling)", 0.0, 1.0),
        _sp("chw_supply_sp_c", "Chilled-water supply temperature setpoint", 0.0, 30.0),
        _sp("supply_air_sp_c", "Air-handler supply air temperature setpoint", 5.0, 40.0),
        _sp("cw_supply_sp_c", "Condenser-water supply (tower leaving) temperature setpoint", 0.0, 50.0),
    )
}

MEASUREMENT_ROLES: tuple[str, ...] = tuple(n for n, r in ROLES.items() if r.kind == "measurement")
SETPOINT_ROLES: tuple[str, ...] = tuple(n for n, r in ROLES.items() if r.kind == "setpoint")
REQUIRED_MEASUREMENT_ROLES: tuple[str, ...] = tuple(
    n for n, r in ROLES.items() if r.kind == "measurement" and not r.optional
)


def role(name: str) -> Role:
    """Look a role up by name, with an error that lists the known roles."""
    try:
        return ROLES[name]
    except KeyError:
        raise KeyError(f"unknown role {name!r}; known roles: {', '.join(ROLES)}") from None


def pue(it_power_kw: float, cooling_power_kw: float, facility_power_kw: float | None = None,
        other_losses_kw: float = 0.0) -> float:
    """Power usage effectiveness [-]: facility / IT power.

    Where no facility meter exists, facility = IT + cooling + other losses.
    """
    if it_power_kw <= 0:
        return float("nan")
    facility = facility_power_kw if facility_power_kw is not None else it_power_kw + cooling_power_kw + other_losses_kw
    return facility / it_power_kw
