"""Variable-speed cooling tower: YorkCalc approach correlation, fan control, fan power.

Approach (leaving water minus wet-bulb) is a 27-term polynomial in wet-bulb, range and
liquid-to-gas ratio LG = water flow ratio / air flow ratio (EnergyPlus
CoolingTower:VariableSpeed, Modelica Buildings YorkCalc). The polynomial is quadratic
in LG, so the fan speed that holds a leaving-water setpoint has a closed form: no
iteration in the one-minute step. The model tower is scaled to the design point the
way EnergyPlus and Modelica do: the design water-flow ratio is the one for which the
polynomial gives the design approach at full fan.
"""

from __future__ import annotations

from simulator.config import TowerConfig
from simulator.numeric import Num, vclip, vmax, vpos, vsqrt, vstep, vwhere


def lg_polynomial(cfg: TowerConfig, wetbulb_c: float, range_k: Num) -> tuple[Num, Num, Num]:
    """Collapse the 27 YorkCalc terms to a quadratic in LG (inputs clamped to the valid box)."""
    t = vclip(wetbulb_c, cfg.wetbulb_valid_min_c, cfg.wetbulb_valid_max_c)
    r = vclip(range_k, cfg.range_valid_min_k, cfg.range_valid_max_k)
    c = cfg.coeffs
    out: list[Num] = []
    for k in range(3):
        b = 9 * k
        out.append(
            (c[b] + t * (c[b + 1] + c[b + 2] * t))
            + r * ((c[b + 3] + t * (c[b + 4] + c[b + 5] * t)) + r * (c[b + 6] + t * (c[b + 7] + c[b + 8] * t)))
        )
    return out[0], out[1], out[2]


def approach_k(cfg: TowerConfig, wetbulb_c: float, range_k: Num, liquid_gas_ratio: Num) -> Num:
    """YorkCalc approach [K], never below the minimum approach."""
    p0, p1, p2 = lg_polynomial(cfg, wetbulb_c, range_k)
    lg = vclip(liquid_gas_ratio, 0.0, cfg.max_liquid_gas_ratio)
    return vmax(p0 + lg * (p1 + p2 * lg), cfg.min_approach_k)


def _lg_for_approach(p0: Num, p1: Num, p2: Num, target_k: Num) -> Num:
    """The LG ratio at which the quadratic reaches ``target_k`` (numerically stable root).

    Where the target lies beyond the parabola's reach the discriminant is clipped at 0,
    which gives the LG of the vertex; the caller clips LG to its valid range anyway.
    """
    d = target_k - p0
    root = vsqrt(p1 * p1 + 4.0 * p2 * d)
    return 2.0 * d / vmax(p1 + root, 1e-9)


def design_water_ratio(cfg: TowerConfig) -> float:
    """Water-flow ratio of the model tower at design (full fan gives the design approach)."""
    p0, p1, p2 = lg_polynomial(cfg, cfg.design_wetbulb_c, cfg.design_range_k)
    return _lg_for_approach(p0, p1, p2, cfg.design_approach_k)


def tower_operation(
    cfg: TowerConfig,
    wetbulb_c: float,
    range_k: Num,
    water_fraction: Num,
    target_leaving_c: Num,
    design_ratio: float,
) -> tuple[Num, Num, Num]:
    """Leaving water [C], fan speed [-] and fan power [kW] when fans chase ``target_leaving_c``.

    ``water_fraction`` is the water flow over the design flow of all cells (0 when no
    condenser pump runs). A target below what full fan reaches is not met; a target
    that free convection already beats is held by the tower bypass with the fans off.
    """
    p0, p1, p2 = lg_polynomial(cfg, wetbulb_c, range_k)
    water_ratio = water_fraction * design_ratio
    lg_full = vclip(water_ratio, 0.0, cfg.max_liquid_gas_ratio)
    full_k = vmax(p0 + lg_full * (p1 + p2 * lg_full), cfg.min_approach_k)
    want_k = target_leaving_c - wetbulb_c
    # Free convection: a share of the forced capacity with the water's own driving difference.
    f = cfg.free_convection_fraction
    free_k = (1.0 - f) * (want_k + range_k) + f * full_k
    lg = vclip(_lg_for_approach(p0, p1, p2, want_k), 1e-6, cfg.max_liquid_gas_ratio)
    speed = vclip(water_ratio / lg, 0.0, 1.0)
    speed = vwhere(want_k <= full_k, speed * 0.0 + 1.0, speed)
    speed = vwhere(free_k <= want_k, speed * 0.0, speed)
    flowing = vstep(water_fraction)
    speed = speed * flowing
    leaving = wetbulb_c + vmax(want_k, full_k)
    power = cfg.cells * cfg.fan_power_per_cell_kw * speed * speed * speed
    return leaving, speed, vpos(power)
