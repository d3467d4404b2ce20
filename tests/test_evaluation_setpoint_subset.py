"""The harness and the evaluation's config on a plant with only a supply-air setpoint.

As on the EnergyPlus models (and many sites): the digital twin behind a wrapper that
exposes and accepts only ``supply_air_sp_c`` (a write to any other setpoint is ignored,
as a BMS ignores a point it does not have). History, exploration, rules, the oracle and
CoolPilot's config must all work on exactly the setpoints the plant has.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from controller.bounds import RoleBounds, SetpointEnvelope
from controller.config import Config, parse_config
from coolpilot.evaluation.loops import baseline_control
from coolpilot.evaluation.plants import EvaluationError
from coolpilot.evaluation.run import ENERGYPLUS_SUPPLY_AIR, EvaluationOptions, design_it_kw, run_config
from coolpilot.harness.history import ExploringRules, generate_history, rules_decide, run_closed_loop
from coolpilot.harness.oracle import oracle_setpoints
from coolpilot.harness.sim_bridge import EnergyMeter, plant_energy_totals
from db.roles import SETPOINT_ROLES
from simulator.plant import Plant
from simulator.plant_sim import SimulatedPlant, make_plant
from simulator.sensors import SensorDefects

START = datetime(2023, 7, 10, tzinfo=UTC)
SA = "supply_air_sp_c"
SA_ONLY = SetpointEnvelope(roles={SA: RoleBounds(18.0, 27.0, 0.5)})


class SupplyAirOnly:
    """The twin with one setpoint: ``setpoints()`` has only supply air, ``apply()`` ignores the rest."""

    def __init__(self, inner: SimulatedPlant) -> None:
        self.inner = inner
        self.ignored: set[str] = set()

    @property
    def now(self) -> datetime:
        return self.inner.now

    @property
    def record_interval_s(self) -> float:
        return self.inner.record_interval_s

    def read(self) -> dict[str, float]:
        return self.inner.read()

    def setpoints(self) -> dict[str, float]:
        return {SA: self.inner.setpoints()[SA]}

    def apply(self, setpoints: Mapping[str, float]) -> None:
        self.ignored |= {r for r in setpoints if r != SA}
        if SA in setpoints:
            self.inner.apply({SA: setpoints[SA]})

    def advance(self, seconds: float) -> None:
        self.inner.advance(seconds)

    def energy_kwh(self) -> dict[str, float]:  # the EnergyPlus plant's name for its meter totals
        return self.inner.totals()


def _plant(seed: int = 2) -> SupplyAirOnly:
    return SupplyAirOnly(make_plant(start=START, seed=seed, sensor_defects=SensorDefects.clean()))


def test_history_on_a_supply_air_only_plant_explores_the_whole_envelope_safely() -> None:
    plant = _plant()
    assert isinstance(plant, Plant)
    history = generate_history(plant, 3.0, explore_share=0.6, seed=4, envelope=SetpointEnvelope())
    setpoint_columns = [c for c in history.columns if c in SETPOINT_ROLES]
    assert setpoint_columns == [SA]  # only the setpoint the plant has
    assert not plant.ignored  # nothing was commanded that the plant does not have
    default = SetpointEnvelope().bounds(SA)
    sa = history[SA]
    assert sa.between(default.min_c - 1e-9, default.max_c + 1e-9).all()
    assert sa.diff().abs().max() <= default.max_step_k + 1e-9
    # Exploration spans the envelope the optimiser searches, bottom to top.
    assert sa.min() <= default.min_c + 1.5, sa.min()
    assert sa.max() >= default.max_c - 1.5  # up to the top, or as far as the hot guard lets it
    assert history["rack_inlet_max_c"].max() < 27.5  # the hot guard keeps it safe


def test_rules_on_a_supply_air_only_plant_decide_only_that_setpoint() -> None:
    plant = _plant()
    decide = rules_decide("legacy", SetpointEnvelope())
    assert set(decide(plant.read(), plant.setpoints())) == {SA}
    frame = run_closed_loop(plant, decide, 0.25)
    assert [c for c in frame.columns if c in SETPOINT_ROLES] == [SA]
    assert frame[SA].iloc[-1] == pytest.approx(18.0)  # legacy supply air, reached at the rate limit
    # With a config envelope of all three setpoints, the tuned rules still write only supply air.
    tuned = rules_decide("tuned", Config().envelope())
    assert set(tuned(plant.read(), plant.setpoints())) == {SA}
    assert not plant.ignored


def test_exploration_draws_corners_and_holds_each_for_a_random_dwell() -> None:
    policy = ExploringRules(1.0, np.random.default_rng(3), envelope=SA_ONLY, corner_share=1.0,
                            dwell_records=(4, 8), mean_hold_records=float("inf"))  # no early redraws
    reading = {"rack_inlet_max_c": 20.0, "it_power_kw": 100.0}
    current = {SA: 22.0}
    seen = []
    for _ in range(3000):
        current = policy(reading, current)
        assert set(current) == {SA}
        seen.append(current[SA])
    values = pd.Series(seen)
    runs = values.groupby((values.diff().abs() > 1e-9).cumsum()).agg(["first", "size"])
    plateaus = runs[runs["size"] > 1]
    assert set(plateaus["first"].round(6)) <= {18.0, 27.0}  # every hold is at a corner
    assert {18.0, 27.0} <= set(plateaus["first"].round(6))
    held = plateaus["size"]
    assert held.min() >= 4  # at least the shortest dwell (the same corner twice in a row holds longer)
    assert held.nunique() > 1  # random dwells
    # Each target: up to 18 records of travel, one to notice it settled, then 4-8 records of dwell.
    assert 3000 / (18 + 1 + 8 + 1) <= policy.targets_drawn <= 3000 / (1 + 4)
    assert policy.corner_targets == policy.targets_drawn


def test_oracle_searches_only_the_setpoints_the_envelope_and_plant_have() -> None:
    plant = make_plant(start=START, seed=1)
    best = oracle_setpoints(plant, SA_ONLY, 27.0)
    assert set(best) == {SA}
    assert 18.0 <= best[SA] <= 27.0
    assert abs(best[SA] - plant.setpoints()[SA]) <= 0.5 + 1e-9  # within the rate limit of one step


def test_run_config_controls_exactly_the_plants_setpoints() -> None:
    config = run_config(None, (SA,), "energyplus", design_it_kw=95.0)
    assert config.mode == "auto"
    assert config.control.setpoints == (SA,)
    env = config.envelope()
    assert env.setpoint_roles == (SA,) and not env.coupled
    b = env.bounds(SA)
    assert (b.min_c, b.max_c, b.max_step_k) == (ENERGYPLUS_SUPPLY_AIR.min_c, ENERGYPLUS_SUPPLY_AIR.max_c, 0.5)
    assert config.rules.design_it_kw == 95.0
    # The twin keeps the controller's default bounds and all three setpoints.
    twin = run_config(None, SETPOINT_ROLES, "twin")
    assert twin.control.setpoints == SETPOINT_ROLES
    assert twin.setpoints[SA] == Config().setpoints[SA]
    # The operator's own bounds and design load win.
    own = parse_config("[setpoints.supply_air_sp_c]\nmin_c = 16.0\nmax_c = 24.0\nmax_step_k = 1.0\n"
                       "[rules]\ndesign_it_kw = 120.0\n")
    mine = run_config(own, (SA,), "energyplus", design_it_kw=95.0)
    assert (mine.setpoints[SA].min_c, mine.rules.design_it_kw) == (16.0, 120.0)


def test_run_config_refuses_a_setpoint_the_plant_lacks() -> None:
    config = parse_config('[control]\nsetpoints = ["chw_supply_sp_c", "supply_air_sp_c"]\n')
    with pytest.raises(EvaluationError, match="names chw_supply_sp_c, which the plant does not have"):
        run_config(config, (SA,), "energyplus")
    narrowed = run_config(parse_config('[control]\nsetpoints = ["supply_air_sp_c"]\n'), SETPOINT_ROLES, "twin")
    assert narrowed.control.setpoints == (SA,)  # a config may control fewer than the plant has


def test_design_it_load_is_the_99th_percentile_of_the_history() -> None:
    history = pd.DataFrame({"it_power_kw": np.r_[np.linspace(50.0, 149.0, 100), [np.nan, 0.0]]})
    assert design_it_kw(history) == pytest.approx(np.percentile(np.linspace(50.0, 149.0, 100), 99.0))
    assert design_it_kw(pd.DataFrame({"cooling_power_kw": [1.0]})) is None


def test_own_controls_baseline_needs_a_plant_that_keeps_them() -> None:
    note = baseline_control("own_controls", _plant(), SA_ONLY, 27.0)
    assert isinstance(note, str) and "no controls of its own" in note
    plant = _plant()
    plant.own_controls = True  # type: ignore[attr-defined]
    control = baseline_control("own_controls", plant, SA_ONLY, 27.0)
    assert callable(control)
    before = plant.setpoints()
    control()
    assert plant.setpoints() == before  # applies nothing


def test_energy_totals_are_read_from_energy_kwh_where_there_is_no_totals() -> None:
    plant = _plant()
    meter = EnergyMeter(plant)
    plant.advance(3600.0)
    totals = plant_energy_totals(plant)
    assert totals is not None and totals["facility_kwh"] > 0
    used = meter.used()
    assert used["cooling_kwh"] > 0 and used["facility_kwh"] >= used["it_kwh"] + used["cooling_kwh"] - 1e-6
    assert plant_energy_totals(object()) is None


def test_options_name_the_plant_family() -> None:
    assert EvaluationOptions().family == "twin"
    assert EvaluationOptions(energyplus="crac").family == "energyplus"
    via_plant = EvaluationOptions(plant="simulator.energyplus:make_plant")
    assert (via_plant.family, via_plant.energyplus) == ("energyplus", "2zone")
    with pytest.raises(EvaluationError, match="exclude each other"):
        EvaluationOptions(energyplus="crac", plant="tests._plain_plant:make_plain_plant")
    with pytest.raises(EvaluationError, match="--workload does not apply"):
        EvaluationOptions(point_map="site.toml", workload="util.csv")
