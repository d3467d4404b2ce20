"""End to end on simulated history: `coolpilot train` and `coolpilot models ...` against a real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from coolpilot.cli import main
from coolpilot.harness.history import generate_history
from db.engine import make_engine
from db.ingest import write_wide
from db.records import insert_decision
from forecasting.registry import load_champion
from simulator.plant_sim import make_plant

SITE = "sim-hall"
DAYS = 24


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    """Closed-loop history of the default simulated plant, 30 % safe random exploration."""
    return generate_history(make_plant(seed=3), days=DAYS, explore_share=0.3, seed=3)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Exit status, the JSON payload (or the human text without --json), and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    payload = json.loads(out) if code == 0 and "--json" in argv else out
    return code, payload, err


def test_train_list_show_promote_rollback(db_url: str, simulated: pd.DataFrame, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(db_url)
    write_wide(engine, simulated, site=SITE)
    models_dir = str(tmp_path / "models")
    common = ["--db", db_url, "--site", SITE]

    code, rep, err = run(capsys, "train", *common, "--days", str(DAYS), "--models-dir", models_dir,
                         "--max-epochs", "25", "--json")
    assert code == 0, err
    assert set(rep["metrics"]) == {"ensemble", "persistence", "ridge", "hist_gradient_boosting", "promotion"}
    ens, pers = rep["metrics"]["ensemble"], rep["metrics"]["persistence"]
    for target in ("cooling_power_kw", "rack_inlet_max_c"):
        for key in ("mae", "mape_pct", "coverage"):
            assert np.isfinite(ens[target][key])
        assert ens[target]["mae"] < pers[target]["mae"]  # it learned something real
        assert 0.6 <= ens[target]["coverage"] <= 1.0
    assert ens["device"].startswith(("cpu", "cuda")) and ens["train_seconds"] > 0
    assert Path(rep["artifact"]).is_dir()
    g = rep["gaps"]
    assert g["rows"] == g["samples"] + g["dropped_state"] + g["dropped_horizon"] and g["samples"] > 0
    first = rep["version"]
    # the best forecaster wins: promoted exactly when no baseline beats the ensemble beyond noise on
    # the held-out blocks (forecasting.evaluate.compare_with_baselines), target by target
    verdicts = rep["decision"]["baselines"]
    assert {v["target"] for v in verdicts} == {"cooling_power_kw", "rack_inlet_max_c", "it_power_kw"}
    paired = rep["metrics"]["promotion"]
    for v in verdicts:
        beaten_by = sorted(b for b, f in paired[v["target"]]["baselines"].items() if f["worse"])
        assert v["ok"] == (not beaten_by) and sorted(v["worse_than"]) == beaten_by
        assert v["ensemble_mae"] == pytest.approx(paired[v["target"]]["ensemble_mae"])
    assert rep["decision"]["promoted"] == all(v["ok"] for v in verdicts)
    if not rep["decision"]["promoted"]:
        assert "worse than its best baseline" in rep["decision"]["reason"]
        code, _, err = run(capsys, "models", "promote", *common, first)  # the operator may still choose it
        assert code == 0, err

    # the stored champion forecasts the simulated plant, and knows when inputs are unfamiliar
    model = load_champion(engine, SITE)
    assert model is not None and model.version == first
    state = simulated.iloc[-model.history_needed():]
    fc = model.predict(state, np.array([[10.0, 22.0, 27.0], [30.0, 40.0, 5.0]]))
    assert fc.ood_score[0] < 1.0 < fc.ood_score[1]
    assert abs(fc.cooling_power_kw[0] - simulated["cooling_power_kw"].iloc[-12:].mean()) < \
        0.5 * simulated["cooling_power_kw"].iloc[-12:].mean()

    code, rep2, err = run(capsys, "train", *common, "--days", str(DAYS), "--models-dir", models_dir,
                          "--max-epochs", "2", "--seed", "1", "--json")
    assert code == 0, err
    second = rep2["version"]
    assert any(w in rep2["decision"]["reason"] for w in ("same window", "pinned", "baseline"))

    code, listing, _ = run(capsys, "models", "list", *common, "--json")
    assert code == 0 and {m["version"] for m in listing["models"]} == {first, second}
    assert sum(m["status"] == "champion" for m in listing["models"]) == 1
    code, shown, _ = run(capsys, "models", "show", *common, "--json")
    champion = shown["version"]
    assert code == 0 and shown["status"] == "champion" and len(shown["sha256"]) == 64
    other = second if champion == first else first

    code, promoted, _ = run(capsys, "models", "promote", *common, other, "--pin", "--json")
    assert code == 0 and promoted["status"] == "champion" and promoted["pinned"]
    code, rolled, _ = run(capsys, "models", "rollback", *common, "--json")
    assert code == 0 and rolled["champion"]["version"] == champion and rolled["rejected"]["version"] == other
    code, _, err = run(capsys, "models", "rollback", *common)
    assert code == 2 and "no earlier champion" in err and "Traceback" not in err
    code, _, err = run(capsys, "models", "promote", *common, "no-such-version")
    assert code == 2 and "no model with version 'no-such-version'" in err
    code, text, _ = run(capsys, "models", "list", *common)
    assert code == 0 and f"{champion}" in text and "champion" in text
    code, text, _ = run(capsys, "models", "show", *common, second)
    assert code == 0 and f"decision: {rep2['decision']['reason']}" in text  # why it was or was not promoted


def test_train_learns_from_the_days_coolpilot_controlled(sqlite_url: str, simulated: pd.DataFrame, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(sqlite_url)
    write_wide(engine, simulated, site=SITE)
    took_over = simulated.index[-2 * 288]  # CoolPilot has been in charge for the last two days
    insert_decision(engine, SITE, {"ts": took_over.to_pydatetime(), "mode": "auto", "outcome": "optimised"})
    argv = ["train", "--db", sqlite_url, "--site", SITE, "--days", str(DAYS), "--models-dir",
            str(tmp_path / "models"), "--max-epochs", "2"]
    code, rep, err = run(capsys, *argv, "--json")
    assert code == 0, err
    assert rep["window"]["test"][1] < took_over.isoformat() < rep["window"]["train"][1]  # trained on, not held out
    code, text, err = run(capsys, *argv)
    assert code == 0 and f"trained on CoolPilot's own operation since {took_over:%Y-%m-%d %H:%M} UTC" in text, err


def test_bad_history_gets_one_clear_line(sqlite_url: str, simulated: pd.DataFrame, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(sqlite_url)
    common = ["--db", sqlite_url, "--models-dir", str(tmp_path)]
    code, _, err = run(capsys, "train", *common, "--site", "empty")
    assert code == 2 and "site 'empty' has no history" in err

    # a role the forecaster cannot do without (rack inlet) is named; one it can (chw return) is not needed
    write_wide(engine, simulated.drop(columns=["rack_inlet_max_c"]).iloc[:3000], site="no-rack")
    code, _, err = run(capsys, "train", *common, "--site", "no-rack", "--days", "30")
    assert code == 2 and "rack_inlet_max_c" in err and "Traceback" not in err

    write_wide(engine, simulated.iloc[-800:], site="short")
    code, _, err = run(capsys, "train", *common, "--site", "short", "--days", "30")
    assert code == 2 and "too little history" in err and "7.0 days" in err

    gappy = simulated.iloc[:4000].copy()
    gappy.loc[gappy.index[::4], "cooling_power_kw"] = np.nan  # a target: gaps cannot be masked
    write_wide(engine, gappy, site="gappy")
    code, _, err = run(capsys, "train", *common, "--site", "gappy", "--days", "30")
    assert code == 2 and "mostly gaps" in err and "state or its lags" in err
    assert err.strip().splitlines()[-1].startswith("coolpilot train: error: history window is mostly gaps")
    assert "Traceback" not in err
