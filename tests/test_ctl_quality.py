"""Data-quality checks: each failure names the role and the reason.

The stuck and spike checks judge a reading against the site's own behaviour (a learned
``DataProfile``): the unit tests replay the kinds of flat and stepping data that a real
plant produced (hourly weather, a loop held at its setpoint, chiller staging) and the
property tests pin the rules down: flat no longer than the site's longest is never
stuck, a corroborated step is never a spike, a lone jump is, a hot rack inlet is believed,
and the stuck runs flagged in a history for retraining are the ones the live check flags.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controller.config import QualitySettings
from controller.quality import (
    HOT_IS_REAL,
    check_window,
    mask_out_of_range,
    stuck_readings,
    stuck_threshold_rows,
)
from db.roles import ROLES as ROLE_TABLE
from forecasting.data_profile import DataProfile, RoleProfile, learn_profile
from tests._ctl_support import NOW, later, window
from tests._site_history import STORM_HOUR, hourly_weather, plant_like, staging_history

RACK = "rack_inlet_max_c"
ROLES = ("rack_inlet_max_c", "it_power_kw", "outdoor_drybulb_c", "chillers_running", "chw_supply_sp_c")
S = QualitySettings()
WEATHER = ("outdoor_drybulb_c", "outdoor_rh_pct", "outdoor_wetbulb_c")


def issues(frame: pd.DataFrame, now: object = NOW) -> list[tuple[str, str]]:
    report = check_window(frame, ROLES, now, 300, S)  # type: ignore[arg-type]
    return [(i.role, i.check) for i in report.issues]


def found(frame: pd.DataFrame, profile: DataProfile | None = None, settings: QualitySettings = S,
          roles: tuple[str, ...] | None = None) -> set[tuple[str, str]]:
    """(role, check) of every issue of ``frame``, checked at its last row with all its columns."""
    now = pd.Timestamp(frame.index[-1]).to_pydatetime()
    report = check_window(frame, roles or tuple(frame.columns), now, 300, settings, profile=profile)
    return {(i.role, i.check) for i in report.issues}


def learned_until(frame: pd.DataFrame, rows: int) -> tuple[DataProfile, pd.DataFrame]:
    """The profile of ``frame``'s first ``rows`` rows, and the 48-row window that follows them."""
    return learn_profile(frame.iloc[:rows]), frame.iloc[rows:rows + 48].copy()


def test_healthy_window_passes_and_reports_latest_values() -> None:
    frame = window()
    report = check_window(frame, ROLES, NOW, 300, S)
    assert report.ok, report.summary()
    assert report.latest["chw_supply_sp_c"] == frame["chw_supply_sp_c"].iloc[-1]


def test_stale_data_fails_freshness() -> None:
    assert ("rack_inlet_max_c", "freshness") in issues(window(), later(11))
    assert ("rack_inlet_max_c", "freshness") not in issues(window(), later(9))


def test_missing_rows_fail_completeness_and_absent_role_is_named() -> None:
    frame = window()
    frame.loc[frame.index[:8], "it_power_kw"] = np.nan
    frame = frame.drop(columns=["outdoor_drybulb_c"])
    found = issues(frame)
    assert ("it_power_kw", "completeness") in found
    assert ("outdoor_drybulb_c", "missing") in found


@pytest.mark.parametrize("bad", [np.inf, -1e9, 80.0])
def test_out_of_range_values_fail_range(bad: float) -> None:
    frame = window()
    frame.loc[frame.index[5], "rack_inlet_max_c"] = bad
    assert ("rack_inlet_max_c", "range") in issues(frame)


@pytest.mark.parametrize("bad", [np.inf, -1e9, 80.0])
def test_an_older_impossible_reading_is_masked_and_a_newest_one_still_blocks(bad: float) -> None:
    frame = window()
    frame.loc[frame.index[5], "rack_inlet_max_c"] = bad
    masked, notes = mask_out_of_range(frame)
    assert np.isnan(masked["rack_inlet_max_c"].iloc[5]) and frame["rack_inlet_max_c"].iloc[5] == bad
    assert masked.drop(index=frame.index[5]).equals(frame.drop(index=frame.index[5]))
    assert len(notes) == 1 and notes[0].startswith("rack_inlet_max_c: masked 1 older reading")
    assert check_window(masked, ROLES, NOW, 300, S).ok
    frame.loc[frame.index[-1], "rack_inlet_max_c"] = bad
    masked, _ = mask_out_of_range(frame)
    assert ("rack_inlet_max_c", "range") in issues(masked)
    assert mask_out_of_range(window())[1] == ()


def test_without_a_profile_two_hours_flat_is_not_stuck_but_a_configured_limit_and_a_day_are() -> None:
    """Deliberately changed by "learn the plant": the default no longer calls 24 flat rows stuck."""
    frame = window()
    frame["rack_inlet_max_c"] = 22.3
    assert issues(frame) == []
    explicit = QualitySettings(stuck_rows=24)  # an operator's own limit is still honoured
    found = [(i.role, i.check) for i in check_window(frame, ROLES, NOW, 300, explicit).issues]
    assert found == [("rack_inlet_max_c", "stuck")]
    day = window(rows=S.stuck_rows)
    day["rack_inlet_max_c"] = 22.3
    day["chillers_running"] = 2.0  # counts and setpoints may be constant: never stuck
    assert issues(day) == [("rack_inlet_max_c", "stuck")]


def test_spike_in_latest_rows_fails_but_noise_does_not() -> None:
    frame = window()
    frame.loc[frame.index[-1], "it_power_kw"] = 2500.0
    assert ("it_power_kw", "spike") in issues(frame)
    frame = window()
    frame.loc[frame.index[-1], "rack_inlet_max_c"] += 1.0  # a real 1 K rise is not a spike
    assert issues(frame) == []


def test_all_nan_role_is_missing_and_message_names_it() -> None:
    frame = window()
    frame["outdoor_drybulb_c"] = np.nan
    report = check_window(frame, ROLES, NOW, 300, S)
    assert [str(i) for i in report.issues] == ["outdoor_drybulb_c: missing: no finite reading in the last 24 rows"]


def test_empty_window_fails_every_role() -> None:
    empty = pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
    assert {role for role, _ in issues(empty)} == set(ROLES)


def test_hourly_weather_flat_for_an_hour_then_a_step_passes() -> None:
    history = hourly_weather(2400, 24 * 22)
    profile, frame = learned_until(history, 24 * 21 * 12)
    steps = frame["outdoor_drybulb_c"].diff().abs().to_numpy()
    assert (steps[1:12] == 0).all() and steps[12] > 0  # held for the hour, then the next hourly row
    for end in range(13, 49):
        assert found(frame.iloc[:end], profile) == set(), end
        assert found(frame.iloc[:end]) == set(), end


def test_a_storm_front_is_a_weather_step_not_a_spike_unless_nothing_else_saw_it() -> None:
    history = hourly_weather(STORM_HOUR - 24 * 21 - 3, 24 * 21 + 4)
    profile, _ = learned_until(history, 24 * 21 * 12)
    frame = history.iloc[-48:-10]  # ends two records after the front: 30.0 -> 21.7 C in one record
    assert frame["outdoor_drybulb_c"].iloc[-3] - frame["outdoor_drybulb_c"].iloc[-2] == pytest.approx(8.3)
    assert found(frame, profile) == set()
    assert found(frame) == set()
    alone = frame[["outdoor_drybulb_c"]]  # no humidity, no wet-bulb: nothing corroborates it
    assert found(alone, profile) == {("outdoor_drybulb_c", "spike")}
    assert found(alone) == {("outdoor_drybulb_c", "spike")}


def test_chilled_water_held_exactly_at_setpoint_for_hours_passes_when_the_profile_saw_it() -> None:
    history = plant_like(2400, 22)
    profile, frame = learned_until(history, 21 * 288)
    assert frame["chw_supply_c"].nunique() == 1 and frame["it_power_kw"].nunique() > 1
    assert found(frame, profile) == set()
    noisy = dict(profile.roles)
    noisy["chw_supply_c"] = RoleProfile(1, 0.05, 0.2, 0.3, 0.5, partners=None)  # a site where it never repeated
    assert found(frame, DataProfile(roles=noisy, rows=profile.rows)) == {("chw_supply_c", "stuck")}


def test_cooling_power_constant_while_the_chiller_is_off_then_stepping_with_the_count_passes() -> None:
    history = staging_history()
    profile = learn_profile(history)
    assert "chillers_running" in (profile.roles["cooling_power_kw"].partners or ())
    frame = history.iloc[:48].copy()  # the chiller is off: cooling power exactly 3.0 kW
    frame.loc[frame.index[-1], ["chillers_running", "cooling_power_kw"]] = [1.0, 23.0]
    assert found(frame, profile) == set()
    frame.loc[frame.index[-1], "chillers_running"] = 0.0  # the same 20 kW step with no chiller behind it
    assert found(frame, profile) == {("cooling_power_kw", "spike")}


def test_a_sensor_frozen_for_three_times_its_longest_run_while_others_move_is_flagged() -> None:
    history = plant_like(2400, 22)
    profile, frame = learned_until(history, 21 * 288)
    longest = profile.roles["it_power_kw"].longest_flat_rows
    assert longest == 12  # hourly IT power: flat for an hour at a time
    frame.iloc[-3 * longest:, frame.columns.get_loc("it_power_kw")] = frame["it_power_kw"].iloc[-3 * longest]
    assert found(frame, profile) == {("it_power_kw", "stuck")}
    frame["rack_inlet_max_c"] = frame["chw_return_c"] = 22.0  # its partners hold still too: a quiet plant
    assert ("it_power_kw", "stuck") not in found(frame, profile)


@pytest.mark.parametrize(("start_hour", "days"), [(100, 24), (2400, 24), (STORM_HOUR - 22 * 24, 24)],
                         ids=["winter-chillers-off", "spring-staging", "summer-storm"])
def test_three_days_of_an_energyplus_like_plant_raise_no_stuck_or_spike(start_hour: int, days: int) -> None:
    """The data that made 1394 of 2016 cycles fall back: every cycle of three days now passes."""
    history = plant_like(start_hour, days)
    train = 21 * 288
    profile = learn_profile(history.iloc[:train])
    old = QualitySettings(stuck_rows=24)  # the former fixed rule, for contrast
    assert any(found(history.iloc[end - 48:end], settings=old) for end in range(train, len(history), 36))
    for end in range(train, len(history), 3):
        frame = history.iloc[end - 48:end]
        assert found(frame, profile) == set(), frame.index[-1]
        assert found(frame) == set(), frame.index[-1]


def test_a_jump_another_role_makes_at_the_same_time_is_not_a_spike_without_a_profile() -> None:
    frame = window()
    frame.loc[frame.index[-1], "it_power_kw"] = 2500.0
    frame.loc[frame.index[-1], "cooling_power_kw"] = 750.0  # the plant saw the same event
    assert issues(frame) == []
    frame = window()
    frame.loc[frame.index[-1], "it_power_kw"] = 2500.0
    frame.loc[frame.index[-1], "outdoor_drybulb_c"] += 0.5  # weather does not corroborate the plant
    assert issues(frame) == [("it_power_kw", "spike")]


def test_a_step_no_larger_than_the_sites_usual_steps_is_not_a_spike_even_alone() -> None:
    frame = window()
    frame.loc[frame.index[-1], "cooling_power_kw"] += 200.0  # tower fans and chillers cycling on this site
    assert found(frame) == {("cooling_power_kw", "spike")}  # beyond the default floor (half the median)
    cycling = DataProfile(roles={"cooling_power_kw": RoleProfile(1, 2.0, 20.0, 150.0, 210.0, ())}, rows=10_000)
    assert found(frame, cycling) == set()  # within 1.5 x its 99.9th-percentile step
    frame.loc[frame.index[-1], "cooling_power_kw"] += 100.0
    assert found(frame, cycling) == {("cooling_power_kw", "spike")}


def test_a_hot_rack_inlet_that_returns_is_neither_a_spike_going_up_nor_coming_back() -> None:
    frame = window()
    frame.loc[frame.index[-2], "rack_inlet_max_c"] += 12.0
    assert issues(frame) == []
    frame.loc[frame.index[-2], "rack_inlet_max_c"] -= 24.0  # a cold reading is not believed
    assert issues(frame) == [("rack_inlet_max_c", "spike")]


def test_the_stuck_threshold_follows_the_profile_with_its_margin_and_minimum() -> None:
    profile = DataProfile(roles={"chw_supply_c": RoleProfile(40, 0.0, 0.0, 0.0, 0.0, ()),
                                 "it_power_kw": RoleProfile(1, 1.0, 3.0, 5.0, 6.0, ())}, rows=10_000)
    assert stuck_threshold_rows("chw_supply_c", S, profile) == 61  # longer than 1.5 x 40 rows
    assert stuck_threshold_rows("it_power_kw", S, profile) == S.stuck_min_rows
    assert stuck_threshold_rows("it_power_kw", S) == stuck_threshold_rows("cw_supply_c", S, profile) == 288


# Property tests: a steady plant (every role on an exact ramp or constant), one role changed.

CHECKED = tuple(r for r, spec in ROLE_TABLE.items() if spec.kind == "measurement" and spec.unit not in ("count", "fraction"))
PLANT = tuple(r for r in CHECKED if not r.startswith("outdoor_"))
BASE = {"it_power_kw": 1000.0, "cooling_power_kw": 300.0, "facility_power_kw": 1400.0, "chiller_power_kw": 200.0,
        "tower_fan_power_kw": 30.0, "pump_power_kw": 40.0, "crah_fan_power_kw": 50.0, "outdoor_rh_pct": 50.0}
END = datetime(2024, 7, 1, 12, 0, tzinfo=NOW.tzinfo)


def steady(rows: int, slope: float) -> pd.DataFrame:
    """Every role on its own exact ramp (temperatures near 20 C), setpoints and counts constant."""
    index = pd.date_range(end=END, periods=rows, freq="5min", tz="UTC")
    ramp = np.arange(rows, dtype=np.float64)
    data = {r: BASE.get(r, 20.0) + (1 + i % 3) * slope * ramp for i, r in enumerate(CHECKED)}
    data.update(chillers_running=np.full(rows, 2.0), chw_supply_sp_c=np.full(rows, 9.0))
    return pd.DataFrame(data, index=index)


def quiet_profile(**partners: tuple[str, ...] | None) -> DataProfile:
    """Every role: never flat for long, 0.01 median and 0.05 p99.9 steps; partners as given (else none known)."""
    return DataProfile(roles={r: RoleProfile(2, 0.01, 0.03, 0.05, 0.1, partners.get(r)) for r in CHECKED}, rows=10_000)


@settings(max_examples=150, deadline=None)
@given(role=st.sampled_from(CHECKED), longest=st.integers(1, 300), data=st.data(),
       margin=st.floats(1.0, 5.0), minimum=st.integers(3, 50), slope=st.floats(0.0, 0.01))
def test_a_flat_run_no_longer_than_the_sites_longest_is_never_stuck(
        role: str, longest: int, data: st.DataObject, margin: float, minimum: int, slope: float) -> None:
    run = data.draw(st.integers(1, longest), label="run")
    frame = steady(run + 30, max(slope, 1e-3))
    frame.iloc[-run:, frame.columns.get_loc(role)] = frame[role].iloc[-run]
    profile = DataProfile(roles={role: RoleProfile(longest, 0.01, 0.03, 0.05, 0.1, None)}, rows=10_000)
    tight = QualitySettings(stuck_margin_factor=margin, stuck_min_rows=minimum)
    assert (role, "stuck") not in found(frame, profile, tight)
    if run >= stuck_threshold_rows(role, tight, quiet_profile()):  # the same run on a site that never held still
        assert (role, "stuck") in found(frame, quiet_profile(), tight)


@settings(max_examples=150, deadline=None)
@given(role=st.sampled_from(PLANT), partner=st.sampled_from(PLANT), jump=st.floats(-300.0, 300.0),
       at=st.integers(1, 3), lag=st.integers(-1, 1), learned=st.booleans())
def test_a_step_another_role_corroborates_is_never_a_spike(
        role: str, partner: str, jump: float, at: int, lag: int, learned: bool) -> None:
    if partner == role:
        partner = PLANT[(PLANT.index(role) + 1) % len(PLANT)]
    frame = steady(24, 0.001)
    row = len(frame) - at
    frame.iloc[row:, frame.columns.get_loc(role)] += jump
    moved_at = min(row + lag, len(frame) - 1)
    frame.iloc[moved_at:, frame.columns.get_loc(partner)] += 2.0  # the partner steps too, and stays
    profile = quiet_profile(**{role: (partner,)}) if learned else None
    assert (role, "spike") not in found(frame, profile)


@settings(max_examples=150, deadline=None)
@given(role=st.sampled_from(CHECKED), size=st.floats(1.01, 50.0), up=st.booleans(), at=st.integers(1, 3),
       learned=st.booleans(), slope=st.floats(0.0, 0.002))
def test_a_lone_large_jump_while_everything_else_is_steady_is_a_spike(
        role: str, size: float, up: bool, at: int, learned: bool, slope: float) -> None:
    up = up and role not in HOT_IS_REAL  # a hot rise is believed (the next test)
    frame = steady(24, slope)
    floor = S.spike_min_jump_k if ROLE_TABLE[role].unit == "C" else S.spike_min_jump_frac * BASE.get(role, 20.0)
    limit = max(floor, S.spike_margin_factor * 0.05) + 3 * slope * 24  # above the floor and the ramp
    # a power that drops to zero or below is out of range, which the range check reports first
    assume(up or ROLE_TABLE[role].unit == "C" or size * limit < 0.99 * BASE.get(role, 20.0))
    frame.iloc[len(frame) - at:, frame.columns.get_loc(role)] += size * limit * (1 if up else -1)
    profile = quiet_profile(**{role: ()}) if learned else None
    assert (role, "spike") in found(frame, profile)


@settings(max_examples=150, deadline=None)
@given(role=st.sampled_from(sorted(HOT_IS_REAL)), rise=st.floats(0.01, 25.0), at=st.integers(1, 3),
       learned=st.booleans(), back=st.booleans())
def test_a_hot_rack_inlet_jump_is_never_a_spike(role: str, rise: float, at: int, learned: bool, back: bool) -> None:
    frame = steady(24, 0.001)
    row = len(frame) - at
    frame.iloc[row:, frame.columns.get_loc(role)] += rise
    if back and at > 1:
        frame.iloc[row + 1:, frame.columns.get_loc(role)] -= rise  # and comes back down
    profile = quiet_profile(**{role: ()}) if learned else None
    assert (role, "spike") not in found(frame, profile)


@settings(max_examples=150, deadline=None)
@given(role=st.sampled_from(CHECKED), longest=st.integers(1, 60), run=st.integers(1, 150), tail=st.integers(0, 30),
       quiet=st.booleans(), rows_read=st.sampled_from([None, 24, 144]))
def test_the_history_flags_a_flat_run_exactly_where_the_live_check_would_have_flagged_it(
        role: str, longest: int, run: int, tail: int, quiet: bool, rows_read: int | None) -> None:
    """Retraining leaves out what the checks in force call stuck: no more (a quiet plant, a short
    run, one too long for the cycle's read) and no less, and the whole run, not only its end."""
    frame = steady(run + tail + 30, 0.0 if quiet else 1e-3)
    end = len(frame) - tail  # the run is rows end-run .. end-1, then the role ramps on
    frame.iloc[end - run:end, frame.columns.get_loc(role)] = frame[role].iloc[end - run]
    profile = DataProfile(roles={role: RoleProfile(longest, 0.01, 0.03, 0.05, 0.1, None)}, rows=10_000)
    flags = stuck_readings(frame, S, profile, rows_read)
    seen = frame.iloc[:end] if rows_read is None else frame.iloc[max(end - rows_read, 0):end]  # what a cycle read
    live = (role, "stuck") in found(seen, profile)
    assert live == (not quiet and run >= stuck_threshold_rows(role, S, profile)
                    and (rows_read is None or stuck_threshold_rows(role, S, profile) <= rows_read))
    assert bool(flags[role].iloc[end - run:end].all()) == live and bool(flags[role].any()) == live
    if not quiet:  # every other role ramps: never flat
        assert not flags.drop(columns=role).to_numpy().any()


def test_a_stuck_rack_inlet_in_the_history_is_not_learned_while_the_sites_flat_loops_and_weather_are() -> None:
    """The defect seen on the twin: a model trained after a stuck rack inlet learned its 55 rows as
    normal, which would have let the next stuck sensor under 83 rows pass. With the history's stuck
    runs left out, the profile learns what it learned before the fault."""
    history = plant_like(2400, 28)
    profile = learn_profile(history.iloc[:21 * 288])  # the champion's
    longest = profile.roles[RACK].longest_flat_rows
    faulty = history.copy()
    start = 24 * 288 + 7
    faulty.iloc[start:start + 55, faulty.columns.get_loc(RACK)] = faulty[RACK].iloc[start]
    flags = stuck_readings(faulty, S, profile, rows_read=144, roles=(RACK, "it_power_kw"))
    assert longest < 55 // 2 and learn_profile(faulty).roles[RACK].longest_flat_rows >= 55  # the defect
    flagged = np.flatnonzero(flags[RACK].to_numpy())
    assert flagged[0] <= start and flagged[-1] == start + 54 and len(flagged) == flagged[-1] - flagged[0] + 1
    assert len(flagged) < 55 + longest  # the stuck run and the reading it froze at, no more
    assert not flags.drop(columns=RACK).to_numpy().any()  # hourly IT power: flat an hour at a time
    # chilled water held at its setpoint and a loop frozen while off are not stuck; seven hours of one
    # hourly dry-bulb value are, beyond the 48 rows of the first 21 days (retraining judges no such role)
    everything = stuck_readings(faulty, S, profile, rows_read=144)
    assert {str(c) for c in everything.columns if everything[c].any()} == {RACK, "outdoor_drybulb_c"}
    relearned = learn_profile(faulty.mask(flags))
    assert relearned.roles[RACK].longest_flat_rows == learn_profile(history).roles[RACK].longest_flat_rows
    assert stuck_threshold_rows(RACK, S, relearned) <= 2 * longest  # the next 55-row fault is still seen
