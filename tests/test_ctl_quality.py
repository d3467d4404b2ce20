"""Data-quality checks: each failure names the role and the reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from controller.config import QualitySettings
from controller.quality import check_window, mask_out_of_range
from tests._ctl_support import NOW, later, window

ROLES = ("rack_inlet_max_c", "it_power_kw", "outdoor_drybulb_c", "chillers_running", "chw_supply_sp_c")
S = QualitySettings()


def issues(frame: pd.DataFrame, now: object = NOW) -> list[tuple[str, str]]:
    report = check_window(frame, ROLES, now, 300, S)  # type: ignore[arg-type]
    return [(i.role, i.check) for i in report.issues]


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


def test_stuck_sensor_fails_but_constant_counts_and_setpoints_do_not() -> None:
    frame = window()
    frame["rack_inlet_max_c"] = 22.3
    found = issues(frame)
    assert ("rack_inlet_max_c", "stuck") in found
    assert not any(role in ("chillers_running", "chw_supply_sp_c") for role, _ in found)


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
