"""Fault injection, infrastructure: the database, the MQTT broker, a failing write, SIGKILL.

The real daemon runs closed loop against the simulator (`tests._fault_rig`), or as a
real `coolpilot run` process for the kill-and-restart case, and each scenario checks
what must happen: the daemon keeps deciding every cycle, what reaches the plant stays
inside the bounds and rate limits, nothing is claimed as sent that was not, every
decision row reaches the database once it is back, the problem is counted in the
metrics and named in the log, and normal control resumes by itself.

Signals already covered elsewhere (not repeated here): SIGTERM in the middle of a
cycle (tests/test_daemon_loop.py), an invalid config pushed with SIGHUP and SIGTERM
with a restart (tests/test_daemon_process.py).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import socket
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from controller.config_actuator import MqttSettings
from controller.decision import Decision
from controller.seams import ActuationResult
from controller.service.actuators import DbActuator, MqttActuator
from db.engine import make_engine, redact_url
from db.records import last_applied_setpoints
from db.roles import SETPOINT_ROLES
from db.schema import setpoint_commands
from tests._fault_rig import (
    SITE,
    Rig,
    assert_kept_running_and_recorded,
    assert_resumed,
    dead_engine,
    make_rig,
    run,
)
from tests.test_ctl_mqtt import BROKER, clear_retained, retained
from tests.test_daemon_process import DEADLINE_S, MAX_STEP_K, decision_rows, running_daemon, write_config


def commands(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(setpoint_commands).order_by(setpoint_commands.c.id))]


def stored(rig: Rig) -> list[Decision]:
    return [Decision.from_row(dict(r._mapping)) for r in rig.decision_rows()]


def test_a_database_outage_falls_back_counts_errors_reconnects_and_loses_no_decision(
        engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(engine, tmp_path)
    dead = dead_engine(engine, tmp_path)
    with caplog.at_level(logging.INFO):
        r = run(rig, 14, {4: lambda: rig.point_at(dead), 9: lambda: rig.point_at(engine)})
    dead.dispose()

    assert_kept_running_and_recorded(rig, r, 14)
    out = r.decisions[3:8]
    for d in out:  # the rules decide blind: rack inlet unknown, so nothing may warm up
        assert (d.outcome, d.reason_code) == ("fallback", "db_error") and "cannot read sensor history" in d.reason
        assert d.hot_guard and all(d.new[role] <= d.previous[role] + 1e-9 for role in SETPOINT_ROLES)
        assert d.actuation.startswith("failed: ") and d.sent == {} and d.decision_id is None  # queued, not claimed
    assert all(s == r.watch.setpoints[3] for s in r.watch.setpoints[3:9])  # the plant got nothing meanwhile
    # every decision reached the database once it was back, in order, with its actuation result
    rows = stored(rig)
    assert [d.ts for d in rows] == [d.ts for d in r.decisions]
    assert [d.actuation for d in rows[3:8]] == [d.actuation for d in out]
    assert rig.recorder.queued == 0 and rig.recorder.dropped == 0 and rig.recorder.last_error is None
    sent = [c for c in commands(engine) if c["status"] == "sent"]
    assert len(sent) == len(SETPOINT_ROLES) * sum(d.actuation == "sent" for d in r.decisions)
    assert last_applied_setpoints(engine, SITE) == pytest.approx(r.daemon.last_applied)
    # counted and named
    assert rig.value("coolpilot_fallbacks_total", reason="db_error") == 5
    assert rig.value("coolpilot_db_errors_total") >= 10  # historian writes refused + cycles without history
    assert rig.value("coolpilot_actuator_errors_total") == 5
    where = redact_url(dead.url)
    assert any("database unavailable, decision queued (5 waiting)" in m and where in m for m in caplog.messages)
    assert any("wrote 5 queued decision row(s)" in m for m in caplog.messages)
    assert_resumed(r)


class BreaksOnce:
    """The command log's connection drops in the middle of one cycle (after the decision row)."""

    def __init__(self, inner: DbActuator, dead: sa.Engine, at_call: int) -> None:
        self.inner, self.dead, self.at_call = inner, dead, at_call
        self.calls = 0

    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult:
        self.calls += 1
        if self.calls != self.at_call:
            return self.inner.send(setpoints, ts=ts, decision_id=decision_id, reason=reason)
        good, self.inner.engine = self.inner.engine, self.dead
        try:
            return self.inner.send(setpoints, ts=ts, decision_id=decision_id, reason=reason)
        finally:
            self.inner.engine = good


def test_a_setpoint_write_that_fails_mid_cycle_claims_nothing_and_the_next_cycle_moves_one_step(
        sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    rig = make_rig(sqlite_engine, tmp_path)
    r = run(rig, 6, {}, actuator=BreaksOnce(rig.commands, dead_engine(sqlite_engine, tmp_path), at_call=3))

    assert_kept_running_and_recorded(rig, r, 6)
    failed = r.decisions[2]
    assert failed.actuation.startswith("failed: cannot use database") and failed.sent == {}
    assert stored(rig)[2].actuation == failed.actuation  # the row says so too
    assert r.watch.setpoints[3] == r.watch.setpoints[2]  # the plant kept what it had
    nxt = r.decisions[3]
    assert nxt.previous == pytest.approx(r.decisions[1].new)  # the reference is what was really applied
    assert len(commands(sqlite_engine)) == len(SETPOINT_ROLES) * 5  # no command row for the failed write
    assert rig.value("coolpilot_actuator_errors_total") == 1


@pytest.fixture
def topic_prefix() -> Iterator[str]:
    """A unique MQTT topic prefix for the rig's site; its retained messages are cleared afterwards."""
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError:
        pytest.skip("needs Mosquitto on 127.0.0.1:1883")
    name = f"coolpilot-test/{uuid.uuid4().hex}"
    yield name
    clear_retained(name, SITE, SETPOINT_ROLES)


def test_an_mqtt_broker_outage_sends_nothing_claims_nothing_and_recovers_when_it_is_back(
        sqlite_engine: sa.Engine, tmp_path: Path, topic_prefix: str) -> None:
    rig = make_rig(sqlite_engine, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = int(s.getsockname()[1])
    topic = topic_prefix + "/{site_id}/{role}"
    actuator = MqttActuator(MqttSettings(port=closed_port, topic=topic, ack_timeout_s=2.0), SITE,
                            engine=sqlite_engine, retries=1, backoff_s=0.0, sleep=lambda _s: None)

    def broker_back() -> None:
        actuator.close()
        actuator.settings = MqttSettings(host=BROKER[0], port=BROKER[1], topic=topic, ack_timeout_s=5.0)

    try:
        r = run(rig, 9, {5: broker_back}, actuator=actuator)
    finally:
        actuator.close()

    assert_kept_running_and_recorded(rig, r, 9)
    down, up = r.decisions[:4], r.decisions[4:]
    for d in down:
        assert d.actuation.startswith("failed: ") and f"not delivered to mqtt://127.0.0.1:{closed_port}" in d.actuation
        assert d.sent == {}
    assert all(s == r.watch.setpoints[0] for s in r.watch.setpoints[:5])  # nothing reached the plant
    assert all(d.actuation == "sent" and d.sent == pytest.approx(d.new) for d in up)
    assert rig.plant.setpoints() == pytest.approx(up[-1].new)
    log = commands(sqlite_engine)
    assert [c["status"] for c in log] == ["failed"] * 12 + ["sent"] * 15  # the command log never claims more
    assert all("not delivered" in str(c["error"]) for c in log[:12])
    assert last_applied_setpoints(sqlite_engine, SITE) == pytest.approx(up[-1].new)
    assert rig.value("coolpilot_actuator_errors_total") == 4
    got = retained(f"{topic_prefix}/{SITE}/#", len(SETPOINT_ROLES))  # what a BMS connecting now sees
    assert {m["payload"]["role"]: m["payload"]["value_c"] for m in got.values()} == pytest.approx(up[-1].new)
    assert_resumed(r)


PLANT = ["--plant", "simulator.plant_sim:make_plant", "--seed", "1", "--speed", "0"]


def test_sigkill_mid_run_then_restart_resumes_from_the_database_without_a_setpoint_jump(
        sqlite_url: str, tmp_path: Path) -> None:
    config = tmp_path / "coolpilot.toml"
    write_config(config, "rules")
    with running_daemon(config, sqlite_url, tmp_path, name="killed", args=PLANT) as d:
        d.wait_until(lambda: len(decision_rows(sqlite_url)) >= 12, "a dozen cycles")
        d.proc.send_signal(signal.SIGKILL)  # no handler, no clean-up: whatever was in flight is cut off
        assert d.proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL
    before = decision_rows(sqlite_url)
    assert all(json.loads(row["details_json"])["actuation"] == "sent" for row in before[:-1])
    engine = make_engine(sqlite_url)
    try:
        resume = last_applied_setpoints(engine, "proc")
    finally:
        engine.dispose()
    assert set(resume) == set(SETPOINT_ROLES)

    with running_daemon(config, sqlite_url, tmp_path, name="restarted", args=[*PLANT, "--steps", "3"]) as d:
        assert d.proc.wait(timeout=DEADLINE_S) == 0
    log = (tmp_path / "restarted.log").read_text()
    assert "resuming from last applied setpoints" in log and "Traceback" not in log
    after = decision_rows(sqlite_url)[len(before):]
    assert len(after) == 3
    first = json.loads(after[0]["previous_json"]), json.loads(after[0]["new_json"])
    assert first[0] == pytest.approx(resume)  # the reference is the last command the killed run sent
    for role, step in MAX_STEP_K.items():
        assert abs(first[1][role] - resume[role]) <= step + 1e-9 and math.isfinite(first[1][role])
