"""Closed-loop runs and exploration history: grid, columns, envelope, rate limits, share."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from controller.bounds import SetpointEnvelope
from coolpilot.harness.history import ExploringRules, generate_history, rules_decide, run_closed_loop
from db.roles import MEASUREMENT_ROLES, SETPOINT_ROLES
from simulator.plant_sim import make_plant
from simulator.sensors import SensorDefects

START = datetime(2023, 5, 20, tzinfo=UTC)


def test_run_closed_loop_gives_a_wide_frame_on_the_five_minute_grid() -> None:
    plant = make_plant(start=START)
    seen: list[datetime] = []
    frame = run_closed_loop(plant, rules_decide("legacy"), 0.5, on_record=lambda t, r, s: seen.append(t))
    assert len(frame) == 144 and len(seen) == 144
    assert list(frame.columns) == [*MEASUREMENT_ROLES, *SETPOINT_ROLES]
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert (frame.index.to_series().diff().dropna() == pd.Timedelta(minutes=5)).all()
    assert frame.index[0] == START
    # Legacy setpoints are reached at the rate limits and then held.
    assert frame["chw_supply_sp_c"].iloc[-1] == 7.0
    assert frame["chw_supply_sp_c"].diff().abs().max() <= 0.5 + 1e-9
    with pytest.raises(ValueError, match="days must be positive"):
        run_closed_loop(plant, rules_decide("legacy"), 0.0)


def test_exploration_stays_inside_bounds_and_rate_limits_and_hits_the_share() -> None:
    env = SetpointEnvelope()
    plant = make_plant(start=START, seed=3, sensor_defects=SensorDefects.clean())
    frame = generate_history(plant, 4.0, explore_share=0.3, seed=3, envelope=env)
    sp = frame[list(SETPOINT_ROLES)]
    for role in SETPOINT_ROLES:
        b = env.bounds(role)
        assert sp[role].between(b.min_c - 1e-9, b.max_c + 1e-9).all(), role
        assert sp[role].diff().abs().max() <= b.max_step_k + 1e-9, role
    assert ((sp["supply_air_sp_c"] - sp["chw_supply_sp_c"]) >= env.min_coil_approach_k - 1e-6).all()
    # Exploration really moves setpoints over most of their range.
    assert sp["chw_supply_sp_c"].max() - sp["chw_supply_sp_c"].min() > 4.0
    assert sp["cw_supply_sp_c"].max() - sp["cw_supply_sp_c"].min() > 6.0
    assert frame["rack_inlet_max_c"].max() < 27.5  # the hot guard keeps it safe


def test_exploring_share_converges_to_the_configured_share() -> None:
    policy = ExploringRules(0.25, np.random.default_rng(0), mean_episode_records=12.0)
    reading = {r: 20.0 for r in MEASUREMENT_ROLES}
    reading["it_power_kw"] = 700.0
    current = {"chw_supply_sp_c": 10.0, "supply_air_sp_c": 22.0, "cw_supply_sp_c": 25.0}
    for _ in range(20000):
        current = policy(reading, current)
    assert policy.explored_records / policy.records == pytest.approx(0.25, abs=0.04)
    with pytest.raises(ValueError, match="explore_share"):
        ExploringRules(1.5, np.random.default_rng(0))


def test_exploration_never_raises_setpoints_when_racks_run_hot() -> None:
    policy = ExploringRules(1.0, np.random.default_rng(1))
    hot = {r: 20.0 for r in MEASUREMENT_ROLES}
    hot["rack_inlet_max_c"] = 26.5
    current = {"chw_supply_sp_c": 10.0, "supply_air_sp_c": 20.0, "cw_supply_sp_c": 25.0}
    for _ in range(200):
        new = policy(hot, current)
        assert all(new[r] <= current[r] + 1e-9 for r in SETPOINT_ROLES)
        current = new
