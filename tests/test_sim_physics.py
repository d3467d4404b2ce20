"""Pure physics of the plant components: published anchors, monotonic trade-offs, consistency."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import airside, chiller, economizer, hydronics, tower
from simulator.config import AirsideConfig, ChillerConfig, PlantConfig, PumpConfig, ServerConfig, TowerConfig
from simulator.operating_point import OperatingInputs, PlantConstants, operating_point

CH = ChillerConfig()
TW = TowerConfig()


def test_chiller_reference_point_gives_reference_cop() -> None:
    # DOE-2 curves are normalised to 1 at 6.67 C / 29.4 C: full load there runs at COPref.
    q = chiller.unit_capacity_kw(CH, 6.67, 29.4)
    power = chiller.chiller_power_kw(CH, q, 6.67, 29.4, 1.0)
    assert q == pytest.approx(CH.capacity_kw, rel=0.01)
    assert q / power == pytest.approx(CH.cop_ref, rel=0.02)


@settings(max_examples=200, deadline=None)
@given(
    chw=st.floats(5.0, 15.5),
    cw=st.floats(14.0, 35.0),
    plr=st.floats(0.4, 0.95),
    running=st.integers(1, 3),
)
def test_warmer_chilled_water_lowers_chiller_power_at_equal_load(chw: float, cw: float, plr: float, running: int) -> None:
    # Below about 0.4 part load with cool condenser water, the DOE-2 curves' no-load term,
    # which scales with the capacity warmer water adds, can outweigh the gain by a few
    # tens of watts (documented in docs/simulator.md); staging keeps chillers above it.
    load = plr * running * chiller.unit_capacity_kw(CH, chw, cw)
    n = float(running)
    assert chiller.chiller_power_kw(CH, load, chw + 0.5, cw, n) <= chiller.chiller_power_kw(CH, load, chw, cw, n) + 1e-9


@settings(max_examples=200, deadline=None)
@given(chw=st.floats(5.0, 16.0), cw=st.floats(10.0, 34.5), plr=st.floats(0.15, 0.9), running=st.integers(1, 3))
def test_colder_condenser_water_lowers_chiller_power_at_equal_load(chw: float, cw: float, plr: float, running: int) -> None:
    load = plr * running * chiller.unit_capacity_kw(CH, chw, cw + 0.5)
    n = float(running)
    assert chiller.chiller_power_kw(CH, load, chw, cw, n) <= chiller.chiller_power_kw(CH, load, chw, cw + 0.5, n) + 1e-9


def test_chiller_savings_per_kelvin_match_the_rule_of_thumb() -> None:
    # REFERENCE: roughly 2-3 % less chiller power per +1 K of chilled water.
    load = 450.0
    p10 = chiller.chiller_power_kw(CH, load, 10.0, 29.4, 1.0)
    p14 = chiller.chiller_power_kw(CH, load, 14.0, 29.4, 1.0)
    per_k = (1.0 - p14 / p10) / 4.0
    assert 0.015 <= per_k <= 0.035


def test_staging_runs_the_fewest_chillers_below_the_stage_up_part_load() -> None:
    cap = 600.0
    assert chiller.chillers_needed(CH, 500.0, cap, 3.0) == 1.0
    assert chiller.chillers_needed(CH, 600.0, cap, 3.0) == 2.0
    assert chiller.chillers_needed(CH, 5000.0, cap, 3.0) == 3.0  # never more than available
    assert chiller.chillers_needed(CH, 20.0, cap, 3.0) == 0.0  # economiser leftover below min part load


def test_yorkcalc_is_scaled_to_the_design_point() -> None:
    ratio = tower.design_water_ratio(TW)
    assert tower.approach_k(TW, TW.design_wetbulb_c, TW.design_range_k, ratio) == pytest.approx(TW.design_approach_k, abs=1e-6)


def test_tower_approach_grows_with_range_and_liquid_gas_ratio_and_at_low_wetbulb() -> None:
    assert tower.approach_k(TW, 20.0, 6.0, 1.0) > tower.approach_k(TW, 20.0, 4.0, 1.0)
    assert tower.approach_k(TW, 20.0, 5.0, 2.0) > tower.approach_k(TW, 20.0, 5.0, 1.0)
    assert tower.approach_k(TW, 0.0, 5.0, 1.0) > tower.approach_k(TW, 20.0, 5.0, 1.0)


def test_tower_fan_power_is_cubic_in_speed_and_targets_below_reach_are_not_met() -> None:
    ratio = tower.design_water_ratio(TW)
    targets = np.linspace(18.0, 30.0, 40)
    leaving, speed, power = tower.tower_operation(TW, 15.0, targets * 0 + 5.0, targets * 0 + 1.0, targets, ratio)
    running = speed > 0.05
    full = TW.cells * TW.fan_power_per_cell_kw
    np.testing.assert_allclose(power[running], full * speed[running] ** 3, rtol=1e-9)
    assert np.all(np.diff(speed) <= 1e-12)  # a warmer target never needs more fan
    assert np.all(leaving >= targets - 1e-9)  # never colder than asked
    assert np.all(leaving >= 15.0 + TW.min_approach_k - 1e-9)  # never below wet-bulb + minimum approach
    unreachable = targets < leaving - 1e-6
    assert unreachable.any() and np.all(speed[unreachable] == 1.0)


def test_coil_needs_more_water_as_supply_air_approaches_chilled_water() -> None:
    cfg = AirsideConfig()
    ua = airside.coil_design_ua_kw_per_k(cfg)
    q, v = cfg.design_duty_per_crah_kw, cfg.airflow_per_crah_m3_s
    approaches = np.linspace(3.0, 10.0, 20)
    rise = airside.coil_water_rise_k(approaches * 0 + q, approaches * 0 + v, approaches * 0 + ua, approaches)
    flow = q / (4.186 * rise)
    assert np.all(np.diff(flow) < 0)
    # The design point: design approach at design water rise.
    assert airside.coil_water_rise_k(q, v, ua, cfg.design_approach_k) == pytest.approx(cfg.design_water_rise_k, rel=1e-6)
    # With valves wide open the coil gets closer than at design flow, but not arbitrarily close.
    design_flow = airside.coil_design_water_flow_kg_s(cfg)
    a_min = airside.coil_min_approach_k(q, v, ua, design_flow * cfg.max_water_flow_ratio)
    assert 1.0 < a_min < cfg.design_approach_k
    assert airside.coil_min_approach_k(q, v, ua, design_flow) == pytest.approx(cfg.design_approach_k, rel=1e-6)


def test_it_power_and_server_airflow_rise_only_above_the_knee() -> None:
    cfg = ServerConfig()
    base = 800.0
    assert airside.it_power_kw(cfg, base, 20.0) == airside.it_power_kw(cfg, base, cfg.fan_knee_c) == base
    hot = airside.it_power_kw(cfg, base, 30.0)
    assert base * 1.01 < hot < base * 1.15  # a few percent, as servers do
    assert airside.server_airflow_m3_s(cfg, base, 30.0) > airside.server_airflow_m3_s(cfg, base, 24.0)


def test_recirculation_heats_rack_inlets_only_when_crahs_move_less_air_than_servers_pull() -> None:
    cfg = AirsideConfig()
    assert airside.recirculation_rise_k(cfg, 50.0, 55.0, 700.0) == 0.0
    rise = airside.recirculation_rise_k(cfg, 50.0, 40.0, 700.0)
    dt_server = 700.0 / (airside.AIR_KW_PER_M3_S_K * 50.0)
    assert rise == pytest.approx(dt_server * 0.2 / 0.8)


def test_pump_power_follows_the_affinity_law() -> None:
    cfg = PumpConfig()
    design = 40.0
    full = hydronics.chw_pump_power_kw(cfg, design, design)
    assert full == pytest.approx(hydronics.pump_design_power_kw(cfg.chw_design_dp_kpa, design, cfg.chw_efficiency))
    assert hydronics.chw_pump_power_kw(cfg, 0.5 * design, design) == pytest.approx(full / 8.0)
    # 160 kPa * 0.04 m3/s / 0.87 = 7.36 kW
    assert full == pytest.approx(160.0 * 0.040 / 0.87)


def test_economiser_share() -> None:
    assert economizer.economizer_share(8.0, 1.5, 10.0, 18.0) == 1.0  # full free cooling
    assert economizer.economizer_share(20.0, 1.5, 10.0, 18.0) == 0.0  # tower water too warm
    assert economizer.economizer_share(12.5, 1.5, 10.0, 18.0) == pytest.approx(0.5)


def _point(k: PlantConstants, chw: Any, sa: Any, cw: Any, wb: float) -> Any:
    return operating_point(k, OperatingInputs(
        wetbulb_c=wb, base_it_power_kw=750.0, chw_supply_sp_c=chw, supply_air_sp_c=sa, cw_supply_sp_c=cw,
        chw_supply_c=chw, supply_air_c=sa, rack_inlet_mean_c=sa + 0.5, cw_supply_c=cw,
        chillers_available=3.0, crahs_available=10.0,
    ))


def test_operating_point_is_the_same_physics_on_floats_and_on_arrays() -> None:
    k = PlantConstants.from_config(PlantConfig())
    rng = np.random.default_rng(3)
    chw = rng.uniform(6.0, 16.0, 25)
    sa = chw + rng.uniform(3.0, 9.0, 25)
    cw = rng.uniform(16.0, 32.0, 25)
    for wb in (-5.0, 12.0, 24.0):
        arrays = _point(k, chw, sa, cw, wb)
        for i in range(len(chw)):
            scalar = _point(k, float(chw[i]), float(sa[i]), float(cw[i]), wb)
            for name, value in scalar._asdict().items():
                assert getattr(arrays, name)[i] == pytest.approx(value, rel=1e-9, abs=1e-9), name


def test_operating_point_closes_the_energy_balance() -> None:
    k = PlantConstants.from_config(PlantConfig())
    op = _point(k, 10.0, 22.0, 27.0, 18.0)
    inputs = op.it_power_kw + op.crah_fan_power_kw + op.chw_pump_power_kw + op.chiller_power_kw + op.cw_pump_power_kw
    assert op.heat_rejected_kw == pytest.approx(inputs, rel=1e-9)  # at rest: no storage


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="step_s"):
        PlantConfig(dynamics=dataclasses.replace(PlantConfig().dynamics, step_s=120.0))
    with pytest.raises(ValueError, match="idle_fraction"):
        PlantConfig(servers=ServerConfig(idle_fraction=1.5))
    assert math.isfinite(PlantConstants.from_config(PlantConfig()).coil_design_ua_kw_per_k)
