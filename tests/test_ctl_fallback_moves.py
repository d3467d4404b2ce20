"""The fallback's bends of the rules (`controller.fallback_moves`): only ever toward more cooling."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import controller.cycle as cycle
from controller.bounds import COIL_ROLES, SetpointEnvelope
from controller.fallback_moves import cool_down, no_warming
from db.roles import SETPOINT_ROLES
from tests._ctl_support import NOW, START_SETPOINTS, PhysicsForecaster, config, window

ENV = SetpointEnvelope()


def setpoints() -> st.SearchStrategy[dict[str, float]]:
    """A vector of the three setpoints anywhere in (and a little beyond) the default envelope [C]."""
    return st.fixed_dictionaries({
        role: st.floats(ENV.bounds(role).min_c - 2.0, ENV.bounds(role).max_c + 2.0) for role in SETPOINT_ROLES})


@settings(max_examples=300, deadline=None)
@given(setpoints(), setpoints())
def test_no_warming_never_sets_a_role_above_both_the_rules_and_the_reference(
        rules: dict[str, float], reference: dict[str, float]) -> None:
    out, held = no_warming(rules, reference)
    for role in SETPOINT_ROLES:
        assert out[role] == min(rules[role], reference[role])  # the cooler of the two, role by role
        assert (role in held) == (rules[role] > reference[role])


@settings(max_examples=300, deadline=None)
@given(setpoints(), setpoints(), st.sets(st.sampled_from(SETPOINT_ROLES)))
def test_no_warming_of_some_roles_holds_only_those_and_gives_the_others_the_rules(
        rules: dict[str, float], reference: dict[str, float], roles: set[str]) -> None:
    out, held = no_warming(rules, reference, roles)
    for role in SETPOINT_ROLES:
        assert out[role] == (min(rules[role], reference[role]) if role in roles else rules[role])
        assert (role in held) == (role in roles and rules[role] > reference[role])


@settings(max_examples=300, deadline=None)
@given(setpoints(), setpoints())
def test_cool_down_takes_supply_air_and_chilled_water_a_step_below_the_reference(
        rules: dict[str, float], reference: dict[str, float]) -> None:
    out, cooled = cool_down(rules, reference, ENV)
    for role in SETPOINT_ROLES:
        assert out[role] <= rules[role]  # never warmer than the rules
        if role in COIL_ROLES:
            assert out[role] <= reference[role] - ENV.bounds(role).max_step_k + 1e-12
            assert (role in cooled) == (rules[role] > reference[role] - ENV.bounds(role).max_step_k)
        else:
            assert out[role] == rules[role] and role not in cooled  # condenser water: the rules'


def test_a_cycle_whose_model_fears_heat_at_the_current_setpoints_cools_instead_of_following_warmer_rules() -> None:
    # the model puts the hottest inlet 8 K above physics: holding "reaches the 27 C limit"
    here = {**START_SETPOINTS, "supply_air_sp_c": 20.0}  # the tuned rules would warm supply air toward 23 C
    d = cycle.decide(config(), window(setpoints=here), NOW, PhysicsForecaster(inlet_offset_k=8.0), here)
    assert (d.outcome, d.reason_code) == ("fallback", "uncertain")
    assert "predicted too hot at the current setpoints: cooling" in d.reason
    assert d.new["supply_air_sp_c"] == 19.5  # one rate-limit step cooler, not toward the rules' 23 C
    assert d.new["chw_supply_sp_c"] <= here["chw_supply_sp_c"] - 0.5 + 1e-9
