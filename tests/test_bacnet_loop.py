"""Closed loop through BACnet only: the daemon as ``build_parts`` wires it for ``kind = "bacnet"``.

The simulated plant's sensors are published on a real bacpypes3 device (the BMS), the
poller reads them into the historian, the cycle decides from the historian, the
actuator writes the device at priority 12, and the plant takes its setpoints only from
the device's presentValue. Along the way an operator overrides at priority 8, the mode
changes to ``rules`` (hand-back), a cycle fails (hand-back) and the daemon stops (relinquish).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.decision import Decision
from controller.service.bacnet.actuator import BacnetActuator
from controller.service.config_watch import ConfigHolder
from controller.service.daemon import Daemon, PacedTrigger
from coolpilot.harness.history import generate_history
from coolpilot.wiring import build_parts, plant_clock
from db.historian import InternalSource
from db.ingest import write_wide
from db.roles import ROLES, SETPOINT_ROLES
from simulator.plant_sim import SimulatedPlant, make_plant
from tests._bacnet_device import SimulatedBms, bacnet_toml, free_udp_port, make_bms
from tests._fault_rig import QUIET_SENSORS

SITE = "bms"


class PlantBehindBms:
    """Cycle hook (listed first): the plant's sensors go to the BMS; its setpoints come only from the BMS."""

    def __init__(self, plant: SimulatedPlant, bms: SimulatedBms, measured: tuple[str, ...]) -> None:
        self.plant, self.bms, self.measured = plant, bms, measured

    def before_cycle(self) -> None:
        readings = self.plant.read()
        self.bms.set_measured({r: readings[r] for r in self.measured if math.isfinite(readings[r])})

    def after_cycle(self, decision: Decision | None) -> None:
        self.plant.apply({role: self.bms.value(role) for role in SETPOINT_ROLES})
        self.plant.advance(self.plant.record_interval_s)


class BrokenRecorder:
    """Fault injection: a recorder with a bug (not a database outage, which the cycle rides through)."""

    def record(self, decision: Decision) -> int | None:
        raise RuntimeError("recorder bug")

    def set_actuation(self, decision_id: int | None, decision: Decision) -> None:
        raise RuntimeError("recorder bug")


@pytest.fixture
def plant(sqlite_engine: sa.Engine) -> SimulatedPlant:
    plant = make_plant(seed=3, sensor_defects=QUIET_SENSORS)
    write_wide(sqlite_engine, generate_history(plant, days=0.25, explore_share=0.0, seed=3), site=SITE)
    return plant


@pytest.fixture
def bms(plant: SimulatedPlant) -> Iterator[SimulatedBms]:
    readings = plant.read()
    measured = {r: v for r, v in readings.items() if r in ROLES and r not in SETPOINT_ROLES and math.isfinite(v)}
    device = make_bms(measured, setpoints=plant.setpoints())
    yield device
    device.close()


def write_config(path: Path, mode: str, bms: SimulatedBms, measured: tuple[str, ...], port: int) -> Path:
    path.write_text(f'site_id = "{SITE}"\nmode = "{mode}"\n[metrics]\nenabled = false\n'
                    '[actuator]\nkind = "bacnet"\nretries = 1\nretry_backoff_s = 0.0\n'
                    + bacnet_toml(bms, local_port=port, measured=measured), encoding="utf-8")
    path.chmod(0o600)
    return path


def test_closed_loop_through_bacnet_only(plant: SimulatedPlant, bms: SimulatedBms, sqlite_engine: sa.Engine,
                                         tmp_path: Path) -> None:
    measured = tuple(r for r in bms.objects if r in ROLES and r not in SETPOINT_ROLES)
    port = free_udp_port()
    cfg_path = write_config(tmp_path / "coolpilot.toml", "auto", bms, measured, port)
    holder = ConfigHolder(cfg_path)
    registry = CollectorRegistry()
    defaults = {r: bms.value(r) for r in SETPOINT_ROLES}
    link = PlantBehindBms(plant, bms, measured)
    with build_parts(holder, engine=sqlite_engine, registry=registry, clock=plant_clock(plant),
                     hooks=[link]) as parts:
        assert isinstance(parts.actuator, BacnetActuator)  # no simulated-plant shortcut: the BMS is the only way in
        assert parts.releaser is not None
        daemon = Daemon(parts, PacedTrigger(cycles_per_s=0, max_cycles=1))
        times, decisions = [], []
        for _ in range(3):  # auto: CoolPilot's decisions (its rules here: no model yet) reach the plant via BACnet
            times.append(plant.now)
            report = daemon.run_one_cycle()
            assert report.decision is not None, report.error
            decisions.append(report.decision)
            assert report.decision.actuation == "sent", report.decision.actuation
            assert plant.setpoints() == pytest.approx(report.decision.sent)
            assert report.decision.sent == pytest.approx({r: bms.slot(r, 12) for r in SETPOINT_ROLES})
        assert bms.slot("heartbeat", 12) == 3.0
        assert registry.get_sample_value("coolpilot_bacnet_heartbeat_timestamp_seconds") is not None
        polled = InternalSource(sqlite_engine, SITE).read_wide(("it_power_kw", "chw_supply_sp_c"), times[0],
                                                               times[-1] + (times[1] - times[0])).frame
        assert polled["it_power_kw"].notna().all()  # one polled row per cycle, from the BMS
        assert polled["chw_supply_sp_c"].iloc[1:].tolist() == pytest.approx(
            [d.sent["chw_supply_sp_c"] for d in decisions[:-1]])  # the poller read what the last cycle wrote

        bms.operator_write("supply_air_sp_c", 21.0, priority=8)  # the operator takes supply air
        overridden = daemon.run_one_cycle().decision
        assert overridden is not None and "overridden: supply_air_sp_c (priority 8 holds 21 C" in overridden.actuation
        assert plant.setpoints()["supply_air_sp_c"] == 21.0
        assert registry.get_sample_value("coolpilot_bacnet_override_active", {"role": "supply_air_sp_c"}) == 1.0

        write_config(cfg_path, "rules", bms, measured, port)  # hand back: the BMS's own logic runs the plant
        assert holder.reload().reload_ok
        handed = daemon.run_one_cycle().decision
        assert handed is not None and handed.actuation.startswith("released (BMS in control): mode rules")
        assert all(bms.slot(r, 12) is None for r in SETPOINT_ROLES)
        assert plant.setpoints() == {**defaults, "supply_air_sp_c": 21.0}

        write_config(cfg_path, "auto", bms, measured, port)
        assert holder.reload().reload_ok
        back = daemon.run_one_cycle().decision
        assert back is not None and back.actuation.startswith("sent")
        assert bms.slot("chw_supply_sp_c", 12) is not None

        recorder, parts.recorder = parts.recorder, BrokenRecorder()  # a bug: the cycle cannot finish
        failed = daemon.run_one_cycle()
        assert failed.decision is None and failed.error == "RuntimeError: recorder bug"
        assert all(bms.slot(r, 12) is None for r in SETPOINT_ROLES)  # a fault CoolPilot cannot ride: hand back
        parts.recorder = recorder
        again = daemon.run_one_cycle().decision
        assert again is not None and again.actuation.startswith("sent")

        daemon.shutdown()  # stop: relinquish
        assert all(bms.slot(r, 12) is None for r in SETPOINT_ROLES)
        assert registry.get_sample_value("coolpilot_bacnet_releases_total") == 3.0
        assert bms.slot("heartbeat", 12) == 8.0  # every cycle, the failed one included
