"""Check a point map against a model before anything runs.

EnergyPlus only says at run time that an output does not exist, and then as a handle
of -1 deep in a callback. These checks catch the usual mistakes up front, with one
line naming model, role, output and key: a key that is no object or node of the
model, a variable EnergyPlus 25.2 does not know, a unit the conversion does not fit,
a meter part the model never names, a replaced setpoint manager that is not there.
The worker checks every handle again at the start of the run.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from db.roles import ROLES
from simulator.energyplus.model import Doc, find_name
from simulator.energyplus.pointmap import PointMap, Source

#: Keys EnergyPlus uses for outputs that belong to no object.
GLOBAL_KEYS = frozenset({"environment", "whole building", "ems", "simhvac", "facility"})
RESOURCES = frozenset(s.casefold() for s in (
    "Electricity", "ElectricityPurchased", "ElectricityProduced", "ElectricitySurplusSold", "ElectricityNet",
    "NaturalGas", "Gasoline", "Diesel", "Coal", "FuelOilNo1", "FuelOilNo2", "Propane", "OtherFuel1",
    "OtherFuel2", "Water", "MainsWater", "RainWater", "WellWater", "Condensate", "DistrictCooling",
    "DistrictHeatingWater", "DistrictHeatingSteam", "EnergyTransfer", "Steam", "Carbon Equivalent"))
METER_WORDS = frozenset(s.casefold() for s in (
    "Facility", "Building", "HVAC", "Plant", "System", "Zone", "SpaceType", "InteriorLights", "ExteriorLights",
    "InteriorEquipment", "ExteriorEquipment", "Fans", "Pumps", "Heating", "Cooling", "HeatRejection",
    "Humidifier", "HeatRecovery", "WaterSystems", "Refrigeration", "Cogeneration", "HeatingCoils",
    "CoolingCoils", "Chillers", "Boilers", "Baseboard", "HeatRecoveryForCooling", "HeatRecoveryForHeating",
    "General", "Photovoltaic", "WindTurbine", "PowerConversion"))
_UNIT_OF = {"W": "W", "J": "J", "C": "C", "deltaC": "C", "Perc": "%", "None": "", "kg_s": "kg/s"}


@functools.cache
def known_variables(csv_path: Path) -> dict[str, frozenset[str]]:
    """Output variable name (casefolded) -> units, from the engine's SetupOutputVariables.csv."""
    out: dict[str, set[str]] = {}
    with csv_path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for row in csv.DictReader(fh):
            name = (row.get("Variable name") or "").strip().strip('"').strip()
            unit = (row.get("Units") or "").rsplit("::", 1)[-1].strip()
            if name:
                out.setdefault(name.casefold(), set()).add(_UNIT_OF.get(unit, unit))
    return {k: frozenset(v) for k, v in out.items()}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def model_names(doc: Doc) -> frozenset[str]:
    """Every object name and string field value of the model, casefolded (nodes have no objects of their own)."""
    return frozenset(s.casefold() for s in _strings({k: v for k, v in doc.items()}))


def _ems_variables(doc: Doc) -> frozenset[str]:
    return frozenset(k.casefold() for k in doc.get("EnergyManagementSystem:OutputVariable", {}))


class _Checker:
    def __init__(self, doc: Doc, label: str, known: dict[str, frozenset[str]] | None) -> None:
        self.doc, self.label, self.known = doc, label, known
        self.names = model_names(doc)
        self.ems = _ems_variables(doc)

    def fail(self, what: str, problem: str) -> ValueError:
        return ValueError(f"model {self.label}: point map {what}: {problem}")

    def variable(self, what: str, name: str, key: str, unit: str | None) -> None:
        if name.casefold() in self.ems:
            return
        if key.casefold() not in GLOBAL_KEYS and key.casefold() not in self.names:
            raise self.fail(what, f"no output variable {name!r} for key {key!r} "
                                  f"(the model has no object or node named {key!r})")
        if self.known is None:
            return
        units = self.known.get(name.casefold())
        if units is None:
            raise self.fail(what, f"no output variable {name!r} for key {key!r} "
                                  f"({name!r} is not an EnergyPlus output variable)")
        if unit is not None and unit not in units:
            raise self.fail(what, f"output variable {name!r} is in {'/'.join(sorted(units)) or 'no unit'}, "
                                  f"but the map's conversion expects {unit or 'no unit'}")

    def meter(self, what: str, name: str) -> None:
        parts = [p.strip().casefold() for p in name.split(":")]
        if len(parts) < 2 or not any(p in RESOURCES for p in parts):
            raise self.fail(what, f"no meter {name!r} (a meter name looks like 'Electricity:Facility' "
                                  "or 'Fans:Electricity')")
        unknown = [p for p in parts if p not in RESOURCES and p not in METER_WORDS and p not in self.names]
        if unknown:
            raise self.fail(what, f"no meter {name!r} (the model names no end-use subcategory, zone or "
                                  f"space type {unknown[0]!r})")

    def source(self, what: str, src: Source, unit: str | None) -> None:
        if src.meter is not None:
            self.meter(what, src.meter)
            return
        self.variable(what, str(src.variable), str(src.key), unit)
        if src.weight_variable is not None and src.weight_key is not None:
            self.variable(what, src.weight_variable, src.weight_key, None)


def _expected_unit(role: str, convert: str) -> str | None:
    if convert == "W_to_kW":
        return "W"
    if convert == "J_per_step_to_kW":
        return "J"
    if convert == "fraction_to_pct":
        return ""
    unit = ROLES[role].unit
    return {"C": "C", "%": "%"}.get(unit)


def check_map_against_model(doc: Doc, pointmap: PointMap, label: str, *, own_controls: bool,
                            known: dict[str, frozenset[str]] | None) -> None:
    """Raise ValueError 'model X: point map role Y: ...' for the first thing the model lacks."""
    c = _Checker(doc, label, known)
    for role, point in pointmap.measurements.items():
        for src in point.sources:
            c.source(f"role {role!r}", src, _expected_unit(role, point.convert))
    for bucket, meters in pointmap.energy.items():
        for name in meters:
            c.meter(f"energy {bucket!r}", name)
    schedules = {k: v for k, v in doc.items() if k.startswith("Schedule:")}
    for role, sp in pointmap.setpoints.items():
        what = f"setpoint role {role!r}"
        for src in sp.readback:
            c.source(what, src, "C")
        if own_controls:
            continue
        for ref in sp.replaces:
            objects = doc.get(ref.type, {})
            key = find_name(objects, ref.name)
            if key is None:
                raise c.fail(what, f"no {ref.type} named {ref.name!r} to replace")
            if not objects[key].get("setpoint_node_or_nodelist_name"):
                raise c.fail(what, f"{ref.type} {ref.name!r} names no setpoint node")
        existing = [t for t, objs in schedules.items() if find_name(objs, sp.schedule) is not None]
        if sp.replaces and existing:
            raise c.fail(what, f"schedule {sp.schedule!r} already exists ({existing[0]}); "
                               "name a new one for the plant to create")
        if not sp.replaces and sp.schedule_type not in existing:
            raise c.fail(what, f"no {sp.schedule_type} named {sp.schedule!r} to actuate")
