"""Water loops: pump power by the affinity law, chilled-water flow and return temperature.

Chilled-water pumps are variable speed (variable primary flow): they deliver what the
coil valves draw, but never less than the minimum evaporator flow of the running
chillers; the difference goes through the bypass, which lowers the return temperature
(the plant sees a smaller temperature difference than the coils). Condenser pumps are
constant speed, one per chiller, plus those serving the economiser heat exchanger.
"""

from __future__ import annotations

from simulator.config import CP_WATER_KJ_PER_KG_K, ChillerConfig, PumpConfig
from simulator.numeric import Num, vmax

WATER_DENSITY_KG_PER_M3 = 1000.0


def pump_design_power_kw(dp_kpa: float, flow_kg_s: float, efficiency: float) -> float:
    """P = dp * V / eta [kW] (kPa * m3/s = kW)."""
    return dp_kpa * (flow_kg_s / WATER_DENSITY_KG_PER_M3) / efficiency


def chw_pump_power_kw(cfg: PumpConfig, flow_kg_s: Num, design_flow_kg_s: float) -> Num:
    """Chilled-water pump power [kW]: cube of speed, speed = flow ratio above the minimum speed."""
    design_kw = pump_design_power_kw(cfg.chw_design_dp_kpa, design_flow_kg_s, cfg.chw_efficiency)
    speed = vmax(flow_kg_s / design_flow_kg_s, cfg.chw_min_speed)
    return design_kw * speed * speed * speed


def cw_pump_power_kw(cfg: PumpConfig, pumps_running: Num) -> Num:
    """Condenser pump power [kW]: constant-speed pumps at design head."""
    return pumps_running * pump_design_power_kw(cfg.cw_design_dp_kpa, cfg.cw_flow_per_pump_kg_s, cfg.cw_efficiency)


def evaporator_design_flow_kg_s(cfg: ChillerConfig) -> float:
    """Design chilled-water flow of one chiller [kg/s]."""
    return cfg.capacity_kw / (CP_WATER_KJ_PER_KG_K * cfg.design_delta_t_k)


def plant_flow_kg_s(cfg: ChillerConfig, coil_flow_kg_s: Num, chillers_running: Num, pump_min_flow_kg_s: float) -> Num:
    """Chilled-water flow through the plant [kg/s]: coil demand, or the larger of the
    chillers' minimum evaporator flow and the pumps' minimum-speed flow (the rest bypasses)."""
    chiller_min = chillers_running * cfg.min_evap_flow_fraction * evaporator_design_flow_kg_s(cfg)
    return vmax(vmax(coil_flow_kg_s, chiller_min), pump_min_flow_kg_s)


def return_temperature_c(supply_c: Num, heat_kw: Num, flow_kg_s: Num) -> Num:
    """Return water temperature [C] for this heat on this flow."""
    return supply_c + heat_kw / (CP_WATER_KJ_PER_KG_K * vmax(flow_kg_s, 1e-9))
