"""`coolpilot demo` end to end, as a user runs it: a few steps with --json, and Ctrl-C.

Small settings keep it quick (9 days of history, a few training epochs); the numbers
checked are invariants of the run (counts add up, energies and PUE are physical, the
database holds what the summary says), not results copied from a run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from db.engine import make_engine
from db.schema import decisions, models, setpoint_commands

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 240.0
SMALL = ["--days", "9", "--max-epochs", "4", "--metrics-port", "0", "--retrain-every-days", "0"]

pytestmark = pytest.mark.slow


def demo(workdir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "coolpilot.cli", "demo", "--workdir", str(workdir), *SMALL, *args],
                            cwd=workdir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def counts(db: Path) -> dict[str, int]:
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return {t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0)
                    for t in (decisions, setpoint_commands, models)}
    finally:
        engine.dispose()


def check_summary(s: dict[str, Any], cycles: int) -> None:
    assert s["cycles"] == cycles and s["cycle_errors"] == 0
    assert sum(s["outcomes"].values()) == cycles
    assert sum(s["fallbacks"].values()) == s["outcomes"]["fallback"]
    assert s["simulated_hours"] == pytest.approx(cycles * 5 / 60)
    ours, rules = s["energy_kwh"]["coolpilot"], s["energy_kwh"]["rules"]
    assert ours["it_kwh"] == pytest.approx(rules["it_kwh"], rel=0.05)  # same load in both plants
    assert ours["cooling_kwh"] > 0 and rules["cooling_kwh"] > 0
    assert s["cooling_savings_kwh"] == pytest.approx(rules["cooling_kwh"] - ours["cooling_kwh"])
    for plant in ("coolpilot", "rules"):
        assert 1.0 < s["pue"][plant] < 2.0
        assert 15.0 < s["rack_inlet_max_c"][plant] < 40.0
    assert s["model"]["initial"]
    assert s["metrics_url"].startswith("http://127.0.0.1:")


def test_demo_runs_a_few_steps_and_prints_one_json_summary(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = demo(workdir, "--steps", "15", "--speed", "0", "--json")
    out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)  # stdout is exactly one JSON object
    check_summary(summary, 15)
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert stage in err
    assert "cycle 1:" in err  # the live view (one line per simulated hour when not a terminal)
    rows = counts(workdir / "demo.db")
    assert rows["decisions"] == 15 and rows["models"] == 1
    assert rows["setpoint_commands"] == 3 * 15  # auto mode: every cycle sends, fallbacks and holds included
    assert (workdir / "coolpilot.toml").stat().st_mode & 0o077 == 0
    assert "Traceback" not in (workdir / "demo.log").read_text()
    assert "after" in err and " h" in err  # the savings share says how many hours it covers


def test_ctrl_c_ends_the_demo_cleanly_with_a_summary_and_metrics_were_served(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = demo(workdir, "--speed", "20", "--json")
    assert proc.stderr is not None
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:  # read progress until the daemon has run a cycle
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"Metrics: (http://\S+/metrics)", line)
        url = found.group(1) if found else url
        if "cycle 1:" in line:
            break
    assert url is not None and any("cycle 1:" in x for x in lines), "".join(lines)
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
    assert 'coolpilot_mode{mode="auto"} 1.0' in body
    assert 'coolpilot_training_runs_total{result="success"} 1.0' in body  # the start-up training counts
    found_ts = re.search(r"^coolpilot_last_cycle_success_timestamp_seconds (\S+)$", body, re.M)
    assert found_ts is not None
    last_cycle = float(found_ts.group(1))
    assert abs(last_cycle - time.time()) < DEADLINE_S  # wall clock, though the plant runs in 2023
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0, "".join(lines) + err[-3000:]
    summary = json.loads(out)
    assert summary["cycles"] >= 1
    check_summary(summary, summary["cycles"])
    assert counts(workdir / "demo.db")["decisions"] == summary["cycles"]
