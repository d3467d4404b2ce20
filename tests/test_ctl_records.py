"""Decision rows, setpoint commands and the database-down queue, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.config_actuator import MqttSettings
from controller.cycle import decide
from controller.decision import Decision
from controller.explain import render
from controller.service.actuators import DbActuator, MqttActuator
from controller.service.recorder import DecisionRecorder
from db.engine import make_engine
from db.records import decision_at, last_applied_setpoints, latest_decision
from db.schema import setpoint_commands
from tests._ctl_support import NOW, START_SETPOINTS, PhysicsForecaster, config, later, window

SITE = "hall-a"


def a_decision(now=NOW) -> Decision:  # type: ignore[no-untyped-def]
    return decide(config(mode="auto", site_id=SITE), window(now), now, PhysicsForecaster(), START_SETPOINTS)


def commands(engine: sa.Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(setpoint_commands).order_by(setpoint_commands.c.id)).mappings().all()
    return [dict(r) for r in rows]


def test_decision_row_round_trips_through_the_database(engine: sa.Engine) -> None:
    d = a_decision()
    recorder = DecisionRecorder(engine, SITE)
    decision_id = recorder.record(d)
    assert decision_id is not None and recorder.queued == 0
    recorder.set_actuation(decision_id, Decision(**{**d.__dict__, "actuation": "sent", "sent": d.new}))
    row = latest_decision(engine, SITE)
    assert row is not None
    back = Decision.from_row(row)
    assert back.decision_id == decision_id and back.site_id == SITE
    assert back.new == d.new and back.previous == d.previous and back.outcome == "optimised"
    assert back.chosen == d.chosen and back.hold == d.hold and back.expected_saving_kw == d.expected_saving_kw
    assert back.actuation == "sent" and back.sent == d.new
    assert len(back.what_if) == 6 and back.binding == d.binding
    assert "what if" in render(back)


def test_explain_at_picks_the_decision_in_force(engine: sa.Engine) -> None:
    recorder = DecisionRecorder(engine, SITE)
    first, second = a_decision(NOW), a_decision(later(5))
    id1, id2 = recorder.record(first), recorder.record(second)
    row = decision_at(engine, SITE, later(3))
    assert row is not None and row["id"] == id1
    row = decision_at(engine, SITE, later(5))
    assert row is not None and row["id"] == id2
    assert decision_at(engine, SITE, NOW - timedelta(minutes=1)) is None


def test_db_actuator_writes_sent_rows_that_become_the_last_applied(engine: sa.Engine) -> None:
    result = DbActuator(engine, SITE).send(START_SETPOINTS, ts=NOW, decision_id=None, reason="test")
    assert result.ok and result.sent == START_SETPOINTS
    assert last_applied_setpoints(engine, SITE) == START_SETPOINTS
    rows = commands(engine)
    assert [r["status"] for r in rows] == ["sent"] * 3 and {r["source"] for r in rows} == {"controller"}


@pytest.fixture
def broken_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """An engine whose database cannot be opened (its directory does not exist)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    yield engine
    engine.dispose()


def test_db_actuator_retries_then_reports_failure(broken_engine: sa.Engine) -> None:
    waits: list[float] = []
    result = DbActuator(broken_engine, SITE, retries=2, backoff_s=1.0, sleep=waits.append).send(
        START_SETPOINTS, ts=NOW, decision_id=None, reason="test")
    assert not result.ok and result.sent == {} and result.status.startswith("failed: ")
    assert "unable to open database file" in result.status
    assert waits == [1.0, 2.0]


def test_recorder_queues_while_the_database_is_down_and_flushes_later(sqlite_url: str, tmp_path: Path) -> None:
    good = make_engine(sqlite_url)
    down = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    recorder = DecisionRecorder(down, SITE, max_queue=2)
    decisions = [a_decision(later(5 * i)) for i in range(3)]
    assert [recorder.record(d) for d in decisions] == [None, None, None]
    assert recorder.queued == 2 and recorder.dropped == 1 and "unable to open" in (recorder.last_error or "")
    recorder.set_actuation(None, Decision(**{**decisions[2].__dict__, "actuation": "sent"}))
    recorder.engine = good  # the database is back
    assert recorder.flush() == 2 and recorder.queued == 0
    row = latest_decision(good, SITE)
    assert row is not None and row["ts"] == decisions[2].ts and row["details_json"]["actuation"] == "sent"
    good.dispose()
    down.dispose()


def test_mqtt_command_log_never_claims_an_unsent_setpoint(engine: sa.Engine) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    actuator = MqttActuator(MqttSettings(port=dead_port, ack_timeout_s=0.5), SITE, engine=engine, retries=1,
                            backoff_s=0.0, sleep=lambda _s: None)
    result = actuator.send(START_SETPOINTS, ts=NOW, decision_id=None, reason="test")
    assert not result.ok
    rows = commands(engine)
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert all("not delivered" in str(r["error"]) for r in rows)
    assert last_applied_setpoints(engine, SITE) == {}


def test_decision_details_are_plain_json(engine: sa.Engine) -> None:
    d = a_decision()
    json.loads(d.to_row()["details_json"])  # no NaN tokens, no numpy types
    DecisionRecorder(engine, SITE).record(d)
    row = latest_decision(engine, SITE)
    assert row is not None and row["details_json"]["candidates_scored"] == d.candidates_scored
