"""``make_plant``: the EnergyPlus plant factory (``--plant simulator.energyplus:make_plant``).

Resolves the model, its point map and the weather, checks all of it up front (one
clear error line each: a missing file, a bad map, a map naming something the model
lacks, a bad EPW, no engine), prepares the model for the requested dates and starts
the plant. It takes ``climate`` and ``start`` like the digital twin; there is no
``workload`` (the building models carry their own IT load schedules) and no ``seed``
(EnergyPlus is deterministic).
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from simulator.energyplus.checks import check_map_against_model, known_variables
from simulator.energyplus.climate import read_header, resolve_weather
from simulator.energyplus.engine import Engine, find_engine
from simulator.energyplus.model import load_model, prepare_model, upgrade
from simulator.energyplus.plant import EnergyPlusPlant, PlantSetup
from simulator.energyplus.pointmap import PointMap, load_point_map

#: Shipped models by name -> their point map in ``maps/`` (which names the model file).
SHIPPED_MODELS: dict[str, str] = {"2zone": "2zone.toml", "crac": "crac.toml"}
DEFAULT_MODEL = "2zone"
DEFAULT_START = datetime(2023, 7, 1, tzinfo=UTC)
DEFAULT_DAYS = 366.0


def _package_dir(name: str) -> Path:
    return Path(str(resources.files("simulator.energyplus") / name))


def resolve_model(model: str | Path | None, point_map: str | Path | None) -> tuple[str, Path, PointMap]:
    """(label, model file, point map) from a shipped model name and/or explicit paths."""
    if point_map is None:
        name = DEFAULT_MODEL if model is None else str(model)
        if name not in SHIPPED_MODELS:
            raise ValueError(f"model {name!r}: not a shipped model ({', '.join(SHIPPED_MODELS)}); for your own "
                             "model give point_map= (its [map] model names the .epJSON file)")
        pm = load_point_map(_package_dir("maps") / SHIPPED_MODELS[name])
        return name, _package_dir("models") / pm.model, pm
    pm = load_point_map(point_map)
    if model is not None and str(model) not in SHIPPED_MODELS:
        path = Path(model)
    elif model is not None:
        path = _package_dir("models") / load_point_map(_package_dir("maps") / SHIPPED_MODELS[str(model)]).model
    else:
        path = pm.path.parent / pm.model
        if not path.is_file() and (_package_dir("models") / pm.model).is_file():
            path = _package_dir("models") / pm.model
    if not path.is_file():
        raise ValueError(f"model {path}: no such file (named by point map {pm.path})")
    label = str(model) if model is not None and str(model) in SHIPPED_MODELS else path.stem
    return label, path, pm


def make_plant(
    climate: str | Path | None = None,
    start: datetime | None = None,
    *,
    model: str | Path | None = None,
    point_map: str | Path | None = None,
    own_controls: bool = False,
    days: float = DEFAULT_DAYS,
    keep_output: bool = False,
) -> EnergyPlusPlant:
    """Build an EnergyPlus plant.

    ``climate``: a shipped climate (``leesburg``, ``dallas``, ``chicago``, ``san_jose``)
    or an .epw / .epw.gz path; ``start``: UTC start (default 2023-07-01 00:00 UTC;
    naive times are taken as UTC); ``model``: ``2zone`` (default), ``crac``, or an
    .epJSON path with ``point_map``; ``own_controls``: keep the model's own setpoint
    managers and actuate nothing (a baseline); ``days``: how far the plant may be
    advanced (the EnergyPlus run period; running is paid only for what is advanced);
    ``keep_output``: keep the work folder with eplusout.* after close.
    """
    if not (isinstance(days, int | float) and math.isfinite(days) and 0 < days <= 3660):
        raise ValueError(f"days must be in (0, 3660], got {days!r}")
    when = start or DEFAULT_START
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    label, model_path, pm = resolve_model(model, point_map)
    weather = resolve_weather(climate)
    header = read_header(weather)
    engine = find_engine()
    doc = _checked_model(label, model_path, pm, engine, (own_controls,))
    offset = timedelta(hours=header.utc_offset_h)
    first_day = (when + offset - timedelta(minutes=5)).date()
    last_day = (when + offset + timedelta(days=days)).date()
    prepared = prepare_model(doc, pm, label=label, first_day=first_day, last_day=last_day,
                             own_controls=own_controls)
    return EnergyPlusPlant(PlantSetup(
        label=label, pointmap=pm, model=prepared, weather=weather, utc_offset_h=header.utc_offset_h,
        start=when, own_controls=own_controls, engine=engine, keep_output=keep_output,
        leap_day=_has_leap_day(first_day, last_day),
    ))


def _checked_model(label: str, model_path: Path, pm: PointMap, engine: Engine,
                   own_controls: tuple[bool, ...]) -> dict[str, Any]:
    """The upgraded model, its point map checked against it for each way it will run."""
    doc = upgrade(load_model(model_path), label)
    known = known_variables(engine.output_variables_csv) if engine.output_variables_csv.is_file() else None
    for own in own_controls:
        check_map_against_model(doc, pm, label, own_controls=own, known=known)
    return doc


def check_inputs(model: str | Path | None, point_map: str | Path | None, climate: str | Path | None) -> str:
    """Every check ``make_plant`` makes before it starts EnergyPlus, for both ways a plant runs
    (actuated, and under its own controls); returns the model's label. Raises ValueError,
    OSError or ``EngineMissingError`` with one clear line."""
    label, model_path, pm = resolve_model(model, point_map)
    read_header(resolve_weather(climate))
    _checked_model(label, model_path, pm, find_engine(), (False, True))
    return label


def _has_leap_day(first_day: date, last_day: date) -> bool:
    """Whether [first_day, last_day] holds a 29 February (the EPW then needs one)."""
    return any(
        calendar.isleap(y) and first_day <= date(y, 2, 29) <= last_day
        for y in range(first_day.year, last_day.year + 1)
    )
