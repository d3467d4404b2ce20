"""The rollout: candidates played forward on the twin's full dynamic model, exactly as the plant would."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import numpy as np
import pytest

from db.roles import SETPOINT_ROLES
from simulator.plant import ROLLOUT_KEYS, RolloutPlant
from simulator.plant_sim import make_plant

CANDIDATES = np.array([[10.0, 22.0, 27.0], [12.5, 25.5, 24.0], [5.0, 18.0, 20.0], [15.0, 27.0, 32.0]])


@pytest.mark.parametrize("start", [datetime(2023, 7, 15, 14, tzinfo=UTC), datetime(2023, 1, 15, 3, tzinfo=UTC)])
def test_a_rollout_is_what_the_plant_itself_does_and_leaves_the_plant_alone(start: datetime) -> None:
    plant = make_plant(start=start, seed=3)
    plant.advance(3600.0)
    assert isinstance(plant, RolloutPlant)
    now, reading, setpoints = plant.now, plant.read(), plant.setpoints()
    played = plant.rollout(CANDIDATES, 1800.0)
    assert set(ROLLOUT_KEYS) <= set(played)
    assert (plant.now, plant.read(), plant.setpoints()) == (now, reading, setpoints)  # nothing moved
    for i, row in enumerate(CANDIDATES):
        twin = copy.deepcopy(plant)
        twin.apply(dict(zip(SETPOINT_ROLES, row.tolist(), strict=True)))
        before, records = twin.totals(), []
        for _ in range(6):
            twin.advance(300.0)
            records.append(twin.true_record()["rack_inlet_max_c"])
        after = twin.totals()
        for key in ("cooling_kwh", "facility_kwh", "heat_rejected_kwh"):
            assert played[key][i] == pytest.approx(after[key] - before[key], rel=1e-9), key
        assert played["rack_inlet_end_c"][i] == pytest.approx(records[-1], abs=1e-9)  # the record at the end
        assert played["rack_inlet_max_c"][i] >= max(records) - 1e-9  # every step, not only records
        assert played["chillers_running"][i] == twin.true_state()["chillers_running"]
    assert len(set(np.round(played["cooling_kwh"], 6))) == len(CANDIDATES)  # the candidates really differ


def test_a_rollout_refuses_bad_candidates_and_horizons() -> None:
    plant = make_plant()
    with pytest.raises(ValueError, match="shape"):
        plant.rollout(np.zeros((2, 2)), 600.0)
    with pytest.raises(ValueError, match="finite"):
        plant.rollout(np.array([[10.0, np.nan, 27.0]]), 600.0)
    with pytest.raises(ValueError, match="positive horizon"):
        plant.rollout(CANDIDATES, 0.0)
