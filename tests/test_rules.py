"""Rule presets: fixed legacy values, tuned resets, safe output for any input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.bounds import RoleBounds, SetpointEnvelope
from controller.rules import LegacyRules, TunedRules, clamp_to_envelope, rule_setpoints
from db.roles import MEASUREMENT_ROLES, SETPOINT_ROLES

ENV = SetpointEnvelope()
TYPICAL = {"it_power_kw": 700.0, "outdoor_wetbulb_c": 20.0, "rack_inlet_max_c": 24.0}


def test_legacy_is_fixed_and_conservative() -> None:
    a = rule_setpoints("legacy", TYPICAL)
    b = rule_setpoints("legacy", {})
    assert a == b == {"chw_supply_sp_c": 7.0, "supply_air_sp_c": 18.0, "cw_supply_sp_c": 29.4}


def test_tuned_resets_with_load_weather_and_hot_racks() -> None:
    hall = TunedRules(design_it_kw=1000.0)  # the load reset scales with the hall's own design load
    light = rule_setpoints("tuned", {**TYPICAL, "it_power_kw": 400.0}, tuned=hall)
    heavy = rule_setpoints("tuned", {**TYPICAL, "it_power_kw": 950.0}, tuned=hall)
    assert light["chw_supply_sp_c"] > heavy["chw_supply_sp_c"]
    small = TunedRules(design_it_kw=100.0)  # a 100 kW hall at 95 kW is at full load, not light load
    assert rule_setpoints("tuned", {**TYPICAL, "it_power_kw": 95.0}, tuned=small)["chw_supply_sp_c"] == \
        pytest.approx(rule_setpoints("tuned", {**TYPICAL, "it_power_kw": 950.0}, tuned=hall)["chw_supply_sp_c"])
    cool = rule_setpoints("tuned", {**TYPICAL, "outdoor_wetbulb_c": 5.0})
    assert cool["chw_supply_sp_c"] > rule_setpoints("tuned", TYPICAL)["chw_supply_sp_c"]  # economiser season
    assert rule_setpoints("tuned", TYPICAL)["cw_supply_sp_c"] == pytest.approx(20.0 + TunedRules().cw_approach_k)
    assert rule_setpoints("tuned", {**TYPICAL, "outdoor_wetbulb_c": -10.0})["cw_supply_sp_c"] == TunedRules().cw_min_c
    hot = rule_setpoints("tuned", {**TYPICAL, "rack_inlet_max_c": 27.0})
    assert hot["supply_air_sp_c"] == pytest.approx(TunedRules().supply_air_c - 1.5)
    # Tuned runs warmer than legacy everywhere it matters.
    legacy = rule_setpoints("legacy", TYPICAL)
    tuned = rule_setpoints("tuned", TYPICAL)
    assert tuned["chw_supply_sp_c"] > legacy["chw_supply_sp_c"] and tuned["supply_air_sp_c"] > legacy["supply_air_sp_c"]


def test_missing_data_gives_conservative_setpoints() -> None:
    blind = rule_setpoints("tuned", {"it_power_kw": math.nan, "outdoor_wetbulb_c": math.inf})
    normal = rule_setpoints("tuned", TYPICAL)
    assert blind["chw_supply_sp_c"] <= normal["chw_supply_sp_c"]
    assert blind["supply_air_sp_c"] < normal["supply_air_sp_c"]  # no rack reading: do not run warm blind
    assert blind["cw_supply_sp_c"] == TunedRules().fallback_cw_c


readings = st.dictionaries(
    st.sampled_from(MEASUREMENT_ROLES),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1000, 1000), st.none(), st.text(max_size=3)),
)


@settings(max_examples=300, deadline=None)
@given(preset=st.sampled_from(["legacy", "tuned"]), snapshot=readings)
def test_any_snapshot_gives_finite_setpoints_inside_the_envelope(preset: str, snapshot: dict[str, object]) -> None:
    out = rule_setpoints(preset, snapshot, ENV)  # type: ignore[arg-type]
    assert set(out) == set(SETPOINT_ROLES)
    for role, value in out.items():
        b = ENV.bounds(role)
        assert math.isfinite(value) and b.min_c <= value <= b.max_c
    assert out["supply_air_sp_c"] - out["chw_supply_sp_c"] >= ENV.min_coil_approach_k - 1e-9


def test_clamping_keeps_the_coil_approach_by_lowering_chilled_water_first() -> None:
    tight = SetpointEnvelope(roles={
        "chw_supply_sp_c": RoleBounds(8.0, 14.0, 0.5),
        "supply_air_sp_c": RoleBounds(16.0, 19.0, 0.5),
        "cw_supply_sp_c": RoleBounds(20.0, 30.0, 1.0),
    })
    out = clamp_to_envelope({"chw_supply_sp_c": 14.0, "supply_air_sp_c": 12.0, "cw_supply_sp_c": 40.0}, tight)
    assert out == {"chw_supply_sp_c": 13.0, "supply_air_sp_c": 16.0, "cw_supply_sp_c": 30.0}
    floor = SetpointEnvelope(roles={**tight.roles, "chw_supply_sp_c": RoleBounds(14.0, 16.0, 0.5)})
    out = clamp_to_envelope({"chw_supply_sp_c": 14.0, "supply_air_sp_c": 16.0, "cw_supply_sp_c": 25.0}, floor)
    assert out["chw_supply_sp_c"] == 14.0 and out["supply_air_sp_c"] == 17.0  # chilled water at its floor: air rises
    custom = rule_setpoints("legacy", {}, legacy=LegacyRules(chw_supply_c=9.0))
    assert custom["chw_supply_sp_c"] == 9.0
    with pytest.raises(ValueError, match="unknown rule preset"):
        rule_setpoints("clever", {})  # type: ignore[arg-type]


def test_tuned_without_a_design_load_runs_mid_band_chilled_water() -> None:
    # unknown design load: neither the light-load nor the full-load end, whatever the IT power
    r = TunedRules()
    mid = 0.5 * (r.chw_light_load_c + r.chw_full_load_c)
    for it_kw in (50.0, 400.0, 5000.0):
        assert rule_setpoints("tuned", {**TYPICAL, "it_power_kw": it_kw})["chw_supply_sp_c"] == pytest.approx(mid)


def test_rules_return_only_the_controlled_setpoints() -> None:
    env = SetpointEnvelope(roles={"supply_air_sp_c": RoleBounds(18.0, 27.0, 0.5)})
    assert set(rule_setpoints("tuned", TYPICAL, env)) == {"supply_air_sp_c"}
    assert rule_setpoints("legacy", TYPICAL, env) == {"supply_air_sp_c": 18.0}
