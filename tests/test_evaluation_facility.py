"""Facility energy first: net saving, the best baseline, the EnergyPlus targets, coverage, the report.

Small hand-built frames, so that each figure can be worked out by hand. The net saving
against a baseline is (baseline facility - facility) / baseline cooling energy.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from coolpilot.evaluation import kpis as ev
from coolpilot.evaluation.report import diagnose, markdown
from coolpilot.evaluation.run import ControllerRun, summarise

T0 = datetime(2023, 7, 15, tzinfo=UTC)
INTERVAL_S = 300.0


def frame(rows: int, **columns: Any) -> pd.DataFrame:
    """A run frame with only a supply-air setpoint (as on the EnergyPlus models); scalars broadcast."""
    index = pd.date_range(T0, periods=rows, freq="5min", tz="UTC", name="time")
    base: dict[str, Any] = {"it_power_kw": 100.0, "cooling_power_kw": 30.0, "rack_inlet_max_c": 22.0,
                            "supply_air_sp_c": 20.0}
    base.update(columns)
    return pd.DataFrame({k: np.broadcast_to(np.asarray(v, dtype=float), (rows,)) for k, v in base.items()}, index=index)


def test_net_saving_charges_the_cooling_saving_with_the_extra_it_energy() -> None:
    assert ev.net_saving_pct(1000.0, 950.0, 200.0) == pytest.approx(25.0)
    assert ev.net_saving_pct(1000.0, 1010.0, 200.0) == pytest.approx(-5.0)
    assert math.isnan(ev.net_saving_pct(1000.0, 950.0, 0.0))
    # Warmer air: cooling falls 10 kW, IT rises 15 kW. The cooling saving looks good, the net saving is negative.
    base, warm = frame(12), frame(12, cooling_power_kw=20.0, it_power_kw=115.0)
    figures = {"tuned": ev.run_figures(base, INTERVAL_S, 27.0), "coolpilot": ev.run_figures(warm, INTERVAL_S, 27.0)}
    row = ev.compare(figures, {"tuned": base, "coolpilot": warm}, INTERVAL_S, 27.0)["coolpilot"]
    assert row["savings_vs_tuned_pct"] == pytest.approx(100.0 / 3)  # cooling: 30 -> 20 kW
    assert row["net_saving_vs_tuned_pct"] == pytest.approx(-100.0 * 5.0 / 30.0)  # facility 130 -> 135 kW
    assert row["facility_saving_vs_tuned_pct"] == pytest.approx(-100.0 * 5.0 / 130.0)


def test_energy_comes_from_the_booked_meter_energy_facility_first() -> None:
    f = frame(12, facility_kwh=12.0, it_kwh=8.0, cooling_kwh=3.0, other_kwh=1.0)
    e = ev.energy_kwh(f, INTERVAL_S)
    assert list(e) == ["facility_kwh", "cooling_kwh", "it_kwh", "other_kwh"]
    assert (e["facility_kwh"], e["cooling_kwh"], e["it_kwh"], e["other_kwh"]) == pytest.approx((144, 36, 96, 12))


def test_best_baseline_is_the_lowest_facility_energy_among_the_baselines_only() -> None:
    figures = {"legacy": {"facility_kwh": 500.0}, "tuned": {"facility_kwh": 450.0},
               "own_controls": {"facility_kwh": 430.0}, "coolpilot": {"facility_kwh": 100.0},
               "oracle": {"facility_kwh": 50.0}}
    assert ev.best_baseline(figures) == "own_controls"  # never CoolPilot or the oracle
    figures["own_controls"]["facility_kwh"] = math.nan  # a baseline without a figure cannot be the best
    assert ev.best_baseline(figures) == "tuned"
    assert ev.best_baseline({"coolpilot": {"facility_kwh": 1.0}}) is None


def _energyplus_runs(cp_cooling: float, cp_it: float, cp_rack: float = 22.0) -> dict[str, pd.DataFrame]:
    return {
        "legacy": frame(12, cooling_power_kw=32.0, it_power_kw=90.0, supply_air_sp_c=18.0),  # facility 122: best
        "tuned": frame(12, cooling_power_kw=25.0, it_power_kw=110.0, supply_air_sp_c=23.0),  # 135
        "own_controls": frame(12, cooling_power_kw=28.0, it_power_kw=100.0, supply_air_sp_c=21.0),  # 128
        "coolpilot": frame(12, cooling_power_kw=cp_cooling, it_power_kw=cp_it, rack_inlet_max_c=cp_rack),
    }


def _summary(frames: dict[str, pd.DataFrame], fallback_cycles: int) -> dict[str, Any]:
    index = frames["coolpilot"].index
    decisions = pd.DataFrame({"outcome": ["fallback"] * fallback_cycles + ["optimised"] * (12 - fallback_cycles),
                              "reason_code": ["ood"] * fallback_cycles + [None] * (12 - fallback_cycles),
                              "objective": "facility", "predicted_cooling_power_kw": 30.0,
                              "duration_s": 0.1}, index=index)
    runs = {n: ControllerRun(n, f, {"supply_air_sp_c": 20.0}, 1.0, decisions if n == "coolpilot" else None)
            for n, f in frames.items()}
    return summarise(runs, INTERVAL_S, 27.0, horizon_rows=3, family="energyplus")


def test_energyplus_targets_judge_facility_energy_against_the_best_baseline() -> None:
    summary = _summary(_energyplus_runs(cp_cooling=31.0, cp_it=89.0), fallback_cycles=2)  # facility 120 < 122
    cp = summary["controllers"]["coolpilot"]
    assert summary["best_baseline"] == "legacy"
    assert cp["net_saving_vs_best_pct"] == pytest.approx(100.0 * 2.0 / 32.0)
    assert cp["facility_kwh_below_best"] == pytest.approx(2.0)  # 2 kW over one hour
    assert cp["net_saving_vs_own_controls_pct"] == pytest.approx(100.0 * 8.0 / 28.0)
    found = {t["name"]: t for t in summary["targets"]}
    assert set(found) == {"fallback_share_pct", "net_saving_vs_best_pct", "minutes_above_limit"}
    assert found["fallback_share_pct"]["met"] and found["fallback_share_pct"]["threshold"] == 20.0
    assert summary["targets_met"]
    assert cp["decisions"]["objectives"] == {"facility": 12}


def test_energyplus_targets_missed_say_by_how_much() -> None:
    # Facility 125 kWh-per-hour against legacy's 122: 3 above; a hot record; 3 of 12 cycles in fallback.
    summary = _summary(_energyplus_runs(cp_cooling=25.0, cp_it=100.0, cp_rack=[27.5] + [22.0] * 11), 3)
    found = {t["name"]: t for t in summary["targets"]}
    assert not found["net_saving_vs_best_pct"]["met"]
    assert found["net_saving_vs_best_pct"]["shortfall"] == pytest.approx(100.0 * 3.0 / 32.0)
    assert not found["minutes_above_limit"]["met"] and found["minutes_above_limit"]["shortfall"] == 5.0
    assert not found["fallback_share_pct"]["met"]
    assert found["fallback_share_pct"]["shortfall"] == pytest.approx(5.0)
    # Exactly equal to the best baseline is not "below" it.
    tie = _summary(_energyplus_runs(cp_cooling=32.0, cp_it=90.0), 0)
    assert not {t["name"]: t for t in tie["targets"]}["net_saving_vs_best_pct"]["met"]
    notes = diagnose({**summary, "identical_start": True, "settings": {
        "controller_config": {"setpoints": {"supply_air_sp_c": {"min_c": 18.5}}}}})
    assert any(n.startswith("net_saving_vs_best_pct: -9.38 %") and "missed by 9.38 percentage points" in n
               for n in notes)
    assert any("3 kWh more facility energy than the best baseline (legacy rules" in n for n in notes)
    assert any("below the bottom of CoolPilot's supply-air envelope (18.5 C)" in n for n in notes)


def test_prediction_coverage_counts_outcomes_inside_the_interval() -> None:
    f = frame(10, cooling_power_kw=np.arange(10.0))
    predicted = pd.Series(2.0, index=f.index)
    lo, hi = pd.Series(1.5, index=f.index), pd.Series(4.5, index=f.index)
    pairs = ev.prediction_pairs(predicted, f["cooling_power_kw"], 3, lo_kw=lo, hi_kw=hi)
    # realised horizon means 2, 3, 4, 5, 6, 7, 8: three inside [1.5, 4.5]
    figs = ev.prediction_figures(pairs)
    assert figs["n"] == 7 and figs["coverage_pct"] == pytest.approx(300.0 / 7)
    assert math.isnan(ev.prediction_figures(ev.prediction_pairs(predicted, f["cooling_power_kw"], 3))["coverage_pct"])


def test_consistency_flags_facility_below_it_plus_cooling() -> None:
    good = {"tuned": {"it_kwh": 10.0, "cooling_kwh": 5.0, "facility_kwh": 16.0}}
    assert ev.consistency_problems(good) == []
    bad = {"tuned": {"it_kwh": 10.0, "cooling_kwh": 5.0, "facility_kwh": 14.0}}
    assert "less than IT + cooling" in " ".join(ev.consistency_problems(bad))


def test_report_leads_with_facility_energy_and_names_the_best_baseline() -> None:
    summary = _summary(_energyplus_runs(cp_cooling=31.0, cp_it=89.0), fallback_cycles=2)
    summary.update(settings={"start": T0, "end": T0 + timedelta(hours=1), "days": 1 / 24, "records": 12,
                             "record_interval_s": INTERVAL_S, "plant": "x", "seed": 0, "train_days": 9,
                             "explore_share": 0.3, "rack_inlet_limit_c": 27.0, "inlet_change_limit_c_per_h": 20.0,
                             "family": "energyplus", "energyplus_model": "crac",
                             "plant_setpoints": ["supply_air_sp_c"], "controlled_setpoints": ["supply_air_sp_c"],
                             "design_it_kw": 95.0},
                   training={"version": "v1", "seconds": 1.0, "cooling_power_mae_kw": 1.0, "rack_inlet_mae_c": 0.1},
                   identical_start=True, skipped={"oracle": "no steady_state()"})
    text = markdown({**summary, "diagnosis": diagnose(summary)})
    header = next(line for line in text.splitlines() if line.startswith("| controller |"))
    assert header.startswith("| controller | facility energy kWh | cooling energy kWh | IT energy kWh |")
    assert "net saving vs best (legacy rules) %" in header and "net saving vs own_controls %" in header
    assert "| model's own controls | 128 | 28 | 100 |" in text  # 128 kW facility for one hour
    assert "Best baseline (lowest facility energy): legacy rules, 122 kWh" in text
    assert "CoolPilot's facility energy is 2 kWh below it" in text
    assert "EnergyPlus model `crac`" in text and "the plant has supply_air_sp_c" in text
    assert "## Targets (EnergyPlus model)" in text and "not from the project's own twin" in text
