"""Prepare an epJSON building model for closed-loop co-simulation (pure functions on the dict).

What a modeller would do by hand before handing a model to a supervisory controller:
bring it to the engine's version, run it in 5-minute timesteps over the requested
calendar dates (the real year, so weekdays are right), drop reports nobody reads, add
the outputs the point map reads, and, where a setpoint manager computes the
supply-air setpoint itself, put a ``SetpointManager:Scheduled`` on the same node(s)
driven by a constant schedule that the plant actuates. With ``own_controls`` the
model keeps its own managers and nothing is actuated (a baseline run).

Every function returns a new dict; the input is never changed.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

from db.roles import ROLES
from simulator.energyplus.engine import ENGINE_VERSION
from simulator.energyplus.pointmap import PointMap

Doc = dict[str, Any]

TIMESTEPS_PER_HOUR = 12
#: Versions whose inputs 25.2 reads unchanged for the objects a data-centre model uses
#: (the 24.1 -> 24.2 rules touch only HeatPump:PlantLoop:EIR:*; 25.2 checks the schema).
UPGRADABLE_VERSIONS = ("24.1", "24.2", "25.1", "25.2")
RUN_PERIOD_NAME = "CoolPilot Run Period"
#: Report objects that cost run time and that the plant never reads.
DROPPED_REPORTS = (
    "Output:VariableDictionary", "Output:Surfaces:Drawing", "Output:Surfaces:List", "Output:Constructions",
    "Output:EnergyManagementSystem", "Output:Table:SummaryReports", "Output:Table:Monthly", "Output:SQLite",
    "Output:Variable", "Output:Meter", "Output:Meter:MeterFileOnly", "Output:Meter:Cumulative",
    "Output:Meter:Cumulative:MeterFileOnly", "Output:DebuggingData", "Output:Diagnostics",
)


def load_model(path: str | Path) -> Doc:
    """Read an epJSON file, with one clear error line for a missing or unreadable file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"model {p}: no such file")
    if p.suffix.lower() not in (".epjson", ".json"):
        raise ValueError(f"model {p}: expected an .epJSON file (convert an IDF with EnergyPlus's ConvertInputFormat)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"model {p}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "Version" not in doc:
        raise ValueError(f"model {p}: not an epJSON model (no 'Version' object)")
    return doc


def find_name(objects: dict[str, Any], name: str) -> str | None:
    """The stored spelling of ``name`` among ``objects`` (EnergyPlus names are case-insensitive)."""
    want = name.casefold()
    return next((k for k in objects if k.casefold() == want), None)


def model_version(doc: Doc) -> str:
    version: dict[str, Any] = next(iter(doc.get("Version", {}).values()), {})
    return str(version.get("version_identifier", "")).strip()


def upgrade(doc: Doc, label: str) -> Doc:
    """Bring a 24.1-25.2 model to 25.2 and fix the known input error of the shipped CRAC model.

    ``Coil:Cooling:DX:SingleSpeed`` in 25.2 reads ``zone_name_for_condenser_placement``
    as a zone; a 'Yes'/'No' there was meant for the ASHRAE 127 report flag.
    """
    version = model_version(doc)
    if not version.startswith(UPGRADABLE_VERSIONS):
        raise ValueError(f"model {label}: EnergyPlus version {version or '?'}; this plant runs "
                         f"{', '.join(UPGRADABLE_VERSIONS)} inputs (transition older ones with IDFVersionUpdater)")
    out = copy.deepcopy(doc)
    out["Version"] = {"Version 1": {"version_identifier": ENGINE_VERSION}}
    for otype, objects in out.items():
        if not otype.startswith("Coil:Cooling:DX"):
            continue
        for obj in objects.values():
            placement = obj.get("zone_name_for_condenser_placement")
            if isinstance(placement, str) and placement.casefold() in ("yes", "no"):
                del obj["zone_name_for_condenser_placement"]
                obj.setdefault("report_ashrae_standard_127_performance_ratings", placement.capitalize())
    return out


def set_timestep(doc: Doc, per_hour: int = TIMESTEPS_PER_HOUR) -> Doc:
    out = copy.deepcopy(doc)
    out["Timestep"] = {"Timestep 1": {"number_of_timesteps_per_hour": per_hour}}
    return out


def set_run_period(doc: Doc, first_day: date, last_day: date) -> Doc:
    """One run period over [first_day, last_day] (local calendar dates, inclusive) of the real years.

    Giving the year makes EnergyPlus derive the weekdays; daylight saving is off so the
    whole run is in local standard time (the time the plant converts to UTC).
    """
    if last_day < first_day:
        raise ValueError(f"run period ends ({last_day}) before it begins ({first_day})")
    out = copy.deepcopy(doc)
    out["RunPeriod"] = {
        RUN_PERIOD_NAME: {
            "begin_month": first_day.month, "begin_day_of_month": first_day.day, "begin_year": first_day.year,
            "end_month": last_day.month, "end_day_of_month": last_day.day, "end_year": last_day.year,
            "use_weather_file_holidays_and_special_days": "Yes",
            "use_weather_file_daylight_saving_period": "No",
            "apply_weekend_holiday_rule": "No",
            "use_weather_file_rain_indicators": "Yes",
            "use_weather_file_snow_indicators": "Yes",
        }
    }
    control = next(iter(out.get("SimulationControl", {}).values()), None)
    if control is None:
        out["SimulationControl"] = {"SimulationControl 1": {}}
        control = out["SimulationControl"]["SimulationControl 1"]
    control["run_simulation_for_sizing_periods"] = "No"
    control["run_simulation_for_weather_file_run_periods"] = "Yes"
    return out


def strip_reports(doc: Doc) -> Doc:
    """Drop report requests the plant does not read (they only cost run time and disk)."""
    return {k: copy.deepcopy(v) for k, v in doc.items() if k not in DROPPED_REPORTS}


def add_outputs(doc: Doc, variables: list[tuple[str, str]], meters: list[str], frequency: str = "Hourly") -> Doc:
    """Output:Variable / Output:Meter for everything the map reads (hourly in eplusout.eso, for checking)."""
    out = copy.deepcopy(doc)
    out_vars = out.setdefault("Output:Variable", {})
    for i, (name, key) in enumerate(variables, start=1):
        out_vars[f"CoolPilot Output {i}"] = {"key_value": key, "variable_name": name, "reporting_frequency": frequency}
    out_meters = out.setdefault("Output:Meter", {})
    for i, name in enumerate(meters, start=1):
        out_meters[f"CoolPilot Meter {i}"] = {"key_name": name, "reporting_frequency": frequency}
    return out


def replace_setpoint_managers(doc: Doc, pointmap: PointMap) -> Doc:
    """Each replaced manager becomes a SetpointManager:Scheduled on its node(s), driven by the role's schedule.

    The schedule is a new Schedule:Constant at the map's initial value; the plant
    actuates its 'Schedule Value'. Managers downstream that follow this node (e.g. a
    MixedAir manager for the economiser) are left alone, as a modeller would.
    """
    out = copy.deepcopy(doc)
    for sp in pointmap.setpoints.values():
        for ref in sp.replaces:
            objects = out.get(ref.type, {})
            key = find_name(objects, ref.name)
            if key is None:
                raise ValueError(f"point map setpoint role {sp.role!r}: no {ref.type} named {ref.name!r}")
            old = objects.pop(key)
            if not objects:
                del out[ref.type]
            out.setdefault("SetpointManager:Scheduled", {})[f"{key} (CoolPilot)"] = {
                "control_variable": old.get("control_variable", "Temperature"),
                "schedule_name": sp.schedule,
                "setpoint_node_or_nodelist_name": old["setpoint_node_or_nodelist_name"],
            }
        if sp.replaces:
            role = ROLES[sp.role]
            limits = f"CoolPilot {sp.role}"
            out.setdefault("ScheduleTypeLimits", {})[limits] = {
                "lower_limit_value": role.physical_min, "upper_limit_value": role.physical_max,
                "numeric_type": "Continuous", "unit_type": "Temperature",
            }
            out.setdefault("Schedule:Constant", {})[sp.schedule] = {
                "hourly_value": sp.initial_c, "schedule_type_limits_name": limits,
            }
    return out


def prepare_model(doc: Doc, pointmap: PointMap, *, label: str, first_day: date, last_day: date,
                  own_controls: bool) -> Doc:
    """Everything above, in order: the model the worker runs."""
    out = upgrade(doc, label)
    out = set_timestep(out)
    out = set_run_period(out, first_day, last_day)
    out = strip_reports(out)
    out = add_outputs(out, pointmap.variables(), pointmap.meters())
    if not own_controls:
        out = replace_setpoint_managers(out, pointmap)
    return out


def write_model(doc: Doc, path: Path) -> Path:
    path.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
    return path
