"""Feature building: targets over the horizon, gaps dropped and counted, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psychrolib
import pytest

from db.psychro import wetbulb_c
from db.roles import SETPOINT_ROLES
from forecasting.cleaning import drop_outliers, outlier_mask
from forecasting.features import (
    TARGETS,
    FeatureError,
    FeatureSpec,
    Scaler,
    bridge_single_gaps,
    build_samples,
    current_setpoints,
    require_enough,
    state_vector,
    uses_wetbulb_sensor,
)
from tests._forecast_synth import synthetic_history


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return synthetic_history(days=3, seed=1)


def test_wetbulb_matches_psychrolib_and_keeps_gaps() -> None:
    dry = np.array([30.0, 20.0, np.nan, 30.0])
    rh = np.array([40.0, 90.0, 50.0, 40.0])
    out = wetbulb_c(dry, rh)
    psychrolib.SetUnitSystem(psychrolib.SI)
    assert out[0] == pytest.approx(psychrolib.GetTWetBulbFromRelHum(30.0, 0.4, 101325.0))
    assert out[0] == out[3]
    assert np.isnan(out[2])
    assert out[1] < 20.0 and out[1] > out[0] - 10  # humid air: wet-bulb close to dry-bulb
    assert (out[[0, 1]] <= dry[[0, 1]]).all()


def test_targets_are_mean_power_and_max_inlet_over_the_next_hour(history: pd.DataFrame) -> None:
    spec = FeatureSpec()
    fs = build_samples(history, spec)
    t = fs.index[100]
    pos = list(history.index).index(t)
    nxt = history.iloc[pos + 1: pos + 1 + spec.horizon_steps]
    assert fs.y[100, 0] == pytest.approx(nxt[TARGETS[0]].mean())
    assert fs.y[100, 1] == pytest.approx(nxt[TARGETS[1]].max())
    names = fs.names
    # row t's setpoints are commanded at t: in force over (t, t+1]; those of row t-1 were in force at t
    commanded = history.iloc[pos: pos + spec.horizon_steps]
    for sp in SETPOINT_ROLES:
        assert fs.x[100, names.index(f"{sp}@horizon")] == pytest.approx(commanded[sp].mean())
        assert fs.x[100, names.index(f"{sp}@now")] == pytest.approx(history[sp].iloc[pos - 1])
        assert fs.x[100, names.index(f"{sp}@change")] == pytest.approx(
            commanded[sp].mean() - history[sp].iloc[pos - 1])
        assert fs.x[100, names.index(f"{sp}@end")] == pytest.approx(commanded[sp].iloc[-1])
    assert fs.x[100, names.index("it_power_kw@lag3")] == pytest.approx(history["it_power_kw"].iloc[pos - 3])
    # candidate columns come last, after every state column
    assert fs.n_state == len(spec.state_names()) and names[fs.n_state:] == spec.candidate_names()


def test_wetbulb_is_derived_when_absent_and_used_when_present(history: pd.DataFrame) -> None:
    assert not uses_wetbulb_sensor(history)
    derived = build_samples(history, FeatureSpec())
    col = derived.names.index("outdoor_wetbulb_c")
    dry = derived.x[:, derived.names.index("outdoor_drybulb_c")]
    rh = derived.x[:, derived.names.index("outdoor_rh_pct")]
    assert np.allclose(derived.x[:, col], wetbulb_c(dry, rh))
    with_sensor = history.assign(outdoor_wetbulb_c=history["outdoor_drybulb_c"] - 3.0)
    assert uses_wetbulb_sensor(with_sensor)
    sensor_spec = FeatureSpec(derive_wetbulb=False)
    assert "outdoor_wetbulb_c" in sensor_spec.required_roles()
    assert "outdoor_wetbulb_c" not in FeatureSpec().required_roles()
    measured = build_samples(with_sensor, sensor_spec)
    assert np.allclose(measured.x[:, col], measured.x[:, derived.names.index("outdoor_drybulb_c")] - 3.0)
    with pytest.raises(FeatureError, match="outdoor_wetbulb_c"):
        build_samples(history, sensor_spec)


def test_gaps_are_dropped_and_counted_never_filled(history: pd.DataFrame) -> None:
    spec = FeatureSpec()
    full = build_samples(history, spec)
    holed = history.copy()
    holed.loc[holed.index[400], "cooling_power_kw"] = np.nan
    holed = holed.drop(holed.index[600:610])  # ten missing rows
    fs = build_samples(holed, spec)
    assert fs.gaps.missing_grid_rows == 10
    assert fs.gaps.samples < full.gaps.samples
    assert np.isfinite(fs.x).all() and np.isfinite(fs.y).all()
    # no sample's horizon may contain the NaN cooling reading at row 400
    bad_t = history.index[400]
    assert not ((fs.index < bad_t) & (fs.index >= bad_t - pd.Timedelta(minutes=spec.horizon_min))).any()
    assert fs.gaps.rows == fs.gaps.samples + fs.gaps.dropped_state + fs.gaps.dropped_horizon


def test_missing_role_is_named(history: pd.DataFrame) -> None:
    with pytest.raises(FeatureError, match="chw_return_c"):
        build_samples(history.drop(columns=["chw_return_c"]), FeatureSpec())
    with pytest.raises(FeatureError, match="supply_air_sp_c"):
        build_samples(history.drop(columns=["supply_air_sp_c"]), FeatureSpec())


def test_too_little_history_and_mostly_gaps_say_what_is_needed(history: pd.DataFrame) -> None:
    fs = build_samples(history.iloc[:300], FeatureSpec())
    with pytest.raises(FeatureError, match=r"too little history.*at least 2016.*7\.0 days"):
        require_enough(fs, 2016)
    gappy = history.copy()
    gappy.loc[gappy.index[::3], "it_power_kw"] = np.nan
    with pytest.raises(FeatureError, match="mostly gaps"):
        require_enough(build_samples(gappy, FeatureSpec()), 10)


def test_bad_index_is_refused(history: pd.DataFrame) -> None:
    with pytest.raises(FeatureError, match="timezone-aware"):
        build_samples(history.tz_localize(None), FeatureSpec())
    shifted = history.set_axis(history.index + pd.Timedelta(minutes=1))
    with pytest.raises(FeatureError, match="5-minute grid"):
        build_samples(shifted, FeatureSpec())


def test_state_vector_equals_the_training_row(history: pd.DataFrame) -> None:
    spec = FeatureSpec()
    fs = build_samples(history, spec)
    t = fs.index[-1]
    recent = history.loc[:t].iloc[-spec.history_needed():]
    assert np.allclose(state_vector(recent, spec), fs.x[-1, : fs.n_state])
    with pytest.raises(FeatureError, match="needs 13 rows"):
        state_vector(recent.iloc[-5:], spec)
    assert np.allclose(current_setpoints(recent), history.loc[:t, list(SETPOINT_ROLES)].iloc[-2])
    # the latest row's setpoints are the decision being made: not needed
    no_decision = recent.copy()
    no_decision.loc[no_decision.index[-1], list(SETPOINT_ROLES)] = np.nan
    assert np.allclose(state_vector(no_decision, spec), fs.x[-1, : fs.n_state])
    holed = recent.copy()
    holed.loc[holed.index[-3:], "supply_air_c"] = np.nan
    with pytest.raises(FeatureError, match="supply_air_c"):
        state_vector(holed, spec)


def test_a_lone_dropout_is_bridged_for_inference_but_longer_gaps_are_not(
        history: pd.DataFrame) -> None:
    spec = FeatureSpec()
    fs = build_samples(history, spec)
    recent = history.loc[: fs.index[-1]].iloc[-spec.history_needed():]
    role = spec.rolling_roles[0]
    lone = recent.copy()
    lone.loc[lone.index[-4], role] = np.nan  # one dropout inside the rolling window
    bridged = bridge_single_gaps(lone)
    neighbours = (recent[role].iloc[-5] + recent[role].iloc[-3]) / 2.0
    assert bridged[role].iloc[-4] == pytest.approx(neighbours)
    assert np.isfinite(state_vector(lone, spec)).all()
    two = recent.copy()
    two.loc[two.index[-5:-3], role] = np.nan  # two in a row: still a gap
    assert bridge_single_gaps(two)[role].iloc[-5:-3].isna().all()
    with pytest.raises(FeatureError, match=role):
        state_vector(two, spec)
    newest = recent.copy()
    newest.loc[newest.index[-1], role] = np.nan  # not bridged; carried forward only on request
    assert np.isnan(bridge_single_gaps(newest)[role].iloc[-1])
    assert bridge_single_gaps(newest, carry_newest=True)[role].iloc[-1] == recent[role].iloc[-2]
    assert np.isfinite(state_vector(newest, spec)).all()
    two_newest = recent.copy()
    two_newest.loc[two_newest.index[-2:], role] = np.nan  # ten minutes without a reading: a gap
    with pytest.raises(FeatureError, match=role):
        state_vector(two_newest, spec)
    longer = history.loc[: fs.index[-1]].iloc[-spec.history_needed() - 1:].copy()
    longer.loc[longer.index[1], role] = np.nan  # a lone gap in the oldest row the state needs
    assert np.isfinite(state_vector(longer, spec)).all()


def test_spec_and_scaler_round_trip_as_plain_json() -> None:
    spec = FeatureSpec(horizon_steps=6, lag_steps=(1, 2))
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert spec.horizon_min == 30
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 3))
    x[:, 2] = 7.0  # constant column stays finite
    sc = Scaler.fit(x)
    back = Scaler.from_json(sc.to_json())
    assert np.allclose(back.inverse(back.transform(x)), x)
    assert np.isfinite(back.transform(x)).all()
    with pytest.raises(ValueError, match="non-positive"):
        Scaler.from_json({"mean": [0.0], "std": [0.0]})


def test_cleaning_removes_spikes_and_out_of_range_but_keeps_steps(history: pd.DataFrame) -> None:
    frame = history.iloc[:400].copy()
    at = frame.index
    rack, power, econ = "rack_inlet_max_c", "cooling_power_kw", "economizer_active"
    frame.loc[at[100], rack] = frame[rack].iloc[100] + 15.0  # a one-record temperature spike
    frame.loc[at[200], power] = frame[power].iloc[200] * 3.0  # a tripled meter reading
    frame.loc[at[300], econ] = -15.0  # outside the physical range [0, 1]
    frame.loc[at[150:], "supply_air_c"] = frame["supply_air_c"].iloc[150:] + 5.0  # a real step: kept
    mask = outlier_mask(frame)
    assert mask[rack].iloc[100] and mask[power].iloc[200] and mask[econ].iloc[300]
    assert not mask["supply_air_c"].any()
    assert not mask[list(SETPOINT_ROLES)].to_numpy().any()
    assert int(mask.to_numpy().sum()) == 3
    cleaned, removed = drop_outliers(frame)
    assert removed == 3 and np.isnan(cleaned[rack].iloc[100]) and cleaned[rack].iloc[99] == frame[rack].iloc[99]
    # an oscillation has no calm sides: nothing in it is called a spike
    wobble = history.iloc[:50].copy()
    wobble.loc[wobble.index[10:30], power] = np.where(np.arange(20) % 2 == 0, 100.0, 250.0)
    assert not outlier_mask(wobble)[power].any()
    # a jump that another measurement corroborates at the same record is the plant (a compressor
    # cycling moves cooling and IT power together), not a sensor: kept; alone it is a spike
    cycling = history.iloc[:50].copy()
    cycling.loc[cycling.index[20], power] *= 3.0
    assert outlier_mask(cycling)[power].iloc[20]
    cycling.loc[cycling.index[20], "it_power_kw"] *= 0.3
    assert not outlier_mask(cycling)[[power, "it_power_kw"]].iloc[20].any()
    # samples touching a removed reading are dropped and the removal is counted
    fs = build_samples(frame, FeatureSpec())
    assert fs.gaps.outliers_removed == 3
    t_spike = frame.index[100]
    assert t_spike not in fs.index and (t_spike - pd.Timedelta(minutes=5)) not in fs.index
