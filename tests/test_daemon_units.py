"""The daemon's pure parts: forecast maturity, job accounting, scheduler set-up, live view."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from prometheus_client import CollectorRegistry

from controller.decision import Decision
from controller.rules import rule_setpoints
from controller.safety import gate
from controller.service.cycle_metrics import latest_row, rules_setpoints_for
from controller.service.forecast_check import ForecastLedger, PendingForecast, actual_mean_kw, anchor_row
from controller.service.scheduler import TRAINING_EXECUTOR, JobMetrics, JobMonitor, make_scheduler
from coolpilot.live_view import LiveStatus, LiveView, one_line, render
from db.roles import SETPOINT_ROLES
from tests._ctl_support import START_SETPOINTS, config

T0 = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


def series(values: list[float], start: datetime = T0) -> pd.Series:
    index = pd.date_range(start, periods=len(values), freq="5min", tz="UTC")
    return pd.Series(values, index=index, dtype=float)


# -- forecasts checked against what happened -----------------------------------------------

def test_a_forecast_is_compared_with_the_mean_of_its_horizon_rows() -> None:
    f = PendingForecast(anchor=T0, horizon_min=15, mean_kw=100.0, lo_kw=90.0, hi_kw=110.0)
    # rows T0 (excluded: the state row), T0+5, +10, +15 (the horizon), +20 (after it)
    s = series([999.0, 100.0, 110.0, 120.0, 999.0])
    assert actual_mean_kw(s, f) == pytest.approx(110.0)


def test_too_few_readings_in_the_horizon_give_no_comparison() -> None:
    f = PendingForecast(anchor=T0, horizon_min=20, mean_kw=100.0)
    s = series([100.0, 100.0, math.nan, math.nan, math.nan])
    assert actual_mean_kw(s, f) is None  # one reading of four rows
    assert actual_mean_kw(series([]), f) is None


def test_the_ledger_matures_forecasts_once_their_horizon_is_observed() -> None:
    ledger = ForecastLedger()
    ledger.add(PendingForecast(anchor=T0, horizon_min=10, mean_kw=100.0))
    ledger.add(PendingForecast(anchor=T0 + timedelta(minutes=5), horizon_min=10, mean_kw=200.0))
    s = series([0.0, 90.0, 110.0, 130.0])
    assert ledger.mature(s, latest_row=T0 + timedelta(minutes=5)) == []
    matured = ledger.mature(s, latest_row=T0 + timedelta(minutes=10))
    assert [m.forecast.mean_kw for m in matured] == [100.0]
    assert matured[0].actual_kw == pytest.approx(100.0) and matured[0].rows_observed == 2
    assert len(ledger) == 1
    (second,) = ledger.mature(s, latest_row=T0 + timedelta(minutes=15))
    assert second.actual_kw == pytest.approx(120.0) and len(ledger) == 0


def test_the_ledger_keeps_one_forecast_per_row_and_is_bounded() -> None:
    ledger = ForecastLedger(max_pending=3)
    ledger.add(PendingForecast(anchor=T0, horizon_min=60, mean_kw=1.0))
    ledger.add(PendingForecast(anchor=T0, horizon_min=60, mean_kw=2.0))
    due = ledger.earliest_due()
    assert len(ledger) == 1 and due is not None and due.mean_kw == 2.0
    ledger.add(PendingForecast(anchor=T0, horizon_min=60, mean_kw=math.nan))
    assert ledger.earliest_due() is due  # a non-finite forecast is never kept
    for k in range(1, 6):
        ledger.add(PendingForecast(anchor=T0 + timedelta(minutes=5 * k), horizon_min=60, mean_kw=float(k)))
    assert len(ledger) == 3


def test_anchor_and_latest_row() -> None:
    assert anchor_row(T0 + timedelta(minutes=7, seconds=3)) == T0 + timedelta(minutes=5)
    frame = pd.DataFrame({"a": [1.0, math.nan, math.nan], "b": [1.0, 2.0, math.nan]},
                         index=pd.date_range(T0, periods=3, freq="5min", tz="UTC"))
    assert latest_row(frame) == T0 + timedelta(minutes=5)
    assert latest_row(frame, "a") == T0
    assert latest_row(frame, "missing") is None
    assert latest_row(None) is None


# -- job accounting and the scheduler ---------------------------------------------------------

class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_overrun_is_counted_and_the_running_time_is_known() -> None:
    registry = CollectorRegistry()
    clock = FakeMonotonic()
    monitor = JobMonitor(JobMetrics(registry), {"cycle": 5.0, "training": None}, monotonic=clock)
    with monitor.track("cycle"):
        clock.now += 3.0
        assert monitor.running_for_s("cycle") == pytest.approx(3.0)
    assert monitor.running_for_s("cycle") is None and monitor.overruns["cycle"] == 0
    with monitor.track("cycle"):
        clock.now += 7.5
    with monitor.track("training"):
        clock.now += 10_000.0  # no budget: never an overrun
    assert monitor.overruns == {"cycle": 1, "training": 0, "quality": 0, "retention": 0}
    assert registry.get_sample_value("coolpilot_job_overruns_total", {"job": "cycle"}) == 1.0
    assert registry.get_sample_value("coolpilot_job_last_duration_seconds", {"job": "cycle"}) == pytest.approx(7.5)


def test_scheduler_events_count_skipped_runs() -> None:
    registry = CollectorRegistry()
    monitor = JobMonitor(JobMetrics(registry), {})
    monitor.listener(SimpleNamespace(code=EVENT_JOB_MAX_INSTANCES, job_id="cycle"))
    monitor.listener(SimpleNamespace(code=EVENT_JOB_MISSED, job_id="training:once"))
    assert monitor.skipped["cycle"] == 1 and monitor.skipped["training"] == 1
    assert registry.get_sample_value("coolpilot_job_skipped_runs_total", {"job": "training"}) == 1.0


def test_the_scheduler_coalesces_runs_one_instance_in_utc_with_a_training_executor() -> None:
    scheduler = make_scheduler(misfire_grace_s=42)
    scheduler.start(paused=True)
    try:
        job = scheduler.add_job(print, "interval", seconds=300, id="cycle")
        assert job.coalesce is True and job.max_instances == 1 and job.misfire_grace_time == 42
        assert str(scheduler.timezone) == "UTC"
        assert scheduler._lookup_executor(TRAINING_EXECUTOR) is not scheduler._lookup_executor("default")
    finally:
        scheduler.shutdown(wait=False)


# -- the rules counterfactual -----------------------------------------------------------------

def test_rules_counterfactual_is_the_gated_rule_proposal() -> None:
    cfg = config(mode="auto")
    measured = {"it_power_kw": 900.0, "outdoor_wetbulb_c": 18.0, "rack_inlet_max_c": 23.0}
    d = Decision(ts=T0, site_id="s", mode="auto", outcome="optimised", reason="", previous=dict(START_SETPOINTS),
                 new=dict(START_SETPOINTS), measured=measured)
    got = rules_setpoints_for(cfg, d)
    assert got is not None
    env = cfg.envelope()
    want = gate(rule_setpoints("tuned", {**measured, **START_SETPOINTS}, env), START_SETPOINTS, env).setpoints
    assert got == pytest.approx(want)
    for role in SETPOINT_ROLES:  # the rate limit applies as it would have to the rules
        assert abs(got[role] - START_SETPOINTS[role]) <= env.bounds(role).max_step_k + 1e-9
    unknown = Decision(ts=T0, site_id="s", mode="auto", outcome="optimised", reason="", previous={}, new={})
    assert rules_setpoints_for(cfg, unknown) is None


# -- the live view ----------------------------------------------------------------------------

def status(**changes: object) -> LiveStatus:
    base = dict(
        ts=T0, cycle=7, steps=20, mode="auto", outcome="fallback", reason_code="uncertain",
        setpoints_c={"chw_supply_sp_c": 11.5, "supply_air_sp_c": 23.0, "cw_supply_sp_c": 24.0},
        rules_setpoints_c={"chw_supply_sp_c": 11.0, "supply_air_sp_c": 23.0, "cw_supply_sp_c": 25.5},
        cooling_kw=130.0, rules_cooling_kw=141.0, pue=1.182, rules_pue=1.196, savings_kwh=412.0,
        savings_pct=7.8, rack_inlet_max_c=24.6, rules_rack_inlet_max_c=24.4, rack_inlet_limit_c=27.0,
        outcomes={"optimised": 5, "fallback": 2}, fallbacks={"uncertain": 2}, model_version="v1",
        metrics_url="http://127.0.0.1:9109/metrics",
    )
    base.update(changes)
    return LiveStatus(**base)  # type: ignore[arg-type]


def test_render_shows_mode_setpoints_pue_savings_and_fallbacks() -> None:
    text = "\n".join(render(status()))
    for expected in ("cycle 7/20", "mode auto", "fallback (uncertain)", "chilled water 11.5", "1.182",
                     "rules twin 1.196", "412.0 kWh", "7.8 %", "fallbacks       2 (uncertain 2)", "limit 27.0 C"):
        assert expected in text, expected
    assert "nan" not in "\n".join(render(status(pue=math.nan, savings_pct=math.nan)))


def test_the_view_redraws_in_place_on_a_terminal_and_prints_lines_elsewhere() -> None:
    tty = io.StringIO()
    view = LiveView(tty, tty=True)
    view.show(status())
    view.show(status(cycle=8))
    out = tty.getvalue()
    assert out.count("\x1b[J") == 2 and f"\x1b[{len(render(status()))}F" in out

    log = io.StringIO()
    view = LiveView(log, tty=False, every=12)
    for n in range(1, 26):
        view.show(status(cycle=n))
    view.show(status(cycle=26), final=True)
    lines = log.getvalue().splitlines()
    assert [line.split("cycle ")[1].split(":")[0] for line in lines] == ["1", "13", "25", "26"]
    assert "\x1b" not in log.getvalue() and lines[0] == one_line(status(cycle=1))
    assert np.isfinite(float(lines[0].split("PUE ")[1].split(" ")[0]))
