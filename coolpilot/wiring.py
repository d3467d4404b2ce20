"""The one wiring of the daemon's parts: ``coolpilot run``, ``coolpilot demo`` and the soak.

Why one: the soak (``benchmarks/soak.py``) backs the reliability figures and the demo
shows the product, so both must run what a site runs: the same reading source,
champion model, decision recorder, actuator (kind, retries and backoff from the
config), metrics, systemd notifier and watchdog, and the same restart reference (the
last setpoints sent, from the database).

What differs between the entry points is passed in, never wired separately:

* ``clock``: the cycle's clock: `utc_now` at a site, `plant_clock` in accelerated time;
* ``plant``: close the loop around a simulated plant: its records are written to the
  historian before each cycle and it advances after it (`PlantBridge`, with the
  caller's ``historian_write`` if given), and it gets the setpoints the actuator
  delivered (`PlantActuator`);
* ``actuator_layer``: wraps the configured actuator on its way to the plant (the
  soak's fault injection);
* ``hooks`` and ``on_cycle``: observers around each cycle (the demo's statistics and
  live view, the soak's faults and figures);
* ``retrain``: the training run the daemon calls (each entry point sizes its own);
* the trigger, which goes to `Daemon` itself: `WallClockTrigger` at a site,
  `PacedTrigger` in accelerated time.

``engine`` and ``registry`` belong to the caller (it disposes of the one and may serve
the other); what `build_parts` opens (the actuator's connection) it closes on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.config import Config
from controller.seams import Actuator, ReadingSource, Releasable
from controller.service.actuators import make_actuator
from controller.service.config_watch import ConfigHolder
from controller.service.daemon import CycleHook, CycleReport, DaemonParts
from controller.service.metrics import CoolpilotMetrics
from controller.service.recorder import DecisionRecorder
from controller.service.retraining import ChampionProvider, TrainingOutcome
from controller.service.sdnotify import SystemdNotifier, watchdog_interval_s
from coolpilot.harness.sim_bridge import PlantActuator, PlantBridge
from db.historian import historian_from_config
from db.records import last_applied_setpoints
from simulator.plant import Plant

log = logging.getLogger(__name__)

Retrain = Callable[[threading.Event], TrainingOutcome]
WriteWide = Callable[[sa.Engine, pd.DataFrame, str], int]  # db.ingest.write_wide's shape
ActuatorLayer = Callable[[Actuator], Actuator]


def utc_now() -> datetime:
    """The cycle clock at a site: now, aware UTC."""
    return datetime.now(UTC)


def plant_clock(plant: Plant) -> Callable[[], datetime]:
    """The cycle clock in accelerated time: the plant's own time."""
    return lambda: plant.now


@contextlib.contextmanager
def build_parts(
    config: ConfigHolder | str | Path,
    *,
    engine: sa.Engine,
    registry: CollectorRegistry,
    clock: Callable[[], datetime],
    retrain: Retrain | None = None,
    plant: Plant | None = None,
    historian_write: WriteWide | None = None,
    actuator_layer: ActuatorLayer | None = None,
    hooks: Sequence[CycleHook] = (),
    on_cycle: Sequence[Callable[[CycleReport], None]] = (),
    environ: Mapping[str, str] | None = None,
) -> Iterator[DaemonParts]:
    """The daemon's parts for the site of ``config`` (a holder, or the file to load).

    Raises ``db.engine.DatabaseError`` when the database cannot be read and
    ``db.historian.HistorianConfigError`` for a bad ``[historian]`` section. See the
    module docstring for what each argument changes; ``environ`` (default
    ``os.environ``) is where systemd's notify socket and watchdog are looked up.
    """
    holder = config if isinstance(config, ConfigHolder) else ConfigHolder(config)
    cfg = holder.config
    site = cfg.site_id
    env = os.environ if environ is None else environ
    source = _reading_source(holder, engine)
    last_applied = last_applied_setpoints(engine, site)
    log.info("site %s: resuming from last applied setpoints %s", site,
             last_applied or "(none: the measured setpoints are the reference)")
    sender = make_actuator(cfg.actuator, site, engine, bacnet=cfg.bacnet, mode=lambda: holder.config.mode,
                           registry=registry)
    try:
        site_hooks = _site_hooks(sender, engine, site, clock)
        yield DaemonParts(
            holder=holder, source=source, forecaster=ChampionProvider(engine, site),
            actuator=_plant_side(sender if actuator_layer is None else actuator_layer(sender), plant, last_applied),
            recorder=DecisionRecorder(engine, site), metrics=_metrics(registry, cfg, plant), clock=clock,
            notifier=SystemdNotifier.from_environ(env), last_applied=last_applied, retrain=retrain,
            hooks=(*hooks, PlantBridge(plant, engine, site, write=historian_write), *site_hooks) if plant
            else (*hooks, *site_hooks),
            on_cycle=tuple(on_cycle), watchdog_interval_s=watchdog_interval_s(env),
            releaser=sender if isinstance(sender, Releasable) else None, engine=engine,
        )
    finally:
        close = getattr(sender, "close", None)
        if close is not None:
            close()


def _site_hooks(sender: Actuator, engine: sa.Engine, site: str, clock: Callable[[], datetime]) -> tuple[CycleHook, ...]:
    """A BACnet actuator brings its poller (the plant read from the BMS) and its heartbeat."""
    from controller.service.bacnet.actuator import BacnetActuator
    from controller.service.bacnet.parts import cycle_hooks

    return cycle_hooks(sender, engine, site, clock=clock) if isinstance(sender, BacnetActuator) else ()


def _reading_source(holder: ConfigHolder, engine: sa.Engine) -> ReadingSource:
    """The config's historian (relative tag maps next to the config file), else our readings table."""
    cfg = holder.config
    section = None if cfg.historian is None else cfg.historian.section()
    return historian_from_config(section, engine, cfg.site_id, base_dir=holder.path.resolve().parent)


def _plant_side(actuator: Actuator, plant: Plant | None, last_applied: Mapping[str, float]) -> Actuator:
    """At a site the actuator itself; against a simulated plant, one that also applies what was delivered."""
    if plant is None:
        return actuator
    if last_applied:
        plant.apply(last_applied)  # the plant side still holds what we last sent
    return PlantActuator(plant, actuator)


def _metrics(registry: CollectorRegistry, cfg: Config, plant: Plant | None) -> CoolpilotMetrics:
    period_s = float(cfg.cycle.interval_s) if plant is None else float(plant.record_interval_s)
    return CoolpilotMetrics(registry, cycle_period_s=period_s)
