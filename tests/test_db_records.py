"""Decisions, setpoint commands and model records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from db.engine import DatabaseError
from db.records import (
    controlled_since,
    current_champion,
    decision_at,
    get_model,
    insert_decision,
    insert_model,
    insert_setpoint_commands,
    last_applied_setpoints,
    latest_decision,
    list_models,
    set_model_status,
    update_setpoint_command_status,
)
from db.schema import setpoint_commands

T0 = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def test_decisions_round_trip_and_lookup_by_time(engine: sa.Engine) -> None:
    first = insert_decision(engine, "default", {
        "ts": T0, "mode": "ai", "outcome": "applied", "reason": "lowest predicted energy",
        "model_version": "m1", "previous_json": {"chw_supply_sp_c": 7.0}, "new_json": {"chw_supply_sp_c": 7.5},
        "details_json": {"pred_kw": np.float64(201.5), "interval": np.array([190.0, 210.0]), "ood": float("nan")},
    })
    second = insert_decision(engine, "default", {"ts": T0 + timedelta(minutes=5), "mode": "rules", "outcome": "fallback"})
    assert second > first
    latest = latest_decision(engine)
    assert latest is not None and latest["id"] == second and latest["new_json"] == {} and latest["site"] == "default"
    at = decision_at(engine, "default", T0 + timedelta(minutes=3))
    assert at is not None and at["id"] == first and at["ts"] == T0
    assert at["details_json"] == {"pred_kw": 201.5, "interval": [190.0, 210.0], "ood": None}
    assert decision_at(engine, "default", T0 - timedelta(seconds=1)) is None
    assert latest_decision(engine, site="elsewhere") is None


def test_controlled_since_is_the_first_auto_decision_of_the_site(engine: sa.Engine) -> None:
    assert controlled_since(engine, "dc1") is None  # never in charge
    insert_decision(engine, "dc1", {"ts": T0, "mode": "advisory", "outcome": "optimised"})  # advice is not control
    insert_decision(engine, "dc1", {"ts": T0 + timedelta(hours=2), "mode": "auto", "outcome": "fallback"})
    insert_decision(engine, "dc1", {"ts": T0 + timedelta(hours=1), "mode": "auto", "outcome": "optimised"})
    insert_decision(engine, "dc2", {"ts": T0 - timedelta(days=1), "mode": "auto", "outcome": "hold"})
    assert controlled_since(engine, "dc1") == T0 + timedelta(hours=1)
    assert controlled_since(engine, "dc2") == T0 - timedelta(days=1)


def test_rows_go_to_the_named_site(engine: sa.Engine) -> None:
    """Decisions and commands are stored under the site they are given, not the default one."""
    decision = insert_decision(engine, "dc1", {"ts": T0, "mode": "ai", "outcome": "applied", "site_id": "dc1",
                                               "details_json": '{"ood": 0.4}'})
    found = decision_at(engine, "dc1", T0)
    assert found is not None and found["id"] == decision and found["details_json"] == {"ood": 0.4}
    assert latest_decision(engine) is None  # nothing went to the default site
    ids = insert_setpoint_commands(engine, "dc1", T0, {"chw_supply_sp_c": 8.0, "cw_supply_sp_c": 24.0},
                                   source="controller", reason="r", status="sent", decision_id=decision)
    assert len(ids) == 2
    assert last_applied_setpoints(engine, "dc1") == {"chw_supply_sp_c": 8.0, "cw_supply_sp_c": 24.0}
    with pytest.raises(ValueError, match="site_id 'other' does not match site 'dc1'"):
        insert_decision(engine, "dc1", {"ts": T0, "mode": "ai", "outcome": "x", "site_id": "other"})


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"mode": "ai", "outcome": "x"}, "missing field"),
        ({"ts": T0.replace(tzinfo=None), "mode": "ai", "outcome": "x"}, "timezone-aware"),
        ({"ts": T0, "mode": "ai", "outcome": "x", "colour": "red"}, "unknown field"),
        ({"ts": T0, "mode": "ai", "outcome": "x", "details_json": "{not json"}, "not valid JSON"),
    ],
)
def test_bad_decisions_are_rejected(engine: sa.Engine, row: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        insert_decision(engine, "default", row)


def test_setpoint_commands_and_last_applied(engine: sa.Engine) -> None:
    decision = insert_decision(engine, "default", {"ts": T0, "mode": "ai", "outcome": "applied"})
    ids = [
        *insert_setpoint_commands(engine, "default", T0, {"chw_supply_sp_c": 7.5}, source="controller",
                                  decision_id=decision),
        *insert_setpoint_commands(engine, "default", T0, {"supply_air_sp_c": 18.5}, source="controller",
                                  reason="saves 3 kW"),
        *insert_setpoint_commands(engine, "default", T0 + timedelta(minutes=5), {"chw_supply_sp_c": 8.0},
                                  source="operator"),
    ]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert last_applied_setpoints(engine) == {}
    assert update_setpoint_command_status(engine, ids[:2], "sent", at=T0 + timedelta(seconds=2)) == 2
    assert update_setpoint_command_status(engine, ids[2], "failed", error="BACnet timeout") == 1
    assert last_applied_setpoints(engine) == {"chw_supply_sp_c": 7.5, "supply_air_sp_c": 18.5}
    update_setpoint_command_status(engine, ids[2], "sent")
    assert last_applied_setpoints(engine)["chw_supply_sp_c"] == 8.0
    with engine.connect() as conn:
        row = conn.execute(sa.select(setpoint_commands).where(setpoint_commands.c.id == ids[0])).one()
    assert row.decision_id == decision and row.updated_at == T0 + timedelta(seconds=2)


def test_setpoint_commands_are_all_or_nothing(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="role 'chw_supply_c' is not one of"):
        insert_setpoint_commands(engine, "default", T0, {"chw_supply_sp_c": 7.5, "chw_supply_c": 7.5},
                                 source="controller")
    with pytest.raises(DatabaseError):  # foreign key to a decision that does not exist
        insert_setpoint_commands(engine, "default", T0, {"chw_supply_sp_c": 7.5, "supply_air_sp_c": 18.5},
                                 source="controller", decision_id=999)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(setpoint_commands)).scalar_one() == 0


def test_model_records_and_single_champion(engine: sa.Engine) -> None:
    insert_model(engine, "m1", "models/m1.safetensors", "a" * 64, metrics={"mae_kw": 3.2},
                 created_at=T0)
    insert_model(engine, "m2", "models/m2.safetensors", "b" * 64, meta={"roles": ["it_power_kw"]},
                 created_at=T0 + timedelta(hours=1))
    with pytest.raises(ValueError, match="already exists"):
        insert_model(engine, "m1", "x", "c" * 64)
    assert [m["version"] for m in list_models(engine)] == ["m2", "m1"]
    assert current_champion(engine) is None
    set_model_status(engine, "m1", "champion", pinned=True)
    set_model_status(engine, "m2", "champion")
    champion = current_champion(engine)
    assert champion is not None and champion["version"] == "m2"
    m1 = get_model(engine, "m1")
    assert m1 is not None and m1["status"] == "retired" and m1["pinned"] is True
    assert m1["metrics_json"] == {"mae_kw": 3.2} and m1["created_at"] == T0
    assert [m["version"] for m in list_models(engine, status="retired")] == ["m1"]
    with pytest.raises(KeyError, match="no model with version 'm9'"):
        set_model_status(engine, "m9", "champion")
    assert get_model(engine, "m9") is None


def test_database_refuses_a_second_champion(engine: sa.Engine) -> None:
    insert_model(engine, "m1", "p1", "a" * 64)
    insert_model(engine, "m2", "p2", "b" * 64)
    set_model_status(engine, "m1", "champion")
    with pytest.raises(sa.exc.IntegrityError, match=r"uq_models_one_champion|models\.site_id"), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE models SET status = 'champion' WHERE version = 'm2'")
