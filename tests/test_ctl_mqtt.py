"""MQTT actuator against the real Mosquitto broker on 127.0.0.1:1883."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.config_actuator import MqttSettings
from controller.service.actuators import MqttActuator

BROKER = ("127.0.0.1", 1883)
TS = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
SETPOINTS = {"chw_supply_sp_c": 10.5, "supply_air_sp_c": 20.0, "cw_supply_sp_c": 26.0}


def _broker_up() -> bool:
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _broker_up(), reason="needs Mosquitto on 127.0.0.1:1883")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clear_retained(prefix: str, site: str, roles: Iterable[str]) -> None:
    """Clear the retained setpoint messages a test left under ``prefix/site/role``."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(*BROKER)
    client.loop_start()
    for role in roles:
        client.publish(f"{prefix}/{site}/{role}", b"", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique topic prefix; retained messages under it are cleared afterwards."""
    name = f"coolpilot-test/{uuid.uuid4().hex}"
    yield name
    clear_retained(name, "s1", SETPOINTS)


def retained(topic_filter: str, expected: int) -> dict[str, Any]:
    """Subscribe afresh and collect retained messages (what a BMS that connects later sees)."""
    got: dict[str, Any] = {}
    done = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got[msg.topic] = {"payload": json.loads(msg.payload), "retain": msg.retain, "qos": msg.qos}
        if len(got) >= expected:
            done.set()

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect(*BROKER)
    client.subscribe(topic_filter, qos=1)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return got


def test_publishes_retained_qos1_messages_per_setpoint(prefix: str) -> None:
    actuator = MqttActuator(MqttSettings(topic=prefix + "/{site_id}/{role}"), "s1", retries=0)
    try:
        result = actuator.send(SETPOINTS, ts=TS, decision_id=42, reason="optimised")
    finally:
        actuator.close()
    assert result.ok and result.status == "sent" and result.sent == SETPOINTS
    got = retained(prefix + "/#", expected=3)
    assert set(got) == {f"{prefix}/s1/{role}" for role in SETPOINTS}
    for role, value in SETPOINTS.items():
        msg = got[f"{prefix}/s1/{role}"]
        assert msg["retain"] and msg["qos"] == 1
        assert msg["payload"]["value_c"] == value and msg["payload"]["decision_id"] == 42
        assert msg["payload"]["ts"] == TS.isoformat()


def test_unreachable_broker_is_retried_then_reported(prefix: str) -> None:
    waits: list[float] = []
    settings = MqttSettings(port=_free_port(), topic=prefix + "/{site_id}/{role}", ack_timeout_s=1.0)
    actuator = MqttActuator(settings, "s1", retries=2, backoff_s=0.5, sleep=waits.append)
    result = actuator.send(SETPOINTS, ts=TS, decision_id=None, reason="optimised")
    assert not result.ok and result.sent == {}
    assert result.status.startswith("failed: ") and "not delivered" in result.status
    assert waits == [0.5, 1.0]  # two retries with exponential back-off


def test_refuses_non_finite_setpoints(prefix: str) -> None:
    actuator = MqttActuator(MqttSettings(topic=prefix + "/{site_id}/{role}"), "s1")
    with pytest.raises(ValueError, match="chw_supply_sp_c"):
        actuator.send({"chw_supply_sp_c": float("nan")}, ts=TS, decision_id=None, reason="x")


def test_command_log_marks_acknowledged_messages_sent(prefix: str, sqlite_engine: Any) -> None:
    from db.records import last_applied_setpoints

    actuator = MqttActuator(MqttSettings(topic=prefix + "/{site_id}/{role}"), "s1", engine=sqlite_engine, retries=0)
    try:
        result = actuator.send(SETPOINTS, ts=TS, decision_id=None, reason="optimised")
    finally:
        actuator.close()
    assert result.ok
    assert last_applied_setpoints(sqlite_engine, "s1") == SETPOINTS
