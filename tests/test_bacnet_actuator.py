"""The BACnet actuator against a real bacpypes3 device on loopback: write, read-back,
operator override, relinquish, heartbeat, and a device that goes away mid-cycle."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.config_bacnet import BacnetPoint, BacnetSettings
from controller.seams import Releasable
from controller.service.bacnet.actuator import BacnetActuator
from controller.service.bacnet.client import BacnetClient, BacnetError, PointState
from controller.service.bacnet.metrics import BacnetMetrics
from controller.service.bacnet.parts import open_client
from controller.service.bacnet.poller import BacnetHeartbeat
from db.schema import setpoint_commands
from tests._bacnet_device import SimulatedBms, client_settings, make_bms

TS = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
NEW = {"chw_supply_sp_c": 8.5, "supply_air_sp_c": 19.5, "cw_supply_sp_c": 27.0}


@pytest.fixture
def bms() -> Iterator[SimulatedBms]:
    device = make_bms()
    yield device
    device.close()


@pytest.fixture
def settings(bms: SimulatedBms) -> BacnetSettings:
    return client_settings(bms)


@pytest.fixture
def client(settings: BacnetSettings) -> Iterator[BacnetClient]:
    c = open_client(settings)
    yield c
    c.close()


def actuator(client: object, settings: BacnetSettings, **kw: object) -> BacnetActuator:
    kw.setdefault("sleep", lambda _s: None)
    return BacnetActuator(client, settings, "s1", retries=2, backoff_s=0.0, **kw)  # type: ignore[arg-type]


def commands(engine: sa.Engine) -> list[tuple[str, float, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(setpoint_commands.c.role, setpoint_commands.c.value_c,
                                      setpoint_commands.c.status, setpoint_commands.c.error)
                            .order_by(setpoint_commands.c.id)).all()
    return [(r[0], float(r[1]), r[2], r[3]) for r in rows]


def test_write_reads_back_and_logs(bms: SimulatedBms, settings: BacnetSettings, client: BacnetClient,
                                   sqlite_engine: sa.Engine) -> None:
    act = actuator(client, settings, engine=sqlite_engine)
    assert isinstance(act, Releasable)
    result = act.send(NEW, ts=TS, decision_id=None, reason="optimised: test")
    assert result.ok and result.status == "sent"
    assert result.sent == pytest.approx(NEW)
    for role, value in NEW.items():
        assert bms.slot(role, 12) == pytest.approx(value)
        assert bms.value(role) == pytest.approx(value)
        assert bms.slot(role, 16) is None  # our priority only
    rows = commands(sqlite_engine)
    assert sorted(r[0] for r in rows) == sorted(NEW) and all(r[2:] == ("sent", None) for r in rows)
    assert {r[0]: r[1] for r in rows} == pytest.approx(NEW)


def test_an_operator_override_is_detected_and_not_fought(bms: SimulatedBms, settings: BacnetSettings,
                                                         client: BacnetClient, sqlite_engine: sa.Engine) -> None:
    registry = CollectorRegistry()
    act = actuator(client, settings, engine=sqlite_engine, metrics=BacnetMetrics(registry))
    bms.operator_write("supply_air_sp_c", 17.0, priority=8)
    result = act.send(NEW, ts=TS, decision_id=None, reason="optimised: test")
    assert result.ok
    assert "overridden: supply_air_sp_c (priority 8 holds 17 C" in result.status
    assert "supply_air_sp_c" not in result.sent  # the plant runs the operator's value, not ours
    assert result.sent == pytest.approx({r: v for r, v in NEW.items() if r != "supply_air_sp_c"})
    assert bms.value("supply_air_sp_c") == 17.0 and bms.slot("supply_air_sp_c", 8) == 17.0  # untouched
    assert bms.slot("supply_air_sp_c", 12) == pytest.approx(19.5)  # ours waits in its own slot
    labels = {"role": "supply_air_sp_c"}
    assert registry.get_sample_value("coolpilot_bacnet_override_active", labels) == 1.0
    assert registry.get_sample_value("coolpilot_bacnet_overrides_total", labels) == 1.0
    rows = {r[0]: r for r in commands(sqlite_engine)}
    assert rows["supply_air_sp_c"][2] == "failed" and "overridden" in str(rows["supply_air_sp_c"][3])
    # the operator lets go: the next write takes effect and the override clears
    bms.operator_write("supply_air_sp_c", None, priority=8)
    again = act.send(NEW, ts=TS, decision_id=None, reason="optimised: test")
    assert again.status == "sent" and again.sent == pytest.approx(NEW)
    assert registry.get_sample_value("coolpilot_bacnet_override_active", labels) == 0.0


def test_hand_back_modes_relinquish_once(bms: SimulatedBms, settings: BacnetSettings, client: BacnetClient) -> None:
    mode = ["auto"]
    registry = CollectorRegistry()
    act = actuator(client, settings, mode=lambda: mode[0], metrics=BacnetMetrics(registry))
    assert act.send(NEW, ts=TS, decision_id=None, reason="r").ok
    assert bms.value("chw_supply_sp_c") == pytest.approx(8.5)
    mode[0] = "rules"
    released = act.send({"chw_supply_sp_c": 9.5}, ts=TS, decision_id=None, reason="r")
    assert released.ok and released.status.startswith("released (BMS in control): mode rules")
    assert released.sent == {}
    for role in NEW:
        assert bms.slot(role, 12) is None
    assert bms.value("chw_supply_sp_c") == 7.0  # the relinquish default: the BMS's own value
    assert act.hands_back("manual") and act.hands_back("advisory") and not act.hands_back("auto")
    act.release("again")  # already released: nothing written, nothing counted twice
    assert registry.get_sample_value("coolpilot_bacnet_releases_total") == 1.0
    mode[0] = "auto"
    assert act.send(NEW, ts=TS, decision_id=None, reason="r").status == "sent"
    assert not act.released and bms.slot("cw_supply_sp_c", 12) == 27.0


def test_heartbeat_counts_up_at_our_priority(bms: SimulatedBms, settings: BacnetSettings,
                                             client: BacnetClient) -> None:
    registry = CollectorRegistry()
    beat = BacnetHeartbeat(client, settings, metrics=BacnetMetrics(registry), wall_clock=lambda: 1234.0)
    for n in (1, 2, 3):
        beat.after_cycle(None)
        assert bms.slot("heartbeat", 12) == n
    assert registry.get_sample_value("coolpilot_bacnet_heartbeat_timestamp_seconds") == 1234.0
    bms.stop()
    assert beat.beat() is False and beat.count == 3
    assert registry.get_sample_value("coolpilot_bacnet_errors_total", {"operation": "heartbeat"}) == 1.0
    bms.start()
    beat.after_cycle(None)
    assert bms.slot("heartbeat", 12) == 4


class OutageAfterWrite:
    """The real client, with the device taken off the network right after the ``n``-th write."""

    def __init__(self, client: BacnetClient, bms: SimulatedBms, n: int) -> None:
        self.client, self.bms, self.n = client, bms, n
        self.writes: list[str] = []

    def write_value(self, address: str, point: BacnetPoint, value: float | None, priority: int) -> None:
        self.client.write_value(address, point, value, priority)
        self.writes.append(point.object_id)
        if len(self.writes) == self.n:
            self.bms.stop()

    def read_state(self, address: str, point: BacnetPoint) -> PointState:
        return self.client.read_state(address, point)


def test_device_away_mid_cycle_then_back_nothing_lost_nothing_written_twice(
        bms: SimulatedBms, settings: BacnetSettings, client: BacnetClient, sqlite_engine: sa.Engine) -> None:
    io = OutageAfterWrite(client, bms, n=2)  # the second write lands, then the device vanishes
    backoffs: list[float] = []

    def back_after_first_retry(seconds: float) -> None:
        backoffs.append(seconds)
        if not bms.online:
            bms.start()

    act = BacnetActuator(io, settings, "s1", engine=sqlite_engine, retries=2, backoff_s=0.5,
                         sleep=back_after_first_retry)
    result = act.send(NEW, ts=TS, decision_id=None, reason="r")
    assert result.ok and result.sent == pytest.approx(NEW)
    assert backoffs[:1] == [0.5]  # the first retry found the device back (a loaded host may need a second)
    assert sorted(io.writes) == sorted(f"analog-value,{i}" for i in (1, 2, 3))  # each object written once
    for role, value in NEW.items():
        assert bms.slot(role, 12) == pytest.approx(value)
    assert [r[2] for r in commands(sqlite_engine)] == ["sent"] * 3 and len(commands(sqlite_engine)) == 3


def test_a_device_that_stays_away_fails_honestly(bms: SimulatedBms, settings: BacnetSettings,
                                                 client: BacnetClient, sqlite_engine: sa.Engine) -> None:
    bms.stop()
    act = BacnetActuator(client, settings, "s1", engine=sqlite_engine, retries=0, backoff_s=0.0, sleep=lambda _s: None)
    result = act.send(NEW, ts=TS, decision_id=None, reason="r")
    assert not result.ok and result.sent == {}
    assert result.status.startswith("failed: chw_supply_sp_c: device 1001 analog-value 1 at 127.0.0.1:")
    assert "no-response" in result.status  # one silent request per attempt, not one per object
    assert "supply_air_sp_c: not tried: device 1001 did not answer" in result.status
    assert [r[2] for r in commands(sqlite_engine)] == ["failed"] * 3
    with pytest.raises(BacnetError, match="no-response"):
        client.read_value(bms.address, settings.points["chw_supply_sp_c"])
    released = act.release("shutdown")
    assert not released.ok and released.status.startswith("failed: relinquish")
