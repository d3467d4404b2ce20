"""``coolpilot simulate`` end to end, on SQLite and the real PostgreSQL server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coolpilot.cli import main
from db.engine import make_engine
from db.query import read_wide
from db.roles import SETPOINT_ROLES


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    code = main(["simulate", *args])
    out = capsys.readouterr()
    payload = json.loads(out.out) if code == 0 and "--json" in args else None
    return code, payload, out.err


def test_simulate_writes_history_and_summarises(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--days", "0.25", "--start", "2023-07-12", "--explore", "0.5", "--seed", "3", "--db", db_url, "--json")
    code, payload, _ = _run(capsys, *args)
    assert code == 0 and payload is not None
    assert payload["records"] == 72 and payload["days"] == pytest.approx(0.25)
    assert payload["readings_written"] > 72 * 18
    assert 1.1 < payload["pue_mean"] <= payload["pue_p95"] < 1.7
    assert payload["cooling_energy_kwh"] > 0
    assert 18.0 < payload["rack_inlet_max_c"] < 30.0
    engine = make_engine(db_url)
    try:
        wide = read_wide(engine, ["it_power_kw", *SETPOINT_ROLES], datetime(2023, 7, 12, tzinfo=UTC),
                         datetime(2023, 7, 12, 6, tzinfo=UTC))
        frame = wide.frame
        assert len(frame) == 72
        assert frame[list(SETPOINT_ROLES)].notna().all().all()  # setpoints are written every record
        assert 500 < frame["it_power_kw"].mean() < 1100
    finally:
        engine.dispose()
    # Same seed, same output: the re-run writes nothing new and reports the same summary.
    code, again, _ = _run(capsys, *args)
    assert code == 0 and again is not None
    assert again["readings_written"] == 0
    assert again["cooling_energy_kwh"] == payload["cooling_energy_kwh"]


def test_simulate_human_output_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'sim.db'}"
    code, _, _ = _run(capsys, "--days", "0.05", "--controller", "legacy", "--db", db)
    assert code == 0
    code = main(["simulate", "--days", "0.05", "--db", db])
    human = capsys.readouterr().out
    assert code == 0 and "PUE mean" in human and "economiser hours" in human
    for args, message in (
        (("--days", "-1"), "--days must be in"),
        (("--days", "1", "--explore", "2"), "--explore is a share"),
        (("--days", "1", "--start", "yesterday"), "--start 'yesterday' is not an ISO date"),
        (("--days", "1", "--climate", str(tmp_path / "none.epw")), "none.epw: no such file"),
        (("--days", "1", "--plant", "nosuchmodule:make"), "cannot import module"),
        (("--days", "1", "--plant", "simulator.plant_sim:DEFAULT_START"), "is not callable"),
    ):
        code, _, err = _run(capsys, *args, "--db", db)
        assert code == 2, args
        assert message in err and "Traceback" not in err, err
