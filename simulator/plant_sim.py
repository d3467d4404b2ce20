"""The simulated plant: drivers, lagged temperatures, staging, sensors and faults in time.

``SimulatedPlant`` implements ``simulator.plant.Plant`` and, for the oracle,
``simulator.plant.SteadyStatePlant`` (``steady_state``). Each internal step (at most
one minute) evaluates the quasi-steady operating point at the current lagged states
(``simulator.operating_point``), moves each state one first-order lag towards its
target, books the heat released by thermal storage, and runs the staging and
economiser hysteresis. Every ``record_interval_s`` it samples a historian record
through the sensor model. The physics itself lives in the pure component modules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from db.roles import MEASUREMENT_ROLES, SETPOINT_ROLES
from simulator.airside import base_it_power_kw
from simulator.config import CP_WATER_KJ_PER_KG_K, PlantConfig
from simulator.drivers import HourlySeries, Weather, hours_since_new_year, load_climate, load_workload
from simulator.faults import FAULT_KINDS, FaultEvent, FaultSchedule, validate_fault
from simulator.load import perturb_utilisation
from simulator.operating_point import (
    NO_LAG,
    OperatingInputs,
    OperatingPoint,
    PlantConstants,
    economizer_tower_c,
    operating_point,
)
from simulator.plant import Plant, SteadyStatePlant
from simulator.rollout import DynamicState, rollout, stage_down_kw
from simulator.sensors import SensorBank, SensorDefects

FloatArray = npt.NDArray[np.float64]

DEFAULT_START = datetime(2023, 7, 1, tzinfo=UTC)
INITIAL_SETPOINTS: dict[str, float] = {"chw_supply_sp_c": 10.0, "supply_air_sp_c": 22.0, "cw_supply_sp_c": 27.0}
STEADY_STATE_ITERATIONS = 6
TOTALS = ("it_kwh", "cooling_kwh", "facility_kwh", "heat_rejected_kwh", "chiller_kwh", "tower_fan_kwh", "pump_kwh",
          "crah_fan_kwh", "unmet_kwh", "economizer_hours")


class SimulatedPlant(Plant, SteadyStatePlant):
    """Digital twin of the default chilled-water plant (see ``simulator.config``).

    A `Plant`, and a `SteadyStatePlant` (``steady_state``) that the oracle can search.
    """

    def __init__(
        self,
        config: PlantConfig,
        weather: Weather,
        utilisation: FloatArray,
        start: datetime,
        seed: int,
        sensor_defects: SensorDefects,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("plant start time must be timezone-aware (UTC)")
        self.config = config
        self.weather_source = weather.source
        self._k = PlantConstants.from_config(config)
        self._start = start.astimezone(UTC)
        self._t_s = 0.0
        self._h0 = hours_since_new_year(self._start)
        self._drybulb = HourlySeries(weather.drybulb_c)
        self._rh = HourlySeries(weather.rh_pct)
        self._wetbulb = HourlySeries(weather.wetbulb_c)
        sensor_seed, fault_seed, load_seed = np.random.SeedSequence(seed).spawn(3)
        self._util = HourlySeries(perturb_utilisation(utilisation, load_seed, config.load))
        self._econ_tower = HourlySeries([economizer_tower_c(self._k, float(w)) for w in weather.wetbulb_c])
        self._sensors = SensorBank(MEASUREMENT_ROLES, sensor_defects, np.random.default_rng(sensor_seed))
        self._faults = FaultSchedule(config.faults, np.random.default_rng(fault_seed), MEASUREMENT_ROLES)
        self._chillers_available = float(config.chiller.count)
        self._crahs_available = float(config.airside.crah_count)
        dyn = config.dynamics
        self._step_s = dyn.step_s
        self._record_s = dyn.record_interval_s
        self._next_record_s = self._record_s
        self._sp = [INITIAL_SETPOINTS[r] for r in SETPOINT_ROLES]
        self._stage_up_s = 0.0
        self._stage_down_s = 0.0
        self._totals: dict[str, float] = dict.fromkeys(TOTALS, 0.0)
        self._rates: tuple[float, float, float] | None = None
        self._settle()
        self._last_op = self._op()
        self._make_record()

    # --- the Plant protocol -------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._t_s)

    @property
    def record_interval_s(self) -> float:
        return self._record_s

    def read(self) -> dict[str, float]:
        return dict(zip(MEASUREMENT_ROLES, self._reading.tolist(), strict=True))

    def setpoints(self) -> dict[str, float]:
        return dict(zip(SETPOINT_ROLES, self._sp, strict=True))

    def apply(self, setpoints: Mapping[str, float]) -> None:
        """Command setpoints; unknown roles and non-finite values are refused."""
        for role, value in setpoints.items():
            if role not in SETPOINT_ROLES:
                raise ValueError(f"unknown setpoint role {role!r}; known: {', '.join(SETPOINT_ROLES)}")
            if not math.isfinite(value):
                raise ValueError(f"setpoint {role} must be finite, got {value!r}")
        for i, role in enumerate(SETPOINT_ROLES):
            if role in setpoints:
                self._sp[i] = float(setpoints[role])

    def advance(self, seconds: float) -> None:
        if not seconds >= 0.0:
            raise ValueError(f"advance needs a non-negative number of seconds, got {seconds!r}")
        end = self._t_s + seconds
        while self._t_s < end - 1e-9:
            dt = min(self._step_s, end - self._t_s, self._next_record_s - self._t_s)
            self._step(dt)
            if self._faults.due(self._t_s):
                self._faults.advance(self._t_s, self._start)
                self._refresh_availability()
            if self._t_s >= self._next_record_s - 1e-9:
                self._t_s = self._next_record_s
                self._next_record_s += self._record_s
                self._make_record()

    # --- extras for tests, evaluation and the oracle -----------------------------

    def true_record(self) -> dict[str, float]:
        """The noise-free values behind the latest record (what ``read`` would be with perfect sensors)."""
        return dict(zip(MEASUREMENT_ROLES, self._true_record.tolist(), strict=True))

    def true_state(self) -> dict[str, float]:
        """Noise-free values of every measurement role now, plus setpoints and internals."""
        op = self._op()
        out = self._role_values(op)
        out.update(self.setpoints())
        out.update(
            heat_rejected_kw=op.heat_rejected_kw,
            plant_load_kw=op.plant_load_kw,
            chiller_load_kw=op.chiller_load_kw,
            unmet_load_kw=op.unmet_load_kw,
            coil_heat_kw=op.coil_heat_kw,
            chw_pump_power_kw=op.chw_pump_power_kw,
            cw_pump_power_kw=op.cw_pump_power_kw,
            tower_fan_speed=op.tower_fan_speed,
            crah_airflow_m3_s=op.crah_airflow_m3_s,
            server_airflow_m3_s=op.server_airflow_m3_s,
            chillers_available=self._chillers_available,
            crahs_available=self._crahs_available,
            stored_heat_kj=self._stored_heat_kj(),
        )
        return out

    def utilisation_at(self, when: datetime) -> float:
        """The IT utilisation [0, 1] driving the servers at ``when`` (the perturbed trace)."""
        return self._util.at(hours_since_new_year(when))

    def totals(self) -> dict[str, float]:
        """Energy since the start [kWh], by flow, and economiser hours [h]."""
        return dict(self._totals)

    def inject_fault(self, kind: str, **params: Any) -> int:
        """Start a fault now (until ``clear_fault``); returns its id. See ``simulator.faults``."""
        checked = validate_fault(kind, params, MEASUREMENT_ROLES)
        fault_id = self._faults.start(kind, checked, self._t_s, self.now)
        self._refresh_availability()
        return fault_id

    def clear_fault(self, kind: str, role: str | None = None) -> int:
        """End every active fault of ``kind`` (only ``role``'s for sensors); returns how many."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)}")
        ended = self._faults.clear(kind, self.now, role)
        self._refresh_availability()
        return ended

    def fault_log(self) -> list[FaultEvent]:
        """Every fault start and end so far."""
        return list(self._faults.log)

    def steady_state(self, setpoints: npt.ArrayLike) -> dict[str, FloatArray]:
        """Quasi-steady true response to candidate setpoints (N, 3) at today's weather and load.

        Staging and economiser settle as the local loops would; lags are at rest. Keys:
        cooling_power_kw, rack_inlet_max_c, rack_inlet_mean_c, it_power_kw,
        facility_power_kw, supply_air_c, chw_supply_c, cw_supply_c, economizer_active,
        chiller_power_kw, tower_fan_power_kw, coil_water_flow_kg_s.
        """
        sp = np.atleast_2d(np.asarray(setpoints, dtype=np.float64))
        if sp.ndim != 2 or sp.shape[1] != len(SETPOINT_ROLES):
            raise ValueError(f"setpoints must have shape (N, {len(SETPOINT_ROLES)}), got {sp.shape}")
        chw_sp, sa_sp, cw_sp = sp[:, 0].copy(), sp[:, 1].copy(), sp[:, 2].copy()
        chw, sa, cw = chw_sp.copy(), np.maximum(sa_sp, chw_sp), cw_sp.copy()
        rack = sa + self.config.airside.mixing_offset_k
        wb, base = self._drivers_now()
        op = None
        for _ in range(STEADY_STATE_ITERATIONS):
            op = operating_point(self._k, OperatingInputs(
                wetbulb_c=wb, base_it_power_kw=base,
                chw_supply_sp_c=chw_sp, supply_air_sp_c=sa_sp, cw_supply_sp_c=cw_sp,
                chw_supply_c=chw, supply_air_c=sa, rack_inlet_mean_c=rack, cw_supply_c=cw,
                chillers_available=self._chillers_available, crahs_available=self._crahs_available,
            ))
            # Short of capacity, the supply settles warmer by the unmet heat on the plant flow.
            chw = op.chw_supply_target_c + op.unmet_load_kw / (CP_WATER_KJ_PER_KG_K * op.chw_flow_kg_s)
            sa, rack, cw = op.supply_air_target_c, op.rack_inlet_mean_target_c, op.cw_supply_target_c
        assert op is not None
        return {
            "cooling_power_kw": op.cooling_power_kw,
            "rack_inlet_max_c": rack + op.rack_inlet_max_offset_k,
            "rack_inlet_mean_c": rack,
            "it_power_kw": op.it_power_kw,
            "facility_power_kw": op.facility_power_kw,
            "supply_air_c": sa,
            "chw_supply_c": chw,
            "cw_supply_c": cw,
            "economizer_active": op.economizer_share,
            "chiller_power_kw": op.chiller_power_kw,
            "tower_fan_power_kw": op.tower_fan_power_kw,
            "coil_water_flow_kg_s": op.coil_water_flow_kg_s,
        }

    def rollout(self, setpoints: npt.ArrayLike, seconds: float) -> dict[str, FloatArray]:
        """Each candidate (N, 3) held for ``seconds`` on the full dynamic model (``simulator.rollout``).

        Sensors, faults and records are left out (equipment stays as available now); the
        plant itself does not move. Keys, one value per candidate: cooling_kwh,
        facility_kwh, heat_rejected_kwh over the horizon, rack_inlet_max_c (the hottest
        inlet at any step), rack_inlet_end_c and chillers_running (at the end).
        """
        sp = np.atleast_2d(np.asarray(setpoints, dtype=np.float64))
        if sp.ndim != 2 or sp.shape[1] != len(SETPOINT_ROLES) or not np.isfinite(sp).all():
            raise ValueError(f"setpoints must be finite with shape (N, {len(SETPOINT_ROLES)}), got {sp.shape}")
        if not (math.isfinite(seconds) and seconds > 0.0):
            raise ValueError(f"a rollout needs a positive horizon in seconds, got {seconds!r}")
        start = DynamicState(
            hour=self._h0 + self._t_s / 3600.0, chw_supply_c=self._chw, supply_air_c=self._sa,
            rack_inlet_mean_c=self._rack, cw_supply_c=self._cw, chillers_running=self._n_run,
            economizer_on=self._econ, stage_up_s=self._stage_up_s, stage_down_s=self._stage_down_s,
            chillers_available=self._chillers_available, crahs_available=self._crahs_available,
        )
        return rollout(self._k, self._drivers_at, start, sp, seconds, self._step_s)

    # --- internals ---------------------------------------------------------------

    def _drivers_at(self, hour: float) -> tuple[float, float, float]:
        """Wet-bulb [C], base IT power [kW] and economiser tower water [C] at an hour of the year."""
        return (self._wetbulb.at(hour), base_it_power_kw(self.config.servers, self._util.at(hour)),
                self._econ_tower.at(hour))

    def _drivers_now(self) -> tuple[float, float]:
        h = self._h0 + self._t_s / 3600.0
        return self._wetbulb.at(h), base_it_power_kw(self.config.servers, self._util.at(h))

    def _op(self, settled: bool = False, rates_dt: float | None = None) -> OperatingPoint[float]:
        h = self._h0 + self._t_s / 3600.0
        chw_sp, sa_sp, cw_sp = self._sp
        return operating_point(self._k, OperatingInputs(
            wetbulb_c=self._wetbulb.at(h), base_it_power_kw=base_it_power_kw(self.config.servers, self._util.at(h)),
            economizer_tower_c=self._econ_tower.at(h),
            chw_supply_sp_c=chw_sp, supply_air_sp_c=sa_sp, cw_supply_sp_c=cw_sp,
            chw_supply_c=self._chw, supply_air_c=self._sa, rack_inlet_mean_c=self._rack, cw_supply_c=self._cw,
            chillers_available=self._chillers_available, crahs_available=self._crahs_available,
            chillers_running=None if settled else self._n_run,
            economizer_on=None if settled else self._econ,
            lag_rates_per_s=NO_LAG if settled else self._lag_rates(rates_dt or self._step_s),
        ))

    def _settle(self) -> None:
        """Start at rest: states at their quasi-steady values for the initial setpoints."""
        chw_sp, sa_sp, cw_sp = self._sp
        self._chw, self._sa, self._cw = chw_sp, max(sa_sp, chw_sp), cw_sp
        self._rack = self._sa + self.config.airside.mixing_offset_k
        self._n_run, self._econ = 0.0, 0.0
        for _ in range(STEADY_STATE_ITERATIONS):
            op = self._op(settled=True)
            self._chw, self._sa = op.chw_supply_target_c, op.supply_air_target_c
            self._rack, self._cw = op.rack_inlet_mean_target_c, op.cw_supply_target_c
            self._n_run, self._econ = op.chillers_running, op.economizer_on

    def _refresh_availability(self) -> None:
        cfg = self.config
        self._chillers_available = float(max(cfg.chiller.count - self._faults.count("chiller_trip"), 0))
        self._crahs_available = float(max(cfg.airside.crah_count - self._faults.count("crah_failure"), 0))
        self._n_run = min(self._n_run, self._chillers_available)

    def _stored_heat_kj(self) -> float:
        dyn = self.config.dynamics
        return (dyn.room_capacity_kj_per_k * self._rack + dyn.chw_loop_capacity_kj_per_k * self._chw
                + dyn.cw_loop_capacity_kj_per_k * self._cw)

    def _lag_rates(self, dt: float) -> tuple[float, float, float]:
        """Pull rates (1 - exp(-dt / tau)) / dt [1/s] of the room, chilled-water and condenser loops."""
        if dt == self._step_s and self._rates is not None:
            return self._rates
        dyn = self.config.dynamics
        room, chw, cw = ((1.0 - math.exp(-dt / tau)) / dt for tau in (dyn.tau_room_s, dyn.tau_chw_s, dyn.tau_cw_s))
        if dt == self._step_s:
            self._rates = (room, chw, cw)
        return room, chw, cw

    def _step(self, dt: float) -> None:
        """One step: each loop's temperature moves by (heat in - heat out) * dt / C."""
        op = self._op(rates_dt=dt)
        self._last_op = op
        dyn = self.config.dynamics
        self._sa += (op.supply_air_target_c - self._sa) * (1.0 - math.exp(-dt / dyn.tau_supply_air_s))
        self._rack += (op.it_power_kw + op.crah_fan_power_kw - op.coil_heat_kw) * dt / dyn.room_capacity_kj_per_k
        self._chw += (op.plant_heat_in_kw - op.plant_load_kw) * dt / dyn.chw_loop_capacity_kj_per_k
        self._cw += (op.tower_heat_kw - op.heat_rejected_kw) * dt / dyn.cw_loop_capacity_kj_per_k
        self._stage(op, dt)
        self._economize(op)
        self._book(op, dt)
        self._t_s += dt

    def _stage(self, op: OperatingPoint[float], dt: float) -> None:
        """Chiller staging with a delay, as a BMS does it (one machine at a time)."""
        ch = self.config.chiller
        n = self._n_run
        if op.chillers_needed > n:
            self._stage_up_s += dt
            self._stage_down_s = 0.0
            if self._stage_up_s >= ch.stage_delay_s:
                n, self._stage_up_s = n + 1.0, 0.0
        elif n > 0.0 and op.chiller_load_kw + op.unmet_load_kw <= self._stage_down_kw(op, n):
            self._stage_down_s += dt
            self._stage_up_s = 0.0
            if self._stage_down_s >= ch.stage_delay_s:
                n, self._stage_down_s = n - 1.0, 0.0
        else:
            self._stage_up_s = self._stage_down_s = 0.0
        self._n_run = min(n, self._chillers_available)

    def _stage_down_kw(self, op: OperatingPoint[float], n: float) -> float:
        """Chiller load [kW] below which one of ``n`` running chillers stops (``simulator.rollout.stage_down_kw``)."""
        return float(stage_down_kw(self._k, op.chiller_unit_capacity_kw, n, self._econ))

    def _economize(self, op: OperatingPoint[float]) -> None:
        ec = self.config.economizer
        if self._econ > 0.0 and op.economizer_margin_k < ec.disable_margin_k:
            self._econ = 0.0
        elif self._econ == 0.0 and op.economizer_margin_k > ec.enable_margin_k:
            self._econ = 1.0

    def _book(self, op: OperatingPoint[float], dt: float) -> None:
        h = dt / 3600.0
        t = self._totals
        t["it_kwh"] += op.it_power_kw * h
        t["cooling_kwh"] += op.cooling_power_kw * h
        t["facility_kwh"] += op.facility_power_kw * h
        t["heat_rejected_kwh"] += op.heat_rejected_kw * h
        t["chiller_kwh"] += op.chiller_power_kw * h
        t["tower_fan_kwh"] += op.tower_fan_power_kw * h
        t["pump_kwh"] += (op.chw_pump_power_kw + op.cw_pump_power_kw) * h
        t["crah_fan_kwh"] += op.crah_fan_power_kw * h
        t["unmet_kwh"] += op.unmet_load_kw * h
        if op.economizer_share > 0.0:
            t["economizer_hours"] += h

    def _role_values(self, op: OperatingPoint[float]) -> dict[str, float]:
        h = self._h0 + self._t_s / 3600.0
        return {
            "it_power_kw": op.it_power_kw,
            "cooling_power_kw": op.cooling_power_kw,
            "facility_power_kw": op.facility_power_kw,
            "chiller_power_kw": op.chiller_power_kw,
            "tower_fan_power_kw": op.tower_fan_power_kw,
            "pump_power_kw": op.chw_pump_power_kw + op.cw_pump_power_kw,
            "crah_fan_power_kw": op.crah_fan_power_kw,
            "outdoor_drybulb_c": self._drybulb.at(h),
            "outdoor_rh_pct": self._rh.at(h),
            "outdoor_wetbulb_c": self._wetbulb.at(h),
            "chw_supply_c": self._chw,
            "chw_return_c": op.chw_return_c,
            "cw_supply_c": self._cw,
            "supply_air_c": self._sa,
            "rack_inlet_max_c": self._rack + op.rack_inlet_max_offset_k,
            "rack_inlet_mean_c": self._rack,
            "chillers_running": op.chillers_running,
            "economizer_active": op.economizer_share,
        }

    def _make_record(self) -> None:
        """Sample the sensors: temperatures now, meters and derived values over the last step."""
        values = self._role_values(self._last_op)
        self._true_record = np.array([values[r] for r in MEASUREMENT_ROLES], dtype=np.float64)
        self._reading = self._sensors.read(self._true_record, self._faults.sensor_failures())


def make_plant(
    climate: str | Path | None = None,
    workload: str | Path | None = None,
    start: datetime | None = None,
    seed: int = 0,
    config: PlantConfig | None = None,
    sensor_defects: SensorDefects | None = None,
) -> SimulatedPlant:
    """Build the simulated plant; usable as ``--plant simulator.plant_sim:make_plant``.

    ``climate``: a shipped climate name or an EPW / compact CSV path (default Leesburg
    VA); ``workload``: a utilisation CSV (default the Alibaba 2017 trace); ``start``:
    UTC start time (default 2023-07-01 00:00 UTC; naive times are taken as UTC).
    """
    when = start or DEFAULT_START
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return SimulatedPlant(
        config or PlantConfig(),
        load_climate(climate),
        load_workload(workload),
        when,
        seed,
        sensor_defects if sensor_defects is not None else SensorDefects(),
    )
