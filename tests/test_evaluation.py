"""The evaluation's figures on small hand-built frames, its runner pieces and its report text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from coolpilot.cli import main
from coolpilot.evaluation import kpis as ev
from coolpilot.evaluation.loops import run_frame
from coolpilot.evaluation.plants import EvaluationError, plant_maker
from coolpilot.evaluation.report import diagnose, markdown
from coolpilot.evaluation.run import EvaluationOptions, summarise
from db.roles import SETPOINT_ROLES

T0 = datetime(2023, 7, 15, tzinfo=UTC)
INTERVAL_S = 300.0


def frame(rows: int, **columns: Any) -> pd.DataFrame:
    """A run frame of ``rows`` 5-minute records; scalar columns are broadcast."""
    index = pd.date_range(T0, periods=rows, freq="5min", tz="UTC", name="time")
    base: dict[str, Any] = {"it_power_kw": 1000.0, "cooling_power_kw": 300.0, "rack_inlet_max_c": 24.0,
                            "chw_supply_sp_c": 10.0, "supply_air_sp_c": 22.0, "cw_supply_sp_c": 27.0}
    base.update(columns)
    return pd.DataFrame({k: np.broadcast_to(np.asarray(v, dtype=float), (rows,)) for k, v in base.items()}, index=index)


# --- energy and PUE -----------------------------------------------------------------


def test_energy_from_power_when_no_interval_energy_is_kept() -> None:
    e = ev.energy_kwh(frame(24), INTERVAL_S)  # two hours
    assert e["it_kwh"] == pytest.approx(2000.0)
    assert e["cooling_kwh"] == pytest.approx(600.0)
    assert e["facility_kwh"] == pytest.approx(2600.0)  # no meter: IT + cooling


def test_energy_fills_missing_readings_with_the_mean_power() -> None:
    cooling = [300.0] * 11 + [np.nan]
    e = ev.energy_kwh(frame(12, cooling_power_kw=cooling, facility_power_kw=[1300.0] * 6 + [np.nan] * 6),
                      INTERVAL_S)
    assert e["cooling_kwh"] == pytest.approx(300.0)  # one hour at 300 kW, not 11/12 of it
    assert e["facility_kwh"] == pytest.approx(1300.0)


def test_energy_prefers_the_booked_interval_energy() -> None:
    f = frame(12, cooling_kwh=30.0, it_kwh=80.0, facility_kwh=115.0)
    e = ev.energy_kwh(f, INTERVAL_S)
    assert (e["cooling_kwh"], e["it_kwh"], e["facility_kwh"]) == pytest.approx((360.0, 960.0, 1380.0))


def test_pue_over_the_window_weights_by_energy() -> None:
    it = [1000.0] * 6 + [500.0] * 6
    f = frame(12, it_power_kw=it, cooling_power_kw=250.0)
    p = ev.pue_figures(f, INTERVAL_S)
    assert p["pue"] == pytest.approx((9000.0 + 3000.0) / 9000.0)
    assert p["pue_mean"] == pytest.approx((1.25 + 1.5) / 2)


# --- rack inlet -------------------------------------------------------------------


def test_inlet_minutes_above_limits_and_maximum() -> None:
    rack = [24.0, 27.5, 28.0, 33.0, 26.9, 24.0]
    out = ev.inlet_figures(frame(6, rack_inlet_max_c=rack)["rack_inlet_max_c"], INTERVAL_S, 27.0)
    assert out["minutes_above_limit"] == 15.0
    assert out["minutes_above_allowable"] == 5.0
    assert out["rack_inlet_max_c"] == 33.0


def test_inlet_change_within_an_hour_and_steepest_step() -> None:
    # a 6 K ramp over 30 minutes, then flat, then a 1 K step four hours later
    rack = [20.0 + min(i, 6) for i in range(48)] + [27.0] + [26.0] * 11
    out = ev.inlet_figures(frame(60, rack_inlet_max_c=rack)["rack_inlet_max_c"], INTERVAL_S, 30.0)
    assert out["change_max_c_per_h"] == pytest.approx(6.0)
    assert out["rate_max_c_per_h"] == pytest.approx(12.0)  # 1 K in 5 minutes
    assert out["minutes_above_limit"] == 0.0


def test_inlet_figures_of_an_empty_series_are_unknown() -> None:
    out = ev.inlet_figures(pd.Series([np.nan, np.nan], index=frame(2).index), INTERVAL_S, 27.0)
    assert math.isnan(out["rack_inlet_max_c"]) and math.isnan(out["minutes_above_limit"])


def test_excess_minutes_count_only_what_the_baseline_did_not_have() -> None:
    ours = frame(5, rack_inlet_max_c=[26.0, 27.5, 27.5, 28.0, 26.0])["rack_inlet_max_c"]
    tuned = frame(5, rack_inlet_max_c=[27.5, 26.0, 27.2, 26.0, 26.0])["rack_inlet_max_c"]
    assert ev.excess_minutes_above(ours, tuned, 27.0, INTERVAL_S) == 10.0  # records 1 and 3


# --- setpoint moves, daily energy, decisions, forecasts --------------------------------


def test_setpoint_moves_count_size_and_travel() -> None:
    f = frame(4, chw_supply_sp_c=[10.0, 10.5, 10.5, 10.0], supply_air_sp_c=[22.0, 22.0, 22.005, 22.005],
              cw_supply_sp_c=27.0)
    moves = ev.setpoint_moves(f[list(SETPOINT_ROLES)], initial={"chw_supply_sp_c": 9.0, "supply_air_sp_c": 22.0,
                                                                  "cw_supply_sp_c": 26.0})
    chw = moves["roles"]["chw_supply_sp_c"]
    assert (chw["moves"], chw["max_k"], chw["travel_k"]) == (3, 1.0, pytest.approx(2.0))
    assert moves["roles"]["supply_air_sp_c"]["moves"] == 0  # below the tolerance
    assert moves["roles"]["cw_supply_sp_c"]["moves"] == 1  # from the initial 26 C
    assert moves["moves"] == 3  # records 0, 1 and 3 moved something


def test_setpoint_moves_without_initial_do_not_count_the_first_row() -> None:
    f = frame(3, chw_supply_sp_c=[12.0, 12.0, 12.0])
    assert ev.setpoint_moves(f[list(SETPOINT_ROLES)])["moves"] == 0


def test_daily_energy_splits_on_utc_days() -> None:
    f = frame(288 + 12, cooling_kwh=1.0)
    daily = ev.daily_energy_kwh(f, INTERVAL_S)
    assert daily == {"2023-07-15": 288.0, "2023-07-16": 12.0}


def test_decision_figures_share_and_reasons() -> None:
    d = pd.DataFrame({"outcome": ["optimised", "fallback", "hold", "fallback", "fallback", "optimised"],
                      "reason_code": [None, "ood", None, "bad_data", "ood", None]})
    out = ev.decision_figures(d)
    assert out["cycles"] == 6
    assert out["fallback_share_pct"] == pytest.approx(50.0)
    assert out["fallback_reasons"] == {"ood": 2, "bad_data": 1}
    assert out["outcomes"] == {"fallback": 3, "hold": 1, "optimised": 2}


def test_prediction_pairs_compare_with_the_mean_of_the_next_horizon() -> None:
    f = frame(10, cooling_power_kw=np.arange(10.0) * 10.0)
    predicted = pd.Series(50.0, index=f.index)
    pairs = ev.prediction_pairs(predicted, f["cooling_power_kw"], horizon_rows=3)
    assert len(pairs) == 7  # the last three decisions have no full horizon after them
    assert pairs["actual_kw"].iloc[0] == pytest.approx(20.0)  # mean of rows 1..3 = (10 + 20 + 30) / 3
    figs = ev.prediction_figures(pairs)
    assert figs["n"] == 7
    assert figs["bias_kw"] == pytest.approx(50.0 - pairs["actual_kw"].mean())
    with pytest.raises(ValueError, match="horizon_rows"):
        ev.prediction_pairs(predicted, f["cooling_power_kw"], horizon_rows=0)


# --- comparison, targets, consistency ------------------------------------------------


def test_savings_and_oracle_share() -> None:
    assert ev.savings_pct(200.0, 150.0) == pytest.approx(25.0)
    assert ev.oracle_share_pct(200.0, 150.0, 100.0) == pytest.approx(50.0)
    assert math.isnan(ev.oracle_share_pct(200.0, 150.0, 200.0))  # the oracle saved nothing
    assert math.isnan(ev.savings_pct(0.0, 10.0))


def _three_runs() -> dict[str, pd.DataFrame]:
    return {
        "legacy": frame(12, cooling_power_kw=400.0, rack_inlet_max_c=22.0),
        "tuned": frame(12, cooling_power_kw=300.0, rack_inlet_max_c=[27.5] + [25.0] * 11),
        "coolpilot": frame(12, cooling_power_kw=240.0, rack_inlet_max_c=[27.5, 27.5] + [25.0] * 10),
        "oracle": frame(12, cooling_power_kw=220.0, rack_inlet_max_c=26.0),
    }


def test_compare_computes_every_cross_controller_figure() -> None:
    frames = _three_runs()
    figures = {n: ev.run_figures(f, INTERVAL_S, 27.0) for n, f in frames.items()}
    rows = ev.compare(figures, frames, INTERVAL_S, 27.0)
    cp = rows["coolpilot"]
    assert cp["savings_vs_legacy_pct"] == pytest.approx(40.0)
    assert cp["savings_vs_tuned_pct"] == pytest.approx(20.0)
    assert cp["oracle_share_vs_tuned_pct"] == pytest.approx(75.0)  # 60 of the oracle's 80 kW
    assert cp["excess_minutes_above_limit_vs_tuned"] == 5.0
    assert "oracle_share_vs_tuned_pct" not in rows["oracle"]


def test_targets_report_met_and_shortfall() -> None:
    cp = {"net_saving_vs_tuned_pct": 8.5, "fallback_share_pct": math.nan,
          "excess_minutes_above_limit_vs_tuned": 10.0, "rack_inlet_max_c": 28.0}
    found = {t.name: t for t in ev.targets(cp)}
    assert set(found) == {"fallback_share_pct", "net_saving_vs_tuned_pct", "net_saving_vs_tuned_never_negative",
                          "excess_minutes_above_limit_vs_tuned"}
    assert not found["net_saving_vs_tuned_pct"].met
    assert found["net_saving_vs_tuned_pct"].shortfall == pytest.approx(1.5)
    assert found["net_saving_vs_tuned_never_negative"].met
    assert found["net_saving_vs_tuned_never_negative"].shortfall == 0.0
    assert not found["fallback_share_pct"].met  # unknown is not met
    assert math.isnan(found["fallback_share_pct"].shortfall)
    assert found["excess_minutes_above_limit_vs_tuned"].shortfall == 10.0
    with pytest.raises(ValueError, match="plant family"):
        ev.targets(cp, "nowhere")


def test_consistency_problems_catch_bad_figures() -> None:
    good = {"tuned": {"it_kwh": 10.0, "cooling_kwh": 5.0, "facility_kwh": 15.0, "savings_vs_tuned_pct": 0.0},
            "oracle": {"it_kwh": 10.0, "cooling_kwh": 4.0, "facility_kwh": 14.0, "savings_vs_tuned_pct": 20.0}}
    assert ev.consistency_problems(good) == []
    bad: dict[str, dict[str, float]] = {k: dict(v) for k, v in good.items()}
    bad["oracle"]["cooling_kwh"] = 6.0  # now worse than tuned, and the saving no longer matches
    bad["tuned"]["it_kwh"] = -1.0
    problems = " | ".join(ev.consistency_problems(bad))
    assert "oracle used more cooling energy" in problems
    assert "savings_vs_tuned_pct" in problems
    assert "tuned: it_kwh" in problems


# --- runner pieces ----------------------------------------------------------------------


class CountingPlant:
    """A minimal Plant of our own (no totals, no true values): cooling power follows chilled water."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start
        self._sp = {"chw_supply_sp_c": 10.0, "supply_air_sp_c": 22.0, "cw_supply_sp_c": 27.0}

    @property
    def now(self) -> datetime:
        return self._now

    @property
    def record_interval_s(self) -> float:
        return INTERVAL_S

    def read(self) -> dict[str, float]:
        return {"it_power_kw": 1000.0, "cooling_power_kw": 400.0 - 10.0 * self._sp["chw_supply_sp_c"],
                "rack_inlet_max_c": self._sp["supply_air_sp_c"] + 1.5}

    def setpoints(self) -> dict[str, float]:
        return dict(self._sp)

    def apply(self, setpoints: Mapping[str, float]) -> None:
        self._sp.update(setpoints)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def make_counting_plant(start: datetime = T0, seed: int = 0) -> CountingPlant:
    return CountingPlant(start)


def test_run_frame_records_readings_and_the_setpoints_in_force() -> None:
    plant = CountingPlant()

    def control() -> None:
        plant.apply({"chw_supply_sp_c": plant.setpoints()["chw_supply_sp_c"] + 0.5})

    f, initial = run_frame(plant, control, records=4)
    assert initial["chw_supply_sp_c"] == 10.0
    assert list(f["chw_supply_sp_c"]) == [10.5, 11.0, 11.5, 12.0]
    # row t holds what was read at t, before the decision
    assert list(f["cooling_power_kw"]) == [300.0, 295.0, 290.0, 285.0]
    assert f.index[1] - f.index[0] == pd.Timedelta(minutes=5)
    assert plant.now == T0 + timedelta(minutes=20)
    assert ev.energy_kwh(f, INTERVAL_S)["cooling_kwh"] == pytest.approx((300 + 295 + 290 + 285) / 12.0)


def test_plant_maker_passes_only_what_the_factory_takes() -> None:
    make, takes_start = plant_maker(f"{__name__}:make_counting_plant", None, None, seed=3)
    assert takes_start
    plant = make(T0 - timedelta(days=2))
    assert plant.now == T0 - timedelta(days=2)
    with pytest.raises(EvaluationError, match="does not take --climate"):
        plant_maker(f"{__name__}:make_counting_plant", "chicago", None, seed=0)
    with pytest.raises(EvaluationError, match="no attribute"):
        plant_maker(f"{__name__}:no_such_factory", None, None, seed=0)


def test_options_are_checked() -> None:
    with pytest.raises(EvaluationError, match="days must be positive"):
        EvaluationOptions(days=0)
    with pytest.raises(EvaluationError, match="explore_share"):
        EvaluationOptions(explore_share=1.5)
    with pytest.raises(EvaluationError, match="controllers"):
        EvaluationOptions(controllers=("legacy", "tuned"))
    with pytest.raises(EvaluationError, match="timezone"):
        EvaluationOptions(start=datetime(2023, 7, 1))


def test_cli_refuses_bad_input_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    assert main(["evaluate", "--start", "15 July", "--out", str(tmp_path)]) == 2
    assert "--start '15 July' is not an ISO date" in capsys.readouterr().err
    assert main(["evaluate", "--plant", "nowhere", "--out", str(tmp_path)]) == 2
    assert "must look like 'package.module:factory'" in capsys.readouterr().err


# --- summary and report text -----------------------------------------------------------


def test_summary_diagnosis_and_report_name_the_missed_targets() -> None:
    from coolpilot.evaluation.run import ControllerRun

    frames = _three_runs()
    decisions = pd.DataFrame({"outcome": ["optimised"] * 8 + ["fallback"] * 4, "reason_code": [None] * 8 + ["ood"] * 4,
                              "predicted_cooling_power_kw": 250.0, "duration_s": 0.2}, index=frames["coolpilot"].index)
    runs = {n: ControllerRun(n, f, dict(f[list(SETPOINT_ROLES)].iloc[0]), 1.0,
                             decisions if n == "coolpilot" else None) for n, f in frames.items()}
    summary = summarise(runs, INTERVAL_S, 27.0, horizon_rows=3)
    cp = summary["controllers"]["coolpilot"]
    assert cp["fallback_share_pct"] == pytest.approx(100.0 / 3)
    assert cp["prediction"]["bias_kw"] == pytest.approx(10.0)
    assert cp["net_saving_vs_tuned_pct"] == pytest.approx(20.0)  # (1300 - 1240) / 300: IT does not move
    assert summary["best_baseline"] == "tuned"
    assert not summary["targets_met"]  # a third of the cycles in fallback and 5 excess minutes
    summary.update(settings={"start": T0, "end": T0 + timedelta(hours=1), "days": 1 / 24, "records": 12,
                             "record_interval_s": INTERVAL_S, "plant": "x:y", "seed": 0, "train_days": 9,
                             "explore_share": 0.3, "rack_inlet_limit_c": 27.0, "inlet_change_limit_c_per_h": 20.0},
                   training={"version": "v1", "seconds": 1.0, "cooling_power_mae_kw": 5.0, "rack_inlet_mae_c": 0.2},
                   identical_start=True, skipped={})
    notes = diagnose(summary)
    assert any(n.startswith("fallback_share_pct: 33.33 %") and "missed by 18.33" in n for n in notes)
    assert any(n.startswith("excess_minutes_above_limit_vs_tuned: 5.00 min") for n in notes)
    assert any("ran the rules in 33.3 %" in n for n in notes)
    text = markdown({**summary, "diagnosis": notes})
    assert "| CoolPilot (auto) | 1240 | 240 | 1000 | " in text  # facility energy first, then cooling, IT
    assert "| fallback_share_pct | " in text and "| 33.33 % | <= 15.0 % | **no** | 18.33 |" in text
    assert "not from a site" in text


def test_diagnosis_flags_an_oracle_that_was_beaten() -> None:
    from coolpilot.evaluation.run import ControllerRun

    frames = _three_runs()
    frames["oracle"] = frame(12, cooling_power_kw=260.0, rack_inlet_max_c=26.0)  # worse than CoolPilot's 240
    runs = {n: ControllerRun(n, f, dict(f[list(SETPOINT_ROLES)].iloc[0]), 1.0) for n, f in frames.items()}
    summary = summarise(runs, INTERVAL_S, 27.0, horizon_rows=3)
    assert summary["controllers"]["coolpilot"]["oracle_share_vs_tuned_pct"] == pytest.approx(150.0)
    notes = diagnose({**summary, "identical_start": True})
    assert any("used less cooling energy than the oracle" in n for n in notes)
