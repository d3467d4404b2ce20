"""The oracle: inside the same box as any controller, and never worse than the tuned rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.bounds import SetpointEnvelope
from controller.safety import allowed_box, clamped_reference
from coolpilot.harness.history import RACK_INLET_LIMIT_C, rules_decide, run_closed_loop
from coolpilot.harness.oracle import HORIZON_S, oracle_decide, oracle_setpoints
from simulator.plant_sim import SimulatedPlant, make_plant
from simulator.sensors import SensorDefects


def _cooling_kwh(start: datetime, controller: str, days: float = 0.5) -> tuple[float, float]:
    plant = make_plant(start=start, sensor_defects=SensorDefects.clean())
    decide = oracle_decide(plant) if controller == "oracle" else rules_decide(controller)  # type: ignore[arg-type]
    truth: list[float] = []
    run_closed_loop(plant, decide, days, on_record=lambda *_: truth.append(plant.true_record()["rack_inlet_max_c"]))
    return plant.totals()["cooling_kwh"], max(truth)


@pytest.mark.parametrize("start", [datetime(2023, 7, 12, tzinfo=UTC), datetime(2023, 10, 12, tzinfo=UTC)])
def test_legacy_tuned_oracle_ordering_and_room_to_save(start: datetime) -> None:
    legacy, _ = _cooling_kwh(start, "legacy")
    tuned, _ = _cooling_kwh(start, "tuned")
    oracle, hottest = _cooling_kwh(start, "oracle")
    assert legacy > tuned > oracle
    assert oracle < 0.95 * tuned  # a learned controller has real room to save
    assert hottest <= 27.0 + 1e-6


def test_oracle_moves_only_inside_the_allowed_box() -> None:
    env = SetpointEnvelope()
    plant = make_plant(start=datetime(2023, 7, 12, 14, tzinfo=UTC), sensor_defects=SensorDefects.clean())
    current = plant.setpoints()
    choice = oracle_setpoints(plant, env)
    box = allowed_box(clamped_reference(current, env), env)
    for role, (lo, hi) in box.items():
        assert lo - 1e-9 <= choice[role] <= hi + 1e-9
    assert choice["supply_air_sp_c"] - choice["chw_supply_sp_c"] >= env.min_coil_approach_k - 1e-9
    assert choice["chw_supply_sp_c"] > current["chw_supply_sp_c"]  # warmer water pays in summer


def test_oracle_respects_a_tight_rack_limit() -> None:
    plant = make_plant(start=datetime(2023, 7, 12, 14, tzinfo=UTC), sensor_defects=SensorDefects.clean())
    assert plant.true_record()["rack_inlet_max_c"] > 23.0  # starts too hot for this limit
    initial = plant.setpoints()["supply_air_sp_c"]
    frame = run_closed_loop(plant, oracle_decide(plant, rack_inlet_limit_c=23.0), 0.25)
    assert frame["supply_air_sp_c"].iloc[-1] < initial
    assert plant.true_record()["rack_inlet_max_c"] <= 23.0 + 0.05


@pytest.mark.parametrize("start", [datetime(2023, 1, 15, 6, tzinfo=UTC), datetime(2023, 7, 15, 10, tzinfo=UTC)])
def test_the_dynamic_oracle_is_no_worse_than_the_quasi_steady_one_nor_the_rules(start: datetime) -> None:
    hours = 4.0
    used: dict[str, float] = {}
    for name in ("dynamic", "quasi_steady", "tuned"):
        plant = make_plant(start=start, seed=1, sensor_defects=SensorDefects.clean())
        horizon = None if name == "quasi_steady" else HORIZON_S

        def oracle(_: dict[str, float], current: dict[str, float], p: SimulatedPlant = plant,
                   h: float | None = horizon) -> dict[str, float]:
            return oracle_setpoints(p, reference=current, horizon_s=h)

        hottest: list[float] = []
        run_closed_loop(plant, rules_decide(name) if name in ("tuned", "legacy") else oracle,  # type: ignore[arg-type]
                        hours / 24.0, on_record=lambda *_, p=plant, h=hottest: h.append(p.true_record()["rack_inlet_max_c"]))
        used[name] = plant.totals()["cooling_kwh"]
        if name == "dynamic":
            assert max(hottest) <= RACK_INLET_LIMIT_C + 1e-6
    assert used["dynamic"] <= used["quasi_steady"] * 1.002
    assert used["dynamic"] < used["tuned"]
