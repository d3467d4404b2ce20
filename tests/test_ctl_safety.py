"""The safety gate and the independent verification layer, property-tested."""

from __future__ import annotations

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controller.bounds import RoleBounds, SetpointEnvelope
from controller.safety import clamped_reference, gate, hot_guard_active, verify
from db.roles import SETPOINT_ROLES

TOL = 1e-6
CHW, SA, CW = SETPOINT_ROLES

any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-50, max_value=80),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 0.0]),
)


@st.composite
def envelopes(draw: st.DrawFn) -> SetpointEnvelope:
    roles = {}
    for role, (lo, hi) in {CHW: (4.0, 18.0), SA: (12.0, 30.0), CW: (12.0, 35.0)}.items():
        a = draw(st.floats(lo, hi))
        b = draw(st.floats(lo, hi))
        roles[role] = RoleBounds(min_c=min(a, b), max_c=max(a, b), max_step_k=draw(st.floats(0.05, 3.0)))
    approach = draw(st.floats(0.0, 6.0))
    assume(roles[SA].max_c - roles[CHW].min_c >= approach)
    return SetpointEnvelope(roles=roles, min_coil_approach_k=approach)


def valid_point(draw: st.DrawFn, env: SetpointEnvelope) -> dict[str, float]:
    """A setpoint vector inside the bounds that keeps the coil approach."""
    point = {r: draw(st.floats(env.bounds(r).min_c, env.bounds(r).max_c)) for r in SETPOINT_ROLES}
    assume(point[SA] - point[CHW] >= env.min_coil_approach_k)
    return point


@st.composite
def cases(draw: st.DrawFn) -> tuple[SetpointEnvelope, dict[str, float], dict[str, float], dict[str, float], bool]:
    env = draw(envelopes())
    reference = valid_point(draw, env)
    proposal = {r: draw(any_float) for r in SETPOINT_ROLES if draw(st.booleans()) or r == CHW}
    pin_target = valid_point(draw, env)
    pins = {r: pin_target[r] for r in SETPOINT_ROLES if draw(st.integers(0, 3)) == 0}
    return env, reference, proposal, pins, draw(st.booleans())


def within(env: SetpointEnvelope, out: dict[str, float], reference: dict[str, float]) -> None:
    for role in SETPOINT_ROLES:
        b = env.bounds(role)
        assert math.isfinite(out[role])
        assert b.min_c - TOL <= out[role] <= b.max_c + TOL
        assert abs(out[role] - reference[role]) <= b.max_step_k + TOL


@settings(max_examples=400, deadline=None)
@given(cases())
def test_gate_output_is_finite_bounded_rate_limited_coupled_and_pinned(case: tuple) -> None:  # type: ignore[type-arg]
    env, reference, proposal, pins, hot = case
    out = gate(proposal, reference, env, pins=pins, hot_guard=hot).setpoints
    within(env, out, reference)
    assert out[SA] - out[CHW] >= env.min_coil_approach_k - TOL
    for role, pin in pins.items():
        assert abs(out[role] - pin) <= abs(reference[role] - pin) + TOL  # never moves away from a pin
    if hot:
        assert all(out[r] <= reference[r] + TOL for r in SETPOINT_ROLES)
    inlet = 26.9 if hot else 20.0
    check = verify(out, reference, env, rack_inlet_max_c=inlet, rack_inlet_limit_c=27.0, near_limit_margin_k=0.5)
    assert check.ok, check.violations


@settings(max_examples=200, deadline=None)
@given(envelopes(), st.data())
def test_gate_reaches_a_pin_that_is_one_step_away(env: SetpointEnvelope, data: st.DataObject) -> None:
    target = valid_point(data.draw, env)
    out = gate({}, target, env, pins=target).setpoints
    assert out == target


@settings(max_examples=300, deadline=None)
@given(envelopes(), st.dictionaries(st.sampled_from(SETPOINT_ROLES), any_float),
       st.dictionaries(st.sampled_from(SETPOINT_ROLES), any_float), st.booleans())
def test_gate_is_bounded_even_for_garbage_references(env: SetpointEnvelope, reference: dict[str, float],
                                                     proposal: dict[str, float], hot: bool) -> None:
    out = gate(proposal, reference, env, hot_guard=hot).setpoints
    ref = clamped_reference(reference, env)
    for role in SETPOINT_ROLES:
        b = env.bounds(role)
        assert math.isfinite(out[role]) and b.min_c - TOL <= out[role] <= b.max_c + TOL
        if role in ref:
            assert abs(out[role] - ref[role]) <= b.max_step_k + TOL


def envelope() -> SetpointEnvelope:
    return SetpointEnvelope(roles={
        CHW: RoleBounds(7.0, 15.0, 0.5), SA: RoleBounds(17.0, 24.0, 0.5), CW: RoleBounds(18.0, 32.0, 1.0),
    }, min_coil_approach_k=3.0)


REF = {CHW: 10.0, SA: 20.0, CW: 26.0}


def test_verify_names_each_violation() -> None:
    proposal = {CHW: 11.5, SA: 13.0, CW: math.nan}
    check = verify(proposal, REF, envelope(), rack_inlet_max_c=22.0, rack_inlet_limit_c=27.0, near_limit_margin_k=0.5)
    assert not check.ok
    text = " | ".join(check.violations)
    assert "chw_supply_sp_c: move +1.500 K exceeds rate limit 0.5 K" in text
    assert "supply_air_sp_c: 13.000 C outside bounds [17.0, 24.0]" in text
    assert "cw_supply_sp_c: missing or non-finite" in text
    assert "coupling: supply air 13.00 C" in text


def test_near_limit_only_cooling_moves_pass() -> None:
    env = envelope()
    warmer = {CHW: 10.0, SA: 20.5, CW: 26.0}
    cooler = {CHW: 9.5, SA: 19.5, CW: 26.0}
    hot = {"rack_inlet_limit_c": 27.0, "near_limit_margin_k": 0.5}
    assert not verify(warmer, REF, env, rack_inlet_max_c=26.6, **hot).ok
    assert verify(cooler, REF, env, rack_inlet_max_c=26.6, **hot).ok
    assert verify(warmer, REF, env, rack_inlet_max_c=24.0, **hot).ok
    assert not verify(warmer, REF, env, rack_inlet_max_c=math.nan, **hot).ok  # unknown inlet counts as hot
    assert hot_guard_active(None, 27.0, 0.5)


def test_non_finite_proposal_holds_the_reclamped_reference() -> None:
    env = envelope()
    result = gate({CHW: math.nan, SA: math.inf}, {CHW: 16.0, SA: 20.0, CW: 26.0}, env)
    assert result.setpoints == {CHW: 15.0, SA: 20.0, CW: 26.0}  # CHW re-clamped to its new upper bound
    assert any("no finite proposal" in note for note in result.adjustments)


def test_coupling_is_restored_by_adding_cooling_first() -> None:
    reference = {CHW: 14.0, SA: 17.5, CW: 26.0}
    out = gate({CHW: 14.5, SA: 17.0, CW: 26.0}, reference, envelope()).setpoints
    # 0.5 K short of the approach: chilled water goes down (more cooling), supply air stays
    assert out == {CHW: 14.0, SA: 17.0, CW: 26.0}
    pinned = gate({CHW: 14.5, SA: 17.0, CW: 26.0}, reference, envelope(), pins={CHW: 14.5}).setpoints
    assert pinned == {CHW: 14.5, SA: 17.5, CW: 26.0}  # a pinned chilled water keeps its pin: supply air rises


def test_no_reference_goes_to_the_bounds_not_beyond() -> None:
    result = gate({CHW: 99.0, SA: -5.0, CW: 20.0}, None, envelope())
    # clamped to 15 / 17, then chilled water lowered by 1 K for the 3 K coil approach
    assert result.setpoints == {CHW: 14.0, SA: 17.0, CW: 20.0}
    assert any("rate limit not applied" in note for note in result.adjustments)
