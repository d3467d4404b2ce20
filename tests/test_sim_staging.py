"""Chiller staging: the last chiller stops once the economiser carries the load."""

from __future__ import annotations

from datetime import UTC, datetime

from simulator.plant_sim import make_plant
from simulator.sensors import SensorDefects

WINTER_NIGHT = datetime(2023, 1, 15, 3, tzinfo=UTC)


def test_a_winter_hour_the_economiser_covers_ends_with_no_chiller_on() -> None:
    plant = make_plant(start=WINTER_NIGHT, sensor_defects=SensorDefects.clean())
    # Water colder than the heat exchanger can make alone: a chiller starts to trim.
    plant.apply({"chw_supply_sp_c": 5.0, "supply_air_sp_c": 18.0, "cw_supply_sp_c": 20.0})
    plant.advance(1800.0)
    assert plant.true_state()["chillers_running"] == 1.0
    # The towers cool down, the exchanger takes over; the trim falls below the chiller's minimum load.
    plant.advance(2.0 * 3600.0)
    state = plant.true_state()
    assert state["economizer_active"] == 1.0
    assert state["chillers_running"] == 0.0
    assert state["chw_supply_c"] < 5.0 + 0.5  # the exchanger alone holds the water within 0.5 K


def test_the_last_chiller_stays_on_while_the_economiser_is_off() -> None:
    plant = make_plant(start=datetime(2023, 7, 15, 3, tzinfo=UTC), sensor_defects=SensorDefects.clean())
    plant.advance(2.0 * 3600.0)
    state = plant.true_state()
    assert state["economizer_active"] == 0.0
    assert state["chillers_running"] >= 1.0
