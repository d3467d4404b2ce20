"""The site data profile: what it learns from a history, and its JSON round trip.

The quality checks trust these numbers to tell a plant's normal flat lines and steps
from a frozen or glitching sensor, so each is pinned to a history where the right
answer is known: a planted flat run, known step sizes, a chiller count that stages
with cooling power, meters whose noise moves with nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from forecasting.data_profile import (
    MIN_STEPS,
    DataProfile,
    ProfileError,
    RoleProfile,
    flat_runs,
    learn_profile,
    one_record_steps,
)
from tests._site_history import plant_like, staging_history

ROWS = 2 * MIN_STEPS


def grid(rows: int) -> pd.DatetimeIndex:
    return pd.date_range("2024-01-01", periods=rows, freq="5min", tz="UTC")


def test_longest_flat_run_counts_the_rows_it_spans_gaps_included() -> None:
    values = np.r_[np.arange(ROWS, dtype=np.float64), np.full(10, 3.5), np.nan, np.nan, 3.5, 7.0]
    starts, ends = flat_runs(values)
    assert (ends - starts + 1).max() == 13  # ten equal readings, two gaps, the same reading again
    profile = learn_profile(pd.DataFrame({"it_power_kw": values}, index=grid(len(values))))
    assert profile.roles["it_power_kw"].longest_flat_rows == 13


def test_step_statistics_use_only_one_record_steps_between_present_readings() -> None:
    values = np.arange(ROWS, dtype=np.float64) * 0.5
    values[100] = np.nan  # no step across the gap: 100 -> 102 would be 1.0
    values[-1] = values[-2] + 9.0
    assert np.isnan(one_record_steps(values)[[0, 100, 101]]).all()
    learned = learn_profile(pd.DataFrame({"chw_supply_c": values}, index=grid(ROWS))).roles["chw_supply_c"]
    assert (learned.step_median, learned.step_p99, learned.step_max) == (0.5, 0.5, 9.0)
    assert learned.longest_flat_rows == 1


def test_a_role_with_too_little_history_is_left_out() -> None:
    frame = pd.DataFrame({"it_power_kw": np.arange(ROWS, dtype=np.float64),
                          "outdoor_rh_pct": np.r_[np.arange(MIN_STEPS - 1, dtype=np.float64), np.full(ROWS - MIN_STEPS + 1, np.nan)]},
                         index=grid(ROWS))
    profile = learn_profile(frame)
    assert set(profile.roles) == {"it_power_kw"} and profile.rows == ROWS
    assert learn_profile(frame.iloc[:10]).roles == {}


def test_staging_makes_chiller_count_and_cooling_power_partners_and_noise_partners_nothing() -> None:
    profile = learn_profile(staging_history())
    assert profile.roles["cooling_power_kw"].partners == ("chillers_running",)
    assert profile.roles["chillers_running"].partners == ("cooling_power_kw",)
    assert profile.roles["it_power_kw"].partners == ()  # its noise moves with nothing
    assert profile.roles["cooling_power_kw"].longest_flat_rows >= 4 * 288  # off for days at exactly 3.0 kW


def test_hourly_data_moves_together_and_is_flat_for_at_least_an_hour() -> None:
    profile = learn_profile(plant_like(2400, 21))
    dry = profile.roles["outdoor_drybulb_c"]
    assert {"outdoor_rh_pct", "outdoor_wetbulb_c"} <= set(dry.partners or ())
    assert dry.longest_flat_rows >= 12 and dry.step_median == 0.0
    assert profile.roles["chw_supply_c"].partners is None  # never moved: nothing to learn from


def test_a_role_that_seldom_moves_has_unknown_partners() -> None:
    values = np.full(ROWS, 7.0)
    values[ROWS // 2:] = 8.0  # one move in two days
    noisy = np.random.default_rng(0).standard_normal(ROWS)
    profile = learn_profile(pd.DataFrame({"chw_supply_sp_c": values, "it_power_kw": noisy}, index=grid(ROWS)))
    assert profile.roles["chw_supply_sp_c"].partners is None


def test_history_must_be_a_frame_in_time_order() -> None:
    with pytest.raises(ProfileError, match="DataFrame"):
        learn_profile(np.zeros((ROWS, 2)))  # type: ignore[arg-type]
    frame = pd.DataFrame({"it_power_kw": np.arange(ROWS, dtype=np.float64)}, index=grid(ROWS)[::-1])
    with pytest.raises(ProfileError, match="time order"):
        learn_profile(frame)
    with pytest.raises(ProfileError, match=r"repeated: \['it_power_kw'\]"):
        learn_profile(pd.concat([frame.sort_index()] * 2, axis=1))


def test_the_profile_is_read_only() -> None:
    profile = learn_profile(staging_history(days=4))
    with pytest.raises(TypeError):
        profile.roles["it_power_kw"] = profile.roles["cooling_power_kw"]  # type: ignore[index]


def test_round_trip_through_json_with_plain_types() -> None:
    profile = learn_profile(staging_history())
    text = json.dumps(profile.to_dict(), allow_nan=False)
    assert DataProfile.from_dict(json.loads(text)) == profile
    entry = json.loads(text)["roles"]["cooling_power_kw"]
    assert type(entry["longest_flat_rows"]) is int and type(entry["step_p999"]) is float
    assert entry["partners"] == ["chillers_running"]


def test_from_dict_ignores_unknown_keys() -> None:
    doc = learn_profile(staging_history(days=4)).to_dict()
    doc["learned_by"] = "a newer CoolPilot"
    doc["roles"]["it_power_kw"]["step_p9999"] = 1.0
    assert DataProfile.from_dict(doc).roles["it_power_kw"] == learn_profile(staging_history(days=4)).roles["it_power_kw"]


@pytest.mark.parametrize(("path", "bad", "message"), [
    (("rows",), "many", "profile.rows must be a non-negative integer"),
    (("roles",), [], "profile.roles must be a mapping"),
    (("roles", "it_power_kw", "longest_flat_rows"), True, "longest_flat_rows must be a non-negative integer"),
    (("roles", "it_power_kw", "longest_flat_rows"), 2.5, "longest_flat_rows must be a non-negative integer"),
    (("roles", "it_power_kw", "step_p999"), float("nan"), "step_p999 must be a finite non-negative number"),
    (("roles", "it_power_kw", "step_median"), "0.1", "step_median must be a finite non-negative number"),
    (("roles", "it_power_kw", "partners"), "cooling_power_kw", "partners must be a list of role names or null"),
    (("roles", "it_power_kw", "partners"), [1], "partners must be a list of role names or null"),
])
def test_from_dict_names_the_field_with_a_wrong_type(path: tuple[str, ...], bad: object, message: str) -> None:
    doc = learn_profile(staging_history(days=4)).to_dict()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    with pytest.raises(ProfileError, match=message):
        DataProfile.from_dict(doc)
    del target[path[-1]]
    if path[-1] == "partners":  # absent partners: unknown, as for a role that seldom moved
        assert DataProfile.from_dict(doc).roles["it_power_kw"].partners is None
    else:
        with pytest.raises(ProfileError, match=path[-1]):
            DataProfile.from_dict(doc)  # absent is wrong too
    with pytest.raises(ProfileError, match="profile must be a mapping"):
        DataProfile.from_dict([doc])


columns = arrays(np.float64, st.integers(MIN_STEPS + 1, MIN_STEPS + 60),
                 elements=st.one_of(st.sampled_from([np.nan, 0.0, 1.0]), st.floats(-1e6, 1e6)))


@settings(max_examples=60, deadline=None)
@given(a=columns, b=columns, run=st.integers(1, 40))
def test_any_history_gives_a_profile_that_survives_json_and_knows_its_longest_run(
        a: np.ndarray, b: np.ndarray, run: int) -> None:
    rows = min(len(a), len(b))
    a = a[:rows].copy()
    a[:run] = 42.0  # a planted flat run
    profile = learn_profile(pd.DataFrame({"it_power_kw": a, "cooling_power_kw": b[:rows]}, index=grid(rows)))
    assert DataProfile.from_dict(json.loads(json.dumps(profile.to_dict(), allow_nan=False))) == profile
    learned = profile.role("it_power_kw")
    if learned is not None:
        assert learned.longest_flat_rows >= run
        assert 0.0 <= learned.step_median <= learned.step_p99 <= learned.step_p999 <= learned.step_max
    assert all(isinstance(p, RoleProfile) for p in profile.roles.values())


def test_design_it_load_is_the_99th_percentile_of_it_power() -> None:
    # the tuned rules size their load reset from this: a 100-200 kW hall is not a 1 MW one
    it = np.linspace(100.0, 200.0, 1000)
    profile = learn_profile(pd.DataFrame({"it_power_kw": it}, index=grid(len(it))))
    assert profile.design_it_kw == pytest.approx(float(np.quantile(it, 0.99)))
    assert learn_profile(pd.DataFrame({"cooling_power_kw": it}, index=grid(len(it)))).design_it_kw is None
