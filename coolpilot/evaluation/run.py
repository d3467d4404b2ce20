"""The closed-loop evaluation runner: one plant per controller, the same weeks for all four.

Why it is built this way: the comparison is only fair if everything but the controller
is identical. Each controller gets a plant from the same factory with the same
arguments (weather, load, seed, hence sensor noise), warmed up by the same training-
history run (tuned rules with safe random exploration, ``coolpilot.harness.history``), so all
four start the evaluation window in the same state. The CoolPilot plant's history is
written to a SQLite database and the ensemble is trained from it with the daemon's own
``Retrainer`` and registry; CoolPilot then runs the real control cycle
(``controller.cycle.run_cycle``: quality checks, candidates, safety gate, fallback),
reading every record back from the database through ``db.historian.InternalSource``.
The rule presets and the oracle decide directly on the plant's readings behind the
same safety gate (bounds and rate limits). The figures come from
``coolpilot.evaluation.kpis``; files and plots from ``coolpilot.evaluation.report``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from controller.config import Config
from controller.decision import Decision
from coolpilot.evaluation import kpis as ev
from db.roles import MEASUREMENT_ROLES
from simulator.plant import Plant, PlantFactory

log = logging.getLogger(__name__)

DEFAULT_PLANT = "simulator.plant_sim:make_plant"
DEFAULT_START = datetime(2023, 7, 15, tzinfo=UTC)
SCHEMA = "coolpilot.evaluation/1"
SITE = "eval"

Say = Callable[[str], None]
PlantMaker = Callable[[datetime], Plant]


class EvaluationError(Exception):
    """An evaluation that cannot run (bad options, a plant that cannot be built, training failed)."""


@dataclass(frozen=True)
class EvaluationOptions:
    """What to evaluate; ``start`` is the first instant of the evaluation window (UTC).

    ``config``: the controller config for CoolPilot's run (None: defaults); its mode is
    forced to ``auto``. ``train_config``: a ``forecasting.train.TrainConfig`` (None: its
    defaults without the baseline models).
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

    def __post_init__(self) -> None:
        if not (math.isfinite(self.days) and self.days > 0):
            raise EvaluationError(f"days must be positive, got {self.days}")
        if not (math.isfinite(self.train_days) and self.train_days > 0):
            raise EvaluationError(f"train_days must be positive, got {self.train_days}")
        if not 0.0 <= self.explore_share <= 1.0:
            raise EvaluationError(f"explore_share must be in [0, 1], got {self.explore_share}")
        unknown = [c for c in self.controllers if c not in ev.CONTROLLERS]
        if unknown or "coolpilot" not in self.controllers:
            raise EvaluationError(f"controllers must include coolpilot and come from {', '.join(ev.CONTROLLERS)}")
        if self.start.tzinfo is None:
            raise EvaluationError("start must be timezone-aware (UTC)")


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


def plant_maker(spec: str, climate: str | None, workload: str | None, seed: int) -> tuple[PlantMaker, bool]:
    """A function building the plant at a start time, and whether the factory takes ``start``.

    Factory arguments are passed only where the factory's signature takes them; a
    climate or workload it cannot take is an error rather than silently ignored.
    """
    try:
        factory = PlantFactory(spec)
        factory.refuse_untaken({"climate": climate, "workload": workload})
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None

    def make(start: datetime) -> Plant:
        try:
            return factory.build(climate=climate, workload=workload, seed=seed, start=start)
        except (ValueError, OSError) as exc:
            raise EvaluationError(f"plant {spec!r}: {exc}") from None

    return make, "start" in factory.takes


def run_frame(plant: Plant, control: Callable[[], None], records: int) -> tuple[pd.DataFrame, dict[str, float]]:
    """Drive ``records`` record intervals; one row per record.

    Row t: the noise-free values at t where the plant offers them (``true_record``), else
    its readings; the setpoints in force after ``control`` decided at t; and the energy
    booked over [t, t + interval) where the plant keeps totals [kWh]. Also returns the
    setpoints in force before the first record.
    """
    initial = dict(plant.setpoints())
    true_record = getattr(plant, "true_record", None)
    totals = getattr(plant, "totals", None)
    times: list[datetime] = []
    rows: list[dict[str, float]] = []
    for _ in range(records):
        times.append(plant.now)
        truth = true_record() if callable(true_record) else plant.read()
        before = totals() if callable(totals) else None
        control()
        row = {r: float(truth.get(r, math.nan)) for r in MEASUREMENT_ROLES if r in truth}
        row.update(plant.setpoints())
        plant.advance(plant.record_interval_s)
        if before is not None and callable(totals):
            after = totals()
            row.update({k: float(after.get(k, 0.0)) - float(before.get(k, 0.0)) for k in ev.ENERGY_COLUMNS})
        rows.append(row)
    index = pd.DatetimeIndex(pd.to_datetime(times, utc=True), name="time")
    return pd.DataFrame(rows, index=index, dtype=np.float64), initial


class CoolPilotLoop:
    """CoolPilot's control for `run_frame`: historian write, the real cycle, actuation.

    Each record goes to the database through ``write_wide`` (as a site historian would),
    then ``run_cycle`` reads it back through ``InternalSource``, decides, records the
    decision and applies what the actuator delivered to the plant.
    """

    def __init__(self, plant: Plant, engine: Any, config: Config, forecaster: Any) -> None:
        from controller.service.actuators import DbActuator
        from controller.service.recorder import DecisionRecorder
        from coolpilot.harness.sim_bridge import PlantActuator
        from db.historian import InternalSource

        self.plant, self.engine, self.config, self.forecaster = plant, engine, config, forecaster
        self.source = InternalSource(engine, config.site_id)
        self.recorder = DecisionRecorder(engine, config.site_id)
        self.actuator = PlantActuator(plant, DbActuator(engine, config.site_id, retries=0))
        self.last_applied: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []

    def __call__(self) -> None:
        from controller.cycle import run_cycle
        from coolpilot.harness.sim_bridge import plant_record
        from db.ingest import write_wide

        write_wide(self.engine, plant_record(self.plant), self.config.site_id)
        d = run_cycle(self.config, self.source, self.forecaster, self.actuator, self.recorder,
                      lambda: self.plant.now, dict(self.last_applied))
        self.last_applied.update(d.sent)
        self.rows.append(_decision_row(d))

    def decisions(self) -> pd.DataFrame:
        """One row per cycle: outcome, reason code, predictions for the emitted setpoints, duration [s]."""
        index = pd.DatetimeIndex(pd.to_datetime([r["ts"] for r in self.rows], utc=True), name="time")
        return pd.DataFrame([{k: v for k, v in r.items() if k != "ts"} for r in self.rows], index=index)


def _decision_row(d: Decision) -> dict[str, Any]:
    chosen = d.chosen
    return {"ts": d.ts, "outcome": d.outcome, "reason_code": d.reason_code,
            "predicted_cooling_power_kw": chosen.cooling_power_kw if chosen else math.nan,
            "predicted_rack_inlet_max_c": chosen.rack_inlet_max_c if chosen else math.nan,
            "duration_s": d.duration_s if d.duration_s is not None else math.nan}


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


def _settings(opts: EvaluationOptions, config: Config, plant: Plant, start: datetime, records: int,
              history_start: datetime, takes_start: bool) -> dict[str, Any]:
    interval = plant.record_interval_s
    source = getattr(plant, "weather_source", None)
    return {
        "climate": opts.climate, "weather_source": Path(str(source)).name if source else None,
        "workload": opts.workload, "plant": opts.plant, "seed": opts.seed,
        "start": start, "end": start + timedelta(seconds=records * interval), "days": opts.days,
        "requested_start": opts.start if takes_start else None, "history_start": history_start,
        "train_days": opts.train_days, "explore_share": opts.explore_share, "record_interval_s": interval,
        "records": records, "rack_inlet_limit_c": config.safety.rack_inlet_limit_c,
        "allowable_inlet_c": ev.ALLOWABLE_INLET_C, "inlet_change_limit_c_per_h": ev.INLET_CHANGE_LIMIT_C_PER_H,
        "controller_config": config.model_dump(include={"mode", "setpoints", "coupling", "safety", "thresholds",
                                                        "quality", "optimizer", "cycle"}),
        "device": opts.device,
    }


def evaluate(opts: EvaluationOptions, out_dir: Path, *, say: Say = log.info) -> EvaluationResult:
    """Train, run the four controllers over the same window, and compute every figure.

    ``out_dir`` receives the SQLite database (``evaluation.db``: readings, decisions,
    commands, model registry) and the model artifacts (``models/``).
    """
    t_all = time.perf_counter()
    make, takes_start = plant_maker(opts.plant, opts.climate, opts.workload, opts.seed)  # fail fast on a bad spec
    from controller.service.retraining import ChampionProvider, Retrainer
    from coolpilot.harness.history import generate_history, rules_decide
    from coolpilot.harness.oracle import oracle_decide
    from db.engine import DatabaseError, make_engine
    from db.ingest import write_wide
    from db.migrate import upgrade
    from forecasting.train import TrainConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    config = _controller_config(opts.config)
    env, limit_c, site = config.envelope(), config.safety.rack_inlet_limit_c, config.site_id
    history_start = opts.start - timedelta(days=opts.train_days)

    def warmed() -> tuple[Plant, pd.DataFrame]:
        plant = make(history_start)
        return plant, generate_history(plant, opts.train_days, opts.explore_share, opts.seed, envelope=env)

    say(f"simulating {opts.train_days:g} days of training history ({opts.explore_share:.0%} safe exploration) ...")
    cp_plant, history = warmed()
    interval = cp_plant.record_interval_s
    records = round(opts.days * 86400.0 / interval)
    window_start = cp_plant.now
    start_reading = cp_plant.read()
    try:
        engine = make_engine(_fresh_sqlite(out_dir))
        upgrade(engine)
        write_wide(engine, history, site)
    except DatabaseError as exc:
        raise EvaluationError(f"evaluation database: {exc}") from None
    runs: dict[str, ControllerRun] = {}
    skipped: dict[str, str] = {}
    identical = True
    try:
        train_config = opts.train_config if opts.train_config is not None else TrainConfig(baselines=False,
                                                                                           seed=opts.seed)
        say(f"training the ensemble on {len(history)} records ({train_config.members} members, "
            f"up to {train_config.max_epochs} epochs) ...")
        trained = Retrainer(engine, site, out_dir / "models", history_days=math.ceil(opts.train_days),
                            train_config=train_config, device=opts.device)()
        if not trained.ok:
            raise EvaluationError(f"training failed: {trained.error}")
        provider = ChampionProvider(engine, site)
        model = provider()
        if model is None:
            raise EvaluationError("training registered no champion model")
        horizon_rows = max(round(model.horizon_min * 60.0 / interval), 1)
        say(f"model {trained.version} trained in {trained.duration_s:.0f} s: cooling power MAE "
            f"{trained.cooling_power_mae_kw:.1f} kW, rack inlet MAE {trained.rack_inlet_mae_c:.2f} K")
        for name in opts.controllers:
            plant = cp_plant if name == "coolpilot" else warmed()[0]
            identical = identical and _same_reading(plant.read(), start_reading)
            cp_loop: CoolPilotLoop | None = None
            if name == "coolpilot":
                cp_loop = CoolPilotLoop(plant, engine, config, provider)
                control: Callable[[], None] = cp_loop
            elif name == "oracle":
                if not hasattr(plant, "steady_state"):
                    skipped[name] = "the plant has no steady_state() model to search"
                    continue
                control = _applying(plant, oracle_decide(plant, env, limit_c))  # type: ignore[arg-type]
            else:
                control = _applying(plant, rules_decide(name, env))  # type: ignore[arg-type]
            say(f"running {name} over {opts.days:g} days from {plant.now:%Y-%m-%d %H:%M} UTC ...")
            t0 = time.perf_counter()
            frame, initial = run_frame(plant, control, records)
            runs[name] = ControllerRun(name, frame, initial, time.perf_counter() - t0,
                                       cp_loop.decisions() if cp_loop is not None else None)
    finally:
        engine.dispose()
    summary = summarise(runs, interval, limit_c, horizon_rows)
    summary.update(
        schema=SCHEMA, settings=_settings(opts, config, cp_plant, window_start, records, history_start, takes_start),
        training={"version": trained.version, "seconds": trained.duration_s,
                  "cooling_power_mae_kw": trained.cooling_power_mae_kw, "rack_inlet_mae_c": trained.rack_inlet_mae_c,
                  "history_records": len(history), "horizon_min": model.horizon_min,
                  "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(train_config).items()}},
        identical_start=identical, skipped=skipped, seconds=time.perf_counter() - t_all,
    )
    if not identical:
        log.warning("the plants did not start the window in the same state: the plant is not deterministic")
    return EvaluationResult(summary, runs, horizon_rows)


def _applying(plant: Plant,
              decide: Callable[[dict[str, float], dict[str, float]], dict[str, float]]) -> Callable[[], None]:
    """A `run_frame` control that applies a decide function's setpoints to the plant."""

    def control() -> None:
        plant.apply(decide(plant.read(), plant.setpoints()))

    return control


def summarise(runs: dict[str, ControllerRun], interval_s: float, limit_c: float, horizon_rows: int) -> dict[str, Any]:
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
        pairs = ev.prediction_pairs(decisions["predicted_cooling_power_kw"].dropna(),
                                    runs["coolpilot"].frame["cooling_power_kw"], horizon_rows)
        cp["prediction"] = ev.prediction_figures(pairs)
    found = ev.targets(cp)
    return {
        "controllers": controllers,
        "targets": [t.as_dict() for t in found],
        "targets_met": all(t.met for t in found),
        "consistency_problems": ev.consistency_problems(controllers),
    }
