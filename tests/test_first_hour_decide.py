"""Replaying a past moment (`--at`), old history said once, and `explain`'s read-only output (issue 16)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from controller.cycle import decide
from controller.explain import render
from controller.quality import QualityIssue, collapse_missing, history_age_problem
from coolpilot.replay import AsOfSource
from db.historian import InternalSource
from db.ingest import write_wide
from db.records import last_applied_setpoints
from forecasting.history import load_history
from tests._ctl_support import NOW, START_SETPOINTS, PhysicsForecaster, config, window
from tests.test_ctl_cli import run, write_config

AT = "2024-07-01T12:00:00Z"


@pytest.fixture
def past_db(sqlite_url: str, sqlite_engine: sa.Engine) -> str:
    """Two hours of a healthy plant up to NOW (2024-07-01 12:00 UTC), and a day later another two hours."""
    write_wide(sqlite_engine, window(NOW), site="hall-a")
    write_wide(sqlite_engine, window(NOW + timedelta(days=1), seed=1), site="hall-a")
    return sqlite_url


def test_decide_at_a_past_moment_judges_it_as_of_then_and_applies_nothing(
        tmp_path: Path, past_db: str, sqlite_engine: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "auto", past_db)
    code, out, err = run(capsys, "decide", "--once", "--config", str(cfg), "--at", AT, "--json")
    assert code == 0, err
    assert "replaying 2024-07-01T12:00:00+00:00: advisory only, nothing is applied (mode auto runs as advisory)" in err
    decision = json.loads(out)
    assert decision["ts"].startswith("2024-07-01T12:00:00")
    assert decision["mode"] == "advisory" and decision["apply"] is False
    assert decision["reason_code"] == "no_model"  # not bad_data: the window is fresh as of --at
    assert decision["quality_issues"] == []  # nor a clock behind the later readings
    assert decision["previous"] == START_SETPOINTS
    assert last_applied_setpoints(sqlite_engine, "hall-a") == {}


def test_a_replay_in_rules_mode_sends_nothing_either(
        tmp_path: Path, past_db: str, sqlite_engine: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "rules", past_db)
    code, out, err = run(capsys, "decide", "--once", "--config", str(cfg), "--at", AT, "--json")
    assert code == 0, err
    decision = json.loads(out)
    assert decision["reason_code"] == "mode_rules"
    assert decision["actuation"] == "not sent (replay of a past moment)"
    assert last_applied_setpoints(sqlite_engine, "hall-a") == {}


def test_at_in_the_future_or_not_a_time_is_refused(
        tmp_path: Path, past_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "auto", past_db)
    code, _, err = run(capsys, "decide", "--once", "--config", str(cfg), "--at", "2999-01-01T00:00Z")
    assert code == 2 and "is in the future" in err
    code, _, err = run(capsys, "train", "--db", past_db, "--site", "hall-a", "--at", "soon")
    assert code == 2 and "not an ISO 8601 time" in err


def test_old_history_is_said_once_not_once_per_role(
        tmp_path: Path, past_db: str, sqlite_engine: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "advisory", past_db)
    code, out, _ = run(capsys, "decide", "--once", "--config", str(cfg), "--json")
    decision = json.loads(out)
    days = (datetime.now(UTC) - (NOW + timedelta(days=1))).days
    assert decision["quality_issues"] == [f"history: freshness: newest reading 2024-07-02 12:00 UTC, {days} days old"]
    assert decision["outcome"] == "fallback" and code in (0, 3)


def test_history_age_is_asked_only_of_a_window_before_the_newest_reading(sqlite_engine: sa.Engine) -> None:
    write_wide(sqlite_engine, window(NOW), site="hall-a")
    source = InternalSource(sqlite_engine, "hall-a")
    assert history_age_problem(source, NOW + timedelta(hours=3), NOW + timedelta(hours=1)) == \
        "newest reading 2024-07-01 12:00 UTC, 3.0 h old"
    assert history_age_problem(source, NOW, NOW - timedelta(hours=2)) is None
    assert AsOfSource(source, NOW - timedelta(hours=1)).latest_timestamp() == NOW - timedelta(hours=1)
    missing = [QualityIssue(r, "missing", "no finite reading in the last 24 rows") for r in ("a", "b")]
    stale = QualityIssue("c", "stuck", "x")
    assert collapse_missing([*missing, stale], None) == (*missing, stale)
    assert [str(i) for i in collapse_missing([*missing, stale], "newest reading X")] == [
        "history: freshness: newest reading X", "c: stuck: x"]


def test_train_at_reads_only_the_history_before_the_moment(sqlite_engine: sa.Engine) -> None:
    write_wide(sqlite_engine, window(NOW, rows=48), site="hall-a")
    write_wide(sqlite_engine, window(NOW + timedelta(days=1), rows=48), site="hall-a")
    frame = load_history(sqlite_engine, "hall-a", 1, until=NOW)
    assert frame.index.max() <= pd.Timestamp(NOW) and frame.index.min() >= pd.Timestamp(NOW - timedelta(days=1))
    assert load_history(sqlite_engine, "hall-a", 1).index.max() > pd.Timestamp(NOW + timedelta(hours=23))


def test_explain_is_read_only_and_gives_no_advisory_warning(
        tmp_path: Path, past_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = run(capsys, "decide", "--once", "--db", past_db, "--at", AT)
    assert "no --config given" in err  # decide acts: it says what the defaults do
    code, out, err = run(capsys, "explain", "--last", "--db", past_db, "--site", "default")
    assert code == 0 and "outcome" in out
    assert "no --config given" not in err


def test_explanation_lists_distinct_runner_ups_and_unknown_setpoints_as_unknown() -> None:
    d = decide(config(mode="auto"), window(), NOW, PhysicsForecaster(), START_SETPOINTS)
    assert d.runner_ups
    doubled = replace(d, runner_ups=(d.runner_ups[0], d.runner_ups[0], *d.runner_ups[1:], d.runner_ups[0]))
    def runner_up_lines(text: str) -> list[str]:
        return text.split("runner-up candidates:")[1].split("\n\n")[0].splitlines()[2:]

    table = runner_up_lines(render(doubled))
    assert table and len(table) == len(set(table))  # no line twice: copies and near-copies (0.01 C) go
    assert table == runner_up_lines(render(d))
    unknown = replace(d, previous={})
    text = render(unknown)
    assert "nan" not in text.lower()
    assert "chw_supply_sp_c    unknown ->" in text
