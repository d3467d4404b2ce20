"""The two plant seams: every closed loop takes a `Plant`; the oracle needs a `SteadyStatePlant`."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from controller.bounds import SetpointEnvelope
from coolpilot.harness.oracle import oracle_setpoints
from simulator.plant import STEADY_STATE_KEYS, Plant, PlantFactory, SteadyStatePlant
from simulator.plant_sim import SimulatedPlant, make_plant
from simulator.sensors import SensorDefects
from tests._plain_plant import PlainPlant, make_plain_plant

START = datetime(2023, 7, 12, 14, tzinfo=UTC)


class SearchOnly:
    """Just what the oracle needs: the setpoints in force and a steady-state model."""

    def __init__(self, inner: SimulatedPlant) -> None:
        self._inner = inner

    def setpoints(self) -> dict[str, float]:
        return self._inner.setpoints()

    def steady_state(self, setpoints: np.ndarray) -> dict[str, np.ndarray]:
        return self._inner.steady_state(setpoints)


def test_the_simulator_is_both_a_plant_and_a_steady_state_plant() -> None:
    plant = make_plant(start=START)
    assert isinstance(plant, Plant)
    assert isinstance(plant, SteadyStatePlant)


def test_a_plant_without_a_model_is_not_a_steady_state_plant() -> None:
    plain = make_plain_plant(start=START)
    assert isinstance(plain, Plant)
    assert not isinstance(plain, SteadyStatePlant)
    built = PlantFactory("tests._plain_plant:make_plain_plant").build(start=START, seed=0)
    assert isinstance(built, PlainPlant) and not isinstance(built, SteadyStatePlant)


def test_steady_state_returns_every_key_the_oracle_reads() -> None:
    plant = make_plant(start=START)
    candidates = np.array([[10.0, 22.0, 27.0], [12.0, 24.0, 29.0], [8.0, 20.0, 25.0]])
    result = plant.steady_state(candidates)
    for key in STEADY_STATE_KEYS:
        assert np.asarray(result[key]).shape == (3,), key


def test_the_oracle_searches_any_steady_state_plant() -> None:
    env = SetpointEnvelope()
    simulated = make_plant(start=START, sensor_defects=SensorDefects.clean())
    search_only = SearchOnly(make_plant(start=START, sensor_defects=SensorDefects.clean()))
    assert isinstance(search_only, SteadyStatePlant) and not isinstance(search_only, Plant)
    # Without a dynamic model the oracle searches the quasi-steady one, as it would on the twin when told to.
    assert oracle_setpoints(search_only, env) == oracle_setpoints(simulated, env, horizon_s=None)
