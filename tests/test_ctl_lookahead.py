"""The safety gate looks ahead: against a plant whose rack inlet lags its supply air, no
sequence of proposals (however greedy) drives the inlet over the limit.

The plant: supply air follows its setpoint at once; the hottest inlet follows supply air
plus a recirculation offset through a first-order lag of ``tau`` minutes. Without the
look-ahead ceilings a gate that checks only the inlet measured now lets the setpoint
climb 0.5 K a cycle to the top of its bounds and the inlet overshoots later.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.bounds import RoleBounds, SetpointEnvelope
from controller.config import SafetySettings
from controller.safety import LOOK_BACK_ROWS, InletOutlook, gate, look_ahead_ceilings, verify

LIMIT_C, MARGIN_K = 27.0, 0.5
ENV = SetpointEnvelope(roles={"supply_air_sp_c": RoleBounds(min_c=18.0, max_c=27.0, max_step_k=0.5)})
SA = "supply_air_sp_c"
SAFETY = SafetySettings()  # the shipped defaults are what is tested


def _run(proposals: list[float], offset_k: float, tau_min: float, start_sp_c: float, *, look_ahead: bool) -> float:
    """Close the loop for len(proposals) 5-minute cycles; return the hottest inlet seen [C]."""
    sp = start_sp_c
    inlet = sp + offset_k
    history = [inlet]
    offsets = [inlet - sp]  # the window's inlet-over-supply differences (the cycle takes their max)
    hottest = inlet
    alpha = 1.0 - math.exp(-5.0 / tau_min)
    for want in proposals:
        recent = history[-(LOOK_BACK_ROWS + 1):]
        outlook = InletOutlook(inlet_over_supply_k=max(offsets[-24:]), inlet_rise_k=recent[-1] - min(recent))
        caps = look_ahead_ceilings({SA: sp}, ENV, outlook, rack_inlet_max_c=inlet, rack_inlet_limit_c=LIMIT_C,
                                   near_limit_margin_k=MARGIN_K, rising_band_k=SAFETY.rising_band_k,
                                   rising_k=SAFETY.rising_k) if look_ahead else {}
        out = gate({SA: want}, {SA: sp}, ENV, hot_guard=inlet >= LIMIT_C - MARGIN_K, ceilings=caps)
        check = verify(out.setpoints, {SA: sp}, ENV, rack_inlet_max_c=inlet, rack_inlet_limit_c=LIMIT_C,
                       near_limit_margin_k=MARGIN_K, ceilings=caps)
        assert check.ok, check.violations  # the gate's output always passes the independent check
        sp = out.setpoints[SA]
        inlet += alpha * (sp + offset_k - inlet)
        history.append(inlet)
        offsets.append(inlet - sp)
        hottest = max(hottest, inlet)
    return hottest


@settings(max_examples=400, deadline=None)
@given(
    proposals=st.lists(st.floats(min_value=15.0, max_value=35.0), min_size=10, max_size=60),
    offset_k=st.floats(min_value=0.5, max_value=6.0),
    tau_min=st.floats(min_value=5.0, max_value=60.0),
    start_sp_c=st.floats(min_value=18.0, max_value=21.0),
)
def test_inlet_never_exceeds_limit_whatever_is_proposed(proposals: list[float], offset_k: float, tau_min: float,
                                                        start_sp_c: float) -> None:
    if start_sp_c + offset_k > LIMIT_C - MARGIN_K:
        return  # the plant already starts too hot for any supply air in bounds: not this property
    assert _run(proposals, offset_k, tau_min, start_sp_c, look_ahead=True) <= LIMIT_C + 1e-9


def test_without_look_ahead_a_greedy_climb_overshoots() -> None:
    # the same plant and proposals: the gate that sees only today's inlet lets it reach 27 + 3 C
    hottest = _run([35.0] * 48, offset_k=3.0, tau_min=20.0, start_sp_c=20.0, look_ahead=False)
    assert hottest > LIMIT_C + 1.0


def test_ceiling_never_forces_a_setpoint_down() -> None:
    caps = look_ahead_ceilings({SA: 26.0}, ENV, InletOutlook(inlet_over_supply_k=4.0, inlet_rise_k=0.0),
                               rack_inlet_max_c=30.0, rack_inlet_limit_c=LIMIT_C, near_limit_margin_k=MARGIN_K,
                               rising_band_k=3.0, rising_k=0.3)
    assert caps[SA] == 26.0  # hold or fall; the rules and the hot guard do the cooling


def test_rising_inlet_blocks_further_warming_near_the_limit() -> None:
    caps = look_ahead_ceilings({SA: 20.0}, ENV, InletOutlook(inlet_over_supply_k=1.0, inlet_rise_k=0.8),
                               rack_inlet_max_c=25.0, rack_inlet_limit_c=LIMIT_C, near_limit_margin_k=MARGIN_K,
                               rising_band_k=3.0, rising_k=0.3)
    assert caps[SA] == 20.0
    far = look_ahead_ceilings({SA: 20.0}, ENV, InletOutlook(inlet_over_supply_k=1.0, inlet_rise_k=0.8),
                              rack_inlet_max_c=21.0, rack_inlet_limit_c=LIMIT_C, near_limit_margin_k=MARGIN_K,
                              rising_band_k=3.0, rising_k=0.3)
    assert far[SA] == LIMIT_C - 1.0 - MARGIN_K  # far from the limit only the settle cap applies


def test_unknown_offset_sets_no_settle_cap() -> None:
    caps = look_ahead_ceilings({SA: 20.0}, ENV, InletOutlook(), rack_inlet_max_c=22.0, rack_inlet_limit_c=LIMIT_C,
                               near_limit_margin_k=MARGIN_K, rising_band_k=3.0, rising_k=0.3)
    assert caps == {}
