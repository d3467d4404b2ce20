"""Hot spots that depend on load and airflow: safety on the twin must be earned, not given by a bound."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from controller.rules import Preset
from coolpilot.harness.history import RACK_INLET_LIMIT_C, rules_decide, run_closed_loop
from simulator.config import LoadVariation, PlantConfig
from simulator.plant_sim import SimulatedPlant, make_plant
from simulator.sensors import SensorDefects

AFTERNOON = datetime(2023, 7, 15, 14, tzinfo=UTC)
SETPOINTS = np.array([[10.0, 22.0, 27.0]])


def _steady_plant(tmp_path: Path, utilisation: float) -> SimulatedPlant:
    trace = tmp_path / f"u{utilisation}.csv"
    trace.write_text("cpu_load\n" + f"{utilisation}\n" * 48, encoding="utf-8")
    return make_plant(workload=trace, start=AFTERNOON, config=PlantConfig(load=LoadVariation(enabled=False)),
                      sensor_defects=SensorDefects.clean())


def _hotspot_k(plant: SimulatedPlant) -> float:
    r = plant.steady_state(SETPOINTS)
    return float(r["rack_inlet_max_c"][0] - r["supply_air_c"][0])


def test_the_hot_spot_grows_with_load_from_the_even_hall_offset(tmp_path: Path) -> None:
    offsets = [_hotspot_k(_steady_plant(tmp_path, u)) for u in (0.3, 0.5, 0.7, 0.9)]
    assert offsets[0] == pytest.approx(PlantConfig().airside.hotspot_offset_k, abs=0.05)  # CRAH margin covers the busiest row
    assert all(b > a + 0.3 for a, b in itertools.pairwise(offsets))  # busier rows outrun their air
    assert offsets[-1] < 3.0  # physically modest: a few K, as in contained halls


def test_the_hot_spot_grows_when_air_handlers_fall_short(tmp_path: Path) -> None:
    plant = _steady_plant(tmp_path, 0.7)
    before = _hotspot_k(plant)
    plant.inject_fault("crah_failure", count=4)  # 6 of 10 units left: less air than the servers pull
    state = plant.steady_state(SETPOINTS)
    assert plant.true_state()["crah_airflow_m3_s"] < plant.true_state()["server_airflow_m3_s"]
    assert float(state["rack_inlet_max_c"][0] - state["supply_air_c"][0]) > before + 2.0


@pytest.mark.parametrize("preset", ["legacy", "tuned"])
def test_the_rules_stay_below_27_c_on_a_busy_summer_day_with_the_default_bounds(preset: Preset) -> None:
    plant = make_plant(start=datetime(2023, 7, 17, tzinfo=UTC), sensor_defects=SensorDefects.clean())
    hottest: list[float] = []
    offsets: list[float] = []

    def note(*_: object) -> None:
        truth = plant.true_record()
        hottest.append(truth["rack_inlet_max_c"])
        offsets.append(truth["rack_inlet_max_c"] - truth["supply_air_c"])

    run_closed_loop(plant, rules_decide(preset), 1.0, on_record=note)
    assert max(hottest) <= RACK_INLET_LIMIT_C
    assert max(offsets) - min(offsets) > 0.3  # the offset moves with the load through the day
