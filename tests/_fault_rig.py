"""The daemon rig shared by the daemon-loop and fault-injection tests.

A simulated plant with a few hours of history in a real database (SQLite or the local
PostgreSQL), and the real `controller.service.daemon.Daemon` closed around it through
`coolpilot.harness.sim_bridge`: the bridge writes each plant record as a historian would, the
cycle reads it back through the database, and the actuator writes the real command log
before the plant gets what was delivered. Faults are injected at the edges only:

* `RigSource`: the cycle's reading source, whose engine can be swapped (a database
  outage) and whose frames can be corrupted on the way out (NaN, inf, spikes, missing
  roles, as a site historian might serve them);
* `point_at`: swap every database edge of a running daemon to another engine;
* `At`: a cycle hook that runs actions at given cycle numbers (inject, clear).

Waits are bounded polls on events, never fixed sleeps.
"""

from __future__ import annotations

import dataclasses
import itertools
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.config import Config
from controller.decision import Decision
from controller.service.actuators import DbActuator
from controller.service.config_watch import ConfigHolder
from controller.service.daemon import CycleReport, Daemon, DaemonParts, PacedTrigger, WallClockTrigger
from controller.service.metrics import CoolpilotMetrics
from controller.service.recorder import DecisionRecorder
from controller.service.sdnotify import SystemdNotifier
from coolpilot.harness.history import generate_history
from coolpilot.harness.sim_bridge import PlantActuator, PlantBridge
from db.engine import make_engine
from db.historian import InternalSource
from db.ingest import write_wide
from db.query import WideFrame
from db.roles import SETPOINT_ROLES
from db.schema import decisions
from simulator.plant_sim import SimulatedPlant, make_plant
from simulator.sensors import SensorDefects
from tests._ctl_support import PhysicsForecaster

SITE = "loop"
DEADLINE_S = 60.0
QUIET_SENSORS = SensorDefects(dropout_rate=0.0, stuck_rate=0.0, spike_rate=0.0)
Transform = Callable[[pd.DataFrame], pd.DataFrame]


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def write_config(path: Path, mode: str, extra: str = "") -> Path:
    """The rig's config file: no metrics listener, the database actuator without retries."""
    path.write_text(f'site_id = "{SITE}"\nmode = "{mode}"\n{extra}[metrics]\nenabled = false\n'
                    '[actuator]\nkind = "db"\nretries = 0\n', encoding="utf-8")
    path.chmod(0o600)
    return path


def dead_engine(engine: sa.Engine, tmp_path: Path) -> sa.Engine:
    """An engine of the same backend that cannot connect: a closed port, or a missing directory."""
    if engine.dialect.name == "postgresql":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
        return make_engine(engine.url.set(port=port).render_as_string(hide_password=False))
    return make_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'coolpilot.db'}")


class RigSource:
    """The cycle's reading source: our readings table on a swappable engine, optionally corrupted."""

    def __init__(self, engine: sa.Engine, site: str = SITE) -> None:
        self.engine, self.site = engine, site
        self.transform: Transform | None = None

    def read_wide(self, roles: Sequence[str], start: datetime, end: datetime, freq: str = "5min") -> WideFrame:
        wide = InternalSource(self.engine, self.site).read_wide(roles, start, end, freq)
        if self.transform is None:
            return wide
        return dataclasses.replace(wide, frame=self.transform(wide.frame.copy()))

    def latest_timestamp(self) -> datetime | None:
        return InternalSource(self.engine, self.site).latest_timestamp()


class Watch:
    """Cycle hook (list it first): the plant's setpoints and true hottest rack inlet before each cycle."""

    def __init__(self, plant: SimulatedPlant) -> None:
        self.plant = plant
        self.setpoints: list[dict[str, float]] = []
        self.rack_inlet_c: list[float] = []

    def before_cycle(self) -> None:
        self.setpoints.append(self.plant.setpoints())
        self.rack_inlet_c.append(float(self.plant.true_state()["rack_inlet_max_c"]))

    def after_cycle(self, decision: Decision | None) -> None:
        return None

    def assert_safe(self, config: Config, *, thermal: bool = True) -> None:
        """What the plant got stayed in the operator's bounds and rate limits; the true rack inlet below the limit.

        ``thermal=False``: skip the rack-inlet limit (a fault beyond what the plant can carry).
        """
        env = config.envelope()
        applied = [*self.setpoints, self.plant.setpoints()]
        for n, (before, after) in enumerate(itertools.pairwise(applied), start=1):
            for role in SETPOINT_ROLES:
                b = env.bounds(role)
                assert b.min_c - 1e-9 <= after[role] <= b.max_c + 1e-9, f"cycle {n}: {role} {after[role]} out of bounds"
                step = abs(after[role] - before[role])
                assert step <= b.max_step_k + 1e-9, f"cycle {n}: {role} moved {step:.3f} K > {b.max_step_k} K"
        hottest = max(self.rack_inlet_c)
        assert not thermal or hottest <= config.safety.rack_inlet_limit_c, f"true rack inlet reached {hottest:.2f} C"


class At:
    """Cycle hook: before cycle ``n`` (1-based) run ``actions[n]``; list it first among the hooks."""

    def __init__(self, actions: Mapping[int, Callable[[], None]]) -> None:
        self.actions = dict(actions)
        self.n = 0

    def before_cycle(self) -> None:
        self.n += 1
        action = self.actions.get(self.n)
        if action is not None:
            action()

    def after_cycle(self, decision: Decision | None) -> None:
        return None


@dataclass
class Rig:
    """A plant with history in the database, and everything a daemon around it needs."""

    engine: sa.Engine
    plant: SimulatedPlant
    holder: ConfigHolder
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    source: RigSource = field(init=False)
    bridge: PlantBridge = field(init=False)
    recorder: DecisionRecorder = field(init=False)
    commands: DbActuator = field(init=False)

    def __post_init__(self) -> None:
        self.source = RigSource(self.engine)
        self.bridge = PlantBridge(self.plant, self.engine, SITE)
        self.recorder = DecisionRecorder(self.engine, SITE)
        self.commands = DbActuator(self.engine, SITE, retries=0)

    def daemon(self, trigger: PacedTrigger | WallClockTrigger, *, forecaster: Any = None,
               hooks: Sequence[Any] = (), on_cycle: Sequence[Callable[[CycleReport], None]] = (),
               retrain: Any = None, notifier: SystemdNotifier | None = None,
               last_applied: dict[str, float] | None = None, actuator: Any = None,
               clock: Callable[[], datetime] | None = None) -> Daemon:
        """The daemon; ``actuator`` replaces the command log as what the plant listens to."""
        parts = DaemonParts(
            holder=self.holder, source=self.source, forecaster=forecaster,
            actuator=PlantActuator(self.plant, self.commands if actuator is None else actuator),
            recorder=self.recorder,
            metrics=CoolpilotMetrics(self.registry, cycle_period_s=300.0), clock=clock or (lambda: self.plant.now),
            notifier=notifier or SystemdNotifier(None), last_applied=dict(last_applied or {}), retrain=retrain,
            hooks=(*hooks, self.bridge), on_cycle=on_cycle,
        )
        return Daemon(parts, trigger)

    def point_at(self, engine: sa.Engine) -> None:
        """Every database edge (historian reads and writes, decisions, commands) uses ``engine``."""
        self.source.engine = engine
        self.bridge.engine = engine
        self.recorder.engine = engine
        self.commands.engine = engine

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels)
        assert v is not None, f"no sample {name}{labels}"
        return v

    def decision_rows(self) -> list[sa.Row[Any]]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(decisions).order_by(decisions.c.ts, decisions.c.id)))


def make_rig(engine: sa.Engine, tmp_path: Path, mode: str = "auto", extra: str = "",
             plant: SimulatedPlant | None = None, days: float = 0.25, explore: float = 0.0) -> Rig:
    """``days`` of quiet-sensor history under the rules (``explore``: share of random setpoints) for ``SITE``."""
    plant = plant or make_plant(seed=3, sensor_defects=QUIET_SENSORS)
    holder = ConfigHolder(write_config(tmp_path / "coolpilot.toml", mode, extra))
    # history explores inside the operator's own envelope, so the daemon starts within its bounds
    history = generate_history(plant, days=days, explore_share=explore, seed=3, envelope=holder.config.envelope())
    write_wide(engine, history, site=SITE)
    return Rig(engine, plant, holder)


@dataclass
class Run:
    """One daemon run: its reports, and what the metrics said after each cycle."""

    daemon: Daemon
    watch: Watch
    reports: list[CycleReport]
    bad_data_gauge: list[float]

    @property
    def decisions(self) -> list[Decision]:
        out = [r.decision for r in self.reports]
        assert all(d is not None for d in out), [r.error for r in self.reports]
        return [d for d in out if d is not None]


def run(rig: Rig, cycles: int, actions: dict[int, Callable[[], None]],
        probe: Callable[[Daemon], None] | None = None, trigger: PacedTrigger | None = None,
        **daemon_kw: Any) -> Run:
    """The daemon (the physics-shaped forecaster unless ``forecaster=`` says otherwise); ``actions`` by cycle number.

    ``probe`` runs after each cycle (with the daemon) before the metrics are sampled; it may
    stop the daemon (``trigger`` without ``max_cycles``; default: ``cycles`` as fast as possible).
    """
    watch = Watch(rig.plant)
    reports: list[CycleReport] = []
    gauge: list[float] = []
    box: list[Daemon] = []

    def on_cycle(report: CycleReport) -> None:
        reports.append(report)
        if probe is not None:
            probe(box[0])
        gauge.append(rig.value("coolpilot_fallback_reason", reason="bad_data"))

    daemon_kw.setdefault("forecaster", PhysicsForecaster())
    daemon = rig.daemon(trigger or PacedTrigger(cycles_per_s=0, max_cycles=cycles), hooks=[watch, At(actions)],
                        on_cycle=[on_cycle], **daemon_kw)
    box.append(daemon)
    assert daemon.run(install_signals=False) == 0
    return Run(daemon, watch, reports, gauge)


def assert_kept_running_and_recorded(rig: Rig, r: Run, cycles: int) -> None:
    assert r.daemon.cycles == cycles and r.daemon.cycle_errors == 0
    assert len(rig.decision_rows()) == cycles  # no decision lost
    r.watch.assert_safe(rig.holder.config)


def assert_resumed(r: Run, last: int = 2) -> None:
    """Normal control is back: the model decides again (no fallback) in the last cycles."""
    tail = r.decisions[-last:]
    assert all(d.outcome in ("optimised", "hold") for d in tail), [(d.outcome, d.reason) for d in tail]
    assert r.bad_data_gauge[-1] == 0.0
