"""The operator's controller config: one TOML file, validated with pydantic.

Why a strict schema: a typo in a safety limit must stop the controller with a message
that names the file, line and field, never be silently ignored. Every temperature is
in C, every temperature difference in K. The file may hold a database password, so a
file that group or other can write is refused (someone else could loosen the limits).

Settings listed in ``RESTART_REQUIRED`` are read once at start-up; the others take
effect at the next cycle after a reload (see ``controller.service.config_watch``).
"""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.bounds import RoleBounds, SetpointEnvelope
from controller.config_actuator import ActuatorSettings
from controller.config_bacnet import BacnetSettings, check_controlled
from controller.config_base import StrictSettings as _Strict
from db.roles import ROLES, SETPOINT_ROLES

Mode = Literal["auto", "advisory", "rules", "manual"]
MODES: tuple[Mode, ...] = ("auto", "advisory", "rules", "manual")

#: Dotted setting paths that a running daemon cannot change without a restart.
RESTART_REQUIRED: tuple[str, ...] = (
    "site_id",
    "database",
    "historian",
    "cycle.interval_s",
    "retraining",
    "metrics",
    "actuator",
    "bacnet",
)

PositiveK = Annotated[float, Field(gt=0.0, le=10.0)]


class ConfigError(Exception):
    """An invalid config file; the message names the file, line (when known) and field."""

    def __init__(self, path: str, message: str, *, line: int | None = None, field: str | None = None):
        self.path = path
        self.line = line
        self.field = field
        where = f"{path}:{line}" if line is not None else path
        what = f"{field}: " if field else ""
        super().__init__(f"{where}: {what}{message}")




class DatabaseSettings(_Strict):
    """Where CoolPilot's tables live. ``url`` None: $COOLPILOT_DATABASE_URL, else the SQLite default.

    ``source``: where sensor history comes from: ``internal`` (CoolPilot's readings
    table) or ``external`` (a site historian, described in ``[historian]``).
    """

    url: str | None = None
    source: Literal["internal", "external"] = "internal"
    # keep readings this many days: the daemon's daily retention job drops older ones
    # (`coolpilot db retention` for a one-off run; None: keep all) [days]
    retention_days: int | None = Field(default=None, ge=1, le=36500)


class HistorianSettings(_Strict):
    """A site's own SQL historian to read instead of CoolPilot's readings table (``db.historian``).

    The point map is ``tags`` (tag name -> role) or a ``tag_map`` file (relative to the
    config file's folder); exactly one of the two.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    table: str = Field(min_length=1)
    schema_name: str | None = Field(default=None, alias="schema")
    time_column: str = Field(min_length=1)
    tag_column: str = Field(min_length=1)
    value_column: str = Field(min_length=1)
    tag_map: str | None = None
    tags: dict[str, str] | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one_point_map(self) -> HistorianSettings:
        if (self.tag_map is None) == (self.tags is None):
            raise ValueError("give exactly one of tag_map (a file) or tags (a table of tag = role)")
        unknown = sorted({r for r in (self.tags or {}).values() if r not in ROLES})
        if unknown:
            raise ValueError(f"tags: unknown role(s) {', '.join(unknown)}; known roles: {', '.join(ROLES)}")
        return self

    def section(self) -> dict[str, Any]:
        """The ``[historian]`` mapping ``db.historian.historian_from_config`` takes."""
        return self.model_dump(by_alias=True, exclude_none=True)


class SetpointSettings(_Strict):
    """Operator bounds [C], largest move per cycle [K] and an optional pin [C] for one setpoint."""

    min_c: float
    max_c: float
    max_step_k: PositiveK
    pin_c: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SetpointSettings:
        if self.min_c > self.max_c:
            raise ValueError(f"min_c {self.min_c} exceeds max_c {self.max_c}")
        if self.pin_c is not None and not self.min_c <= self.pin_c <= self.max_c:
            raise ValueError(f"pin_c {self.pin_c} lies outside [min_c {self.min_c}, max_c {self.max_c}]")
        return self


def _default_setpoints() -> dict[str, SetpointSettings]:
    return {
        "chw_supply_sp_c": SetpointSettings(min_c=7.0, max_c=15.0, max_step_k=0.5),
        "supply_air_sp_c": SetpointSettings(min_c=17.0, max_c=24.0, max_step_k=0.5),
        "cw_supply_sp_c": SetpointSettings(min_c=18.0, max_c=32.0, max_step_k=1.0),
    }


class CouplingSettings(_Strict):
    """Supply air must sit at least ``min_coil_approach_k`` [K] above chilled water.

    ``min_tower_approach_k`` [K]: the optimiser never asks for condenser water closer
    than this to the outdoor wet-bulb (0 disables). Below it the towers run flat out and
    still miss the setpoint: fan energy for nothing, in a region the model has seldom
    seen. The rules and the safety gate are not bound by it.
    """

    min_coil_approach_k: float = Field(default=3.0, ge=0.0, le=15.0)
    min_tower_approach_k: float = Field(default=3.0, ge=0.0, le=15.0)


class SafetySettings(_Strict):
    """Hard thermal limit and margins.

    A candidate passes when predicted rack inlet + ``k_sigma`` * std < ``rack_inlet_limit_c``.
    When the measured rack inlet is within ``near_limit_margin_k`` of the limit (or unknown),
    only cooling-increasing moves (no setpoint rises) pass, in every mode.
    """

    rack_inlet_limit_c: float = Field(default=27.0, ge=15.0, le=35.0)
    k_sigma: float = Field(default=2.0, ge=0.0, le=6.0)
    near_limit_margin_k: float = Field(default=0.5, ge=0.0, le=10.0)
    # Look-ahead: within ``rising_band_k`` of the limit, no setpoint may rise while the
    # hottest inlet rose more than ``rising_k`` over the last 30 minutes (the last
    # warming move has not settled; the inlet lags the supply air).
    rising_band_k: float = Field(default=1.5, ge=0.0, le=20.0)
    rising_k: float = Field(default=0.3, gt=0.0, le=10.0)


class ThresholdSettings(_Strict):
    """When the model is sure enough to act, and when a move is worth making."""

    max_rack_inlet_std_k: float = Field(default=1.0, gt=0.0)
    max_cooling_power_std_frac: float = Field(default=0.15, gt=0.0, le=1.0)
    # Absolute floor [kW] under the relative power-uncertainty limit: on a small plant
    # (tens of kW, on/off equipment) 15 % of the prediction is a few kW, below what
    # any model of on/off staging can promise. The std passes below either. Unset: 5 %
    # of the plant's own scale (the 99th percentile of the cooling power the model was
    # trained on), so the same setting serves a 50 kW room and a 5 MW hall.
    max_power_std_floor_kw: float | None = Field(default=None, ge=0.0, le=10_000.0)
    # Which cooling-power spread that limit judges. ``absolute``: the forecast's total std,
    # so a state whose power is hard to predict (equipment about to stage, a load swing)
    # fails every candidate, holding included, and the rules decide. ``paired``: the
    # ensemble members' disagreement about the candidate's power *minus holding's*: the
    # noise every choice shares cancels, holding is never unsure on this count, and a
    # move is rejected only when the model cannot tell what it costs against holding.
    # Needs an ensemble that reports its members (the shipped one does); else absolute.
    power_uncertainty: Literal["absolute", "paired"] = "absolute"
    max_ood_score: float = Field(default=1.0, gt=0.0)
    min_saving_pct: float = Field(default=1.0, ge=0.0, le=100.0)
    min_saving_kw: float = Field(default=0.0, ge=0.0)
    # A move is worth making when it saves this many of the ensemble members' standard
    # deviations of its saving against holding (the model's own doubt about that very
    # move), and at least ``min_saving_kw``; replaces ``min_saving_pct``, a share that is
    # too strict where the model is sure of a small saving and too lax where it is
    # unsure of a large one. Unset, or a model that does not report its members: the pct.
    min_saving_sigma: float | None = Field(default=None, ge=0.0, le=10.0)
    # With the facility objective, a candidate's predicted IT-power change against
    # holding counts only where it has the sign of its predicted rack-inlet change (the
    # setpoints reach IT power only through the inlet) and is at least this many of the
    # ensemble members' standard deviations of it; elsewhere IT power is taken as
    # holding's (``controller.selection.it_change_kw``). Why 5: the members share their
    # training data, so their spread understates the error of a difference. Measured on
    # the development windows' models (1 K steps): on the twin, whose IT power does not
    # respond to the setpoints below its inlet knee, physically signed savings had 95th
    # percentiles of 0.1-6.6 sigma per setpoint; on the EnergyPlus models, whose servers
    # respond, 10th percentiles of 7.9-32 sigma. 0: the sign rule alone.
    it_saving_sigma: float = Field(default=5.0, ge=0.0, le=20.0)
    # Forecast drift: once the mean relative error of the last ``forecast_error_window``
    # matured cooling-power forecasts exceeds this share, the model is withdrawn (the
    # rules decide) and retraining is requested (``controller.service.forecast_check``).
    max_forecast_error_frac: float = Field(default=0.25, gt=0.0)
    forecast_error_window: int = Field(default=12, ge=1, le=2016)
    # When holding the current setpoints is itself unsure (out of distribution, too
    # uncertain, predicted too hot) but some candidates are sure, move to the cheapest
    # sure one instead of handing over to the rules. Without it, a plant run at the edge
    # of the training data flips between optimised and fallback cycles (a limit cycle).
    recover_to_sure: bool = True
    # Candidates are ranked, and their saving over holding judged, by mean power plus this
    # many standard deviations (0: the mean alone): guards against the optimiser's curse.
    power_risk_k: float = Field(default=0.0, ge=0.0, le=5.0)


class QualitySettings(_Strict):
    """Data-quality checks on the recent window (5-minute rows); see ``controller.quality``.

    Stuck: a run of identical readings is suspect only while related roles move, and
    only from ``stuck_rows`` rows when no profile of the site has been learned (default
    288 rows = 24 h: flat data is normal on many plants), else from ``stuck_margin_factor``
    times the longest run the site's history showed, never fewer than ``stuck_min_rows``.
    Runs are measured over the whole frame the cycle read, which may reach past
    ``window_rows``.

    Spike: a one-record jump in the newest ``spike_rows`` rows that no related role
    corroborates, larger than a floor (``spike_min_jump_k`` [K] for temperatures,
    ``spike_min_jump_frac`` of the window median otherwise) and than ``spike_margin_factor``
    times the site's 99.9th-percentile step (with a profile) or ``spike_robust_z`` robust
    standard deviations of the window's steps (without).
    """

    window_rows: int = Field(default=24, ge=2, le=2016)
    max_missing_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    stuck_rows: int = Field(default=288, ge=3)  # [rows] without a profile
    stuck_min_rows: int = Field(default=6, ge=3)  # [rows] with a profile
    stuck_margin_factor: float = Field(default=1.5, ge=1.0, le=100.0)  # [-] x the longest flat run seen
    spike_rows: int = Field(default=3, ge=1)
    spike_robust_z: float = Field(default=8.0, gt=0.0)  # [-] without a profile
    spike_min_jump_k: float = Field(default=4.0, gt=0.0)
    spike_min_jump_frac: float = Field(default=0.5, gt=0.0)
    spike_margin_factor: float = Field(default=1.5, ge=1.0, le=100.0)  # [-] x the site's p99.9 step

    @model_validator(mode="after")
    def _fits_window(self) -> QualitySettings:
        if self.spike_rows + 2 >= self.window_rows:
            raise ValueError(f"spike_rows {self.spike_rows} leaves too few rows of window_rows {self.window_rows}")
        return self


class OptimizerSettings(_Strict):
    """Candidate search: a grid and random samples in the allowed box, then cross-entropy refinement."""

    grid_points_per_role: int = Field(default=9, ge=2, le=41)
    random_candidates: int = Field(default=3000, ge=0, le=200_000)
    # A setpoint may not reverse its latest move until that move is this many cycles
    # old (0 disables): damps chattering; the hot guard and the rules are not bound by it.
    reversal_dwell_cycles: int = Field(default=6, ge=0, le=288)
    refine_candidates: int = Field(default=1500, ge=0, le=200_000)
    refine_iterations: int = Field(default=1, ge=0, le=10)
    elite_fraction: float = Field(default=0.05, gt=0.0, le=0.5)
    runner_ups: int = Field(default=5, ge=0, le=50)
    what_if: bool = True  # score each setpoint moved one step either way, for `coolpilot explain`
    seed: int | None = Field(default=None, ge=0)  # numpy refuses negative seeds


class ControlSettings(_Strict):
    """What CoolPilot controls and what it minimises.

    ``setpoints``: the setpoint roles this site lets CoolPilot write (one, two or three;
    many sites have no chilled-water plant or leave condenser water to the BMS). The
    others are never written, searched or verified. ``objective``: ``facility``
    minimises predicted cooling + IT power (warmer air can cost more in server fans than
    it saves in cooling), ``cooling`` cooling power alone, ``auto`` facility where the
    model forecasts IT power, else cooling. The decision records which was used.
    """

    setpoints: tuple[str, ...] = SETPOINT_ROLES
    objective: Literal["auto", "facility", "cooling"] = "auto"

    @field_validator("setpoints", mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, tuple):
            unknown = [r for r in value if r not in SETPOINT_ROLES]
            if unknown:
                raise ValueError(f"unknown setpoint role {unknown[0]!r}; known: {', '.join(SETPOINT_ROLES)}")
            if not value:
                raise ValueError("name at least one setpoint to control (or use mode = \"rules\")")
            if len(set(value)) != len(value):
                raise ValueError("a setpoint is named twice")
            value = tuple(r for r in SETPOINT_ROLES if r in value)
        return value


class RulesSettings(_Strict):
    """The rule-based fallback's site constants.

    ``design_it_kw``: the hall's design IT load [kW] for the tuned chilled-water load
    reset; unset, CoolPilot takes the 99th percentile of the IT power its model was
    trained on, and mid-band chilled water until it has one.
    """

    design_it_kw: float | None = Field(default=None, gt=0.0, le=1_000_000.0)


class CycleSettings(_Strict):
    """The cycle period [s] and what the fallback does.

    ``unsure_fallback``: when data and model are sound but the model is unsure (``ood``,
    ``uncertain``), ``no_warming`` takes the rules' setpoints only where they cool more
    (a lower setpoint) and holds the others: a controller in doubt does not warm the
    hall. ``it_aware`` does that for supply air alone, and only where the model resolves
    that warmer air costs IT power (servers that draw more at warmer inlets): there a
    fallback to warmer rules costs more server power than the cooling it saves.
    ``rules``: the rules in full. Bad data, a failing model, a veto: always the rules.
    """

    interval_s: int = Field(default=300, ge=60, le=3600)
    fallback_preset: Literal["legacy", "tuned"] = "tuned"
    unsure_fallback: Literal["rules", "no_warming", "it_aware"] = "it_aware"


class RetrainingSettings(_Strict):
    """When the daemon retrains (crontab syntax, UTC) and how much history it uses [days].

    ``unfamiliar_after``: once the champion has had this many ``ood`` fallbacks that
    held setpoints (``cycle.unsure_fallback``) in its last twice as many cycles, the
    daemon asks for a retraining on the hours it has now seen (``controller.service.
    unfamiliar``); 0: only on the schedule. ``unfamiliar_retry_after``: where that
    retraining did not replace the champion, ask again once this many more cycles have
    passed and the count is reached again; 0: once per model version.
    """

    cron: str = "30 2 * * *"
    history_days: int = Field(default=90, ge=1, le=3650)
    unfamiliar_after: int = Field(default=6, ge=0, le=288)
    unfamiliar_retry_after: int = Field(default=36, ge=0, le=2016)

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a valid crontab expression {value!r}: {exc}") from None
        return value


class MetricsSettings(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9109, ge=1, le=65535)


class Config(_Strict):
    """The whole controller config; build the shared envelope with ``envelope()``."""

    site_id: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    mode: Mode = "advisory"
    database: DatabaseSettings = DatabaseSettings()
    historian: HistorianSettings | None = None
    setpoints: dict[str, SetpointSettings] = Field(default_factory=_default_setpoints)
    coupling: CouplingSettings = CouplingSettings()
    safety: SafetySettings = SafetySettings()
    thresholds: ThresholdSettings = ThresholdSettings()
    quality: QualitySettings = QualitySettings()
    optimizer: OptimizerSettings = OptimizerSettings()
    cycle: CycleSettings = CycleSettings()
    control: ControlSettings = ControlSettings()
    rules: RulesSettings = RulesSettings()
    retraining: RetrainingSettings = RetrainingSettings()
    metrics: MetricsSettings = MetricsSettings()
    actuator: ActuatorSettings = ActuatorSettings()
    bacnet: BacnetSettings | None = None  # BACnet/IP network and point map (controller.config_bacnet)

    @field_validator("setpoints", mode="before")
    @classmethod
    def _merge_default_setpoints(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        unknown = sorted(r for r in value if r not in SETPOINT_ROLES)
        if unknown:
            raise ValueError(f"setpoints.{unknown[0]}: unknown setpoint role; known: {', '.join(SETPOINT_ROLES)}")
        merged: dict[str, Any] = {r: s.model_dump(exclude_none=True) for r, s in _default_setpoints().items()}
        for role_name, given in value.items():
            merged[role_name] = {**merged[role_name], **given} if isinstance(given, dict) else given
        return merged

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        for name, sp in self.setpoints.items():
            r = ROLES[name]
            if sp.min_c < r.physical_min or sp.max_c > r.physical_max:
                raise ValueError(
                    f"setpoints.{name}.min_c: bounds [{sp.min_c}, {sp.max_c}] C leave the physical range "
                    f"[{r.physical_min}, {r.physical_max}] C"
                )
        self._check_coupling()
        if (self.database.source == "external") != (self.historian is not None):
            raise ValueError("database.source: 'external' needs a [historian] section, and a [historian] "
                             "section needs source = \"external\"")
        if self.actuator.kind == "bacnet":
            check_controlled(self.bacnet, self.control.setpoints)
        if self.mode == "manual" and not self.pins():
            raise ValueError("mode: 'manual' needs at least one setpoints.<role>.pin_c to hold")
        return self

    def _check_coupling(self) -> None:
        """Bounds and pins must leave room for supply air >= chilled water + the coil approach."""
        if not self.envelope().coupled:
            return
        chw = self.setpoints["chw_supply_sp_c"]
        sa = self.setpoints["supply_air_sp_c"]
        approach = self.coupling.min_coil_approach_k
        if sa.max_c - chw.min_c < approach:
            raise ValueError(
                f"coupling.min_coil_approach_k: no setpoints satisfy supply_air >= chw + {approach} K "
                f"(supply_air_sp_c.max_c {sa.max_c}, chw_supply_sp_c.min_c {chw.min_c})"
            )
        chw_lo = chw.pin_c if chw.pin_c is not None else chw.min_c
        sa_hi = sa.pin_c if sa.pin_c is not None else sa.max_c
        if (chw.pin_c is not None or sa.pin_c is not None) and sa_hi - chw_lo < approach:
            raise ValueError(
                f"coupling.min_coil_approach_k: pins conflict with supply_air >= chw + {approach} K "
                f"(chw at least {chw_lo} C, supply air at most {sa_hi} C)"
            )

    def envelope(self) -> SetpointEnvelope:
        """The shared setpoint envelope (bounds, rate limits, coupling) this config defines."""
        return SetpointEnvelope(
            roles={
                name: RoleBounds(min_c=sp.min_c, max_c=sp.max_c, max_step_k=sp.max_step_k)
                for name, sp in self.setpoints.items() if name in self.control.setpoints
            },
            min_coil_approach_k=self.coupling.min_coil_approach_k,
        )

    def pins(self) -> dict[str, float]:
        """Operator-pinned setpoints [C] by role."""
        return {name: sp.pin_c for name, sp in self.setpoints.items()
                if sp.pin_c is not None and name in self.control.setpoints}


def _find_line(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of a dotted TOML key (tomllib does not report positions)."""
    keys = [str(k) for k in loc if not isinstance(k, int)]
    if not keys:
        return None
    lines = text.splitlines()
    header_re = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*(#.*)?$")
    key_re = re.compile(r"^\s*([A-Za-z0-9_.\"'-]+)\s*=")
    section: list[str] = []
    best: int | None = None
    best_len = -1
    for number, line in enumerate(lines, start=1):
        header = header_re.match(line)
        if header:
            section = [p.strip().strip("\"'") for p in header.group(1).split(".")]
            if section == keys[: len(section)] and len(section) > best_len:
                best, best_len = number, len(section)
            continue
        key = key_re.match(line)
        if key:
            path = section + [p.strip().strip("\"'") for p in key.group(1).split(".")]
            if path == keys[: len(path)] and len(path) > best_len:
                best, best_len = number, len(path)
    return best


def _check_permissions(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            str(path),
            f"file is writable by group or other (mode {stat.S_IMODE(mode):o}); "
            f"anyone who can write it can loosen safety limits: run chmod go-w {path}",
        )


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate TOML text into a Config; errors name path, line and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(path, f"not valid TOML: {exc}", line=int(match.group(1)) if match else None) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc: tuple[str | int, ...] = tuple(err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        # cross-field rules name the precise field first: "section.key: problem"
        named = re.match(r"^([a-z_][\w.]*): (.*)$", message, re.DOTALL)
        if named and named.group(1).split(".")[: len(loc)] == [str(p) for p in loc]:
            loc = tuple(named.group(1).split("."))
            message = named.group(2)
        field = ".".join(str(p) for p in loc) or None
        if err["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling; see deploy/config/coolpilot.example.toml)"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(path, message, line=_find_line(text, loc), field=field) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError naming file, line and field."""
    p = Path(path)
    try:
        _check_permissions(p)
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), f"cannot read: {exc}") from None
    return parse_config(text, str(p))


def restart_required_changes(old: Config, new: Config) -> tuple[str, ...]:
    """Dotted settings in ``RESTART_REQUIRED`` whose value differs between two configs."""
    old_d, new_d = old.model_dump(), new.model_dump()
    changed = []
    for dotted in RESTART_REQUIRED:
        a: Any = old_d
        b: Any = new_d
        for part in dotted.split("."):
            a, b = a[part], b[part]
        if a != b:
            changed.append(dotted)
    return tuple(changed)
