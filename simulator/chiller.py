"""Centrifugal chillers: EnergyPlus Chiller:Electric:EIR (DOE-2) curves, staging, capacity.

P = Qref * CAPFT * EIRFT * EIRFPLR(PLR) / COPref, with PLR = Q / (Qref * CAPFT).
The DOE-2 curves are fitted for 5-10 C leaving chilled water and 24-35 C entering
condenser water (we stop at 9 C: the quadratic's fitted EIR minimum sits near 10 C
and it bends up before it). Outside that box we evaluate the curves at the nearest point
and scale the EIR by the ratio of Carnot lifts (refrigerant temperatures), for the
``lift_scaled_share`` of power that follows lift: warmer chilled water or colder
condenser water keeps helping, as it does in a real machine, instead of the
quadratic fit bending the wrong way beyond its data.
"""

from __future__ import annotations

from simulator.config import ChillerConfig
from simulator.numeric import Num, vceil, vclip, vmax, vmin, vstep

KELVIN = 273.15


def biquadratic(c: tuple[float, ...], x: Num, y: Num) -> Num:
    """a + b*x + c*x^2 + d*y + e*y^2 + f*x*y (EnergyPlus Curve:Biquadratic)."""
    return c[0] + x * (c[1] + c[2] * x + c[5] * y) + y * (c[3] + c[4] * y)


def _carnot_eir(cfg: ChillerConfig, chw_c: Num, cw_c: Num) -> Num:
    """Carnot EIR [-]: lift over evaporating temperature, both in K."""
    t_evap = chw_c - cfg.evap_offset_k
    return (cw_c + cfg.cond_offset_k - t_evap) / (t_evap + KELVIN)


def entering_cw_c(cfg: ChillerConfig, tower_leaving_c: Num) -> Num:
    """Condenser water entering the chillers [C]: the tempering valve holds a minimum."""
    return vmax(tower_leaving_c, cfg.min_entering_cw_c)


def capacity_modifier(cfg: ChillerConfig, chw_c: Num, cw_in_c: Num) -> Num:
    """CAPFT [-], evaluated inside the curve's valid box (capacity is not extrapolated)."""
    chw = vclip(chw_c, cfg.chw_valid_min_c, cfg.chw_curve_max_c)
    cw = vclip(cw_in_c, cfg.cw_valid_min_c, cfg.cw_valid_max_c)
    return biquadratic(cfg.capft, chw, cw)


def eir_modifier(cfg: ChillerConfig, chw_c: Num, cw_in_c: Num) -> Num:
    """EIRFT [-], extended outside the valid box by the Carnot lift ratio."""
    chw = vclip(chw_c, cfg.chw_valid_min_c, cfg.chw_curve_max_c)
    cw = vclip(cw_in_c, cfg.cw_valid_min_c, cfg.cw_valid_max_c)
    ratio = _carnot_eir(cfg, chw_c, cw_in_c) / _carnot_eir(cfg, chw, cw)
    share = cfg.lift_scaled_share
    return biquadratic(cfg.eirft, chw, cw) * (1.0 - share + share * ratio)


def unit_capacity_kw(cfg: ChillerConfig, chw_c: Num, cw_in_c: Num) -> Num:
    """Available capacity of one chiller at these temperatures [kW]."""
    return cfg.capacity_kw * capacity_modifier(cfg, chw_c, cw_in_c)


def chillers_needed(cfg: ChillerConfig, load_kw: Num, unit_capacity: Num, available: float) -> Num:
    """Chillers a staging controller runs for this load: the fewest below ``stage_up_plr``.

    None for a load below the minimum part load of one machine (the economiser's
    leftover: the supply drifts a little warm rather than a chiller short-cycling);
    never more than ``available``.
    """
    wanted = vceil(load_kw / (unit_capacity * cfg.stage_up_plr) - 1e-9)
    wanted = wanted * vstep(load_kw - cfg.min_plr * unit_capacity)
    return vmin(wanted, available)


def chiller_power_kw(
    cfg: ChillerConfig, load_kw: Num, chw_c: Num, cw_in_c: Num, running: Num, cap_each: Num | None = None
) -> Num:
    """Electric power of ``running`` equal chillers sharing ``load_kw`` [kW].

    Load above their capacity is not delivered (the caller sees the shortfall as warmer
    chilled water); below the minimum part load they false-load. ``cap_each``: the
    caller's ``unit_capacity_kw`` at these temperatures, if it has it.
    """
    if cap_each is None:
        cap_each = unit_capacity_kw(cfg, chw_c, cw_in_c)
    on = vstep(running)
    plr = vclip(load_kw / (vmax(running, 1.0) * cap_each), cfg.min_plr, 1.0)
    a, b, c = cfg.eirfplr
    eirfplr = a + plr * (b + c * plr)
    return on * running * cap_each * eir_modifier(cfg, chw_c, cw_in_c) * eirfplr / cfg.cop_ref
