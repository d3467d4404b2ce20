"""The plant's quasi-steady operating point: every flow and power for one set of states.

Why one function: the time-stepping plant (on floats, once a minute) and the oracle
(on arrays of candidate setpoints) must see exactly the same physics. Given the
weather, the IT load, the setpoints and the lagged temperatures (chilled water,
supply air, rack inlet, condenser water), this composes the component models the way
the building-management system's local loops run them: CRAH fans follow the servers,
coil valves chase the supply-air setpoint, pumps follow the valves, the economiser
pre-cools when it pays, chillers are staged by load, tower fans chase their setpoint.
It returns the targets the lagged temperatures move towards, and all powers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, NamedTuple

from simulator import airside, chiller, economizer, hydronics, tower
from simulator.config import CP_WATER_KJ_PER_KG_K, PlantConfig
from simulator.numeric import Num, vmax, vmin, vpos, vstep, vwhere


@dataclass(frozen=True)
class PlantConstants:
    """Numbers derived once from the config (design flows, coil UA, tower scaling)."""

    cfg: PlantConfig
    tower_design_ratio: float  # YorkCalc water-flow ratio of the model tower at design [-]
    coil_design_ua_kw_per_k: float  # one coil [kW/K]
    coil_design_flow_kg_s: float  # one coil [kg/s]
    chw_pump_design_flow_kg_s: float  # all coils at design [kg/s]
    econ_tower_full_fan_ratio: float  # tower water-flow fraction while only the HX pumps run [-]

    @classmethod
    def from_config(cls, cfg: PlantConfig) -> PlantConstants:
        coil_flow = airside.coil_design_water_flow_kg_s(cfg.airside)
        return cls(
            cfg=cfg,
            tower_design_ratio=tower.design_water_ratio(cfg.tower),
            coil_design_ua_kw_per_k=airside.coil_design_ua_kw_per_k(cfg.airside),
            coil_design_flow_kg_s=coil_flow,
            chw_pump_design_flow_kg_s=coil_flow * cfg.airside.crah_count,
            econ_tower_full_fan_ratio=min(cfg.economizer.cw_pumps, cfg.chiller.count) / cfg.tower.cells,
        )


class OperatingPoint(NamedTuple, Generic[Num]):
    """All quantities of one operating point; temperatures [C], powers and heat [kW]."""

    it_power_kw: Num
    crah_fan_power_kw: Num
    crah_airflow_m3_s: Num
    server_airflow_m3_s: Num
    rack_inlet_mean_target_c: Num
    rack_inlet_max_offset_k: Num  # hottest minus mean rack inlet
    supply_air_target_c: Num
    coil_heat_kw: Num  # heat the coils take from the hall air
    coil_water_flow_kg_s: Num
    chw_flow_kg_s: Num  # through the plant, including bypass
    chw_pump_power_kw: Num
    chw_return_c: Num
    plant_heat_in_kw: Num  # coil heat plus pump heat arriving at the plant
    plant_load_kw: Num  # heat the economiser and chillers remove from chilled water
    economizer_margin_k: Num  # > 0: the HX could pre-cool (see economizer_margin_k)
    economizer_on: Num  # 0 or 1
    economizer_share: Num  # share of the plant load carried by the HX [0, 1]
    chillers_needed: Num  # what staging wants for this load
    chiller_unit_capacity_kw: Num  # one chiller at today's temperatures
    chillers_running: Num
    chiller_power_kw: Num
    chiller_load_kw: Num  # delivered by the chillers
    unmet_load_kw: Num  # wanted from the chillers beyond their capacity (the loop warms)
    chw_supply_target_c: Num  # where the supply settles with enough capacity
    cw_pumps_running: Num
    cw_pump_power_kw: Num
    tower_heat_kw: Num  # condenser and HX heat arriving at the towers
    heat_rejected_kw: Num  # to the atmosphere
    cw_supply_target_c: Num  # what the tower delivers for its current target
    tower_fan_speed: Num
    tower_fan_power_kw: Num
    cooling_power_kw: Num
    facility_power_kw: Num


NO_LAG = (0.0, 0.0, 0.0)


def economizer_tower_c(k: PlantConstants, wetbulb_c: float) -> float:
    """Tower water the BMS expects for the economiser: full fan, design range, HX pumps [C]."""
    cfg = k.cfg.tower
    ratio = k.econ_tower_full_fan_ratio * k.tower_design_ratio
    return wetbulb_c + tower.approach_k(cfg, wetbulb_c, cfg.design_range_k, ratio)


def operating_point(
    k: PlantConstants,
    *,
    wetbulb_c: float,
    base_it_kw: float,
    chw_sp_c: Num,
    supply_air_sp_c: Num,
    cw_sp_c: Num,
    chw_c: Num,
    supply_air_c: Num,
    rack_inlet_c: Num,
    cw_c: Num,
    chillers_running: Num | None = None,
    economizer_on: Num | None = None,
    chillers_available: float,
    crahs_available: float,
    lag_rates_per_s: tuple[float, float, float] = NO_LAG,
    econ_tower_c: float | None = None,
) -> OperatingPoint[Num]:
    """Compose the component models at these states.

    ``chillers_running`` / ``economizer_on`` are the plant's staged states; ``None``
    means "as staging would settle" (quasi-steady evaluation). ``lag_rates_per_s`` are
    the rates (1 - exp(-dt / tau)) / dt at which the room, chilled-water and condenser
    loops are pulled towards their targets; each loop's controller removes the heat
    arriving plus C * (T - target) * rate, within what its equipment can do, so that
    temperatures follow first-order lags when capacity allows and energy is conserved
    when it does not. Zero rates: quasi-steady (states at their targets).
    ``econ_tower_c``: ``economizer_tower_c`` at this wet-bulb, if the caller has it.
    """
    cfg = k.cfg
    air, srv, ch, ec, dyn = cfg.airside, cfg.servers, cfg.chiller, cfg.economizer, cfg.dynamics
    room_rate, chw_rate, cw_rate = lag_rates_per_s
    # Hall: servers, CRAH fans, recirculation.
    it_kw = airside.it_power_kw(srv, base_it_kw, rack_inlet_c)
    server_air = airside.server_airflow_m3_s(srv, base_it_kw, rack_inlet_c)
    crah_air = airside.crah_airflow_m3_s(air, server_air, crahs_available)
    fan_kw = airside.crah_fan_power_kw(air, crah_air, crahs_available)
    recirc_k = airside.recirculation_rise_k(air, server_air, crah_air, it_kw)
    rack_target = supply_air_c + air.mixing_offset_k + recirc_k
    rack_max_offset = (air.hotspot_offset_k - air.mixing_offset_k) + (air.hotspot_recirc_gain - 1.0) * recirc_k
    # Coils: the heat they take (room air and racks follow their lag), the supply air
    # they can reach and the water they draw.
    coil_kw = vpos(it_kw + fan_kw + dyn.room_capacity_kj_per_k * (rack_inlet_c - rack_target) * room_rate)
    ua = airside.coil_ua_kw_per_k(air, k.coil_design_ua_kw_per_k, crah_air, crahs_available)
    max_water = crahs_available * k.coil_design_flow_kg_s * air.max_water_flow_ratio
    min_approach = airside.coil_min_approach_k(coil_kw, crah_air, ua, max_water)
    sa_target = vmax(supply_air_sp_c, chw_c + min_approach)
    rise = airside.coil_water_rise_k(coil_kw, crah_air, ua, vmax(supply_air_c - chw_c, min_approach))
    coil_flow = coil_kw / (CP_WATER_KJ_PER_KG_K * vmax(rise, 1e-3))
    coil_flow = vmin(coil_flow, max(max_water, 1e-9))
    # Chilled-water loop: pumps, bypass, return temperature.
    cw_in = chiller.entering_cw_c(ch, cw_c)
    unit_cap = chiller.unit_capacity_kw(ch, chw_c, cw_in)
    staged_guess: Num = chillers_running if chillers_running is not None else chiller.chillers_needed(
        ch, coil_kw, unit_cap, chillers_available
    )
    chw_flow = hydronics.plant_flow_kg_s(
        ch, coil_flow, staged_guess, cfg.pumps.chw_min_speed * k.chw_pump_design_flow_kg_s
    )
    chw_pump_kw = hydronics.chw_pump_power_kw(cfg.pumps, chw_flow, k.chw_pump_design_flow_kg_s)
    heat_in = coil_kw + chw_pump_kw
    chw_return = hydronics.return_temperature_c(chw_c, heat_in, chw_flow)
    # Economiser: enable decision, then the share the HX carries at today's tower water.
    if econ_tower_c is None:
        econ_tower_c = economizer_tower_c(k, wetbulb_c)
    margin = economizer.economizer_margin_k(econ_tower_c, ec.hx_approach_k, chw_return)
    econ_on: Num = economizer_on if economizer_on is not None else vstep(margin - ec.enable_margin_k)
    if not ec.enabled:
        econ_on = econ_on * 0.0
    share = econ_on * economizer.economizer_share(cw_c, ec.hx_approach_k, chw_sp_c, chw_return)
    # Chillers: staging, then what the plant removes to follow the loop's lag.
    needed = chiller.chillers_needed(ch, heat_in * (1.0 - share), unit_cap, chillers_available)
    staged: Num = chillers_running if chillers_running is not None else needed
    running = vmin(staged, chillers_available)
    # Economiser on and no chiller running: the HX carries everything and the supply
    # floats up to what the HX makes.
    hx_only = econ_on * (1.0 - vstep(running))
    share = vwhere(hx_only > 0.0, share * 0.0 + 1.0, share)
    chw_target = vmax(chw_sp_c, hx_only * (cw_c + ec.hx_approach_k))
    wanted = vpos(heat_in + dyn.chw_loop_capacity_kj_per_k * (chw_c - chw_target) * chw_rate)
    hx_kw = share * wanted
    mech_kw = wanted - hx_kw
    chiller_kw = chiller.chiller_power_kw(ch, mech_kw, chw_c, cw_in, running, unit_cap)
    delivered = vmin(mech_kw, running * unit_cap)
    unmet = mech_kw - delivered
    # Condenser water and towers.
    pumps = vmin(running + econ_on * float(ec.cw_pumps), float(ch.count))
    cw_pump_kw = hydronics.cw_pump_power_kw(cfg.pumps, pumps)
    tower_heat = delivered + hx_kw + chiller_kw + cw_pump_kw
    cw_flow = pumps * cfg.pumps.cw_flow_per_pump_kg_s
    range_k = tower_heat / (CP_WATER_KJ_PER_KG_K * vmax(cw_flow, 1e-9))
    tower_target = vwhere(econ_on > 0.0, vmin(cw_sp_c, chw_sp_c - ec.hx_approach_k), cw_sp_c)
    cw_target, fan_speed, tower_kw = tower.tower_operation(
        cfg.tower, wetbulb_c, range_k, pumps / cfg.tower.cells, tower_target, k.tower_design_ratio
    )
    rejected = vpos(tower_heat + dyn.cw_loop_capacity_kj_per_k * (cw_c - cw_target) * cw_rate)
    cooling_kw = chiller_kw + tower_kw + chw_pump_kw + cw_pump_kw + fan_kw
    facility_kw = it_kw * (1.0 + cfg.facility.ups_loss_fraction) + cooling_kw + cfg.facility.fixed_losses_kw
    return OperatingPoint(
        it_power_kw=it_kw,
        crah_fan_power_kw=fan_kw,
        crah_airflow_m3_s=crah_air,
        server_airflow_m3_s=server_air,
        rack_inlet_mean_target_c=rack_target,
        rack_inlet_max_offset_k=rack_max_offset,
        supply_air_target_c=sa_target,
        coil_heat_kw=coil_kw,
        coil_water_flow_kg_s=coil_flow,
        chw_flow_kg_s=chw_flow,
        chw_pump_power_kw=chw_pump_kw,
        chw_return_c=chw_return,
        plant_heat_in_kw=heat_in,
        plant_load_kw=hx_kw + delivered,
        economizer_margin_k=margin,
        economizer_on=econ_on,
        economizer_share=share,
        chillers_needed=needed,
        chiller_unit_capacity_kw=unit_cap,
        chillers_running=running,
        chiller_power_kw=chiller_kw,
        chiller_load_kw=delivered,
        unmet_load_kw=unmet,
        chw_supply_target_c=chw_target,
        cw_pumps_running=pumps,
        cw_pump_power_kw=cw_pump_kw,
        tower_heat_kw=tower_heat,
        heat_rejected_kw=rejected,
        cw_supply_target_c=cw_target,
        tower_fan_speed=fan_speed,
        tower_fan_power_kw=tower_kw,
        cooling_power_kw=cooling_kw,
        facility_power_kw=facility_kw,
    )
