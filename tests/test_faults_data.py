"""Fault injection, data: the real daemon against the simulator while its inputs go bad.

Each scenario runs the daemon closed loop (`tests._fault_rig`), breaks one input for a
few cycles, then repairs it, and checks what must happen: the daemon keeps deciding
every cycle, what reaches the plant stays inside the operator's bounds and rate limits
with the true rack inlet below its limit, every decision row is stored, the decision,
the metrics and the log name the problem, and normal control resumes by itself.

Faults come in at the edges the way a site produces them: the simulated plant's own
sensor faults (dropout, stuck), a historian that serves NaN, inf, impossible values,
spikes or drops a role, a historian that stops updating, and a controller clock that
jumps forward or back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from controller.cycle_state import SAFETY_ROLES
from controller.service.daemon import Daemon
from db.records import last_applied_setpoints
from db.roles import SETPOINT_ROLES
from tests._fault_rig import SITE, Rig, assert_kept_running_and_recorded, assert_resumed, make_rig, run

RACK = "rack_inlet_max_c"


def set_column(role: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def transform(frame: pd.DataFrame) -> pd.DataFrame:
        frame[role] = change(frame[role].to_numpy(dtype=np.float64).copy())
        return frame
    return transform


def newest(value: Callable[[float], float]) -> Callable[[np.ndarray], np.ndarray]:
    def change(values: np.ndarray) -> np.ndarray:
        values[-1] = value(float(values[-1]))
        return values
    return change


def last_rows_nan(n: int) -> Callable[[np.ndarray], np.ndarray]:
    def change(values: np.ndarray) -> np.ndarray:
        values[-n:] = np.nan
        return values
    return change


@dataclass(frozen=True)
class DataFault:
    """A bad input: how to start and end it, and the text the decision must carry."""

    start: Callable[[Rig], None]
    end: Callable[[Rig], None]
    needle: str
    extra_config: str = ""
    at: tuple[int, int] = (4, 10)  # (start before cycle, end before cycle)


def served(transform: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Rig], None]:
    def start(rig: Rig) -> None:
        rig.source.transform = transform
    return start


def served_clean(rig: Rig) -> None:
    rig.source.transform = None


def sensor(role: str, mode: str) -> Callable[[Rig], None]:
    def start(rig: Rig) -> None:
        rig.plant.inject_fault("sensor_failure", role=role, mode=mode)
    return start


def repaired(rig: Rig) -> None:
    assert rig.plant.clear_fault("sensor_failure") == 1


DATA_FAULTS = {
    "missing_role": DataFault(served(lambda f: f.drop(columns=[RACK])), served_clean,
                              "rack_inlet_max_c: missing: role absent"),
    "nan": DataFault(served(set_column("it_power_kw", last_rows_nan(4))), served_clean,
                     "it_power_kw: freshness"),
    "inf": DataFault(served(set_column(RACK, newest(lambda v: math.inf))), served_clean,
                     "rack_inlet_max_c: range"),
    "out_of_range": DataFault(served(set_column("outdoor_drybulb_c", newest(lambda v: 95.0))), served_clean,
                              "outdoor_drybulb_c: range"),
    "spike": DataFault(served(set_column("outdoor_drybulb_c", newest(lambda v: v + 15.0))), served_clean,
                       "outdoor_drybulb_c: spike"),
    "sensor_dropout": DataFault(sensor(RACK, "dropout"), repaired, "rack_inlet_max_c: freshness"),
    "stuck_sensor": DataFault(sensor("it_power_kw", "stuck"), repaired, "it_power_kw: stuck",
                              extra_config="[quality]\nstuck_rows = 6\n", at=(2, 12)),
}


@pytest.mark.parametrize("name", list(DATA_FAULTS))
def test_bad_readings_degrade_or_fall_back_safely_name_the_problem_and_recover(
        name: str, sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    fault = DATA_FAULTS[name]
    rig = make_rig(sqlite_engine, tmp_path, "auto", fault.extra_config)
    first, last = fault.at
    cycles = last + 4
    r = run(rig, cycles, {first: lambda: fault.start(rig), last: lambda: fault.end(rig)})

    assert_kept_running_and_recorded(rig, r, cycles)
    flagged = [(n, d) for n, d in enumerate(r.decisions, start=1) if any(fault.needle in q for q in d.quality_issues)]
    assert flagged, f"no decision names {fault.needle!r}"
    role = fault.needle.split(":")[0]
    for n, d in flagged:
        assert first <= n <= last, f"cycle {n} flagged outside the fault"
        if role in SAFETY_ROLES:  # a suspect rack inlet or IT power: the rules decide
            assert (d.outcome, d.reason_code) == ("fallback", "bad_data") and fault.needle in d.reason
            assert r.bad_data_gauge[n - 1] == 1.0  # coolpilot_fallback_reason{reason="bad_data"}
        else:  # any other suspect input: the model runs without it, and the decision says so
            assert d.reason_code != "bad_data" and role in d.degraded_inputs, (d.outcome, d.reason)
        if fault.needle.startswith(RACK):  # rack inlet unknown: nothing may warm up
            assert d.hot_guard and all(d.new[role] <= d.previous[role] + 1e-9 for role in SETPOINT_ROLES)
    if role in SAFETY_ROLES:
        assert rig.value("coolpilot_fallbacks_total", reason="bad_data") >= len(flagged)
    assert_resumed(r)


def test_a_historian_that_stops_updating_is_stale_data_until_it_writes_again(
        sqlite_engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(sqlite_engine, tmp_path)
    write = rig.bridge._write
    quality: list[float] = []
    ages: list[float] = []

    def stop() -> None:
        rig.bridge._write = lambda *_args: 0  # the historian keeps running but stores nothing

    def restart() -> None:
        rig.bridge._write = write

    def probe(daemon: Daemon) -> None:
        daemon._quality_job()  # the data-quality job, as the scheduler runs it, at a known moment
        quality.append(rig.value("coolpilot_data_quality_issues", check="freshness"))
        ages.append(rig.value("coolpilot_data_age_seconds"))

    with caplog.at_level(logging.WARNING, logger="controller.service.daemon"):
        r = run(rig, 14, {4: stop, 10: restart}, probe)

    assert_kept_running_and_recorded(rig, r, 14)
    stale = [n for n, d in enumerate(r.decisions, start=1) if "freshness" in d.reason]
    # the newest row may be two cycles old: fallback from the third cycle without new data
    assert stale == list(range(6, 10)), stale
    assert "rack_inlet_max_c: freshness: latest reading" in r.decisions[5].reason
    for n in stale:
        assert r.decisions[n - 1].reason_code == "bad_data" and r.bad_data_gauge[n - 1] == 1.0
        assert quality[n - 1] >= 1 and ages[n - 1] > 600.0  # coolpilot_data_quality_issues, data age
    assert quality[-1] == 0 and ages[-1] <= 300.0
    logged = [m for m in caplog.messages if m.startswith("data quality:")]
    assert "freshness" in logged[0] and "freshness" not in logged[-1]  # logged as it starts and as it ends
    assert_resumed(r)


@pytest.mark.parametrize("jump_h", [2.0, -2.0], ids=["forward", "backward"])
def test_a_clock_jump_is_bad_data_not_a_setpoint_jump_and_a_restart_resumes_from_the_last_command(
        jump_h: float, sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    rig = make_rig(sqlite_engine, tmp_path)
    offset = [timedelta(0)]

    def jump() -> None:
        offset[0] = timedelta(hours=jump_h)

    def fixed() -> None:  # NTP puts the clock right again
        offset[0] = timedelta(0)

    r = run(rig, 12, {4: jump, 8: fixed}, clock=lambda: rig.plant.now + offset[0])

    assert_kept_running_and_recorded(rig, r, 12)
    needle = "clock is behind" if jump_h < 0 else "newest reading"  # the history stops: said once
    jumped = r.decisions[3:7]
    for d in jumped:
        assert (d.outcome, d.reason_code) == ("fallback", "bad_data") and needle in d.reason, d.reason
        assert d.hot_guard  # the window is not trusted: nothing may warm up
    plant_time = [r.decisions[0].ts + timedelta(minutes=5 * i) for i in range(12)]
    assert [d.ts - t for d, t in zip(r.decisions, plant_time, strict=True)] == (
        [timedelta(0)] * 3 + [timedelta(hours=jump_h)] * 4 + [timedelta(0)] * 5)  # rows keep the wrong times
    assert_resumed(r)
    # The commands sent while the clock was wrong carry wrong times; a restart must still
    # resume from the command sent last, or its first move would not be rate-limited.
    assert last_applied_setpoints(rig.engine, SITE) == pytest.approx(r.daemon.last_applied)
    assert r.daemon.last_applied == pytest.approx(rig.plant.setpoints())


def test_an_invalid_reading_never_reaches_the_rules_mode_setpoints(sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    """Rules mode has no model to distrust: an impossible rack inlet must still not steer the rules."""
    rig = make_rig(sqlite_engine, tmp_path, "rules")
    corrupt = served(set_column(RACK, newest(lambda v: 1e6)))
    r = run(rig, 8, {3: lambda: corrupt(rig)})
    assert_kept_running_and_recorded(rig, r, 8)
    for d in r.decisions[2:]:
        assert (d.outcome, d.reason_code) == ("fallback", "mode_rules")
        assert math.isnan(d.measured[RACK])  # set aside, not believed
        assert all(d.new[role] <= d.previous[role] + 1e-9 for role in SETPOINT_ROLES)  # unknown: only cooling
