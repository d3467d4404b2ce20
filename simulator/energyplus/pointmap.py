"""Point maps: which EnergyPlus outputs make each CoolPilot role, as checked data.

A point map is a TOML file per building model (``maps/<model>.toml``). It says, for
each measurement role the model can report, which output variables or meters to read
and how to combine and convert them; for each setpoint role the model has, which
schedule the plant actuates and which of the model's setpoint managers that schedule
replaces; and which meters add up to the facility, IT, cooling and other energy.
Roles the model lacks are simply absent. Everything is checked on load; a bad map
raises one ValueError naming the file, the role and the field.

Why data and not code: a user brings their own model, and should only have to write
names they can read off the model (see docs/energyplus.md).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from db.roles import ROLES

Combine = Literal["sum", "mean", "max", "min", "flow_weighted_mean", "count_on"]
Convert = Literal["none", "W_to_kW", "J_per_step_to_kW", "fraction_to_pct"]
COMBINES: tuple[str, ...] = ("sum", "mean", "max", "min", "flow_weighted_mean", "count_on")
CONVERTS: tuple[str, ...] = ("none", "W_to_kW", "J_per_step_to_kW", "fraction_to_pct")
#: Which conversions suit each role unit (EnergyPlus reports W, J per timestep, C, %, 0..1).
UNIT_CONVERTS: dict[str, tuple[str, ...]] = {
    "kW": ("W_to_kW", "J_per_step_to_kW"),
    "C": ("none",),
    "%": ("none", "fraction_to_pct"),
    "count": ("none",),
    "fraction": ("none",),
}
ENERGY_BUCKETS: tuple[str, ...] = ("facility", "it", "cooling", "other")
SCHEDULE_TYPES: tuple[str, ...] = ("Schedule:Constant", "Schedule:Compact", "Schedule:Year", "Schedule:File")


@dataclass(frozen=True)
class Source:
    """One EnergyPlus output: a variable (name + key) or a meter (name), with an optional flow weight."""

    variable: str | None = None
    key: str | None = None
    meter: str | None = None
    weight_variable: str | None = None
    weight_key: str | None = None

    def describe(self) -> str:
        if self.meter is not None:
            return f"meter {self.meter!r}"
        return f"output variable {self.variable!r} for key {self.key!r}"


@dataclass(frozen=True)
class MeasurementPoint:
    """How one measurement role is made from its sources."""

    role: str
    sources: tuple[Source, ...]
    combine: Combine
    convert: Convert
    threshold: float = 0.0


@dataclass(frozen=True)
class ManagerRef:
    """A setpoint manager of the model, by object type and name."""

    type: str
    name: str


@dataclass(frozen=True)
class SetpointPoint:
    """How one setpoint role reaches the model: an actuated schedule (and the managers it replaces)."""

    role: str
    schedule: str
    schedule_type: str
    initial_c: float
    replaces: tuple[ManagerRef, ...]
    readback: tuple[Source, ...]

    @property
    def actuator(self) -> tuple[str, str, str]:
        """(component type, control type, key) of the EnergyPlus actuator."""
        return (self.schedule_type, "Schedule Value", self.schedule)


@dataclass(frozen=True)
class PointMap:
    """A checked point map."""

    path: Path
    model: str
    description: str
    measurements: dict[str, MeasurementPoint]
    setpoints: dict[str, SetpointPoint]
    energy: dict[str, tuple[str, ...]]

    def variables(self) -> list[tuple[str, str]]:
        """Every (variable, key) the map reads, once each, in map order."""
        seen: dict[tuple[str, str], None] = {}
        for src in self.all_sources():
            if src.variable is not None and src.key is not None:
                seen.setdefault((src.variable, src.key), None)
            if src.weight_variable is not None and src.weight_key is not None:
                seen.setdefault((src.weight_variable, src.weight_key), None)
        return list(seen)

    def meters(self) -> list[str]:
        """Every meter the map reads (roles and energy buckets), once each, in map order."""
        seen: dict[str, None] = {}
        for src in self.all_sources():
            if src.meter is not None:
                seen.setdefault(src.meter, None)
        for names in self.energy.values():
            for name in names:
                seen.setdefault(name, None)
        return list(seen)

    def all_sources(self) -> list[Source]:
        out = [s for p in self.measurements.values() for s in p.sources]
        out += [s for p in self.setpoints.values() for s in p.readback]
        return out


class _Bad(ValueError):
    """A map error; ``load_point_map`` prefixes the file name."""


def _str(table: Mapping[str, Any], field: str, where: str, *, required: bool = True) -> str | None:
    value = table.get(field)
    if value is None:
        if required:
            raise _Bad(f"{where}: field {field!r} is missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{where}: field {field!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{where}: must be a table, got {type(value).__name__}")
    return cast(Mapping[str, Any], value)


def _unknown(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(set(table) - set(allowed))
    if extra:
        raise _Bad(f"{where}: unknown field {extra[0]!r}; allowed: {', '.join(allowed)}")


def _source(raw: object, where: str) -> Source:
    t = _table(raw, where)
    _unknown(t, ("variable", "key", "meter", "weight_variable", "weight_key"), where)
    meter = _str(t, "meter", where, required=False)
    variable = _str(t, "variable", where, required=False)
    if (meter is None) == (variable is None):
        raise _Bad(f"{where}: give exactly one of field 'variable' (with 'key') or field 'meter'")
    key = _str(t, "key", where, required=variable is not None)
    if meter is not None and key is not None:
        raise _Bad(f"{where}: field 'key' goes with 'variable', not with 'meter'")
    if key == "*":
        raise _Bad(f"{where}: field 'key' must name one object or node, not '*'")
    wvar = _str(t, "weight_variable", where, required=False)
    wkey = _str(t, "weight_key", where, required=wvar is not None)
    if wkey is not None and wvar is None:
        raise _Bad(f"{where}: field 'weight_key' needs 'weight_variable'")
    return Source(variable=variable, key=key, meter=meter, weight_variable=wvar, weight_key=wkey)


def _sources(raw: object, where: str, *, field: str = "sources") -> tuple[Source, ...]:
    if not isinstance(raw, list) or not raw:
        raise _Bad(f"{where}: field {field!r} must be a non-empty list of tables")
    return tuple(_source(item, f"{where}: {field}[{i}]") for i, item in enumerate(raw))


def _measurement(role: str, raw: object) -> MeasurementPoint:
    where = f"measurement role {role!r}"
    spec = ROLES.get(role)
    if spec is None or spec.kind != "measurement":
        raise _Bad(f"{where}: not a measurement role of db.roles")
    t = _table(raw, where)
    _unknown(t, ("sources", "combine", "convert", "threshold"), where)
    sources = _sources(t.get("sources"), where)
    combine = _str(t, "combine", where, required=False) or ("sum" if len(sources) == 1 else None)
    if combine not in COMBINES:
        raise _Bad(f"{where}: field 'combine' must be one of {', '.join(COMBINES)}, got {t.get('combine')!r}")
    convert = _str(t, "convert", where, required=False) or "none"
    if convert not in CONVERTS:
        raise _Bad(f"{where}: field 'convert' must be one of {', '.join(CONVERTS)}, got {convert!r}")
    fitting = UNIT_CONVERTS.get(spec.unit, CONVERTS)
    if convert not in fitting:
        raise _Bad(f"{where}: field 'convert' = {convert!r} does not give {spec.unit}; use {' or '.join(fitting)}")
    for i, src in enumerate(sources):
        if src.meter is not None and convert != "J_per_step_to_kW":
            raise _Bad(f"{where}: sources[{i}]: a meter reports J per timestep; set convert = 'J_per_step_to_kW'")
        if (src.weight_variable is None) == (combine == "flow_weighted_mean"):
            need = "needs" if combine == "flow_weighted_mean" else "only goes with combine = 'flow_weighted_mean', not"
            raise _Bad(f"{where}: sources[{i}]: field 'weight_variable' {need} combine = {combine!r}")
    threshold = t.get("threshold", 0.0)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise _Bad(f"{where}: field 'threshold' must be a finite number, got {threshold!r}")
    if "threshold" in t and combine != "count_on":
        raise _Bad(f"{where}: field 'threshold' only goes with combine = 'count_on'")
    return MeasurementPoint(role, sources, cast(Combine, combine), cast(Convert, convert), float(threshold))


def _setpoint(role: str, raw: object) -> SetpointPoint:
    where = f"setpoint role {role!r}"
    spec = ROLES.get(role)
    if spec is None or spec.kind != "setpoint":
        raise _Bad(f"{where}: not a setpoint role of db.roles")
    t = _table(raw, where)
    _unknown(t, ("schedule", "schedule_type", "initial_c", "replaces", "readback"), where)
    schedule = cast(str, _str(t, "schedule", where))
    stype = _str(t, "schedule_type", where, required=False) or "Schedule:Constant"
    if stype not in SCHEDULE_TYPES:
        raise _Bad(f"{where}: field 'schedule_type' must be one of {', '.join(SCHEDULE_TYPES)}, got {stype!r}")
    initial = t.get("initial_c")
    if not isinstance(initial, int | float) or isinstance(initial, bool) or not (
        spec.physical_min <= initial <= spec.physical_max
    ):
        raise _Bad(f"{where}: field 'initial_c' must be a number in [{spec.physical_min:g}, "
                   f"{spec.physical_max:g}] C, got {initial!r}")
    replaces_raw = t.get("replaces", [])
    if not isinstance(replaces_raw, list):
        raise _Bad(f"{where}: field 'replaces' must be a list of tables")
    replaces = []
    for i, item in enumerate(replaces_raw):
        w = f"{where}: replaces[{i}]"
        it = _table(item, w)
        _unknown(it, ("type", "name"), w)
        mtype = cast(str, _str(it, "type", w))
        if not mtype.startswith("SetpointManager:"):
            raise _Bad(f"{w}: field 'type' must be a SetpointManager:* object type, got {mtype!r}")
        replaces.append(ManagerRef(mtype, cast(str, _str(it, "name", w))))
    if replaces and stype != "Schedule:Constant":
        raise _Bad(f"{where}: field 'schedule_type' must be 'Schedule:Constant' when the map replaces managers "
                   "(the plant creates that schedule)")
    readback = _sources(t["readback"], where, field="readback") if "readback" in t else ()
    if any(s.meter is not None or s.weight_variable is not None for s in readback):
        raise _Bad(f"{where}: field 'readback' takes output variables (variable + key) only")
    return SetpointPoint(role, schedule, stype, float(initial), tuple(replaces), readback)


def _energy(raw: object) -> dict[str, tuple[str, ...]]:
    where = "energy"
    t = _table(raw, where)
    _unknown(t, ENERGY_BUCKETS, where)
    out: dict[str, tuple[str, ...]] = {}
    for bucket in ENERGY_BUCKETS:
        names = t.get(bucket)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise _Bad(f"{where}: field {bucket!r} must be a non-empty list of meter names")
        out[bucket] = tuple(n.strip() for n in names)
    return out


def parse_point_map(data: Mapping[str, Any], path: Path) -> PointMap:
    """Check parsed TOML; raises ValueError '<path>: <role/section>: <field>: <problem>'."""
    try:
        _unknown(data, ("map", "measurements", "setpoints", "energy"), "top level")
        head = _table(data.get("map"), "[map]")
        _unknown(head, ("model", "description"), "[map]")
        model = cast(str, _str(head, "model", "[map]"))
        description = _str(head, "description", "[map]", required=False) or ""
        measurements = {r: _measurement(r, v) for r, v in _table(data.get("measurements"), "[measurements]").items()}
        setpoints = {r: _setpoint(r, v) for r, v in _table(data.get("setpoints", {}), "[setpoints]").items()}
        energy = _energy(data.get("energy"))
    except _Bad as exc:
        raise ValueError(f"point map {path}: {exc}") from None
    for needed in ("it_power_kw", "cooling_power_kw"):
        if needed not in measurements:
            raise ValueError(f"point map {path}: measurement role {needed!r}: missing (every plant reports it)")
    return PointMap(path, model, description, measurements, setpoints, energy)


def load_point_map(path: str | Path) -> PointMap:
    """Read and check a point-map TOML file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"point map {p}: no such file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"point map {p}: not valid TOML: {exc}") from None
    return parse_point_map(data, p)
