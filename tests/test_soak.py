"""`benchmarks/soak.py` in miniature: 60 cycles of the real daemon with a fault started almost every cycle.

The full soak (20,000 cycles) is a benchmark run by hand (docs/reliability.md); this
checks that its machinery works and that the daemon survives every fault kind: no row
lost (counted by the soak and recounted here from the database), no true rack inlet
above the limit, every kind of fault injected, invalid configs rejected and valid ones
taken, and one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from benchmarks.soak_faults import FAULT_KINDS
from db.engine import make_engine

ROOT = Path(__file__).resolve().parents[1]
CYCLES = 60
DEADLINE_S = 300.0

pytestmark = pytest.mark.slow


def test_short_soak_with_every_fault_kind_loses_no_row_and_keeps_racks_cool(tmp_path: Path) -> None:
    workdir = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--cycles", str(CYCLES), "--fault-rate", "1",
         "--days", "9", "--max-epochs", "3", "--retrain-every-days", "0", "--warmup", "10", "--seed", "3",
         "--workdir", str(workdir), "--json-only"],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=DEADLINE_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[-2000:]  # --json-only: exactly the JSON line
    r = json.loads(lines[0])
    assert r["benchmark"] == "soak"

    assert r["cycles"] == CYCLES and r["cycle_errors"] == 0
    assert sum(r["outcomes"].values()) == r["decisions_made"] == CYCLES
    assert sum(r["fallbacks"].values()) == r["outcomes"]["fallback"]
    assert r["lost_rows"] == 0 and r["lost"] == {"decisions": 0, "readings": 0, "commands": 0}
    assert r["recorder_dropped"] == 0
    assert r["minutes_above_limit"]["coolpilot"] == 0
    assert r["rack_inlet_max_c"]["coolpilot"] <= r["rack_inlet_limit_c"]

    assert set(r["faults_started"]) == set(FAULT_KINDS)
    assert all(n >= 1 for n in r["faults_started"].values()), r["faults_started"]
    assert r["statements_refused_in_outages"] > 0  # the outage really reached the database calls
    assert r["failed_sends"] > 0 and sum(r["corrupted_readings"].values()) > 0
    assert "db_error" in r["fallbacks"]  # the cycle saw the outage and fell back
    reloads = r["config_reloads"]
    assert reloads.get("accepted", 0) >= 1 and reloads.get("rejected", 0) >= 1, reloads
    assert "unexpected" not in reloads and "not_acted_on" not in reloads, reloads
    assert r["config_ok_at_end"] and r["log_tracebacks"] == 0
    assert r["rss_start_mib"] > 0 and r["rss_end_mib"] > 0

    engine = make_engine(f"sqlite:///{workdir / 'soak.db'}")  # recount, independently of the soak's own tally
    try:
        with engine.connect() as conn:
            decisions = conn.execute(sa.text("SELECT count(*), count(DISTINCT ts) FROM decisions")).one()
    finally:
        engine.dispose()
    assert tuple(decisions) == (CYCLES, CYCLES)
    assert r["stored"]["decisions"] == CYCLES and r["stored"]["readings"] == r["readings_written"] > 0
