"""Air side: servers, air handlers (CRAH) fans, recirculation and the chilled-water coil.

Servers pull the air they need (P_it / (rho cp dT)); their fans speed up and silicon
leaks more above a knee inlet temperature, so IT power and airflow rise with hot
aisles. CRAH fans follow the servers' demand plus a margin (pressure control), up to
the capacity of the units that run; any shortfall recirculates hot-aisle air into the
rack inlets. The coil is a counterflow exchanger: supply air cannot get closer to the
chilled water than a minimum approach, and the water flow it needs grows without
bound as the approach shrinks (closed form, see ``coil_min_approach_k``).
"""

from __future__ import annotations

import math

from simulator.config import (
    CP_AIR_KJ_PER_KG_K,
    CP_WATER_KJ_PER_KG_K,
    RHO_AIR_KG_PER_M3,
    AirsideConfig,
    ServerConfig,
)
from simulator.numeric import Num, vclip, vmax, vmin, vpos, vpow, vsqrt

AIR_KW_PER_M3_S_K = RHO_AIR_KG_PER_M3 * CP_AIR_KJ_PER_KG_K  # heat carried by 1 m3/s of air per K [kW/K]


def base_it_power_kw(cfg: ServerConfig, utilisation: float) -> float:
    """IT power at cool inlet from CPU utilisation [0, 1]: idle + (peak - idle) * u, scaled [kW]."""
    u = 0.0 if utilisation < 0.0 else 1.0 if utilisation > 1.0 else utilisation
    return cfg.load_scale * cfg.peak_power_kw * (cfg.idle_fraction + (1.0 - cfg.idle_fraction) * u)


def server_fan_speed(cfg: ServerConfig, rack_inlet_c: Num) -> Num:
    """Relative server fan speed [-]: 1 at or below the knee, rising linearly above it."""
    return 1.0 + cfg.fan_speed_gain_per_k * vpos(rack_inlet_c - cfg.fan_knee_c)


def it_power_kw(cfg: ServerConfig, base_kw: float, rack_inlet_c: Num) -> Num:
    """IT power [kW] at this inlet: server fans (cube of speed) and leakage above the knee."""
    s = server_fan_speed(cfg, rack_inlet_c)
    over = vpos(rack_inlet_c - cfg.fan_knee_c)
    return base_kw * (1.0 + cfg.fan_power_share * (s * s * s - 1.0) + cfg.leakage_gain_per_k * over)


def server_airflow_m3_s(cfg: ServerConfig, base_kw: float, rack_inlet_c: Num) -> Num:
    """Air the servers pull [m3/s]: design temperature rise at cool inlet, more with faster fans."""
    return (base_kw / (AIR_KW_PER_M3_S_K * cfg.design_delta_t_k)) * server_fan_speed(cfg, rack_inlet_c)


def crah_airflow_m3_s(cfg: AirsideConfig, server_airflow: Num, crahs_running: float) -> Num:
    """Air the running CRAHs move [m3/s]: server demand plus margin, within min speed and capacity."""
    capacity = crahs_running * cfg.airflow_per_crah_m3_s
    return vmin(vmax(server_airflow * (1.0 + cfg.airflow_margin), cfg.min_fan_speed * capacity), capacity)


def crah_fan_power_kw(cfg: AirsideConfig, airflow: Num, crahs_running: float) -> Num:
    """Fan power [kW], cube of the per-unit airflow (affinity law)."""
    if crahs_running <= 0.0:
        return airflow * 0.0
    speed = airflow / (crahs_running * cfg.airflow_per_crah_m3_s)
    return crahs_running * cfg.fan_power_per_crah_kw * speed * speed * speed


def recirculation_rise_k(cfg: AirsideConfig, server_airflow: Num, crah_airflow: Num, it_kw: Num) -> Num:
    """Mean rack-inlet rise above supply air from hot-aisle recirculation [K].

    With a share x of server air drawn from the hot aisle (T_in + dT), the inlet settles
    at T_sa + dT * x / (1 - x).
    """
    x = vclip(1.0 - crah_airflow / vmax(server_airflow, 1e-9), 0.0, cfg.max_recirc_fraction)
    dt_server = it_kw / (AIR_KW_PER_M3_S_K * vmax(server_airflow, 1e-9))
    return dt_server * x / (1.0 - x)


def busiest_row_factor(srv: ServerConfig, air: AirsideConfig, base_kw: float) -> float:
    """The busiest row's power (and server airflow) relative to the hall's mean row [-].

    Idle power is spread evenly; the utilisation-driven part above it runs
    ``row_load_imbalance`` higher in the busiest row, so the factor grows with load.
    """
    idle_kw = srv.load_scale * srv.peak_power_kw * srv.idle_fraction
    busy_kw = max(base_kw - idle_kw, 0.0)
    return (idle_kw + busy_kw * (1.0 + air.row_load_imbalance)) / max(idle_kw + busy_kw, 1e-9)


def coil_design_ua_kw_per_k(cfg: AirsideConfig) -> float:
    """UA of one coil at full airflow [kW/K], from its design point (geometric-mean temperature difference)."""
    air_rise = cfg.design_duty_per_crah_kw / (AIR_KW_PER_M3_S_K * cfg.airflow_per_crah_m3_s)
    warm_end = air_rise + cfg.design_approach_k - cfg.design_water_rise_k
    return cfg.design_duty_per_crah_kw / math.sqrt(warm_end * cfg.design_approach_k)


def coil_design_water_flow_kg_s(cfg: AirsideConfig) -> float:
    """Design water flow of one coil [kg/s]."""
    return cfg.design_duty_per_crah_kw / (CP_WATER_KJ_PER_KG_K * cfg.design_water_rise_k)


def coil_ua_kw_per_k(cfg: AirsideConfig, design_ua: float, airflow: Num, crahs_running: float) -> Num:
    """UA of the running coils [kW/K]; the air-side film scales with airflow^0.8."""
    per_unit = airflow / (max(crahs_running, 1e-9) * cfg.airflow_per_crah_m3_s)
    return crahs_running * design_ua * vpow(vmax(per_unit, 1e-6), cfg.ua_airflow_exponent)


def coil_min_approach_k(heat_kw: Num, airflow: Num, ua: Num, max_water_kg_s: float) -> Num:
    """Smallest supply-air minus chilled-water difference the coils reach with valves open [K].

    Counterflow with the geometric mean for the log-mean difference: with approach a,
    air rise A = Q / (rho cp V) and L = Q / UA, the water rise is w = a + A - L^2 / a.
    Requiring w >= Q / (cp m_max) gives a quadratic in a.
    """
    air_rise = heat_kw / (AIR_KW_PER_M3_S_K * vmax(airflow, 1e-9))
    lmtd = heat_kw / vmax(ua, 1e-9)
    min_rise = heat_kw / (CP_WATER_KJ_PER_KG_K * max(max_water_kg_s, 1e-9))
    b = air_rise - min_rise
    return 0.5 * (vsqrt(b * b + 4.0 * lmtd * lmtd) - b)


def coil_water_rise_k(heat_kw: Num, airflow: Num, ua: Num, approach: Num) -> Num:
    """Chilled-water temperature rise through the coils at this approach [K] (see above)."""
    air_rise = heat_kw / (AIR_KW_PER_M3_S_K * vmax(airflow, 1e-9))
    lmtd = heat_kw / vmax(ua, 1e-9)
    a = vmax(approach, 1e-6)
    return a + air_rise - lmtd * lmtd / a
