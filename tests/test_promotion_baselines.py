"""The best forecaster wins: an ensemble worse than its best baseline is never promoted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from controller.cycle import NO_CHAMPION, NoChampion, _resolve
from controller.service.retraining import CALIBRATION_FILE, ChampionProvider
from coolpilot.train_cli import _baseline_table
from forecasting.online_calibration import CalibratedForecaster
from forecasting.registry import (
    BASELINES_KEY,
    baseline_problem,
    baseline_verdicts,
    champion_entry,
    get_entry,
    register_trained,
)
from forecasting.train import TrainConfig, TrainResult, fit_forecaster
from tests._forecast_synth import synthetic_history

SITE = "hall-b"
TINY = TrainConfig(members=2, hidden=(32, 32), max_epochs=6, min_samples=1000, baselines=False)


def metrics(ens: tuple[float, float], hgb: tuple[float, float], ridge: tuple[float, float]) -> dict[str, Any]:
    def block(maes: tuple[float, float]) -> dict[str, Any]:
        return {"cooling_power_kw": {"mae": maes[0]}, "rack_inlet_max_c": {"mae": maes[1]}}

    return {"ensemble": {**block(ens), "score": 1.0, "samples": 10}, "hist_gradient_boosting": block(hgb),
            "ridge": block(ridge), "persistence": block((0.0, 0.0))}  # persistence never decides


def test_verdicts_name_the_target_and_the_better_baseline() -> None:
    verdicts = baseline_verdicts(metrics((3.0, 0.30), (2.9, 0.40), (3.2, 0.25)))
    by = {v.target: v for v in verdicts}
    assert by["cooling_power_kw"].best == "hist_gradient_boosting" and not by["cooling_power_kw"].ok
    assert by["rack_inlet_max_c"].best == "ridge" and not by["rack_inlet_max_c"].ok
    problem = baseline_problem(verdicts)
    assert problem is not None and "cooling_power_kw MAE 3 > hist_gradient_boosting 2.9" in problem
    assert "rack_inlet_max_c MAE 0.3 > ridge 0.25" in problem
    assert baseline_problem(baseline_verdicts(metrics((2.9, 0.25), (2.9, 0.40), (3.2, 0.25)))) is None  # ties pass
    only_ensemble = {"ensemble": metrics((3.0, 0.3), (0, 0), (0, 0))["ensemble"]}
    assert all(v.ok for v in baseline_verdicts(only_ensemble))  # nothing to compare with


def test_train_prints_the_comparison() -> None:
    table = _baseline_table([v.as_dict() for v in baseline_verdicts(metrics((3.0, 0.30), (2.9, 0.40), (3.2, 0.35)))])
    lines = table.splitlines()
    assert lines[0].split() == ["target", "ensemble", "MAE", "HGB", "MAE", "ridge", "MAE", "verdict"]
    assert lines[1].split() == ["cooling_power_kw", "3.000", "2.900", "3.200", "worse", "than", "hist_gradient_boosting"]
    assert lines[2].split() == ["rack_inlet_max_c", "0.300", "0.400", "0.350", "ok"]


@pytest.fixture(scope="module")
def trained() -> tuple[TrainResult, pd.DataFrame]:
    history = synthetic_history(days=10, seed=3)
    return fit_forecaster(history, config=TINY, device="cpu"), history


def with_baselines(result: TrainResult, hgb_factor: float) -> TrainResult:
    """The trained result with baseline metrics at ``hgb_factor`` times the ensemble's MAEs."""
    report = copy.deepcopy(result.report)
    ens = report["metrics"]["ensemble"]
    for name, factor in (("hist_gradient_boosting", hgb_factor), ("ridge", 1.5)):
        report["metrics"][name] = {t: {"mae": ens[t]["mae"] * factor} for t in ("cooling_power_kw", "rack_inlet_max_c")}
    return TrainResult(forecaster=result.forecaster, report=report)


def test_a_model_that_loses_to_a_baseline_is_rejected_and_the_controller_says_why(
        sqlite_engine: sa.Engine, trained: tuple[TrainResult, pd.DataFrame], tmp_path: Path) -> None:
    result, history = trained
    decision = register_trained(sqlite_engine, with_baselines(result, 0.9), history, tmp_path, site=SITE)
    assert not decision.promoted and "worse than its best baseline" in decision.reason
    assert "hist_gradient_boosting" in decision.reason
    entry = get_entry(sqlite_engine, decision.version, SITE)
    assert entry.status == "rejected" and not entry.meta[BASELINES_KEY][0]["ok"]
    assert champion_entry(sqlite_engine, SITE) is None
    provider = ChampionProvider(sqlite_engine, SITE)
    with pytest.raises(NoChampion, match="worse than a simpler baseline"):
        provider()
    model, why = _resolve(provider)
    assert model is None and why is not None and why.startswith(NO_CHAMPION)


def test_a_model_that_beats_its_baselines_is_promoted_and_served_calibrated(
        sqlite_engine: sa.Engine, trained: tuple[TrainResult, pd.DataFrame], tmp_path: Path) -> None:
    result, history = trained
    decision = register_trained(sqlite_engine, with_baselines(result, 1.1), history, tmp_path, site=SITE)
    assert decision.promoted and all(v.ok for v in decision.baselines)
    provider = ChampionProvider(sqlite_engine, SITE)
    model = provider()
    assert isinstance(model, CalibratedForecaster) and model.version == decision.version
    cal = model.calibration
    assert tuple(cal.factor(t) for t in cal.targets) == result.forecaster.conformal_factors
    cal.update("cooling_power_kw", 100.0, 1.0, 103.0, 1.0)  # one matured miss
    provider.save_calibration()
    assert (Path(str(decision.artifact_path)) / CALIBRATION_FILE).is_file()
    again = ChampionProvider(sqlite_engine, SITE)()  # a restarted daemon keeps the state
    assert isinstance(again, CalibratedForecaster)
    assert list(again.calibration.targets["cooling_power_kw"].scores) == [3.0]


def test_the_paired_comparison_refuses_only_beyond_noise() -> None:
    from forecasting.evaluate import PROMOTION_BLOCK_SAMPLES, compare_with_baselines

    rng = np.random.default_rng(0)
    n = 48 * PROMOTION_BLOCK_SAMPLES  # two days of 5-minute samples
    y = rng.normal(100.0, 10.0, (n, 1))
    base = y + rng.normal(0.0, 3.0, (n, 1))
    noisy_tie = y + rng.permutation(base - y)  # the same errors on other rows: as good, row by row different
    clearly_worse = y + rng.normal(0.0, 4.5, (n, 1))  # 50 % worse
    tie = compare_with_baselines(y, noisy_tie, {"ridge": base})["cooling_power_kw"]["baselines"]["ridge"]
    worse = compare_with_baselines(y, clearly_worse, {"ridge": base})["cooling_power_kw"]
    assert tie["blocks"] == 48 and not tie["worse"]
    assert worse["baselines"]["ridge"]["worse"] and worse["baselines"]["ridge"]["excess_low"] > 0
    verdict = baseline_verdicts({"ensemble": {}, "promotion": {"cooling_power_kw": worse}})[0]
    assert not verdict.ok and verdict.worse_than == ("ridge",) and verdict.samples == n
    assert "beyond noise" in (baseline_problem([verdict]) or "")
