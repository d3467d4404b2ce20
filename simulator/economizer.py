"""Waterside economiser: a plate heat exchanger that pre-cools chilled-water return.

The exchanger sits in series ahead of the chillers. Tower water at T_cw cools the
return water down to at best T_cw + HX approach; if that is at or below the
chilled-water setpoint the exchanger carries the whole load (free cooling), otherwise
it carries the share it can and the chillers trim the rest (partial, "integrated"
economising). The building-management system enables it when the water the towers
could make, plus both approaches, is enough colder than the return water to pay for
the extra pumps and tower fan, with hysteresis against chattering.
"""

from __future__ import annotations

from simulator.numeric import Num, vclip, vmax


def economizer_margin_k(predicted_tower_c: float, hx_approach_k: float, chw_return_c: Num) -> Num:
    """How far the HX's best leaving water lies below the return water [K] (positive helps)."""
    return chw_return_c - (predicted_tower_c + hx_approach_k)


def economizer_share(tower_leaving_c: Num, hx_approach_k: float, chw_setpoint_c: Num, chw_return_c: Num) -> Num:
    """Share of the plant load the HX carries [0, 1] with tower water at ``tower_leaving_c``.

    The HX cools return water to tower water + approach, but its valve never cools
    below the chilled-water setpoint; the chillers trim the rest down to the setpoint.
    """
    hx_leaving = vmax(tower_leaving_c + hx_approach_k, chw_setpoint_c)
    span = vmax(chw_return_c - chw_setpoint_c, 1e-6)
    return vclip((chw_return_c - hx_leaving) / span, 0.0, 1.0)
