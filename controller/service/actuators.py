"""Actuators: how setpoints leave the controller, with retries and an honest command log.

Why the care: the database is what operators and ``explain`` trust, so a row must
never claim that a setpoint was sent when it was not. Each actuator retries a failed
delivery, then reports it (never raises for delivery trouble), and says exactly
which roles were delivered so the daemon rate-limits against what the plant got.

* ``DbActuator`` (default): one row per setpoint in ``setpoint_commands`` (status
  ``sent``) in one transaction; a building-management integration reads them.
* ``MqttActuator``: one retained QoS-1 message per setpoint, acknowledged by the
  broker; rows are logged ``pending`` first and then marked ``sent`` or ``failed``.
* ``BacnetActuator`` (``controller.service.bacnet``): BACnet/IP writes at a priority with
  read-back and relinquish; the same command log as MQTT.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.config_actuator import ActuatorSettings, MqttSettings
from controller.config_bacnet import BacnetSettings
from controller.seams import ActuationResult, Actuator
from db.engine import DatabaseError
from db.roles import SETPOINT_ROLES

log = logging.getLogger(__name__)

SOURCE = "controller"


def _valid(setpoints: Mapping[str, float]) -> dict[str, float]:
    """Only finite values of known setpoint roles ever leave (the gate guarantees this too)."""
    bad = [r for r in setpoints if r not in SETPOINT_ROLES or not math.isfinite(setpoints[r])]
    if bad:
        raise ValueError(f"refusing to send invalid setpoints for {', '.join(bad)}")
    return {r: float(setpoints[r]) for r in SETPOINT_ROLES if r in setpoints}


class DbActuator:
    """Writes setpoint commands as rows; retries database errors ``retries`` times."""

    def __init__(self, engine: sa.Engine, site: str, *, retries: int = 3, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.engine, self.site = engine, site
        self.retries, self.backoff_s, self._sleep = retries, backoff_s, sleep

    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult:
        from db.records import insert_setpoint_commands

        values = _valid(setpoints)
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                insert_setpoint_commands(self.engine, self.site, ts, values, source=SOURCE, reason=reason,
                                         status="sent", decision_id=decision_id)
            except DatabaseError as exc:
                error = str(exc)
                log.warning("setpoint command write failed (attempt %d of %d): %s", attempt + 1,
                            self.retries + 1, error)
                continue
            return ActuationResult(ok=True, status="sent", sent=values)
        return ActuationResult(ok=False, status=f"failed: {error}")


class CommandLog:
    """The command log of an actuator that delivers outside the database (MQTT, BACnet).

    Rows are ``pending`` first, then ``sent`` or ``failed`` with why, so a row never
    claims a delivery that did not happen; a database outage never stops delivery (the
    log misses those commands, and says so in the service log). ``engine`` None: no log.
    """

    def __init__(self, engine: sa.Engine | None, site: str, channel: str) -> None:
        self.engine, self.site, self.channel = engine, site, channel

    def pending(self, values: Mapping[str, float], ts: datetime, decision_id: int | None,
                reason: str) -> dict[str, int]:
        """One ``pending`` row per setpoint; their ids by role ({} without a log)."""
        if self.engine is None:
            return {}
        from db.records import insert_setpoint_commands

        try:
            ids = insert_setpoint_commands(self.engine, self.site, ts, values, source=SOURCE, reason=reason,
                                           status="pending", decision_id=decision_id)
        except DatabaseError as exc:
            log.warning("cannot log %s setpoint commands: %s", self.channel, exc)
            return {}
        return dict(zip(values, ids, strict=True))

    def settle(self, ids: Mapping[str, int], errors: Mapping[str, str | None]) -> None:
        """Each pending row becomes ``sent`` (its role's error is None) or ``failed`` with that error."""
        if not ids or self.engine is None:
            return
        from db.records import update_setpoint_command_status

        for role, command_id in ids.items():
            error = errors.get(role, "not delivered")
            try:
                if error is None:
                    update_setpoint_command_status(self.engine, command_id, "sent")
                else:
                    update_setpoint_command_status(self.engine, command_id, "failed", error=error)
            except DatabaseError as exc:  # rows stay "pending", which claims nothing
                log.warning("cannot update setpoint command %d: %s", command_id, exc)


class MqttActuator:
    """Publishes each setpoint as a retained QoS-1 JSON message and waits for the broker's ack.

    ``engine`` (optional) keeps the command log. ``client_factory`` is for tests that
    need a differently configured paho client; the default connects to the configured
    broker (127.0.0.1:1883 unless set).
    """

    def __init__(self, settings: MqttSettings, site: str, *, engine: sa.Engine | None = None,
                 retries: int = 3, backoff_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 client_factory: Callable[[], Any] | None = None) -> None:
        self.settings, self.site, self.engine = settings, site, engine
        self.retries, self.backoff_s, self._sleep = retries, backoff_s, sleep
        self._factory = client_factory or self._default_client
        self._commands = CommandLog(engine, site, "MQTT")
        self._client: Any = None

    def _default_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=self.settings.client_id or f"coolpilot-{self.site}", clean_session=True)
        if self.settings.username:
            password = os.environ.get(self.settings.password_env) if self.settings.password_env else None
            client.username_pw_set(self.settings.username, password)
        return client

    def topic(self, role: str) -> str:
        return self.settings.topic.format(site_id=self.site, role=role)

    def _connected_client(self) -> Any:
        if self._client is None:
            client = self._factory()
            client.connect(self.settings.host, self.settings.port, keepalive=60)
            client.loop_start()
            self._client = client
        return self._client

    def close(self) -> None:
        """Disconnect and drop any unacknowledged messages (so they are never sent late)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    def _publish_all(self, values: Mapping[str, float], ts: datetime, decision_id: int | None) -> dict[str, float]:
        client = self._connected_client()
        infos = []
        for role, value in values.items():
            payload = json.dumps({"role": role, "value_c": value, "ts": ts.isoformat(), "decision_id": decision_id,
                                  "site_id": self.site, "source": "coolpilot"}, sort_keys=True)
            infos.append((role, client.publish(self.topic(role), payload, qos=self.settings.qos,
                                               retain=self.settings.retain)))
        deadline = time.monotonic() + self.settings.ack_timeout_s
        acked: dict[str, float] = {}
        for role, info in infos:
            info.wait_for_publish(timeout=max(deadline - time.monotonic(), 0.0))
            if info.is_published():
                acked[role] = values[role]
        return acked

    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult:
        values = _valid(setpoints)
        ids = self._commands.pending(values, ts, decision_id, reason)
        pending = dict(values)
        sent: dict[str, float] = {}
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                acked = self._publish_all(pending, ts, decision_id)
            except (OSError, RuntimeError, ValueError) as exc:
                acked, error = {}, f"{type(exc).__name__}: {exc}"
            sent.update(acked)
            pending = {r: v for r, v in pending.items() if r not in acked}
            if not pending:
                break
            error = error or f"no broker acknowledgement within {self.settings.ack_timeout_s} s"
            log.warning("MQTT publish to %s:%d failed (attempt %d of %d): %s", self.settings.host,
                        self.settings.port, attempt + 1, self.retries + 1, error)
            self.close()  # a fresh session: an abandoned message must not be delivered later
        if pending:
            error = f"{', '.join(pending)} not delivered to mqtt://{self.settings.host}:{self.settings.port}: {error}"
        self._commands.settle(ids, {r: None if r in sent else error for r in ids})
        if pending:
            return ActuationResult(ok=False, status=f"failed: {error}", sent=sent)
        return ActuationResult(ok=True, status="sent", sent=sent)



class NullActuator:
    """For ``kind = "none"``: nothing is sent, and nothing claims it was."""

    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult:
        return ActuationResult(ok=False, status="skipped (actuator kind none)")


def make_actuator(settings: ActuatorSettings, site: str, engine: sa.Engine | None, *,
                  bacnet: BacnetSettings | None = None, mode: Callable[[], str] | None = None,
                  registry: CollectorRegistry | None = None) -> Actuator:
    """The actuator a config asks for; ``kind = "bacnet"`` needs the ``[bacnet]`` section
    (``mode``: the config's current mode, for hand-back; ``registry``: its metrics)."""
    if settings.kind == "bacnet":
        from controller.service.bacnet.parts import open_bacnet_actuator

        if bacnet is None:
            raise ValueError("actuator kind 'bacnet' needs a [bacnet] section")
        return open_bacnet_actuator(bacnet, site, engine=engine, mode=mode, registry=registry,
                                    retries=settings.retries, backoff_s=settings.retry_backoff_s)
    if settings.kind == "mqtt":
        return MqttActuator(settings.mqtt, site, engine=engine, retries=settings.retries,
                            backoff_s=settings.retry_backoff_s)
    if settings.kind == "db":
        if engine is None:
            raise ValueError("actuator kind 'db' needs a database engine")
        return DbActuator(engine, site, retries=settings.retries, backoff_s=settings.retry_backoff_s)
    return NullActuator()
