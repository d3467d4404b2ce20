"""The closed-loop evaluation runner: one plant per controller, the same weeks for all.

Why it is built this way: the comparison is only fair if everything but the controller
is identical. Each controller gets a plant from the same factory with the same
arguments (weather, load, seed, hence sensor noise), warmed up by the same training-
history run (tuned rules with safe exploration, ``coolpilot.harness.history``), so all
start the evaluation window in the same state. The CoolPilot plant's history is
written to a SQLite database and the ensemble is trained from it with the daemon's own
``Retrainer`` and registry; CoolPilot then runs the real control cycle
(``controller.cycle.run_cycle``: quality checks, candidates, safety gate, fallback),
reading every record back from the database through ``db.historian.InternalSource``.
The rule presets and the oracle decide directly on the plant's readings behind the
same safety gate (bounds, rate limits, hot guard). The figures come from
``coolpilot.evaluation.kpis``; files and plots from ``coolpilot.evaluation.report``.

Two plant families. The digital twin (or any ``--plant module:factory``) has three
setpoints and, for the oracle, its own steady-state model. An EnergyPlus building
model (``simulator.energyplus``, ``--energyplus``) has only a supply-air setpoint and
no oracle, but its own setpoint managers: run untouched, they are one more baseline
(``own_controls``). CoolPilot controls exactly the setpoints the plant has (unless the
operator's config narrows them); the tuned rules, as baseline and as CoolPilot's
fallback, get the same design IT load (the 99th percentile of the training history's
IT power).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from controller.config import Config, SetpointSettings
from controller.rules import TunedRules
from coolpilot.evaluation import kpis as ev
from coolpilot.evaluation.loops import CoolPilotLoop, baseline_control, run_frame
from coolpilot.evaluation.plants import (
    EvaluationError,
    close_plant,
    energyplus_maker,
    plant_maker,
)
from db.roles import SETPOINT_ROLES
from simulator.plant import Plant

if TYPE_CHECKING:
    from controller.service.retraining import ChampionProvider, TrainingOutcome
    from forecasting.protocol import Forecaster

log = logging.getLogger(__name__)

DEFAULT_PLANT = "simulator.plant_sim:make_plant"
ENERGYPLUS_FACTORY = "simulator.energyplus:make_plant"
DEFAULT_ENERGYPLUS_MODEL = "2zone"
DEFAULT_START = datetime(2023, 7, 15, tzinfo=UTC)
SCHEMA = "coolpilot.evaluation/1"
SITE = "eval"

Say = Callable[[str], None]

#: Supply-air envelope for the EnergyPlus plants unless the config sets its own: from
#: the lowest supply air the shipped models' own managers ask for (12 C: the 2zone
#: halls' SetpointManager:SingleZone:Cooling minimum; the CRAC's Warmest manager allows
#: 10 C) to the ASHRAE recommended inlet ceiling (27 C), moved at most 0.5 K per
#: 5-minute cycle (a BMS's usual slew). Chosen from the model files and the standard,
#: not from any evaluation window.
ENERGYPLUS_SUPPLY_AIR = SetpointSettings(min_c=12.0, max_c=27.0, max_step_k=0.5)
#: Percentile of the training history's IT power taken as the hall's design IT load.
DESIGN_IT_PERCENTILE = 99.0
#: forecasting.train.TrainConfig.min_samples, spelled out so that checking options does not import torch
#: (tests/test_first_hour_evaluate.py checks that the two agree).
DEFAULT_MIN_SAMPLES = 2016


def min_train_days(train_config: Any = None) -> float:
    """The least training history [days]: training's minimum of usable 5-minute samples, plus one day
    for the rows lost to feature lags, the forecast horizon and exploration gaps."""
    samples = getattr(train_config, "min_samples", DEFAULT_MIN_SAMPLES)
    return math.ceil(samples * 5 / 1440) + 1.0


@dataclass(frozen=True)
class EvaluationOptions:
    """What to evaluate; ``start`` is the first instant of the evaluation window (UTC).

    ``config``: the controller config for CoolPilot's run (None: defaults); its mode is
    forced to ``auto``, and unless it names ``control.setpoints`` CoolPilot controls the
    setpoints the plant has. ``train_config``: a ``forecasting.train.TrainConfig`` (None:
    its defaults without the baseline models). ``energyplus``: a shipped EnergyPlus model
    (``2zone``, ``crac``) or an .epJSON path, and/or ``point_map`` (a point-map TOML):
    run on an EnergyPlus plant instead of ``plant``; ``climate`` is then a shipped
    climate name or an EPW path.
    """

    climate: str | None = None
    workload: str | None = None
    start: datetime = DEFAULT_START
    days: float = 7.0
    train_days: float = 42.0
    seed: int = 0
    plant: str = DEFAULT_PLANT
    explore_share: float = 0.3
    config: Config | None = None
    train_config: Any = None
    device: str = "cpu"
    controllers: tuple[str, ...] = ev.CONTROLLERS
    energyplus: str | None = None
    point_map: str | None = None
    retrain_every_days: float = 1.0

    @property
    def family(self) -> str:
        """``energyplus`` for an EnergyPlus model, else ``twin`` (the digital twin or a ``--plant`` factory)."""
        return "energyplus" if self.energyplus is not None or self.point_map is not None else "twin"

    def __post_init__(self) -> None:
        if self.plant == ENERGYPLUS_FACTORY and self.energyplus is None and self.point_map is None:
            # the EnergyPlus factory through --plant: the same as its default model through --energyplus
            object.__setattr__(self, "energyplus", DEFAULT_ENERGYPLUS_MODEL)
            object.__setattr__(self, "plant", DEFAULT_PLANT)
        if not (math.isfinite(self.days) and self.days > 0):
            raise EvaluationError(f"days must be positive, got {self.days}")
        if not (math.isfinite(self.train_days) and self.train_days > 0):
            raise EvaluationError(f"train_days must be positive, got {self.train_days}")
        least = min_train_days(self.train_config)
        if self.train_days < least:
            raise EvaluationError(f"--train-days {self.train_days:g} is too little history: training needs at least "
                                  f"{least:g} days (a week of usable 5-minute samples and a day for lags and the "
                                  "forecast horizon)")
        if not (math.isfinite(self.retrain_every_days) and self.retrain_every_days >= 0):
            raise EvaluationError(f"retrain_every_days must be 0 (off) or positive, got {self.retrain_every_days}")
        if not 0.0 <= self.explore_share <= 1.0:
            raise EvaluationError(f"explore_share must be in [0, 1], got {self.explore_share}")
        unknown = [c for c in self.controllers if c not in ev.CONTROLLERS]
        if unknown or "coolpilot" not in self.controllers:
            raise EvaluationError(f"controllers must include coolpilot and come from {', '.join(ev.CONTROLLERS)}")
        if self.start.tzinfo is None:
            raise EvaluationError("start must be timezone-aware (UTC)")
        if self.family == "energyplus":
            if self.plant != DEFAULT_PLANT:
                raise EvaluationError("an EnergyPlus model (--energyplus / --point-map) and --plant exclude each other")
            if self.workload is not None:
                raise EvaluationError("the EnergyPlus models carry their own IT load schedules: --workload does "
                                      "not apply")


@dataclass
class ControllerRun:
    """One controller's run: per-record frame, setpoints before the first record, decisions."""

    name: str
    frame: pd.DataFrame
    initial: dict[str, float]
    seconds: float
    decisions: pd.DataFrame | None = None


@dataclass
class EvaluationResult:
    """The JSON-ready summary (every figure) and the runs behind it (for the plots)."""

    summary: dict[str, Any]
    runs: dict[str, ControllerRun] = field(default_factory=dict)
    horizon_rows: int = 12


def _fresh_sqlite(out_dir: Path) -> str:
    """The evaluation's own database file, replaced on every run (only files it named)."""
    path = out_dir / "evaluation.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _same_reading(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = sorted(set(a) | set(b))
    x = np.array([a.get(k, math.nan) for k in keys], dtype=np.float64)
    y = np.array([b.get(k, math.nan) for k in keys], dtype=np.float64)
    return bool(np.allclose(x, y, rtol=0.0, atol=1e-9, equal_nan=True))


def _controller_config(config: Config | None) -> Config:
    """The operator config for CoolPilot's run, in auto mode (the evaluation is of auto mode)."""
    base = config if config is not None else Config(site_id=SITE)
    return base.model_copy(update={"mode": "auto"})


def run_config(config: Config | None, plant_setpoints: tuple[str, ...], family: str,
               design_it_kw: float | None = None) -> Config:
    """CoolPilot's config for a run on a plant with ``plant_setpoints``, in auto mode.

    ``control.setpoints``: the config's, where it names them (each must be one the plant
    has), else the plant's. On an EnergyPlus plant the supply-air bounds default to
    ``ENERGYPLUS_SUPPLY_AIR`` unless the config sets its own. ``rules.design_it_kw``:
    the config's, else ``design_it_kw``. The result is validated as a loaded file is.
    """
    base = _controller_config(config)
    if not plant_setpoints:
        raise EvaluationError("the plant has no setpoint CoolPilot could control")
    named = "control" in base.model_fields_set and "setpoints" in base.control.model_fields_set
    if named:
        missing = [r for r in base.control.setpoints if r not in plant_setpoints]
        if missing:
            raise EvaluationError(f"the config's control.setpoints names {', '.join(missing)}, which the plant "
                                  f"does not have (it has {', '.join(plant_setpoints)})")
    data = base.model_dump()
    data["control"]["setpoints"] = tuple(base.control.setpoints if named else plant_setpoints)
    if family == "energyplus" and base.setpoints["supply_air_sp_c"] == Config().setpoints["supply_air_sp_c"]:
        data["setpoints"]["supply_air_sp_c"] = ENERGYPLUS_SUPPLY_AIR.model_dump()
    if base.rules.design_it_kw is None and design_it_kw is not None:
        data["rules"]["design_it_kw"] = float(design_it_kw)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise EvaluationError(f"controller config for this plant: {exc.errors()[0]['msg']}") from None


def design_it_kw(history: pd.DataFrame, percentile: float = DESIGN_IT_PERCENTILE) -> float | None:
    """The hall's design IT load [kW]: a high percentile of the history's IT power (None without any)."""
    if "it_power_kw" not in history:
        return None
    it = history["it_power_kw"].astype(float).dropna()
    it = it[it > 0]
    return float(np.percentile(it.to_numpy(), percentile)) if len(it) else None


def _settings(opts: EvaluationOptions, config: Config, plant: Plant, plant_setpoints: dict[str, float],
              start: datetime, records: int, history_start: datetime, takes_start: bool) -> dict[str, Any]:
    interval = plant.record_interval_s
    source = getattr(plant, "weather_source", None)
    if source is None and opts.family == "energyplus":
        source = opts.climate or "leesburg"
    return {
        "family": opts.family, "energyplus_model": opts.energyplus, "point_map": opts.point_map,
        "plant_setpoints": [r for r in SETPOINT_ROLES if r in plant_setpoints],
        "controlled_setpoints": list(config.control.setpoints), "design_it_kw": config.rules.design_it_kw,
        "climate": opts.climate, "weather_source": Path(str(source)).name if source else None,
        "workload": opts.workload, "plant": opts.plant if opts.family == "twin" else
        f"simulator.energyplus:make_plant(model={opts.energyplus!r}, point_map={opts.point_map!r})",
        "seed": opts.seed,
        "start": start, "end": start + timedelta(seconds=records * interval), "days": opts.days,
        "requested_start": opts.start if takes_start else None, "history_start": history_start,
        "train_days": opts.train_days, "explore_share": opts.explore_share, "record_interval_s": interval,
        "records": records, "rack_inlet_limit_c": config.safety.rack_inlet_limit_c,
        "allowable_inlet_c": ev.ALLOWABLE_INLET_C, "inlet_change_limit_c_per_h": ev.INLET_CHANGE_LIMIT_C_PER_H,
        "controller_config": config.model_dump(include={"mode", "setpoints", "coupling", "safety", "thresholds",
                                                        "quality", "optimizer", "cycle", "control", "rules"}),
        "device": opts.device,
    }


def evaluate(opts: EvaluationOptions, out_dir: Path, *, say: Say = log.info) -> EvaluationResult:
    """Train, run every controller over the same window, and compute every figure.

    ``out_dir`` receives the SQLite database (``evaluation.db``: readings, decisions,
    commands, model registry) and the model artifacts (``models/``). Nothing is written
    before the plant and the config have been checked.
    """
    t_all = time.perf_counter()
    from coolpilot.harness.history import generate_history, plant_envelope

    history_start = opts.start - timedelta(days=opts.train_days)
    if opts.family == "energyplus":  # fail fast on a bad model, map or weather
        ep_make = energyplus_maker(opts.energyplus, opts.point_map, opts.climate, opts.train_days + opts.days + 1.0)
        make: Callable[..., Plant] = ep_make
        takes_start = True
    else:
        make, takes_start = plant_maker(opts.plant, opts.climate, opts.workload, opts.seed)
    cp_plant = make(history_start)
    try:
        plant_roles = tuple(r for r in SETPOINT_ROLES if r in cp_plant.setpoints())
        config = run_config(opts.config, plant_roles, opts.family)
    except EvaluationError:
        close_plant(cp_plant)
        raise
    limit_c, site = config.safety.rack_inlet_limit_c, config.site_id
    # History and baselines act on every setpoint the plant has; CoolPilot on config.control.setpoints.
    rules_env = plant_envelope(_all_setpoints(config, plant_roles).envelope(), plant_roles)

    def warmed(plant: Plant | None = None) -> tuple[Plant, pd.DataFrame]:
        plant = plant if plant is not None else make(history_start)
        return plant, generate_history(plant, opts.train_days, opts.explore_share, opts.seed, envelope=rules_env,
                                       rack_inlet_limit_c=limit_c)

    out_dir.mkdir(parents=True, exist_ok=True)
    say(f"simulating {opts.train_days:g} days of training history ({opts.explore_share:.0%} safe exploration, "
        f"setpoints {', '.join(plant_roles)}) ...")
    try:
        cp_plant, history = warmed(cp_plant)
    except BaseException:
        close_plant(cp_plant)
        raise
    design_source = "the config's rules.design_it_kw" if config.rules.design_it_kw is not None else \
        f"p{DESIGN_IT_PERCENTILE:g} of the training history's IT power"
    config = run_config(opts.config, plant_roles, opts.family, design_it_kw(history))
    tuned = TunedRules(design_it_kw=config.rules.design_it_kw)
    say(f"CoolPilot controls {', '.join(config.control.setpoints)}; the tuned rules' design IT load is "
        f"{_kw(config.rules.design_it_kw)} ({design_source})")
    interval = cp_plant.record_interval_s
    records = round(opts.days * 86400.0 / interval)
    history_records = len(history)
    window_start = cp_plant.now
    start_reading = cp_plant.read()
    plant_setpoints = dict(cp_plant.setpoints())
    engine = _history_database(out_dir, history, site)
    try:
        trained, train_config, provider, model = _train_champion(opts, engine, site, out_dir, len(history), say,
                                                                  config)
        horizon_rows = max(round(model.horizon_min * 60.0 / interval), 1)

        def plant_for(name: str) -> Plant:
            if name == "coolpilot":
                return cp_plant
            if name == "own_controls":
                plant = make(history_start, own_controls=True)
                plant.advance(history_records * interval)  # its own controls all along
                return plant
            return warmed()[0]

        loops: dict[str, CoolPilotLoop] = {}

        def control_for(name: str, plant: Plant) -> Callable[[], None] | str:
            if name == "coolpilot":
                loops[name] = CoolPilotLoop(plant, engine, config, provider,
                                            retrain=_retrainer(opts, engine, site, out_dir, train_config, config),
                                            retrain_every_s=opts.retrain_every_days * 86400.0)
                return loops[name]
            return baseline_control(name, plant, rules_env, limit_c, tuned=tuned)

        runs, skipped, identical = _run_controllers(opts, records, start_reading, plant_for, control_for, say)
    finally:
        engine.dispose()
        close_plant(cp_plant)
    summary = summarise(runs, interval, limit_c, horizon_rows, family=opts.family)
    summary.update(
        schema=SCHEMA, settings=_settings(opts, config, cp_plant, plant_setpoints, window_start, records,
                                          history_start, takes_start),
        training={"version": trained.version, "seconds": trained.duration_s,
                  "cooling_power_mae_kw": trained.cooling_power_mae_kw, "rack_inlet_mae_c": trained.rack_inlet_mae_c,
                  "history_records": history_records, "horizon_min": model.horizon_min,
                  "setpoint_roles": list(getattr(model, "setpoint_roles", lambda: ())()),
                  "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(train_config).items()},
                  "retrainings": loops["coolpilot"].retrainings if "coolpilot" in loops else []},
        identical_start=identical, skipped=skipped, seconds=time.perf_counter() - t_all,
    )
    if not identical:
        log.warning("the plants did not start the window in the same state: the plant is not deterministic")
    return EvaluationResult(summary, runs, horizon_rows)


def _run_controllers(opts: EvaluationOptions, records: int, start_reading: dict[str, float],
                     plant_for: Callable[[str], Plant], control_for: Callable[[str, Plant], Callable[[], None] | str],
                     say: Say) -> tuple[dict[str, ControllerRun], dict[str, str], bool]:
    """Each controller over the same window on its own plant: the runs, what was skipped and why,
    and whether every plant (but the own-controls one) started the window in the same state."""
    runs: dict[str, ControllerRun] = {}
    skipped: dict[str, str] = {}
    identical = True
    for name in opts.controllers:
        if name == "own_controls" and opts.family != "energyplus":
            skipped[name] = "the plant has no controls of its own to keep (only EnergyPlus models do)"
            say(f"not running {name}: {skipped[name]}")
            continue
        plant = plant_for(name)
        try:
            if name != "own_controls":
                identical = identical and _same_reading(plant.read(), start_reading)
            control = control_for(name, plant)
            if isinstance(control, str):
                skipped[name] = control
                say(f"not running {name}: {control}")
                continue
            say(f"running {name} over {opts.days:g} days from {plant.now:%Y-%m-%d %H:%M} UTC ...")
            t0 = time.perf_counter()
            frame, initial = run_frame(plant, control, records)
            decisions = control.decisions() if isinstance(control, CoolPilotLoop) else None
            runs[name] = ControllerRun(name, frame, initial, time.perf_counter() - t0, decisions)
        finally:
            if name != "coolpilot":
                close_plant(plant)
    return runs, skipped, identical


def _kw(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} kW"


def _all_setpoints(config: Config, plant_roles: tuple[str, ...]) -> Config:
    """``config`` controlling every setpoint the plant has (the envelope of history and baselines)."""
    data = config.model_dump()
    data["control"]["setpoints"] = plant_roles
    return Config.model_validate(data)


def _history_database(out_dir: Path, history: pd.DataFrame, site: str) -> Any:
    """A fresh evaluation database (an engine) holding the training history."""
    from db.engine import DatabaseError, make_engine
    from db.ingest import write_wide
    from db.migrate import upgrade

    try:
        engine = make_engine(_fresh_sqlite(out_dir))
        upgrade(engine)
        write_wide(engine, history, site)
    except DatabaseError as exc:
        raise EvaluationError(f"evaluation database: {exc}") from None
    return engine


def _train_champion(opts: EvaluationOptions, engine: Any, site: str, out_dir: Path, history_records: int,
                    say: Say, config: Config) -> tuple[TrainingOutcome, Any, ChampionProvider, Forecaster]:
    """Train the ensemble with the daemon's own ``Retrainer``: the outcome, the training
    config used, the champion provider and the champion model."""
    from controller.service.retraining import ChampionProvider, Retrainer
    from forecasting.train import TrainConfig

    train_config = opts.train_config if opts.train_config is not None else TrainConfig(baselines=False,
                                                                                       seed=opts.seed)
    say(f"training the ensemble on {history_records} records ({train_config.members} members, "
        f"up to {train_config.max_epochs} epochs) ...")
    trained = Retrainer(engine, site, out_dir / "models", history_days=math.ceil(opts.train_days),
                        train_config=train_config, device=opts.device, quality=config.quality)()
    if not trained.ok:
        raise EvaluationError(f"training failed: {trained.error}")
    provider = ChampionProvider(engine, site)
    model = provider()
    if model is None:
        raise EvaluationError("training registered no champion model")
    say(f"model {trained.version} trained in {trained.duration_s:.0f} s: cooling power MAE "
        f"{trained.cooling_power_mae_kw:.1f} kW, rack inlet MAE {trained.rack_inlet_mae_c:.2f} K")
    return trained, train_config, provider, model


def _retrainer(opts: EvaluationOptions, engine: Any, site: str, out_dir: Path, train_config: Any,
               config: Config) -> Any:
    """The daemon's nightly retraining for CoolPilot's run (None when ``retrain_every_days`` is 0):
    the same ``Retrainer``, history window and training config as the first model, so that
    the history it learns from includes the periods CoolPilot controlled."""
    if opts.retrain_every_days <= 0:
        return None
    from controller.service.retraining import Retrainer

    return Retrainer(engine, site, out_dir / "models", history_days=math.ceil(opts.train_days),
                     train_config=train_config, device=opts.device, quality=config.quality)


def forecast_figures(decisions: pd.DataFrame, frame: pd.DataFrame, horizon_rows: int) -> dict[str, Any]:
    """Closed-loop forecast error of CoolPilot's decisions: cooling power, and IT power where predicted.

    Each forecast (for the setpoints it emitted) against the mean over the following
    horizon of what the plant then did; with the interval coverage where the decisions
    carry the model's predictive interval (``interval_level``, e.g. 90 %).
    """
    out: dict[str, Any] = {}
    level = decisions["interval_level"].dropna() if "interval_level" in decisions else pd.Series(dtype=float)
    for target, column in (("cooling", "cooling_power_kw"), ("it", "it_power_kw")):
        key = f"predicted_{column}"
        if key not in decisions or column not in frame or not decisions[key].notna().any():
            continue
        predicted = decisions[key].dropna()
        lo, hi = decisions.get(f"predicted_{target}_power_lo_kw"), decisions.get(f"predicted_{target}_power_hi_kw")
        pairs = ev.prediction_pairs(predicted, frame[column], horizon_rows, lo_kw=lo, hi_kw=hi)
        figs: dict[str, Any] = dict(ev.prediction_figures(pairs))
        figs["interval_level_pct"] = float(level.median() * 100.0) if len(level) else math.nan
        out["prediction" if target == "cooling" else "prediction_it"] = figs
    return out


def summarise(runs: dict[str, ControllerRun], interval_s: float, limit_c: float, horizon_rows: int, *,
              family: str = "twin") -> dict[str, Any]:
    """Every figure of the runs (per controller, CoolPilot's decisions and forecasts, targets)."""
    figures = {n: ev.run_figures(r.frame, interval_s, limit_c, r.initial) for n, r in runs.items()}
    rows = ev.compare(figures, {n: r.frame for n, r in runs.items()}, interval_s, limit_c)
    controllers: dict[str, dict[str, Any]] = {
        n: {**figures[n], **rows[n], "run_seconds": runs[n].seconds} for n in runs}
    cp = controllers["coolpilot"]
    decisions = runs["coolpilot"].decisions
    if decisions is not None and len(decisions):
        cp["decisions"] = ev.decision_figures(decisions)
        cp["fallback_share_pct"] = cp["decisions"]["fallback_share_pct"]
        cp["cycle_median_ms"] = float(decisions["duration_s"].median() * 1000.0)
        cp.update(forecast_figures(decisions, runs["coolpilot"].frame, horizon_rows))
    found = ev.targets(cp, family)
    return {
        "family": family,
        "controllers": controllers,
        "best_baseline": ev.best_baseline(controllers),
        "targets": [t.as_dict() for t in found],
        "targets_met": all(t.met for t in found),
        "consistency_problems": ev.consistency_problems(controllers),
        "oracle_bound": ev.oracle_bound(controllers),
    }
