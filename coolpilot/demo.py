"""``coolpilot demo``: the whole system on one machine, closed loop, in accelerated time.

What it shows, in this order: a local SQLite database is created; a month of plant
history is simulated under the tuned rules with safe random exploration (so the model
sees what setpoints do) and stored as readings; the forecasting ensemble is trained and
registered as champion; then the daemon itself (`controller.service.daemon.Daemon`, the same
class `coolpilot run` uses) drives the simulated plant, one 5-minute cycle per
second by default, serving its Prometheus metrics, while a twin plant with the same
weather, load, seed and state runs the tuned rules in lockstep. The difference in
cooling energy between the two is the saving; the live view shows it as it grows.
The daemon's parts are wired by `coolpilot.wiring.build_parts`, as for ``coolpilot run``;
only the clock (the plant's) and the trigger (paced) differ.

Defaults are sized for a laptop: 28 days of history and the default ensemble (5
members of 64x64) train in well under a minute on two cores. Fewer days train faster
but the model is unsure more often (more fallbacks); see ``--days``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import ArrayLike

from controller.decision import OUTCOMES
from controller.service.config_watch import ReloadResult
from controller.service.daemon import CycleReport, Daemon
from controller.service.triggers import PacedTrigger
from coolpilot.cli_common import CliError
from coolpilot.harness.sim_bridge import EnergyMeter, RulesTwin
from coolpilot.live_view import LiveStatus, LiveView
from coolpilot.wiring import build_parts, plant_clock
from db.roles import SETPOINT_ROLES, pue

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = "coolpilot-demo"
DEFAULT_SITE = "demo"
RECORDS_PER_DAY = 288
RECORDS_PER_HOUR = 12
#: What the live view and summary count for cycles in which the operator chose rules mode
#: (outcome ``fallback``, reason ``mode_rules``): the operator's choice, not a fallback.
RULES_MODE = "rules_mode"
#: Two-sided 95 % normal quantile, for the savings share's interval.
Z95 = 1.96


@dataclass(frozen=True)
class DemoOptions:
    """The demo's knobs (see ``coolpilot demo --help``)."""

    workdir: Path = Path(DEFAULT_WORKDIR)
    db_url: str | None = None  # None: a fresh SQLite file in workdir
    site: str = DEFAULT_SITE
    days: float = 28.0  # simulated history before the daemon starts [days]
    explore_share: float = 0.3  # share of history spent in random exploration [-]
    steps: int | None = None  # cycles to run (None: until Ctrl-C)
    speed: float = 1.0  # cycles per wall-clock second (0: as fast as possible)
    seed: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9109  # 0: any free port
    climate: str | None = None  # shipped name or EPW path (None: Leesburg VA)
    workload: str | None = None  # utilisation CSV (None: the Alibaba 2017 trace)
    mode: str = "auto"
    retrain_every_days: float = 1.0  # simulated days between retraining runs (0: never)
    max_epochs: int | None = None  # None: the training default


def _pue(energy: Mapping[str, float]) -> float:
    """PUE over the run: facility / IT energy, facility metered where the plant has a meter (`db.roles.pue`)."""
    return pue(energy.get("it_kwh", 0.0), energy.get("cooling_kwh", math.nan), energy.get("facility_kwh"))


def running_saving(rules_kwh: ArrayLike, ours_kwh: ArrayLike) -> tuple[float, float]:
    """Cooling-energy saving as a share of the rules twin's [%] and its 95 % half-width [points].

    ``rules_kwh`` / ``ours_kwh``: cooling energy per block (an hour) of each plant. The
    share is a ratio estimate; its standard error comes from the blocks' residuals,
    widened for their lag-1 autocorrelation (hour-to-hour savings are not independent).
    The half-width is NaN with fewer than 3 blocks: too early to say.
    """
    r = np.asarray(rules_kwh, dtype=np.float64)
    d = r - np.asarray(ours_kwh, dtype=np.float64)
    if len(r) == 0 or r.sum() <= 0:
        return math.nan, math.nan
    share = float(d.sum() / r.sum())
    if len(r) < 3:
        return 100.0 * share, math.nan
    e = d - share * r
    rho = float(np.corrcoef(e[:-1], e[1:])[0, 1]) if np.std(e[:-1]) > 0 and np.std(e[1:]) > 0 else 0.0
    rho = min(max(rho, 0.0), 0.9)
    se = math.sqrt(float((e**2).sum()) / (len(r) * (len(r) - 1)) * (1 + rho) / (1 - rho)) / float(r.mean())
    return 100.0 * share, 100.0 * Z95 * se


class DemoStats:
    """Counts, energy and peak temperatures of the run (a cycle hook plus a cycle callback)."""

    def __init__(self, plant: Any, twin: RulesTwin, limit_c: float) -> None:
        self.plant, self.twin, self.limit_c = plant, twin, limit_c
        self.meter = EnergyMeter(plant)
        self.outcomes: Counter[str] = Counter({o: 0 for o in OUTCOMES})
        self.fallbacks: Counter[str] = Counter()
        self.rack_max_c = float("-inf")
        self.rules_rack_max_c = float("-inf")
        self.records_above_limit = 0
        self.rules_records_above_limit = 0
        self.readings: dict[str, float] = {}
        self.last: CycleReport | None = None
        self.errors = 0
        self.cycles_metered = 0
        self.hourly: list[tuple[float, float]] = [(0.0, 0.0)]  # (rules, CoolPilot) cooling [kWh] at each hour
        self.reload: ReloadResult | None = None  # the config holder's last reload result

    @staticmethod
    def _true_rack(plant: Any, readings: Mapping[str, float]) -> float:
        true_state = getattr(plant, "true_state", None)
        value = true_state()["rack_inlet_max_c"] if true_state is not None else readings.get("rack_inlet_max_c")
        return float("nan") if value is None else float(value)

    def before_cycle(self) -> None:
        self.readings = self.plant.read()
        self.meter.meter(self.readings)
        rack = self._true_rack(self.plant, self.readings)
        rules_rack = self._true_rack(self.twin.plant, self.twin.plant.read())
        self.rack_max_c = max(self.rack_max_c, rack)
        self.rules_rack_max_c = max(self.rules_rack_max_c, rules_rack)
        self.records_above_limit += int(rack > self.limit_c)
        self.rules_records_above_limit += int(rules_rack > self.limit_c)
        if self.cycles_metered and self.cycles_metered % RECORDS_PER_HOUR == 0:
            ours, rules = self.energy()
            self.hourly.append((rules["cooling_kwh"], ours["cooling_kwh"]))
        self.cycles_metered += 1

    def saving_share(self) -> tuple[float, float, float]:
        """(saving share [%], its 95 % half-width [points], complete hours behind it [h])."""
        rules = np.diff([h[0] for h in self.hourly])
        ours = np.diff([h[1] for h in self.hourly])
        share, ci = running_saving(rules, ours)
        return share, ci, float(len(rules))

    def after_cycle(self, decision: Any) -> None:
        return None

    def on_cycle(self, report: CycleReport) -> None:
        self.last = report
        d = report.decision
        if d is None:
            self.errors += 1
            return
        if d.outcome == "fallback" and d.reason_code == "mode_rules":
            self.outcomes[RULES_MODE] += 1  # the operator's choice, not a fallback
            return
        self.outcomes[d.outcome] += 1
        if d.outcome == "fallback":
            self.fallbacks[d.reason_code or "other"] += 1

    def energy(self) -> tuple[dict[str, float], dict[str, float]]:
        """(CoolPilot plant, rules twin) energy since the start [kWh]."""
        return self.meter.used(), self.twin.meter.used()

    def status(self, steps: int | None, mode: str, model_version: str | None, metrics_url: str | None) -> LiveStatus:
        ours, rules = self.energy()
        saved = rules["cooling_kwh"] - ours["cooling_kwh"]
        d = self.last.decision if self.last is not None else None
        _, ci, _ = self.saving_share()
        hours = self.cycles_metered * float(self.plant.record_interval_s) / 3600.0  # plant time metered
        note = self.reload.message() if self.reload is not None and not self.reload.reload_ok else ""
        return LiveStatus(
            ts=self.plant.now, cycle=self.last.n if self.last else 0, steps=steps, mode=mode,
            outcome=d.outcome if d is not None else "error", reason_code=d.reason_code if d is not None else None,
            setpoints_c=self.plant.setpoints(), rules_setpoints_c=self.twin.setpoints(),
            cooling_kw=float(self.readings.get("cooling_power_kw", float("nan"))),
            rules_cooling_kw=float(self.twin.last_readings.get("cooling_power_kw", float("nan"))),
            pue=_pue(ours), rules_pue=_pue(rules), savings_kwh=saved,
            savings_pct=100.0 * saved / rules["cooling_kwh"] if rules["cooling_kwh"] > 0 else float("nan"),
            rack_inlet_max_c=self.rack_max_c, rules_rack_inlet_max_c=self.rules_rack_max_c,
            rack_inlet_limit_c=self.limit_c, outcomes=dict(self.outcomes), fallbacks=dict(self.fallbacks),
            model_version=model_version, metrics_url=metrics_url, note=note[:300], savings_ci_pct=ci,
            hours=hours if hours > 0 else math.nan,
        )


def _fresh_sqlite(workdir: Path) -> str:
    """The demo's own database file, replaced on every run (only files the demo named)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _write_config(workdir: Path, opts: DemoOptions) -> Path:
    """The daemon's config for the demo; edit it while the demo runs to see a live reload."""
    path = workdir / "coolpilot.toml"
    path.write_text(
        "# Written by `coolpilot demo`. Edit it while the demo runs (mode, bounds, thresholds):\n"
        "# the daemon reloads it within a second, as it does on SIGHUP.\n"
        f'site_id = "{opts.site}"\n'
        f'mode = "{opts.mode}"\n\n'
        "[metrics]\nenabled = false   # the demo serves metrics itself (--metrics-port)\n\n"
        '[actuator]\nkind = "db"\nretries = 0\n',
        encoding="utf-8",
    )
    os.chmod(path, 0o600)
    return path


def _serve_metrics(registry: Any, host: str, port: int, say: Callable[[str], None]) -> Any:
    from controller.service.metrics import serve

    try:
        return serve(registry, host=host, port=port)
    except OSError as exc:
        say(f"metrics port {host}:{port} is busy ({exc.strerror}); using a free port instead")
        return serve(registry, host=host, port=0)


def run_demo(opts: DemoOptions, *, say: Callable[[str], None], view_stream: TextIO = sys.stderr,
             tty: bool | None = None) -> dict[str, Any]:
    """Set up, run the daemon closed loop until ``steps`` or Ctrl-C, and return the summary."""
    from controller.service.config_watch import ConfigHolder
    from db.engine import redact_url

    t_setup = time.perf_counter()
    opts.workdir.mkdir(parents=True, exist_ok=True)
    url = opts.db_url or _fresh_sqlite(opts.workdir)
    engine = _empty_site(url, opts.site)
    say(f"[1/4] database {redact_url(url)} ready")
    plant = _plant_with_history(engine, opts, say)
    twin = copy.deepcopy(plant)  # same weather, load, seed and state: only the controller differs
    holder = ConfigHolder(_write_config(opts.workdir, opts))
    trainer, first = _first_model(engine, opts, say)
    run = _closed_loop(opts, engine, holder, plant, twin, (trainer, first), say, LiveView(view_stream, tty=tty),
                       t_setup)
    return _summary(run, opts, holder.config.mode, first.version, redact_url(url))


def _empty_site(url: str, site: str) -> Any:
    """An engine on a migrated database in which ``site`` holds no readings yet."""
    from db.engine import DatabaseError, make_engine, redact_url
    from db.migrate import upgrade
    from db.query import latest_timestamp

    try:
        engine = make_engine(url)
        upgrade(engine)
        if latest_timestamp(engine, site) is not None:
            raise CliError(f"site {site!r} in {redact_url(url)} already holds readings: use a fresh database "
                           "(leave out --db) or another --site")
    except DatabaseError as exc:
        raise CliError(str(exc)) from None
    return engine


def _plant_with_history(engine: Any, opts: DemoOptions, say: Callable[[str], None]) -> Any:
    """The simulated plant, after the history it generated was stored as the site's readings."""
    from coolpilot.harness.history import generate_history
    from db.ingest import write_wide
    from simulator.plant_sim import make_plant

    try:
        plant = make_plant(opts.climate, opts.workload, seed=opts.seed)
    except ValueError as exc:  # an unknown climate name, an unreadable EPW or trace file
        raise CliError(str(exc)) from None
    say(f"[2/4] simulating {opts.days:g} days of plant history ({plant.weather_source}), "
        f"{opts.explore_share:.0%} of it safe random exploration ...")
    t0 = time.perf_counter()
    history = generate_history(plant, days=opts.days, explore_share=opts.explore_share, seed=opts.seed)
    write_wide(engine, history, site=opts.site)
    say(f"      {len(history)} five-minute records ({history.index[0]:%Y-%m-%d} .. {history.index[-1]:%Y-%m-%d}) "
        f"simulated and stored in {time.perf_counter() - t0:.1f} s")
    return plant


def _first_model(engine: Any, opts: DemoOptions, say: Callable[[str], None]) -> tuple[Any, Any]:
    """Train and register the first champion; returns the retrainer the daemon keeps using, and the outcome."""
    from controller.service.retraining import Retrainer
    from forecasting.train import TrainConfig

    train_config = TrainConfig(baselines=False, seed=opts.seed)
    if opts.max_epochs:
        train_config = dataclasses.replace(train_config, max_epochs=opts.max_epochs)

    def on_epoch(report: Any) -> None:
        if report.epoch == 1 or report.epoch % 10 == 0:
            say(f"      epoch {report.epoch}/{report.max_epochs}: validation MSE {report.val_loss:.3f} "
                f"({report.elapsed_s:.0f} s)")

    say(f"[3/4] training the forecasting ensemble ({train_config.members} members, "
        f"{'x'.join(str(h) for h in train_config.hidden)}, up to {train_config.max_epochs} epochs) ...")
    # retraining keeps a sliding window as long as the first history (older data falls out)
    trainer = Retrainer(engine, opts.site, opts.workdir / "models", history_days=math.ceil(opts.days),
                        train_config=train_config, device="cpu", on_epoch=on_epoch)
    first = trainer()
    if not first.ok:
        raise CliError(f"training failed: {first.error}")
    say(f"      model {first.version} trained in {first.duration_s:.0f} s: cooling power MAE "
        f"{first.cooling_power_mae_kw:.1f} kW, rack inlet MAE {first.rack_inlet_mae_c:.2f} K (test window)")
    trainer.on_epoch = None
    return trainer, first


@dataclass(frozen=True)
class _Run:
    stats: DemoStats
    daemon: Daemon
    metrics_url: str
    setup_s: float
    run_s: float


def _closed_loop(opts: DemoOptions, engine: Any, holder: Any, plant: Any, twin: Any, training: tuple[Any, Any],
                 say: Callable[[str], None], view: LiveView, t_setup: float) -> _Run:
    """Serve metrics and run the daemon (`coolpilot.wiring.build_parts`, paced, on the plant's clock).

    Health metrics use the wall clock (the daemon's default), data the plant's; the
    start-up training counts as the daemon's first training run.
    """
    from prometheus_client import CollectorRegistry

    from coolpilot.harness.history import rules_decide

    config = holder.config
    registry = CollectorRegistry()
    server = _serve_metrics(registry, opts.metrics_host, opts.metrics_port, say)
    twin_hook = RulesTwin(twin, rules_decide("tuned", config.envelope()))
    stats = DemoStats(plant, twin_hook, config.safety.rack_inlet_limit_c)

    trainer, first = training

    def show(report: CycleReport) -> None:  # called by the daemon below, once it runs
        stats.on_cycle(report)
        stats.reload = holder.last_result
        info = getattr(daemon.parts.forecaster, "info", None)  # the champion provider's model
        view.show(stats.status(opts.steps, holder.config.mode, info.version if info else None, server.url))

    retrain_every = round(opts.retrain_every_days * RECORDS_PER_DAY) or None
    trigger = PacedTrigger(cycles_per_s=opts.speed, period_s=plant.record_interval_s, max_cycles=opts.steps,
                           retrain_every_cycles=retrain_every)
    setup_s = time.perf_counter() - t_setup
    speed = "as fast as possible" if opts.speed <= 0 else f"{opts.speed:g} cycles (5 plant minutes each) per second"
    say(f"[4/4] set-up took {setup_s:.0f} s. The daemon now drives the plant, {speed}; a twin plant runs the tuned "
        f"rules beside it. Metrics: {server.url}. "
        + (f"{opts.steps} cycles." if opts.steps else "Ctrl-C stops it with a summary."))
    say(f"      edit {holder.path} (e.g. mode = \"rules\") to reload the config live")
    t_run = time.perf_counter()
    try:
        with build_parts(holder, engine=engine, registry=registry, clock=plant_clock(plant), retrain=trainer,
                         plant=plant, hooks=(stats, twin_hook), on_cycle=(show,)) as parts:
            daemon = Daemon(parts, trigger)
            daemon.record_training(first)
            daemon.run()
    finally:
        view.release()
        server.shutdown()
        engine.dispose()
    return _Run(stats, daemon, server.url, setup_s, time.perf_counter() - t_run)


def _summary(run: _Run, opts: DemoOptions, mode: str, first_model: str | None, db_url: str) -> dict[str, Any]:
    stats, daemon = run.stats, run.daemon
    ours, rules = stats.energy()
    saved = rules["cooling_kwh"] - ours["cooling_kwh"]
    _, ci, hours = stats.saving_share()
    in_run = daemon.trainings[1:]  # the first is the start-up training
    return {
        "cycles": daemon.cycles,
        "cycle_errors": daemon.cycle_errors,
        "simulated_hours": daemon.cycles * daemon.period_s / 3600.0,
        "plant_time_end": stats.plant.now,
        "mode": mode,
        "energy_kwh": {"coolpilot": ours, "rules": rules},
        "cooling_savings_kwh": saved,
        "cooling_savings_pct": 100.0 * saved / rules["cooling_kwh"] if rules["cooling_kwh"] > 0 else None,
        "cooling_savings_ci95_pct": ci if math.isfinite(ci) else None,
        "cooling_savings_hours": hours,
        "pue": {"coolpilot": _pue(ours), "rules": _pue(rules)},
        "outcomes": dict(stats.outcomes),
        "fallbacks": dict(stats.fallbacks),
        "rack_inlet_max_c": {"coolpilot": stats.rack_max_c, "rules": stats.rules_rack_max_c},
        "rack_inlet_limit_c": stats.limit_c,
        "records_above_limit": {"coolpilot": stats.records_above_limit, "rules": stats.rules_records_above_limit},
        "final_setpoints_c": {r: v for r, v in stats.plant.setpoints().items() if r in SETPOINT_ROLES},
        "model": {"initial": first_model, "trainings_in_run": len(in_run),
                  "promoted_in_run": sum(1 for t in in_run if t.promoted)},
        "interval_coverage": dict(daemon.last_decision.interval_coverage) if daemon.last_decision else {},
        "job_overruns": dict(daemon.monitor.overruns),
        "setup_seconds": run.setup_s,
        "run_seconds": run.run_s,
        "database": db_url,
        "site": opts.site,
        "metrics_url": run.metrics_url,
    }


def summary_text(s: Mapping[str, Any]) -> str:
    """The human-readable summary printed at the end."""
    pct = s["cooling_savings_pct"]
    ci = f" \u00b1 {s['cooling_savings_ci95_pct']:.1f} (95 %)" if s.get("cooling_savings_ci95_pct") is not None else ""
    pue = s["pue"]
    rack = s["rack_inlet_max_c"]
    fb = ", ".join(f"{k} {v}" for k, v in s["fallbacks"].items()) or "none"
    return "\n".join([
        f"CoolPilot demo: {s['cycles']} cycles = {s['simulated_hours']:.1f} simulated hours in {s['run_seconds']:.0f} s "
        f"(set-up {s['setup_seconds']:.0f} s), mode {s['mode']}",
        f"cooling energy: CoolPilot {s['energy_kwh']['coolpilot']['cooling_kwh']:.1f} kWh, tuned rules "
        f"{s['energy_kwh']['rules']['cooling_kwh']:.1f} kWh: saved {s['cooling_savings_kwh']:.1f} kWh"
        + (f" ({pct:.1f} %{ci}, over {s.get('cooling_savings_hours', 0):.0f} complete hours)" if pct is not None
           else ""),
        f"PUE (facility / IT energy): CoolPilot {pue['coolpilot']:.3f}, tuned rules {pue['rules']:.3f}",
        f"decisions: {', '.join(f'{k} {v}' for k, v in s['outcomes'].items())}; fallbacks: {fb}",
        f"hottest rack inlet: CoolPilot {rack['coolpilot']:.1f} C, rules {rack['rules']:.1f} C "
        f"(limit {s['rack_inlet_limit_c']:.1f} C; 5-minute records above it: "
        f"{s['records_above_limit']['coolpilot']} vs {s['records_above_limit']['rules']})",
        "forecast intervals (90 %, online-calibrated) covered, over the last week of matured forecasts: "
        + (", ".join(f"{t} {c:.0%}" for t, c in s.get("interval_coverage", {}).items()) or "none matured yet"),
        f"database {s['database']} (try: coolpilot explain --db {s['database']} --site {s['site']})",
    ])


def rotate_log(path: Path) -> None:
    """Keep the previous run's log as ``<name>.1`` (one generation), so a new demo does not erase it."""
    if path.exists():
        path.replace(path.with_name(path.name + ".1"))


def print_summary(text: str, out: TextIO, err: TextIO) -> None:
    """Print the summary on ``out``; where that pipe is gone (Ctrl-C also ends ``| tee``), on ``err``."""
    try:
        out.write(text.rstrip("\n") + "\n")
        out.flush()
    except (BrokenPipeError, ValueError, OSError):
        with contextlib.suppress(OSError, ValueError):  # no later flush may fail at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        err.write("(standard output is closed; the summary follows here)\n" + text.rstrip("\n") + "\n")
        err.flush()
