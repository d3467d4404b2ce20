"""Candidate setpoints played forward on the twin's full dynamic model, all at once.

Why: the oracle must score what the plant will really do (lags, staging delays,
economiser hysteresis, the weather and load to come), not a quasi-steady guess; and
it must do so every control step for a week on two cores. This is
``SimulatedPlant._step`` on arrays, one element per candidate: the same
``operating_point`` (which takes arrays), the same lag updates, staging and economiser
rules, with sensors, faults and records left out. A test holds it to the plant itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulator.operating_point import OperatingInputs, OperatingPoint, PlantConstants, operating_point

FloatArray = npt.NDArray[np.float64]
#: Drivers at an hour of the year: wet-bulb [C], base IT power [kW], economiser tower water [C].
Drivers = Callable[[float], tuple[float, float, float]]


@dataclass(frozen=True)
class DynamicState:
    """The plant's lagged and staged states at the start of a rollout (floats)."""

    hour: float  # hours since 1 January of the plant's clock
    chw_supply_c: float
    supply_air_c: float
    rack_inlet_mean_c: float
    cw_supply_c: float
    chillers_running: float
    economizer_on: float
    stage_up_s: float
    stage_down_s: float
    chillers_available: float
    crahs_available: float


@dataclass
class _Arrays:
    chw: FloatArray
    sa: FloatArray
    rack: FloatArray
    cw: FloatArray
    n: FloatArray
    econ: FloatArray
    up_s: FloatArray
    down_s: FloatArray


def rollout(k: PlantConstants, drivers: Drivers, start: DynamicState, setpoints: FloatArray,
            seconds: float, step_s: float) -> dict[str, FloatArray]:
    """Hold each row of ``setpoints`` (N, 3) [C] for ``seconds`` from ``start``, in steps of ``step_s``.

    Returns per candidate: cooling_kwh, facility_kwh, heat_rejected_kwh, rack_inlet_max_c
    (hottest inlet after any step), rack_inlet_end_c (hottest inlet at the end) and
    chillers_running at the end.
    """
    n = len(setpoints)
    ones = np.ones(n, dtype=np.float64)
    s = _Arrays(start.chw_supply_c * ones, start.supply_air_c * ones, start.rack_inlet_mean_c * ones,
                start.cw_supply_c * ones, start.chillers_running * ones, start.economizer_on * ones,
                start.stage_up_s * ones, start.stage_down_s * ones)
    out = {key: np.zeros(n, dtype=np.float64) for key in ("cooling_kwh", "facility_kwh", "heat_rejected_kwh")}
    hottest = np.full(n, -math.inf)
    end = hottest
    t = 0.0
    while t < seconds - 1e-9:
        dt = min(step_s, seconds - t)
        op = _step(k, drivers(start.hour + t / 3600.0), start, s, setpoints, dt)
        h = dt / 3600.0
        out["cooling_kwh"] += op.cooling_power_kw * h
        out["facility_kwh"] += op.facility_power_kw * h
        out["heat_rejected_kwh"] += op.heat_rejected_kw * h
        end = s.rack + op.rack_inlet_max_offset_k
        hottest = np.maximum(hottest, end)
        t += dt
    out["rack_inlet_max_c"] = hottest
    out["rack_inlet_end_c"] = end
    out["chillers_running"] = s.n.copy()
    return out


def _step(k: PlantConstants, drv: tuple[float, float, float], start: DynamicState, s: _Arrays,
          sp: FloatArray, dt: float) -> OperatingPoint[FloatArray]:
    """One plant step for every candidate; updates ``s`` in place and returns the operating point."""
    dyn = k.cfg.dynamics
    rates = tuple((1.0 - math.exp(-dt / tau)) / dt for tau in (dyn.tau_room_s, dyn.tau_chw_s, dyn.tau_cw_s))
    wetbulb, base_it, econ_tower = drv
    op = operating_point(k, OperatingInputs(
        wetbulb_c=wetbulb, base_it_power_kw=base_it, economizer_tower_c=econ_tower,
        chw_supply_sp_c=sp[:, 0], supply_air_sp_c=sp[:, 1], cw_supply_sp_c=sp[:, 2],
        chw_supply_c=s.chw, supply_air_c=s.sa, rack_inlet_mean_c=s.rack, cw_supply_c=s.cw,
        chillers_available=start.chillers_available, crahs_available=start.crahs_available,
        chillers_running=s.n, economizer_on=s.econ, lag_rates_per_s=(rates[0], rates[1], rates[2]),
    ))
    s.sa = s.sa + (op.supply_air_target_c - s.sa) * (1.0 - math.exp(-dt / dyn.tau_supply_air_s))
    s.rack = s.rack + (op.it_power_kw + op.crah_fan_power_kw - op.coil_heat_kw) * dt / dyn.room_capacity_kj_per_k
    s.chw = s.chw + (op.plant_heat_in_kw - op.plant_load_kw) * dt / dyn.chw_loop_capacity_kj_per_k
    s.cw = s.cw + (op.tower_heat_kw - op.heat_rejected_kw) * dt / dyn.cw_loop_capacity_kj_per_k
    _stage(k, op, s, dt, start.chillers_available)
    ec = k.cfg.economizer
    s.econ = np.where((s.econ > 0.0) & (op.economizer_margin_k < ec.disable_margin_k), 0.0,
                      np.where((s.econ == 0.0) & (op.economizer_margin_k > ec.enable_margin_k), 1.0, s.econ))
    return op


def stage_down_kw(k: PlantConstants, unit_capacity_kw: npt.ArrayLike, running: npt.ArrayLike,
                  economizer_on: npt.ArrayLike) -> FloatArray:
    """Chiller load [kW] below which one of the running chillers stops (after the delay).

    With others left: when they would run below ``stage_down_plr``. The last one, while
    the economiser runs: when its trim load falls below its minimum part load scaled by
    the same down/up ratio (stage_down_plr / stage_up_plr), so that the economiser
    carries the load and the band between start and stop keeps it from short-cycling.
    """
    ch = k.cfg.chiller
    unit_capacity_kw = np.asarray(unit_capacity_kw, dtype=np.float64)
    running = np.asarray(running, dtype=np.float64)
    last = np.where(np.asarray(economizer_on) > 0.0, ch.min_plr * unit_capacity_kw * ch.stage_down_plr / ch.stage_up_plr, 0.0)
    return np.asarray(np.where(running > 1.0, (running - 1.0) * unit_capacity_kw * ch.stage_down_plr, last),
                      dtype=np.float64)


def _stage(k: PlantConstants, op: OperatingPoint[FloatArray], s: _Arrays, dt: float, available: float) -> None:
    """Staging with a delay, one machine at a time, as ``SimulatedPlant._stage``."""
    delay = k.cfg.chiller.stage_delay_s
    up = op.chillers_needed > s.n
    down = ~up & (s.n > 0.0) & (op.chiller_load_kw + op.unmet_load_kw
                                <= stage_down_kw(k, op.chiller_unit_capacity_kw, s.n, s.econ))
    up_s = np.where(up, s.up_s + dt, 0.0)
    down_s = np.where(down, s.down_s + dt, 0.0)
    start_one, stop_one = up & (up_s >= delay), down & (down_s >= delay)
    s.n = np.minimum(s.n + start_one - stop_one, available)
    s.up_s = np.where(start_one, 0.0, up_s)
    s.down_s = np.where(stop_one, 0.0, down_s)
