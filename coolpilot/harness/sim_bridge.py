"""Closing the daemon's loop around a simulated plant (demo, soak, lifecycle tests).

The daemon normally reads what a site's historian recorded and writes setpoint
commands that the building-management system applies. Against a ``Plant`` the same
daemon runs unchanged; these pieces play the site's part:

* `PlantBridge` (a cycle hook): before each cycle it writes the plant's current record
  (measurements and the setpoints in force) to the database, as a historian would;
  after the cycle it advances the plant by one record interval. The plant clock is
  the cycle's clock.
* `PlantActuator`: records the commands through the configured actuator (so the
  command log is the real one) and applies to the plant only what was delivered.
* `RulesTwin` (a cycle hook): a twin plant run in lockstep by the tuned rules, the
  baseline that savings are measured against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from controller.decision import Decision
from controller.seams import ActuationResult, Actuator
from db.roles import ROLES, SETPOINT_ROLES
from simulator.plant import Plant

log = logging.getLogger(__name__)

Decide = Callable[[dict[str, float], dict[str, float]], dict[str, float]]
ENERGY_KEYS = ("it_kwh", "cooling_kwh", "facility_kwh")


def plant_record(plant: Plant) -> pd.DataFrame:
    """The plant's current record as a one-row wide frame (roles of ``db.roles`` only)."""
    row = {**plant.read(), **plant.setpoints()}
    row = {r: float(v) for r, v in row.items() if r in ROLES}
    return pd.DataFrame([row], index=pd.DatetimeIndex([plant.now]))


class PlantBridge:
    """Cycle hook: historian writes before the cycle, plant time advances after it.

    ``write`` is ``db.ingest.write_wide``-shaped; a failed write raises (the daemon
    counts it as a database error) and the cycle then sees stale data and falls back.
    """

    def __init__(self, plant: Plant, engine: sa.Engine, site: str,
                 write: Callable[[sa.Engine, pd.DataFrame, str], int] | None = None) -> None:
        from db.ingest import write_wide

        self.plant, self.engine, self.site = plant, engine, site
        self._write = write or write_wide

    def now(self) -> datetime:
        """The cycle clock: plant time (UTC)."""
        return self.plant.now

    def before_cycle(self) -> None:
        self._write(self.engine, plant_record(self.plant), self.site)

    def after_cycle(self, decision: Decision | None) -> None:
        self.plant.advance(self.plant.record_interval_s)


class PlantActuator:
    """Sends through ``inner`` (the command log) and applies what it delivered to the plant."""

    def __init__(self, plant: Plant, inner: Actuator | None) -> None:
        self.plant, self.inner = plant, inner

    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult:
        if self.inner is None:
            result = ActuationResult(ok=True, status="sent", sent={r: float(v) for r, v in setpoints.items()})
        else:
            result = self.inner.send(setpoints, ts=ts, decision_id=decision_id, reason=reason)
        if result.sent:
            self.plant.apply(result.sent)
        return result

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def plant_energy_totals(plant: object) -> dict[str, float] | None:
    """The plant's own exact energy totals since it started [kWh], or None if it keeps none.

    The digital twin keeps them as ``totals()``, the EnergyPlus plant as ``energy_kwh()``
    (sums of its meters); both name them ``it_kwh``, ``cooling_kwh``, ``facility_kwh``
    (EnergyPlus adds ``other_kwh``).
    """
    for name in ("totals", "energy_kwh"):
        method = getattr(plant, name, None)
        if callable(method):
            values = method()
            return {str(k): float(v) for k, v in values.items()}
    return None


def energy_kwh(plant: Plant) -> dict[str, float]:
    """Energy since the plant started [kWh] (``it_kwh``, ``cooling_kwh``, ``facility_kwh``).

    Uses the plant's exact totals when it keeps them (`plant_energy_totals`), else zeros
    (callers integrate readings instead; see `EnergyMeter`).
    """
    values = plant_energy_totals(plant)
    if values is None:
        return dict.fromkeys(ENERGY_KEYS, 0.0)
    return {k: float(values.get(k, 0.0)) for k in ENERGY_KEYS}


@dataclass
class EnergyMeter:
    """Energy of one plant since a starting point [kWh], true totals where the plant has them.

    Plants without totals are metered from their readings (power x record interval).
    """

    plant: Plant
    start: dict[str, float] = field(default_factory=dict)
    metered: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ENERGY_KEYS, 0.0))

    def __post_init__(self) -> None:
        self.start = energy_kwh(self.plant)
        self._has_totals = plant_energy_totals(self.plant) is not None

    def meter(self, readings: Mapping[str, float]) -> None:
        """Book one record interval of readings (only used for plants without totals)."""
        if self._has_totals:
            return
        hours = self.plant.record_interval_s / 3600.0
        it = float(readings.get("it_power_kw", 0.0))
        cooling = float(readings.get("cooling_power_kw", 0.0))
        self.metered["it_kwh"] += it * hours
        self.metered["cooling_kwh"] += cooling * hours
        self.metered["facility_kwh"] += float(readings.get("facility_power_kw", it + cooling)) * hours

    def used(self) -> dict[str, float]:
        """Energy since the start [kWh]."""
        if not self._has_totals:
            return dict(self.metered)
        now = energy_kwh(self.plant)
        return {k: now[k] - self.start.get(k, 0.0) for k in ENERGY_KEYS}


class RulesTwin:
    """Cycle hook: a twin plant under the tuned rules, stepped in lockstep with the real one.

    Build the twin as an exact copy of the controlled plant (same weather, load, seed
    and state) so that the only difference between them is the controller.
    """

    def __init__(self, twin: Plant, decide: Decide) -> None:
        self.plant = twin
        self.decide = decide
        self.meter = EnergyMeter(twin)
        self.last_readings: dict[str, float] = twin.read()

    def before_cycle(self) -> None:
        return None

    def after_cycle(self, decision: Decision | None) -> None:
        readings = self.plant.read()
        self.last_readings = readings
        self.meter.meter(readings)
        self.plant.apply(self.decide(readings, self.plant.setpoints()))
        self.plant.advance(self.plant.record_interval_s)

    def setpoints(self) -> dict[str, float]:
        """The twin's setpoints in force (only those it has)."""
        in_force = self.plant.setpoints()
        return {r: in_force[r] for r in SETPOINT_ROLES if r in in_force}
