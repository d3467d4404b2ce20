"""Sensor defects and equipment faults appear, and at the configured rates."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from coolpilot.harness.history import rules_decide, run_closed_loop
from db.roles import MEASUREMENT_ROLES, ROLES
from simulator.config import FaultRates, PlantConfig
from simulator.plant_sim import make_plant
from simulator.sensors import SensorBank, SensorDefects

START = datetime(2023, 7, 12, tzinfo=UTC)


def _within(observed: int, trials: int, p: float, sigmas: float = 5.0) -> bool:
    expected = trials * p
    return abs(observed - expected) <= sigmas * math.sqrt(trials * p * (1.0 - p)) + 1.0


def test_dropouts_and_spikes_at_configured_rates() -> None:
    defects = SensorDefects(dropout_rate=0.05, spike_rate=0.02, stuck_rate=0.0)
    roles = tuple(r for r in MEASUREMENT_ROLES if ROLES[r].unit == "C")
    bank = SensorBank(roles, defects, np.random.default_rng(1))
    truth = np.full(len(roles), 20.0)
    readings = np.array([bank.read(truth) for _ in range(3000)])
    n = readings.size
    assert _within(int(np.isnan(readings).sum()), n, 0.05)
    spikes = np.abs(readings - 20.0) > 5.0  # noise is 0.1 K; spikes are 15 K
    assert _within(int(spikes.sum()), n, 0.02 * 0.95)  # a spike can still drop out
    clean = readings[~np.isnan(readings) & ~spikes]
    assert clean.std() == pytest.approx(defects.temperature_noise_k, rel=0.1)


def test_stuck_sensors_start_at_the_configured_rate_and_hold_their_last_value() -> None:
    defects = SensorDefects(dropout_rate=0.0, spike_rate=0.0, stuck_rate=0.01, stuck_mean_records=5.0)
    roles = ("chw_supply_c", "it_power_kw")
    bank = SensorBank(roles, defects, np.random.default_rng(2))
    rng = np.random.default_rng(3)
    readings = np.array([bank.read(np.array([10.0, 700.0]) + rng.normal(0, 1, 2)) for _ in range(20000)])
    repeated = readings[1:] == readings[:-1]  # the true values never repeat, so equal means stuck
    onsets = int((repeated[1:] & ~repeated[:-1]).sum())
    healthy = int((~repeated).sum())
    assert _within(onsets, healthy, 0.01)
    run_lengths = repeated.sum() / max(onsets, 1)
    assert 3.5 < run_lengths < 6.5  # geometric with mean 5 records


def test_clean_sensors_report_the_truth() -> None:
    plant = make_plant(start=START, sensor_defects=SensorDefects.clean())
    plant.advance(3600)
    assert plant.read() == plant.true_record()


def test_chiller_trip_leaves_the_plant_short_until_a_standby_starts() -> None:
    plant = make_plant(start=START.replace(hour=15), sensor_defects=SensorDefects.clean())
    plant.advance(1800)
    before = plant.true_state()
    assert before["chillers_running"] == 2.0
    plant.inject_fault("chiller_trip", count=2)  # two of three: the last one cannot carry the load
    plant.advance(3600)
    during = plant.true_state()
    assert during["chillers_available"] == 1.0 and during["chillers_running"] == 1.0
    assert during["unmet_load_kw"] > 50.0
    assert during["chw_supply_c"] > before["chw_supply_c"] + 1.0  # the loop warms ...
    assert during["supply_air_c"] >= before["supply_air_c"]  # ... and the hall follows
    assert plant.clear_fault("chiller_trip") == 1
    plant.advance(3 * 3600)
    after = plant.true_state()
    assert after["chillers_running"] >= 2.0 and after["unmet_load_kw"] == 0.0
    assert after["chw_supply_c"] == pytest.approx(before["chw_supply_c"], abs=0.2)
    kinds = [(e.kind, e.action) for e in plant.fault_log()]
    assert kinds == [("chiller_trip", "start"), ("chiller_trip", "end")]


def test_air_handler_failure_recirculates_hot_air() -> None:
    plant = make_plant(start=START.replace(hour=15), sensor_defects=SensorDefects.clean())
    plant.advance(1800)
    before = plant.true_state()
    plant.inject_fault("crah_failure", count=5)
    plant.advance(3600)
    during = plant.true_state()
    assert during["crahs_available"] == 5.0
    assert during["rack_inlet_max_c"] > before["rack_inlet_max_c"] + 2.0
    assert during["crah_fan_power_kw"] > before["crah_fan_power_kw"]  # the rest run flat out


def test_failed_sensor_modes() -> None:
    plant = make_plant(start=START, sensor_defects=SensorDefects.clean())
    plant.inject_fault("sensor_failure", role="rack_inlet_max_c", mode="dropout")
    plant.inject_fault("sensor_failure", role="cw_supply_c", mode="offset", offset=4.0)
    plant.advance(300)
    plant.inject_fault("sensor_failure", role="it_power_kw", mode="stuck")
    stuck_at = plant.read()["it_power_kw"]
    for _ in range(6):
        plant.advance(3600)
        r, t = plant.read(), plant.true_record()
        assert math.isnan(r["rack_inlet_max_c"])
        assert r["cw_supply_c"] == pytest.approx(t["cw_supply_c"] + 4.0)
        assert r["it_power_kw"] == stuck_at
    assert t["it_power_kw"] != stuck_at
    plant.clear_fault("sensor_failure", role="rack_inlet_max_c")
    plant.advance(300)
    assert not math.isnan(plant.read()["rack_inlet_max_c"])
    with pytest.raises(ValueError, match="unknown fault kind"):
        plant.inject_fault("meteor")
    with pytest.raises(ValueError, match="role="):
        plant.inject_fault("sensor_failure", role="nope")
    with pytest.raises(ValueError, match="positive integer"):
        plant.inject_fault("chiller_trip", count=0)


def test_random_faults_arrive_at_the_configured_rates() -> None:
    per_year = 365.0 * 6.0  # six a day of each kind
    config = dataclasses.replace(
        PlantConfig(),
        faults=FaultRates(chiller_trips_per_year=per_year, crah_failures_per_year=per_year,
                          sensor_failures_per_year=per_year, mean_repair_h=1.0),
    )
    plant = make_plant(start=START, config=config, seed=4)
    days = 10.0
    frame = run_closed_loop(plant, rules_decide("tuned"), days)
    starts = pd.Series([e.kind for e in plant.fault_log() if e.action == "start"]).value_counts()
    expected = 6.0 * days
    for kind in ("chiller_trip", "crah_failure", "sensor_failure"):
        assert abs(starts[kind] - expected) <= 5.0 * math.sqrt(expected), kind
    ends = sum(1 for e in plant.fault_log() if e.action == "end")
    assert ends >= 0.9 * starts.sum()  # repairs after about an hour
    assert frame["chillers_running"].min() < frame["chillers_running"].max()
