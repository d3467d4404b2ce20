"""The BACnet poller against a real device on loopback: readings land in the historian,
a device that goes away and comes back loses nothing, a database outage loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.config_bacnet import BacnetSettings
from controller.service.bacnet.client import BacnetClient
from controller.service.bacnet.metrics import BacnetMetrics
from controller.service.bacnet.parts import open_client
from controller.service.bacnet.poller import BacnetPoller
from db.engine import DatabaseError, make_engine
from db.historian import InternalSource
from db.schema import readings
from tests._bacnet_device import SimulatedBms, client_settings, make_bms

T0 = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
MEASURED = {"it_power_kw": 500.0, "cooling_power_kw": 150.0, "outdoor_drybulb_c": 25.0}
ROLES = (*MEASURED, "chw_supply_sp_c", "supply_air_sp_c", "cw_supply_sp_c")


@pytest.fixture
def bms() -> Iterator[SimulatedBms]:
    device = make_bms(MEASURED)
    yield device
    device.close()


@pytest.fixture
def settings(bms: SimulatedBms) -> BacnetSettings:
    return client_settings(bms, tuple(MEASURED))


@pytest.fixture
def client(settings: BacnetSettings) -> Iterator[BacnetClient]:
    c = open_client(settings)
    yield c
    c.close()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def stored(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(readings)).scalar_one())


def test_the_poller_fills_the_historian(bms: SimulatedBms, settings: BacnetSettings, client: BacnetClient,
                                        engine: sa.Engine) -> None:
    clock = Clock()
    poller = BacnetPoller(client, settings, engine, "s1", clock=clock)
    for k in range(3):
        bms.set_measured({"it_power_kw": 500.0 + 10 * k})
        poller.before_cycle()
        clock.now += STEP
    frame = InternalSource(engine, "s1").read_wide(ROLES, T0 - STEP, T0 + 3 * STEP).frame
    assert frame["it_power_kw"].dropna().tolist() == [500.0, 510.0, 520.0]
    assert frame["cooling_power_kw"].dropna().tolist() == [150.0] * 3
    assert frame["chw_supply_sp_c"].dropna().tolist() == [7.0] * 3  # the setpoint in force, as read
    assert stored(engine) == 3 * len(ROLES) and poller.buffer == {}


def test_a_device_that_goes_away_and_comes_back_loses_nothing(bms: SimulatedBms, settings: BacnetSettings,
                                                              client: BacnetClient, sqlite_engine: sa.Engine) -> None:
    waits: list[float] = []

    def device_back(seconds: float) -> None:
        waits.append(seconds)
        if not bms.online:
            bms.start()

    registry = CollectorRegistry()
    metrics = BacnetMetrics(registry)
    poller = BacnetPoller(client, settings, sqlite_engine, "s1", clock=Clock(), sleep=device_back, metrics=metrics)
    bms.stop()
    assert poller.poll() == {**MEASURED, "chw_supply_sp_c": 7.0, "supply_air_sp_c": 18.0, "cw_supply_sp_c": 29.0}
    assert waits[:1] == [0.0]  # a backoff (poll_backoff_s = 0 here), then every role read
    assert registry.get_sample_value("coolpilot_bacnet_errors_total", {"operation": "poll"}) == 0.0
    bms.stop()
    gone = BacnetPoller(client, settings.model_copy(update={"poll_retries": 0}), sqlite_engine, "s1", clock=Clock(),
                        metrics=metrics)
    gone.before_cycle()  # nothing read, nothing stored, nothing invented
    assert gone.buffer == {} and stored(sqlite_engine) == 0
    assert registry.get_sample_value("coolpilot_bacnet_errors_total", {"operation": "poll"}) == 1.0


def test_a_database_outage_keeps_the_readings_until_it_is_back(settings: BacnetSettings, client: BacnetClient,
                                                               sqlite_engine: sa.Engine) -> None:
    clock = Clock()
    poller = BacnetPoller(client, settings, make_engine("sqlite:////nonexistent-dir/coolpilot.db"), "s1", clock=clock)
    for _ in range(2):
        with pytest.raises(DatabaseError):
            poller.before_cycle()
        clock.now += STEP
    assert sorted(poller.buffer) == [T0, T0 + STEP]
    poller.engine = sqlite_engine
    poller.before_cycle()
    assert poller.buffer == {} and stored(sqlite_engine) == 3 * len(ROLES)
    poller.buffer[T0] = {"it_power_kw": 500.0}  # a row already stored: written once only
    assert poller.flush() == 0 and stored(sqlite_engine) == 3 * len(ROLES)
