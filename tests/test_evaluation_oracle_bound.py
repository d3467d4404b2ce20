"""The oracle as a bound in evaluation: a flag when any controller beats it beyond noise, and
a share of its saving only where it saves clearly."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from coolpilot.evaluation import kpis as ev
from coolpilot.evaluation.report import diagnose, markdown
from coolpilot.evaluation.run import ControllerRun, summarise
from db.roles import SETPOINT_ROLES
from tests.test_evaluation import INTERVAL_S, T0, frame


def _summary(oracle_kw: float, coolpilot_kw: float = 240.0, tuned_kw: float = 300.0) -> dict[str, object]:
    frames = {"legacy": frame(12, cooling_power_kw=400.0), "tuned": frame(12, cooling_power_kw=tuned_kw),
              "coolpilot": frame(12, cooling_power_kw=coolpilot_kw), "oracle": frame(12, cooling_power_kw=oracle_kw)}
    runs = {n: ControllerRun(n, f, dict(f[list(SETPOINT_ROLES)].iloc[0]), 1.0) for n, f in frames.items()}
    return summarise(runs, INTERVAL_S, 27.0, horizon_rows=3)


def test_the_share_of_the_oracles_saving_needs_a_clear_saving() -> None:
    assert ev.oracle_share_pct(200.0, 150.0, 100.0) == pytest.approx(50.0)
    assert math.isnan(ev.oracle_share_pct(200.0, 199.0, 197.0))  # the oracle saves 1.5 %: noise over noise
    assert ev.oracle_share_pct(200.0, 199.0, 196.0) == pytest.approx(25.0)  # 2 %: clear enough
    summary = _summary(oracle_kw=296.0, coolpilot_kw=298.0)  # the oracle saves 1.3 % against tuned
    assert math.isnan(summary["controllers"]["coolpilot"]["oracle_share_vs_tuned_pct"])  # type: ignore[index]


def test_a_controller_within_noise_of_the_oracle_keeps_the_bound() -> None:
    summary = _summary(oracle_kw=242.0)  # CoolPilot 0.8 % below the oracle
    bound = summary["oracle_bound"]
    assert bound == {"ok": True, "tolerance_pct": ev.ORACLE_BOUND_TOLERANCE_PCT, "beaten_by": {},
                     "coolpilot_below_oracle_pct": pytest.approx(100.0 * 2.0 / 242.0)}
    text = markdown({**summary, **_report_parts(), "diagnosis": []})
    assert "Oracle bound: holds (CoolPilot used 0.8 % less cooling energy than the oracle" in text


def test_a_controller_that_beats_the_oracle_beyond_noise_is_flagged() -> None:
    summary = _summary(oracle_kw=260.0)  # CoolPilot 7.7 % below
    bound = summary["oracle_bound"]
    assert isinstance(bound, dict) and bound["ok"] is False
    assert set(bound["beaten_by"]) == {"coolpilot"}
    assert bound["beaten_by"]["coolpilot"] == pytest.approx(100.0 * 20.0 / 260.0)
    notes = diagnose({**summary, **_report_parts()})
    assert any("beyond the oracle's tolerance" in n for n in notes)
    assert "Oracle bound: **fails**" in markdown({**summary, **_report_parts(), "diagnosis": notes})


def test_no_oracle_no_bound() -> None:
    assert ev.oracle_bound({"tuned": {"cooling_kwh": 10.0}, "coolpilot": {"cooling_kwh": 9.0}}) is None


def _report_parts() -> dict[str, object]:
    """What the runner adds to a summary before the report (as in tests/test_evaluation.py)."""
    return {"settings": {"start": T0, "end": T0 + timedelta(hours=1), "days": 1 / 24, "records": 12,
                         "record_interval_s": INTERVAL_S, "plant": "x:y", "seed": 0, "train_days": 9,
                         "explore_share": 0.3, "rack_inlet_limit_c": 27.0, "inlet_change_limit_c_per_h": 20.0},
            "training": {"version": "v1", "seconds": 1.0, "cooling_power_mae_kw": 5.0, "rack_inlet_mae_c": 0.2},
            "identical_start": True, "skipped": {}}
