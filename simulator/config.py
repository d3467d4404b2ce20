"""Plant configuration: every size, curve and time constant of the digital twin.

Defaults describe a site of about 1 MW IT: three 600 kW water-cooled centrifugal
chillers (N+1), a three-cell variable-speed cooling tower, variable-speed chilled-water
pumps, one constant-speed condenser pump per chiller, ten air handlers (CRAH, N+1) and
a plate heat exchanger for waterside economising. Where each default comes from is in
docs/simulator.md; the comments here give the unit and the meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CP_WATER_KJ_PER_KG_K = 4.186  # specific heat of water [kJ/(kg K)]
RHO_AIR_KG_PER_M3 = 1.2  # air density in the hall [kg/m3]
CP_AIR_KJ_PER_KG_K = 1.006  # specific heat of air [kJ/(kg K)]

# DOE-2 centrifugal chiller, 5.50 COP (EnergyPlus datasets/Chillers.idf); temperatures in C.
DOE2_CAPFT = (0.257896, 0.0389016, -0.00021708, 0.0468684, -0.00094284, -0.00034344)
DOE2_EIRFT = (0.933884, -0.058212, 0.00450036, 0.00243, 0.000486, -0.001215)
DOE2_EIRFPLR = (0.222903, 0.313387, 0.46371)

# YorkCalc cooling-tower approach correlation (EnergyPlus CoolingTowerPerformance:YorkCalc
# defaults): 27 coefficients for wet-bulb^i * range^j * LG^k, i, j, k in 0..2, i fastest.
YORKCALC_COEFFS = (
    -0.359741205, -0.055053608, 0.0023850432,
    0.173926877, -0.0248473764, 0.00048430224,
    -0.005589849456, 0.0005770079712, -0.00001342427256,
    2.84765801111111, -0.121765149, 0.0014599242,
    1.680428651, -0.0166920786, -0.0007190532,
    -0.025485194448, 0.0000487491696, 0.00002719234152,
    -0.0653766255555556, -0.002278167, 0.0002500254,
    -0.0910565458, 0.00318176316, 0.000038621772,
    -0.0034285382352, 0.00000856589904, -0.000001516821552,
)


@dataclass(frozen=True)
class ChillerConfig:
    """Water-cooled centrifugal chillers, EnergyPlus Chiller:Electric:EIR (DOE-2 form).

    Outside the curves' valid box the EIR is scaled by the Carnot lift (see
    ``simulator.chiller``); ``lift_scaled_share`` is the part of compressor power that
    scales with lift (the rest, motor and drive losses, does not).
    """

    count: int = 3
    capacity_kw: float = 600.0  # reference capacity of one chiller at 6.67 / 29.4 C [kW]
    cop_ref: float = 5.5  # reference COP [-]
    capft: tuple[float, ...] = DOE2_CAPFT
    eirft: tuple[float, ...] = DOE2_EIRFT
    eirfplr: tuple[float, ...] = DOE2_EIRFPLR
    chw_valid_min_c: float = 5.0
    # The curves are fitted for 5-10 C, but the EIR quadratic reaches its fitted minimum
    # near 10 C and bends up before it; above 9 C we follow the Carnot lift instead.
    chw_curve_max_c: float = 9.0
    cw_valid_min_c: float = 24.0
    cw_valid_max_c: float = 35.0
    min_plr: float = 0.1  # below this the chiller false-loads (hot-gas bypass) [-]
    evap_offset_k: float = 2.0  # evaporating refrigerant below leaving chilled water [K]
    cond_offset_k: float = 7.0  # condensing refrigerant above entering condenser water [K]
    lift_scaled_share: float = 0.6  # share of power that follows the Carnot lift [-]
    min_entering_cw_c: float = 15.5  # head-pressure (tempering) valve keeps the condenser inlet above this [C]
    stage_up_plr: float = 0.9  # start another chiller when the running ones exceed this part load [-]
    stage_down_plr: float = 0.7  # stop one when the others would run below this part load [-]
    stage_delay_s: float = 300.0  # a staging condition must hold this long [s]
    design_delta_t_k: float = 6.0  # evaporator design temperature difference [K]
    min_evap_flow_fraction: float = 0.4  # minimum evaporator flow per running chiller (bypass keeps it) [-]


@dataclass(frozen=True)
class TowerConfig:
    """Variable-speed cooling tower, YorkCalc approach correlation, one cell per chiller."""

    cells: int = 3
    design_wetbulb_c: float = 25.55  # design inlet wet-bulb [C]
    design_approach_k: float = 3.89  # design approach [K]
    design_range_k: float = 5.56  # design range [K]
    fan_power_per_cell_kw: float = 9.4  # fan power of one cell at full speed [kW] (ASHRAE 90.1: 38.2 gpm/hp)
    min_approach_k: float = 1.1  # no tower gets closer to wet-bulb than this [K] (YorkCalc lower bound)
    max_liquid_gas_ratio: float = 8.0  # YorkCalc upper bound [-]
    free_convection_fraction: float = 0.125  # capacity with the fans off [-]
    coeffs: tuple[float, ...] = YORKCALC_COEFFS
    wetbulb_valid_min_c: float = -34.4
    wetbulb_valid_max_c: float = 26.67
    range_valid_min_k: float = 1.1
    range_valid_max_k: float = 22.2


@dataclass(frozen=True)
class PumpConfig:
    """Pumps: P = dp * V / eta at design flow, affinity law (cube of flow) below it."""

    chw_design_dp_kpa: float = 160.0  # chilled-water loop head at design flow [kPa]
    chw_efficiency: float = 0.87  # wire-to-water efficiency [-]
    chw_min_speed: float = 0.3  # minimum pump speed [-]
    cw_design_dp_kpa: float = 140.0  # condenser loop head [kPa]
    cw_efficiency: float = 0.9
    cw_flow_per_pump_kg_s: float = 30.5  # one constant-speed pump per chiller (about 3 gpm/ton) [kg/s]


@dataclass(frozen=True)
class AirsideConfig:
    """Air handlers (CRAH) with chilled-water coils, and the airflow paths of the hall.

    The coil is a counterflow exchanger with a fixed UA at design airflow (scaled by
    airflow^0.8); its design point sets UA: ``design_approach_k`` between supply air
    and chilled water at design load, design water temperature rise and design airflow.
    """

    crah_count: int = 10
    airflow_per_crah_m3_s: float = 8.5  # maximum airflow of one unit [m3/s]
    fan_power_per_crah_kw: float = 8.5  # fan power of one unit at maximum airflow (600 Pa, eta 0.6) [kW]
    min_fan_speed: float = 0.3  # [-]
    airflow_margin: float = 0.1  # CRAHs supply this much more air than the servers pull [-]
    design_duty_per_crah_kw: float = 122.0  # coil design duty [kW]
    design_approach_k: float = 3.0  # supply air minus chilled water at design load and flows [K]
    design_water_rise_k: float = 6.0  # coil water temperature rise at design [K]
    max_water_flow_ratio: float = 1.2  # valve fully open, relative to design coil water flow [-]
    ua_airflow_exponent: float = 0.8  # UA ~ airflow^0.8 (air-side film) [-]
    mixing_offset_k: float = 0.5  # mean rack inlet above supply air with adequate airflow [K]
    hotspot_offset_k: float = 1.0  # hottest rack inlet above supply air with adequate airflow everywhere [K]
    hotspot_recirc_gain: float = 1.5  # hottest rack sees this multiple of its row's recirculation rise [-]
    # Uneven load: the busiest row's utilisation-driven power (above idle) runs this share
    # above the hall's mean while the CRAHs feed every row alike, so at high utilisation
    # it pulls more air than it gets and draws hot-aisle air (see ``airside.busiest_row_factor``).
    row_load_imbalance: float = 0.4  # [-]
    max_recirc_fraction: float = 0.6  # cap on the share of server air drawn from the hot aisle [-]


@dataclass(frozen=True)
class ServerConfig:
    """IT load: utilisation trace to power, and the servers' response to inlet temperature."""

    peak_power_kw: float = 1000.0  # IT power at 100 % utilisation and cool inlet [kW]
    idle_fraction: float = 0.5  # idle power as a share of peak [-]
    load_scale: float = 1.0  # multiplies the utilisation-derived power [-]
    design_delta_t_k: float = 12.0  # air temperature rise through the servers at cool inlet [K]
    fan_knee_c: float = 25.0  # server fans ramp up above this inlet temperature [C]
    fan_speed_gain_per_k: float = 0.06  # relative fan speed (and airflow) increase per K above the knee [1/K]
    fan_power_share: float = 0.04  # server fans' share of IT power at the knee [-]
    leakage_gain_per_k: float = 0.003  # silicon leakage: relative IT power increase per K above the knee [1/K]


@dataclass(frozen=True)
class EconomizerConfig:
    """Waterside economiser: plate heat exchanger in series ahead of the chillers."""

    enabled: bool = True
    hx_approach_k: float = 1.5  # chilled water leaving the HX above condenser water entering it [K]
    enable_margin_k: float = 1.0  # enable when predicted HX leaving water is this far below chilled-water return [K]
    disable_margin_k: float = 0.5  # disable when the margin falls below this (hysteresis) [K]
    cw_pumps: int = 2  # condenser pumps that serve the HX while it runs [-]


@dataclass(frozen=True)
class DynamicsConfig:
    """First-order lags and the internal step; thermal capacities for energy storage."""

    step_s: float = 60.0  # internal integration step, at most one minute [s]
    record_interval_s: float = 300.0  # historian record interval [s]
    tau_supply_air_s: float = 120.0  # coil and valve loop [s]
    tau_room_s: float = 300.0  # hall air and rack mass, supply air to rack inlet [s]
    tau_chw_s: float = 600.0  # chilled-water loop [s]
    tau_cw_s: float = 300.0  # condenser-water loop [s]
    room_capacity_kj_per_k: float = 20_000.0  # air and rack mass that follows the rack inlet [kJ/K]
    chw_loop_capacity_kj_per_k: float = 250_000.0  # about 60 m3 of chilled water [kJ/K]
    cw_loop_capacity_kj_per_k: float = 170_000.0  # about 40 m3 of condenser water [kJ/K]


@dataclass(frozen=True)
class FacilityConfig:
    """Electrical losses outside cooling, so that PUE includes UPS and distribution."""

    ups_loss_fraction: float = 0.05  # UPS (about 95 % efficient) and distribution losses, share of IT power [-]
    fixed_losses_kw: float = 10.0  # lighting, offices, controls [kW]


@dataclass(frozen=True)
class LoadVariation:
    """Seeded perturbation of the utilisation trace (``simulator.load``), so that no week repeats.

    The shipped trace is one week repeated; real halls drift day to day, gain and lose
    deployments that persist for days, and are noisy hour to hour. The factors multiply
    utilisation; their product is kept within [1 - max_level_change, 1 + max_level_change].
    """

    enabled: bool = True
    daily_level_sd: float = 0.04  # day-to-day level: log-normal AR(1), stationary standard deviation [-]
    daily_level_correlation: float = 0.7  # AR(1) coefficient from one day to the next [-]
    deployments_per_week: float = 0.5  # deployments / decommissions (step changes), Poisson rate [1/week]
    deployment_step_min: float = 0.04  # smallest step, share of utilisation (either sign) [-]
    deployment_step_max: float = 0.10  # largest step [-]
    deployment_days_min: float = 2.0  # a step persists at least this long [days]
    deployment_days_max: float = 21.0  # and at most this long [days]
    hourly_noise_sd: float = 0.015  # additive utilisation noise, AR(1), stationary standard deviation [-]
    hourly_noise_correlation: float = 0.5  # AR(1) coefficient from one hour to the next [-]
    max_level_change: float = 0.2  # bound on the combined level factor's distance from 1 [-]


@dataclass(frozen=True)
class FaultRates:
    """Random equipment and sensor faults, as Poisson processes (0 disables a kind)."""

    chiller_trips_per_year: float = 0.0
    crah_failures_per_year: float = 0.0
    sensor_failures_per_year: float = 0.0
    mean_repair_h: float = 8.0  # mean duration of a random fault [h]


@dataclass(frozen=True)
class PlantConfig:
    """The whole plant. Frozen: use ``dataclasses.replace`` to vary one part."""

    chiller: ChillerConfig = field(default_factory=ChillerConfig)
    tower: TowerConfig = field(default_factory=TowerConfig)
    pumps: PumpConfig = field(default_factory=PumpConfig)
    airside: AirsideConfig = field(default_factory=AirsideConfig)
    servers: ServerConfig = field(default_factory=ServerConfig)
    economizer: EconomizerConfig = field(default_factory=EconomizerConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    facility: FacilityConfig = field(default_factory=FacilityConfig)
    faults: FaultRates = field(default_factory=FaultRates)
    load: LoadVariation = field(default_factory=LoadVariation)

    def __post_init__(self) -> None:
        problems = []
        if self.chiller.count < 1 or self.tower.cells < 1 or self.airside.crah_count < 1:
            problems.append("chiller.count, tower.cells and airside.crah_count must be at least 1")
        if not 0.0 < self.dynamics.step_s <= 60.0:
            problems.append(f"dynamics.step_s must be in (0, 60] s, got {self.dynamics.step_s}")
        if self.dynamics.record_interval_s < self.dynamics.step_s:
            problems.append("dynamics.record_interval_s must not be shorter than dynamics.step_s")
        if not 0.0 <= self.servers.idle_fraction <= 1.0:
            problems.append(f"servers.idle_fraction must be in [0, 1], got {self.servers.idle_fraction}")
        if self.servers.load_scale <= 0.0:
            problems.append(f"servers.load_scale must be positive, got {self.servers.load_scale}")
        problems.extend(_load_problems(self.load))
        if problems:
            raise ValueError("invalid plant config: " + "; ".join(problems))


def _load_problems(v: LoadVariation) -> list[str]:
    """What is wrong with a load variation (empty when it is usable)."""
    problems = []
    for name in ("daily_level_sd", "deployments_per_week", "hourly_noise_sd"):
        if not getattr(v, name) >= 0.0:
            problems.append(f"load.{name} must be non-negative, got {getattr(v, name)}")
    for name in ("daily_level_correlation", "hourly_noise_correlation"):
        if not 0.0 <= getattr(v, name) < 1.0:
            problems.append(f"load.{name} must be in [0, 1), got {getattr(v, name)}")
    if not 0.0 <= v.deployment_step_min <= v.deployment_step_max:
        problems.append("load.deployment_step_min must be in [0, load.deployment_step_max]")
    if not 0.0 < v.deployment_days_min <= v.deployment_days_max:
        problems.append("load.deployment_days_min must be in (0, load.deployment_days_max]")
    if not 0.0 <= v.max_level_change < 1.0:
        problems.append(f"load.max_level_change must be in [0, 1), got {v.max_level_change}")
    return problems
