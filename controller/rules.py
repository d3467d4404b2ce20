"""Rule-based setpoints: the fallback the controller runs whenever it is unsure.

Two presets. ``legacy`` is how many sites still run: fixed, conservative setpoints.
``tuned`` is what a good engineer configures without machine learning: chilled water
reset with load and weather, condenser water at wet-bulb plus an approach, supply air
near the top of the recommended band with a margin. Pure functions of one reading
snapshot; they never raise on bad data: a missing or non-finite input falls back to
the conservative (more cooling) value of the rule that needed it, because the fallback
runs exactly when data is bad. Results are clamped into the envelope's bounds and
coil coupling; rate limits are the caller's safety layer's job. Only the setpoints the
site controls (the envelope's roles) are returned.

The tuned chilled-water load reset needs the hall's design IT load: the operator's
``rules.design_it_kw``, else a high percentile of the site's IT-power history (the
caller passes it); never a constant sized for some other hall.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from controller.bounds import SetpointEnvelope

Preset = Literal["legacy", "tuned"]
PRESETS: tuple[Preset, ...] = ("legacy", "tuned")


@dataclass(frozen=True)
class LegacyRules:
    """Fixed setpoints of a conservatively run site (ASHRAE: legacy plants 6-7 C chilled water)."""

    chw_supply_c: float = 7.0  # chilled-water supply [C]
    supply_air_c: float = 18.0  # bottom of the recommended 18-27 C inlet band [C]
    cw_supply_c: float = 29.4  # 85 F, the classic design condenser water [C]


@dataclass(frozen=True)
class TunedRules:
    """Constants of the tuned preset; each rule is described where it is applied."""

    # Supply air: recommended inlet band tops out at 27 C; the hottest rack runs about
    # 1.5 K above supply air, and we keep 2.5 K for load swings and sensor error.
    supply_air_c: float = 23.0
    hot_rack_trim_start_c: float = 25.5  # hottest rack inlet above which supply air is trimmed down [C]
    hot_rack_trim_gain: float = 1.0  # supply-air reduction per K of hot-rack excess [K/K]
    # Chilled water, load reset: warm water at light load, colder as load rises
    # (coils need a larger approach to carry more heat).
    design_it_kw: float | None = None  # rated IT load of the hall [kW]; None: unknown, mid-band water
    chw_light_load_c: float = 12.5  # chilled water at or below light load [C]
    chw_full_load_c: float = 10.0  # chilled water at or above full load [C]
    light_load_fraction: float = 0.5
    full_load_fraction: float = 0.9
    # Chilled water, weather reset: in the economiser season, warmer water lets the
    # heat exchanger carry more of the load.
    econ_season_wetbulb_c: float = 12.0  # wet-bulb below which the weather reset applies [C]
    econ_chw_boost_k: float = 1.5  # chilled-water increase in that season [K]
    # Condenser water: wet-bulb plus a fixed approach the towers can hold most of the
    # year, within the chillers' comfortable band.
    cw_approach_k: float = 4.5  # [K]
    cw_min_c: float = 20.0  # lowest condenser water a cautious engineer allows [C]
    cw_max_c: float = 29.4  # never warmer than design [C]
    # Fallbacks when the reading a rule needs is missing (conservative: more cooling).
    fallback_chw_c: float = 10.0
    fallback_cw_c: float = 27.0


def _finite(readings: Mapping[str, float], role: str) -> float | None:
    value = readings.get(role)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _interp(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    if x <= x0:
        return y0
    if x >= x1:
        return y1
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def tuned_setpoints(readings: Mapping[str, float], rules: TunedRules | None = None) -> dict[str, float]:
    """The tuned preset before clamping [C]."""
    r = rules or TunedRules()
    # Supply air: fixed high setpoint, trimmed down 1:1 when the hottest rack runs hot
    # (a missing rack reading trims by 2 K: do not run warm blind).
    hot = _finite(readings, "rack_inlet_max_c")
    trim = 2.0 if hot is None else max(0.0, hot - r.hot_rack_trim_start_c) * r.hot_rack_trim_gain
    supply_air = r.supply_air_c - trim
    # Chilled water: load reset on IT power, then the economiser-season boost.
    it_kw = _finite(readings, "it_power_kw")
    if it_kw is None:
        chw = r.fallback_chw_c
    else:
        # unknown design load: assume the mid-point of the reset band, not either end
        load = (it_kw / r.design_it_kw if r.design_it_kw and r.design_it_kw > 0
                else 0.5 * (r.light_load_fraction + r.full_load_fraction))
        chw = _interp(load, r.light_load_fraction, r.full_load_fraction, r.chw_light_load_c, r.chw_full_load_c)
        wetbulb = _finite(readings, "outdoor_wetbulb_c")
        if wetbulb is not None and wetbulb < r.econ_season_wetbulb_c:
            chw += r.econ_chw_boost_k
    # Condenser water: wet-bulb + approach within the chillers' band.
    wetbulb = _finite(readings, "outdoor_wetbulb_c")
    cw = r.fallback_cw_c if wetbulb is None else min(max(wetbulb + r.cw_approach_k, r.cw_min_c), r.cw_max_c)
    return {"chw_supply_sp_c": chw, "supply_air_sp_c": supply_air, "cw_supply_sp_c": cw}


def clamp_to_envelope(setpoints: Mapping[str, float], envelope: SetpointEnvelope) -> dict[str, float]:
    """Clamp each role into its bounds, then keep the coil approach by lowering chilled water.

    Lowering chilled water (rather than raising supply air) keeps the repair on the side
    of more cooling; if chilled water is already at its lower bound, supply air rises.
    """
    out = {}
    for role in envelope.setpoint_roles:
        b = envelope.bounds(role)
        out[role] = min(max(setpoints[role], b.min_c), b.max_c)
    if not envelope.coupled:
        return out
    deficit = envelope.min_coil_approach_k - (out["supply_air_sp_c"] - out["chw_supply_sp_c"])
    if deficit > 0:
        chw_b, sa_b = envelope.bounds("chw_supply_sp_c"), envelope.bounds("supply_air_sp_c")
        lowered = min(deficit, out["chw_supply_sp_c"] - chw_b.min_c)
        out["chw_supply_sp_c"] -= lowered
        out["supply_air_sp_c"] = min(out["supply_air_sp_c"] + deficit - lowered, sa_b.max_c)
    return out


def rule_setpoints(
    preset: Preset,
    readings: Mapping[str, float],
    envelope: SetpointEnvelope | None = None,
    *,
    legacy: LegacyRules | None = None,
    tuned: TunedRules | None = None,
) -> dict[str, float]:
    """Setpoints of a rule preset for one reading snapshot, clamped into the envelope [C]."""
    if preset == "legacy":
        lg = legacy or LegacyRules()
        raw = {"chw_supply_sp_c": lg.chw_supply_c, "supply_air_sp_c": lg.supply_air_c, "cw_supply_sp_c": lg.cw_supply_c}
    elif preset == "tuned":
        raw = tuned_setpoints(readings, tuned)
    else:
        raise ValueError(f"unknown rule preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return clamp_to_envelope(raw, envelope or SetpointEnvelope())
