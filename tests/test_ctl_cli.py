"""`coolpilot decide --once`, `config check` and `explain` as an operator runs them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from coolpilot.cli import main
from db.ingest import write_wide
from db.records import last_applied_setpoints
from tests._ctl_support import START_SETPOINTS, window

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "config" / "coolpilot.example.toml"


def write_config(tmp_path: Path, mode: str, url: str) -> Path:
    text = EXAMPLE.read_text().replace('mode = "advisory"', f'mode = "{mode}"')
    path = tmp_path / "coolpilot.toml"
    path.write_text(text.replace("[database]", f'[database]\nurl = "{url}"', 1))
    path.chmod(0o600)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def plant_db(sqlite_url: str, sqlite_engine: sa.Engine) -> str:
    """A database holding the last two hours of a healthy plant, up to now."""
    now = pd.Timestamp(datetime.now(UTC)).floor("5min").to_pydatetime()
    write_wide(sqlite_engine, window(now), site="hall-a")
    return sqlite_url


def test_decide_once_without_a_model_falls_back_records_and_applies(
        tmp_path: Path, plant_db: str, sqlite_engine: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "auto", plant_db)
    code, out, err = run(capsys, "decide", "--once", "--config", str(cfg), "--json")
    assert code == 0, err
    decision = json.loads(out)
    assert decision["outcome"] == "fallback" and decision["reason_code"] == "no_model"
    assert decision["previous"] == START_SETPOINTS  # measured setpoints are the reference on a first run
    assert decision["actuation"] == "sent" and decision["decision_id"] is not None
    assert last_applied_setpoints(sqlite_engine, "hall-a") == decision["new"]

    code, out, _ = run(capsys, "explain", "--last", "--config", str(cfg), "--json")
    assert code == 0
    explained = json.loads(out)
    assert explained["decision_id"] == decision["decision_id"] and explained["reason_code"] == "no_model"

    code, out, _ = run(capsys, "explain", "--config", str(cfg))
    assert code == 0 and "outcome fallback (no_model)" in out and "no what-if table" in out


def test_decide_once_on_a_site_without_readings_writes_nothing_and_fails(
        tmp_path: Path, sqlite_url: str, sqlite_engine: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    from db.migrate import upgrade

    upgrade(sqlite_engine)  # an empty database (or a mistyped site_id): no setpoint is known
    cfg = write_config(tmp_path, "auto", sqlite_url)
    code, out, err = run(capsys, "decide", "--once", "--config", str(cfg), "--json")
    decision = json.loads(out)
    assert code == 3 and "nothing written" in err and "current setpoints unknown" in err
    assert decision["reason_code"] == "setpoint_unknown" and decision["new"] == {} and decision["apply"] is False
    assert last_applied_setpoints(sqlite_engine, "hall-a") == {}  # no command row was written


def test_decide_once_in_advisory_mode_applies_nothing(
        tmp_path: Path, plant_db: str, sqlite_engine: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "advisory", plant_db)
    code, out, _ = run(capsys, "decide", "--once", "--config", str(cfg))
    assert code == 0 and "actuation: not sent (advisory)" in out
    assert last_applied_setpoints(sqlite_engine, "hall-a") == {}


def test_decide_needs_once_and_reports_a_bad_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "auto", "postgresql://coolpilot:s3cret@127.0.0.1:1/nope")
    code, _, err = run(capsys, "decide", "--config", str(cfg))
    assert code == 2 and "pass --once" in err
    code, _, err = run(capsys, "decide", "--once", "--config", str(cfg))
    assert code == 2 and "s3cret" not in err and "Traceback" not in err
    assert err.startswith("coolpilot decide: error: cannot use database postgresql+psycopg://coolpilot:***@127.0.0.1:1/")
    assert "Connection refused" in err


def test_explain_without_decisions_says_what_to_do(
        tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "auto", sqlite_url)
    code, _, err = run(capsys, "explain", "--at", "2024-07-01T12:00Z", "--config", str(cfg))
    assert code == 2 and "has no decision at or before 2024-07-01T12:00:00+00:00" in err
    code, _, err = run(capsys, "explain", "--at", "yesterday", "--config", str(cfg))
    assert code == 2 and "not an ISO 8601 time" in err


def test_config_check_prints_effective_settings_without_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "auto", "postgresql://coolpilot:s3cret@db.example:5432/cp")
    code, out, _ = run(capsys, "config", "check", str(cfg))
    assert code == 0 and "s3cret" not in out
    assert "database.url = 'postgresql://coolpilot:***@db.example:5432/cp'  [restart]" in out
    assert "safety.rack_inlet_limit_c = 27.0\n" in out
    code, out, _ = run(capsys, "config", "check", str(cfg), "--json")
    data = json.loads(out)
    assert data["valid"] and data["effective"]["mode"] == "auto" and "s3cret" not in out


def test_config_check_rejects_a_bad_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "auto", "sqlite:///x.db")
    text = cfg.read_text()
    cfg.write_text(text.replace("k_sigma = 2.0", "k_sigma = 9"))
    line = text.splitlines().index(next(ln for ln in text.splitlines() if ln.startswith("k_sigma"))) + 1
    code, out, err = run(capsys, "config", "check", str(cfg))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"coolpilot config: error: {cfg}:{line}: safety.k_sigma: Input should be less than or equal to 6")
