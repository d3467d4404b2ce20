"""The plant's quasi-steady operating point: every flow and power for one set of states.

Why one function: the time-stepping plant (on floats, once a minute) and the oracle
(on arrays of candidate setpoints) must see exactly the same physics. Given the
weather, the IT load, the setpoints and the lagged temperatures (chilled water,
supply air, rack inlet, condenser water), gathered in one ``OperatingInputs``, this
composes the component models the way the building-management system's local loops
run them, in the order the heat flows: the hall (CRAH fans follow the servers), the
coils (valves chase the supply-air setpoint), the chilled-water loop (pumps follow the
valves), the economiser (pre-cools when it pays) and the chillers (staged by load),
then the condenser loop (tower fans chase their setpoint). It returns the targets the
lagged temperatures move towards, and all powers.
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


@dataclass(frozen=True, kw_only=True)
class OperatingInputs(Generic[Num]):
    """Everything an operating point depends on besides the plant's constants.

    Floats for the time-stepping plant, or arrays (one element per candidate) for the
    setpoints and lagged states when the oracle searches. Temperatures [C], powers [kW].
    """

    # Drivers (this hour's weather and load).
    wetbulb_c: float
    base_it_power_kw: float  # IT power from utilisation alone, before hot inlets speed up server fans
    economizer_tower_c: float | None = None  # ``economizer_tower_c`` at this wet-bulb, if the caller has it
    # Setpoints in force.
    chw_supply_sp_c: Num
    supply_air_sp_c: Num
    cw_supply_sp_c: Num
    # Lagged states.
    chw_supply_c: Num
    supply_air_c: Num
    rack_inlet_mean_c: Num
    cw_supply_c: Num
    # Equipment: what is available, and what runs (None: as staging would settle).
    chillers_available: float
    crahs_available: float
    chillers_running: Num | None = None
    economizer_on: Num | None = None  # 0 or 1
    # Pull rates of the room, chilled-water and condenser loops towards their targets [1/s].
    lag_rates_per_s: tuple[float, float, float] = NO_LAG


class _Hall(NamedTuple, Generic[Num]):
    """Servers, CRAH fans and the room: airflows [m3/s], powers [kW], rack inlet target [C]."""

    it_kw: Num
    server_air_m3_s: Num
    crah_air_m3_s: Num
    fan_kw: Num
    rack_target_c: Num
    rack_max_offset_k: Num


class _Coils(NamedTuple, Generic[Num]):
    """What the CRAH coils take from the air [kW], the supply air they reach [C], their water [kg/s]."""

    heat_kw: Num
    supply_air_target_c: Num
    water_flow_kg_s: Num


class _ChilledWater(NamedTuple, Generic[Num]):
    """The chilled-water loop before the plant removes its heat."""

    entering_cw_c: Num  # condenser water entering the chillers
    unit_capacity_kw: Num
    flow_kg_s: Num
    pump_kw: Num
    heat_in_kw: Num
    return_c: Num


class _ChillerPlant(NamedTuple, Generic[Num]):
    """Economiser and chillers: who carries the load, and what they cannot [kW]."""

    economizer_margin_k: Num
    economizer_on: Num
    economizer_share: Num
    chillers_needed: Num
    chillers_running: Num
    chw_target_c: Num
    hx_kw: Num
    chiller_kw: Num
    delivered_kw: Num
    unmet_kw: Num


class _Condenser(NamedTuple, Generic[Num]):
    """Condenser pumps and cooling towers."""

    pumps: Num
    pump_kw: Num
    tower_heat_kw: Num
    cw_target_c: Num
    fan_speed: Num
    tower_kw: Num
    rejected_kw: Num


def operating_point(k: PlantConstants, x: OperatingInputs[Num]) -> OperatingPoint[Num]:
    """Compose the component models at these inputs.

    ``x.chillers_running`` / ``x.economizer_on`` are the plant's staged states; ``None``
    means "as staging would settle" (quasi-steady evaluation). ``x.lag_rates_per_s`` are
    the rates (1 - exp(-dt / tau)) / dt at which the room, chilled-water and condenser
    loops are pulled towards their targets; each loop's controller removes the heat
    arriving plus C * (T - target) * rate, within what its equipment can do, so that
    temperatures follow first-order lags when capacity allows and energy is conserved
    when it does not. Zero rates: quasi-steady (states at their targets).
    """
    cfg = k.cfg
    hall = _hall(k, x)
    coils = _coils(k, x, hall)
    chw = _chilled_water(k, x, coils)
    plant = _economiser_and_chillers(k, x, chw)
    cond = _condenser(k, x, plant)
    it_kw, fan_kw = hall.it_kw, hall.fan_kw
    chiller_kw, tower_kw, chw_pump_kw, cw_pump_kw = plant.chiller_kw, cond.tower_kw, chw.pump_kw, cond.pump_kw
    cooling_kw = chiller_kw + tower_kw + chw_pump_kw + cw_pump_kw + fan_kw
    facility_kw = it_kw * (1.0 + cfg.facility.ups_loss_fraction) + cooling_kw + cfg.facility.fixed_losses_kw
    return OperatingPoint(
        it_power_kw=it_kw,
        crah_fan_power_kw=fan_kw,
        crah_airflow_m3_s=hall.crah_air_m3_s,
        server_airflow_m3_s=hall.server_air_m3_s,
        rack_inlet_mean_target_c=hall.rack_target_c,
        rack_inlet_max_offset_k=hall.rack_max_offset_k,
        supply_air_target_c=coils.supply_air_target_c,
        coil_heat_kw=coils.heat_kw,
        coil_water_flow_kg_s=coils.water_flow_kg_s,
        chw_flow_kg_s=chw.flow_kg_s,
        chw_pump_power_kw=chw_pump_kw,
        chw_return_c=chw.return_c,
        plant_heat_in_kw=chw.heat_in_kw,
        plant_load_kw=plant.hx_kw + plant.delivered_kw,
        economizer_margin_k=plant.economizer_margin_k,
        economizer_on=plant.economizer_on,
        economizer_share=plant.economizer_share,
        chillers_needed=plant.chillers_needed,
        chiller_unit_capacity_kw=chw.unit_capacity_kw,
        chillers_running=plant.chillers_running,
        chiller_power_kw=chiller_kw,
        chiller_load_kw=plant.delivered_kw,
        unmet_load_kw=plant.unmet_kw,
        chw_supply_target_c=plant.chw_target_c,
        cw_pumps_running=cond.pumps,
        cw_pump_power_kw=cw_pump_kw,
        tower_heat_kw=cond.tower_heat_kw,
        heat_rejected_kw=cond.rejected_kw,
        cw_supply_target_c=cond.cw_target_c,
        tower_fan_speed=cond.fan_speed,
        tower_fan_power_kw=tower_kw,
        cooling_power_kw=cooling_kw,
        facility_power_kw=facility_kw,
    )


def _hall(k: PlantConstants, x: OperatingInputs[Num]) -> _Hall[Num]:
    """Servers, CRAH fans, recirculation: the rack inlet the room settles to."""
    air, srv = k.cfg.airside, k.cfg.servers
    it_kw = airside.it_power_kw(srv, x.base_it_power_kw, x.rack_inlet_mean_c)
    server_air = airside.server_airflow_m3_s(srv, x.base_it_power_kw, x.rack_inlet_mean_c)
    crah_air = airside.crah_airflow_m3_s(air, server_air, x.crahs_available)
    fan_kw = airside.crah_fan_power_kw(air, crah_air, x.crahs_available)
    recirc_k = airside.recirculation_rise_k(air, server_air, crah_air, it_kw)
    rack_target = x.supply_air_c + air.mixing_offset_k + recirc_k
    # The hottest rack sits in the busiest row, which gets an even share of CRAH air.
    row = airside.busiest_row_factor(srv, air, x.base_it_power_kw)
    row_recirc_k = airside.recirculation_rise_k(air, server_air * row, crah_air, it_kw * row)
    rack_max_offset = (air.hotspot_offset_k - air.mixing_offset_k) + air.hotspot_recirc_gain * row_recirc_k - recirc_k
    return _Hall(it_kw, server_air, crah_air, fan_kw, rack_target, rack_max_offset)


def _coils(k: PlantConstants, x: OperatingInputs[Num], hall: _Hall[Num]) -> _Coils[Num]:
    """The heat the coils take (room air and racks follow their lag), the supply air they
    can reach and the water they draw."""
    air, dyn = k.cfg.airside, k.cfg.dynamics
    room_rate = x.lag_rates_per_s[0]
    chw_c, crah_air = x.chw_supply_c, hall.crah_air_m3_s
    coil_kw = vpos(hall.it_kw + hall.fan_kw
                   + dyn.room_capacity_kj_per_k * (x.rack_inlet_mean_c - hall.rack_target_c) * room_rate)
    ua = airside.coil_ua_kw_per_k(air, k.coil_design_ua_kw_per_k, crah_air, x.crahs_available)
    max_water = x.crahs_available * k.coil_design_flow_kg_s * air.max_water_flow_ratio
    min_approach = airside.coil_min_approach_k(coil_kw, crah_air, ua, max_water)
    sa_target = vmax(x.supply_air_sp_c, chw_c + min_approach)
    rise = airside.coil_water_rise_k(coil_kw, crah_air, ua, vmax(x.supply_air_c - chw_c, min_approach))
    coil_flow = coil_kw / (CP_WATER_KJ_PER_KG_K * vmax(rise, 1e-3))
    coil_flow = vmin(coil_flow, max(max_water, 1e-9))
    return _Coils(coil_kw, sa_target, coil_flow)


def _chilled_water(k: PlantConstants, x: OperatingInputs[Num], coils: _Coils[Num]) -> _ChilledWater[Num]:
    """Chilled-water loop: chiller capacity at today's temperatures, pumps, bypass, return temperature."""
    cfg, ch = k.cfg, k.cfg.chiller
    cw_in = chiller.entering_cw_c(ch, x.cw_supply_c)
    unit_cap = chiller.unit_capacity_kw(ch, x.chw_supply_c, cw_in)
    staged_guess: Num = x.chillers_running if x.chillers_running is not None else chiller.chillers_needed(
        ch, coils.heat_kw, unit_cap, x.chillers_available
    )
    chw_flow = hydronics.plant_flow_kg_s(
        ch, coils.water_flow_kg_s, staged_guess, cfg.pumps.chw_min_speed * k.chw_pump_design_flow_kg_s
    )
    chw_pump_kw = hydronics.chw_pump_power_kw(cfg.pumps, chw_flow, k.chw_pump_design_flow_kg_s)
    heat_in = coils.heat_kw + chw_pump_kw
    chw_return = hydronics.return_temperature_c(x.chw_supply_c, heat_in, chw_flow)
    return _ChilledWater(cw_in, unit_cap, chw_flow, chw_pump_kw, heat_in, chw_return)


def _economiser_and_chillers(
    k: PlantConstants, x: OperatingInputs[Num], chw: _ChilledWater[Num]
) -> _ChillerPlant[Num]:
    """Economiser enable and the share the HX carries at today's tower water; then chiller
    staging and what the plant removes to follow the loop's lag."""
    ch, ec, dyn = k.cfg.chiller, k.cfg.economizer, k.cfg.dynamics
    chw_rate = x.lag_rates_per_s[1]
    chw_c, cw_c, heat_in = x.chw_supply_c, x.cw_supply_c, chw.heat_in_kw
    econ_tower_c = x.economizer_tower_c
    if econ_tower_c is None:
        econ_tower_c = economizer_tower_c(k, x.wetbulb_c)
    margin = economizer.economizer_margin_k(econ_tower_c, ec.hx_approach_k, chw.return_c)
    econ_on: Num = x.economizer_on if x.economizer_on is not None else vstep(margin - ec.enable_margin_k)
    if not ec.enabled:
        econ_on = econ_on * 0.0
    share = econ_on * economizer.economizer_share(cw_c, ec.hx_approach_k, x.chw_supply_sp_c, chw.return_c)
    needed = chiller.chillers_needed(ch, heat_in * (1.0 - share), chw.unit_capacity_kw, x.chillers_available)
    staged: Num = x.chillers_running if x.chillers_running is not None else needed
    running = vmin(staged, x.chillers_available)
    # Economiser on and no chiller running: the HX carries everything and the supply
    # floats up to what the HX makes.
    hx_only = econ_on * (1.0 - vstep(running))
    share = vwhere(hx_only > 0.0, share * 0.0 + 1.0, share)
    chw_target = vmax(x.chw_supply_sp_c, hx_only * (cw_c + ec.hx_approach_k))
    wanted = vpos(heat_in + dyn.chw_loop_capacity_kj_per_k * (chw_c - chw_target) * chw_rate)
    hx_kw = share * wanted
    mech_kw = wanted - hx_kw
    chiller_kw = chiller.chiller_power_kw(ch, mech_kw, chw_c, chw.entering_cw_c, running, chw.unit_capacity_kw)
    delivered = vmin(mech_kw, running * chw.unit_capacity_kw)
    unmet = mech_kw - delivered
    return _ChillerPlant(margin, econ_on, share, needed, running, chw_target, hx_kw, chiller_kw, delivered, unmet)


def _condenser(k: PlantConstants, x: OperatingInputs[Num], plant: _ChillerPlant[Num]) -> _Condenser[Num]:
    """Condenser water and towers: pumps, the heat arriving, what the towers deliver and reject."""
    cfg, ec = k.cfg, k.cfg.economizer
    cw_rate = x.lag_rates_per_s[2]
    econ_on, cw_sp_c = plant.economizer_on, x.cw_supply_sp_c
    pumps = vmin(plant.chillers_running + econ_on * float(ec.cw_pumps), float(cfg.chiller.count))
    cw_pump_kw = hydronics.cw_pump_power_kw(cfg.pumps, pumps)
    tower_heat = plant.delivered_kw + plant.hx_kw + plant.chiller_kw + cw_pump_kw
    cw_flow = pumps * cfg.pumps.cw_flow_per_pump_kg_s
    range_k = tower_heat / (CP_WATER_KJ_PER_KG_K * vmax(cw_flow, 1e-9))
    tower_target = vwhere(econ_on > 0.0, vmin(cw_sp_c, x.chw_supply_sp_c - ec.hx_approach_k), cw_sp_c)
    cw_target, fan_speed, tower_kw = tower.tower_operation(
        cfg.tower, x.wetbulb_c, range_k, pumps / cfg.tower.cells, tower_target, k.tower_design_ratio
    )
    rejected = vpos(tower_heat + k.cfg.dynamics.cw_loop_capacity_kj_per_k * (x.cw_supply_c - cw_target) * cw_rate)
    return _Condenser(pumps, cw_pump_kw, tower_heat, cw_target, fan_speed, tower_kw, rejected)
