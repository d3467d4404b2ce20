"""CI's short closed-loop evaluation: one climate, two days, nine days of history, end to end via the CLI.

It checks that `coolpilot evaluate` produces the report, the plots and the JSON, and
that the figures hang together (energies positive, savings computed from the
energies, the oracle no worse than the tuned rules); the published figures come from
benchmarks/bench_closed_loop.py, not from here.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from coolpilot.cli import main

pytestmark = pytest.mark.slow

DAYS = 2
RECORDS = DAYS * 288
# A smaller candidate search than the default keeps the test within a few minutes on two
# shared cores; everything else (quality checks, model, safety gate, fallback) is the real cycle.
CONFIG = """site_id = "eval"
[optimizer]
grid_points_per_role = 5
random_candidates = 300
refine_iterations = 0
"""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("evaluate")
    config = root / "coolpilot.toml"
    config.write_text(CONFIG, encoding="utf-8")
    config.chmod(0o600)
    out = root / "out"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(["evaluate", "--climate", "leesburg", "--start", "2023-07-20", "--days", str(DAYS),
                       "--train-days", "9", "--seed", "1", "--config", str(config),
                       "--out", str(out), "--json"])
    assert status == 0
    return json.loads(buffer.getvalue()), out


def test_report_json_and_plots_are_written(evaluated: tuple[dict[str, Any], Path]) -> None:
    summary, out = evaluated
    on_disk = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert on_disk["controllers"] == summary["controllers"]  # --json prints the same figures
    report = (out / "report.md").read_text(encoding="utf-8")
    for label in ("legacy rules", "tuned rules", "CoolPilot (auto)", "oracle"):
        assert f"| {label} |" in report
    assert len(summary["files"]["plots"]) == 5  # daily facility and cooling energy, setpoints, inlet, forecast
    for rel in summary["files"]["plots"]:
        png = (out / rel).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000, rel
        assert f"]({rel})" in report
    assert summary["command"].startswith("coolpilot evaluate --climate leesburg --start 2023-07-20")


def test_figures_are_consistent(evaluated: tuple[dict[str, Any], Path]) -> None:
    summary, _ = evaluated
    c = summary["controllers"]
    assert set(c) == {"legacy", "tuned", "coolpilot", "oracle"}
    for name, figs in c.items():
        for key in ("it_kwh", "cooling_kwh", "facility_kwh"):
            assert figs[key] > 0, (name, key)
        assert figs["facility_kwh"] >= figs["it_kwh"] + figs["cooling_kwh"] - 1e-6  # plus other losses
        assert sum(figs["daily_cooling_kwh"].values()) == pytest.approx(figs["cooling_kwh"])
        for base in ("legacy", "tuned"):
            expected = 100.0 * (c[base]["cooling_kwh"] - figs["cooling_kwh"]) / c[base]["cooling_kwh"]
            assert figs[f"savings_vs_{base}_pct"] == pytest.approx(expected)
    assert c["oracle"]["cooling_kwh"] <= c["tuned"]["cooling_kwh"]
    possible = c["tuned"]["cooling_kwh"] - c["oracle"]["cooling_kwh"]
    share = c["coolpilot"]["oracle_share_vs_tuned_pct"]
    assert share == pytest.approx(100.0 * (c["tuned"]["cooling_kwh"] - c["coolpilot"]["cooling_kwh"]) / possible)
    assert c["coolpilot"]["rack_inlet_max_c"] < 32.0
    assert summary["consistency_problems"] == []
    assert summary["identical_start"] is True
    targets = {t["name"]: t for t in summary["targets"]}
    assert targets["net_saving_vs_tuned_pct"]["value"] == pytest.approx(c["coolpilot"]["net_saving_vs_tuned_pct"])
    net = 100.0 * (c["tuned"]["facility_kwh"] - c["coolpilot"]["facility_kwh"]) / c["tuned"]["cooling_kwh"]
    assert c["coolpilot"]["net_saving_vs_tuned_pct"] == pytest.approx(net)
    assert summary["best_baseline"] == min(("legacy", "tuned"), key=lambda n: c[n]["facility_kwh"])
    assert "own_controls" in summary["skipped"]  # only EnergyPlus models have controls of their own
    assert summary["targets_met"] == all(t["met"] for t in summary["targets"])


def test_coolpilot_ran_the_real_cycle_through_the_database(evaluated: tuple[dict[str, Any], Path]) -> None:
    summary, out = evaluated
    decisions = summary["controllers"]["coolpilot"]["decisions"]
    assert decisions["cycles"] == RECORDS
    assert sum(decisions["outcomes"].values()) == RECORDS
    assert decisions["outcomes"].get("optimised", 0) > 0  # the model did drive the plant
    assert sum(decisions["fallback_reasons"].values()) == decisions["outcomes"].get("fallback", 0)
    assert math.isfinite(summary["controllers"]["coolpilot"]["prediction"]["mae_kw"])
    with sqlite3.connect(f"file:{out / 'evaluation.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT COUNT(*), MIN(ts), MAX(ts) FROM decisions").fetchone()
        champion = db.execute("SELECT version FROM models WHERE status = 'champion'").fetchone()
    assert rows[0] == RECORDS
    # the nightly retraining ran once (day 2 of 2), on history that includes CoolPilot's first day
    retrainings = summary["training"]["retrainings"]
    assert len(retrainings) == DAYS - 1 and retrainings[0]["ok"], retrainings
    promoted = [r["version"] for r in retrainings if r["promoted"]]
    assert champion is not None and champion[0] == (promoted[-1] if promoted else summary["training"]["version"])


def test_retraining_learns_from_the_days_coolpilot_controlled(evaluated: tuple[dict[str, Any], Path]) -> None:
    summary, out = evaluated
    retrained = summary["training"]["retrainings"][0]
    with sqlite3.connect(f"file:{out / 'evaluation.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT meta_json FROM models WHERE version = ?", (retrained["version"],)).fetchone()
    assert row is not None
    # it trained on the days CoolPilot controlled (the window starts 2023-07-20), held out none of them
    training = json.loads(row[0])["training"]
    assert training["recent_from"].startswith("2023-07-20T00:00")  # CoolPilot's first cycle
    assert training["window"]["train"][1] >= "2023-07-20" and training["window"]["test"][1] < "2023-07-20"
