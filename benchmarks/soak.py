"""Soak: the daemon against the simulator for 20,000 cycles (~70 days) with random faults.

The real daemon, wired as production wires it (``coolpilot.wiring.build_parts``: the
configured actuator with its retries, the decision recorder, systemd notifier and
watchdog from the environment), drives ``SimulatedPlant`` in auto mode as fast as it
can; as for ``coolpilot run --plant``, only the clock (the plant's) and the trigger
(``PacedTrigger``) differ. An ensemble is trained at start on simulated exploration
history and retrained every ``--retrain-every-days`` plant days; a tuned-rules twin
(``coolpilot.harness.sim_bridge.RulesTwin``) runs beside it.
Faults arrive at random, seeded (``benchmarks/soak_faults.py``): chiller trips, CRAH
failures and sensor failures in the plant, database outages, actuator failures, NaN and
spike readings in the historian, and valid and invalid config reloads.

Targets: RSS grows by at most 10 % from the end of the warm-up to the end; no row is
lost (decisions made = decision rows stored; readings the historian wrote = readings
stored). Also reported: cycles, fallbacks by reason, minutes with the true hottest rack
inlet above the limit (CoolPilot and the tuned-rules twin under the same plant faults),
faults by kind, cycle times, cycles per second.

    python benchmarks/soak.py                                  # 20,000 cycles, SQLite
    python benchmarks/soak.py --cycles 2000 --fault-rate 0.05
    python benchmarks/soak.py --db postgresql+psycopg://postgres@127.0.0.1:5432/soak_fresh

Progress goes to stderr, the daemon's log to ``<workdir>/soak.log``; stdout gets the
figures and one JSON line (``--json-only``: just the line).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.soak_faults import (  # noqa: E402
    FAULT_KINDS,
    DatabaseOutage,
    FaultInjector,
    FlakyActuator,
    HistorianWriter,
    config_text,
    write_atomically,
)
from controller.service.config_watch import ConfigHolder  # noqa: E402
from controller.service.daemon import CycleReport, Daemon  # noqa: E402
from controller.service.recorder import DecisionRecorder  # noqa: E402
from controller.service.triggers import PacedTrigger  # noqa: E402
from coolpilot.demo import DemoStats  # noqa: E402
from coolpilot.harness.sim_bridge import RulesTwin  # noqa: E402
from coolpilot.wiring import build_parts, plant_clock  # noqa: E402

SITE = "soak"
RSS_TARGET_PCT = 10.0
RECORDS_PER_DAY = 288
#: The daemon's main loop polls the config file this often [s]; the default 1 s is ~30 cycles of
#: accelerated time, so a reload would take effect long after the edit.
MAIN_LOOP_TICK_S = 0.05


def rss_kib() -> int:
    """Resident set size of this process [KiB], from /proc/self/status (VmRSS)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class _LogCounter(logging.Handler):
    """Counts the daemon's error records and tracebacks (a traceback in a soak is a bug to read)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors = Counter[str]()
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.errors[record.name] += 1
        self.tracebacks += int(record.exc_info is not None)


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[_LogCounter]:
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    counter = _LogCounter()
    level = root.level
    root.addHandler(handler)
    root.addHandler(counter)
    root.setLevel(logging.INFO)
    try:
        yield counter
    finally:
        root.removeHandler(handler)
        root.removeHandler(counter)
        root.setLevel(level)
        handler.close()


class Progress:
    """Cycle callback: RSS after the warm-up and at intervals, cycle times, a progress line."""

    def __init__(self, cycles: int, warmup: int, every: int, quiet: bool) -> None:
        self.cycles, self.warmup, self.every, self.quiet = cycles, warmup, every, quiet
        self.rss_start_kib: int | None = None
        self.rss_samples: list[tuple[int, int]] = []  # (cycle, KiB)
        self.job_ms: list[float] = []
        self.decide_ms: list[float] = []
        self.setpoints_sent = 0  # setpoints the actuator confirmed: each one is a command row
        self.t0 = time.perf_counter()

    def __call__(self, report: CycleReport) -> None:
        self.job_ms.append(report.duration_s * 1000.0)
        d = report.decision
        if d is not None:
            self.setpoints_sent += len(d.sent)
            if d.duration_s is not None:
                self.decide_ms.append(d.duration_s * 1000.0)
        if report.n == self.warmup:
            self.rss_start_kib = rss_kib()
            self.rss_samples.append((report.n, self.rss_start_kib))
        elif report.n % self.every == 0 or report.n == self.cycles:
            self.rss_samples.append((report.n, rss_kib()))
        if not self.quiet and report.n % self.every == 0:
            rate = report.n / (time.perf_counter() - self.t0)
            print(f"soak: cycle {report.n}/{self.cycles}, {rate:.1f} cycles/s, RSS {rss_kib() / 1024:.1f} MiB",
                  file=sys.stderr, flush=True)


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), {"site": SITE}).scalar() or 0)


def stored_rows(engine: sa.Engine) -> dict[str, int]:
    """Rows of the soak's site: readings, decisions, setpoint commands marked sent."""
    site = "(SELECT id FROM sites WHERE name = :site)"
    return {
        "readings": _count(engine, f"SELECT count(*) FROM readings r JOIN points p ON p.id = r.point_id "
                                   f"WHERE p.site_id = {site}"),
        "decisions": _count(engine, f"SELECT count(*) FROM decisions WHERE site_id = {site}"),
        "commands": _count(engine, f"SELECT count(*) FROM setpoint_commands WHERE site_id = {site} "
                                   "AND status = 'sent'"),
    }


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


@dataclass
class _Setup:
    """The soak's site before the daemon starts: database, plants, config, first model."""

    url: str
    engine: sa.Engine
    plant: Any
    twin: Any
    holder: ConfigHolder
    config_path: Path
    trainer: Any
    baseline: dict[str, int]
    setup_started: float


def _set_up(args: argparse.Namespace, workdir: Path, say: Any) -> _Setup:
    """A fresh database with simulated history, the daemon's config and a trained first model."""
    from controller.service.retraining import Retrainer
    from coolpilot.harness.history import generate_history
    from db.engine import DatabaseError, make_engine, redact_url
    from db.ingest import write_wide
    from db.migrate import upgrade
    from db.query import latest_timestamp
    from forecasting.train import TrainConfig
    from simulator.plant_sim import make_plant

    t_setup = time.perf_counter()
    url = args.db or f"sqlite:///{workdir / 'soak.db'}"
    try:
        engine = make_engine(url)
        upgrade(engine)
        fresh = latest_timestamp(engine, SITE) is None
    except DatabaseError as exc:
        raise SystemExit(f"soak: {exc}") from None
    if not fresh:
        raise SystemExit(f"soak: site {SITE!r} in {redact_url(url)} already holds readings: use a fresh database")
    plant = make_plant(None, None, seed=args.seed)
    history = generate_history(plant, days=args.days, explore_share=0.3, seed=args.seed)
    write_wide(engine, history, site=SITE)
    baseline = stored_rows(engine)
    twin = copy.deepcopy(plant)  # same weather, load and state: only the controller differs
    config_path = workdir / "coolpilot.toml"
    write_atomically(config_path, config_text(SITE, 1.0))
    train_config = TrainConfig(baselines=False, seed=args.seed, max_epochs=args.max_epochs)
    trainer = Retrainer(engine, SITE, workdir / "models", history_days=math.ceil(args.days),
                        train_config=train_config, device="cpu")
    first = trainer()
    if not first.ok:
        raise SystemExit(f"soak: training failed: {first.error}")
    say(f"soak: {len(history)} records of history, model {first.version} trained in {first.duration_s:.0f} s")
    return _Setup(url, engine, plant, twin, ConfigHolder(config_path), config_path, trainer, baseline, t_setup)


@dataclass
class _Soak:
    """What the run produced, for the figures."""

    daemon: Daemon
    stats: DemoStats
    faults: FaultInjector
    progress: Progress
    recorder: DecisionRecorder
    outage: DatabaseOutage
    actuator: FlakyActuator
    writer: HistorianWriter
    setup_s: float
    run_s: float
    rss_end_kib: int


def _run(args: argparse.Namespace, site: _Setup, say: Any) -> _Soak:
    """The daemon as ``coolpilot run --plant`` wires it (`coolpilot.wiring.build_parts`), with faults."""
    from prometheus_client import CollectorRegistry

    from coolpilot.harness.history import rules_decide
    from db.ingest import write_wide

    rng = np.random.default_rng(args.seed)
    holder, plant, engine = site.holder, site.plant, site.engine
    twin_hook = RulesTwin(site.twin, rules_decide("tuned", holder.config.envelope()))
    stats = DemoStats(plant, twin_hook, holder.config.safety.rack_inlet_limit_c)
    outage, actuator, writer = DatabaseOutage(engine), FlakyActuator(), HistorianWriter(write_wide, rng)
    faults = FaultInjector(rate=args.fault_rate, rng=rng, plants=(plant, site.twin), outage=outage, actuator=actuator,
                           writer=writer, holder=holder, config_path=site.config_path, site=SITE)
    progress = Progress(args.cycles, min(args.warmup, max(args.cycles // 2, 1)), args.progress_every, args.json_only)
    retrain_every = round(args.retrain_every_days * RECORDS_PER_DAY) or None
    trigger = PacedTrigger(cycles_per_s=0.0, period_s=plant.record_interval_s, max_cycles=args.cycles,
                           retrain_every_cycles=retrain_every)
    with build_parts(holder, engine=engine, registry=CollectorRegistry(), clock=plant_clock(plant),
                     retrain=site.trainer, plant=plant, historian_write=writer, actuator_layer=actuator.wrap,
                     hooks=(stats, faults, twin_hook), on_cycle=(stats.on_cycle, progress)) as parts:
        assert isinstance(parts.recorder, DecisionRecorder)
        daemon = Daemon(parts, trigger, tick_s=MAIN_LOOP_TICK_S)
        setup_s = time.perf_counter() - site.setup_started
        say(f"soak: set-up {setup_s:.0f} s; running {args.cycles} cycles, fault rate {args.fault_rate:g} per cycle")
        t_run = time.perf_counter()
        daemon.run(install_signals=args.signals)
        run_s = time.perf_counter() - t_run
    return _Soak(daemon, stats, faults, progress, parts.recorder, outage, actuator, writer, setup_s, run_s, rss_kib())


def run_soak(args: argparse.Namespace, workdir: Path, say: Any) -> dict[str, Any]:
    """Set up (history, training), run the daemon with faults, and return the figures."""
    site = _set_up(args, workdir, say)
    run = _run(args, site, say)
    run.faults.finish()  # the database is back: flush what waited for it
    run.recorder.flush()
    run.writer.flush(site.engine, SITE)
    run.outage.remove()
    stored = {k: v - site.baseline[k] for k, v in stored_rows(site.engine).items()}
    site.engine.dispose()
    return _figures(args, site, run, stored)


def _figures(args: argparse.Namespace, site: _Setup, run: _Soak, stored: dict[str, int]) -> dict[str, Any]:
    from db.engine import redact_url

    daemon, stats, progress, writer, faults = run.daemon, run.stats, run.progress, run.writer, run.faults
    made = sum(stats.outcomes.values())
    lost = {"decisions": made - stored["decisions"], "readings": writer.readings_written - stored["readings"],
            "commands": progress.setpoints_sent - stored["commands"]}
    rss_end = run.rss_end_kib
    rss_start = progress.rss_start_kib or rss_end
    ours, rules = stats.energy()
    period_s = site.plant.record_interval_s
    return {
        "benchmark": "soak", "database": redact_url(site.url).split(":", 1)[0], "seed": args.seed,
        "cycles_requested": args.cycles, "cycles": daemon.cycles, "cycle_errors": daemon.cycle_errors,
        "simulated_days": daemon.cycles * period_s / 86400.0,
        "setup_s": round(run.setup_s, 1), "run_s": round(run.run_s, 1),
        "cycles_per_s": round(daemon.cycles / run.run_s, 2) if run.run_s > 0 else None,
        "cycle_job_median_ms": round(statistics.median(progress.job_ms), 1) if progress.job_ms else None,
        "cycle_job_p95_ms": round(_percentile(progress.job_ms, 95), 1),
        "decide_median_ms": round(statistics.median(progress.decide_ms), 1) if progress.decide_ms else None,
        "rss_warmup_cycles": progress.warmup, "rss_start_mib": round(rss_start / 1024, 1),
        "rss_end_mib": round(rss_end / 1024, 1),
        "rss_growth_pct": round(100.0 * (rss_end - rss_start) / rss_start, 2), "rss_target_pct": RSS_TARGET_PCT,
        "rss_samples_mib": [[n, round(k / 1024, 1)] for n, k in progress.rss_samples],
        "outcomes": dict(stats.outcomes), "fallbacks": dict(sorted(stats.fallbacks.items())),
        "rack_inlet_limit_c": stats.limit_c,
        "minutes_above_limit": {"coolpilot": stats.records_above_limit * period_s / 60.0,
                                "rules_twin": stats.rules_records_above_limit * period_s / 60.0},
        "rack_inlet_max_c": {"coolpilot": round(stats.rack_max_c, 2), "rules_twin": round(stats.rules_rack_max_c, 2)},
        "cooling_kwh": {"coolpilot": round(ours["cooling_kwh"], 1), "rules_twin": round(rules["cooling_kwh"], 1)},
        "decisions_made": made, "readings_written": writer.readings_written,
        "setpoints_sent": progress.setpoints_sent, "stored": stored,
        "lost_rows": sum(lost.values()), "lost": lost, "recorder_dropped": run.recorder.dropped,
        "faults_started": {k: faults.started[k] for k in FAULT_KINDS}, "config_reloads": dict(faults.reloads),
        "config_ok_at_end": faults.config_ok(), "statements_refused_in_outages": run.outage.refused,
        "failed_sends": run.actuator.failed_sends, "corrupted_readings": dict(writer.corrupted),
        "backfilled_records": writer.backfilled_records,
        "trainings_in_run": len(daemon.trainings), "promoted_in_run": sum(1 for t in daemon.trainings if t.promoted),
        "trainings_failed": sum(1 for t in daemon.trainings if not t.ok),
        "job_overruns": dict(daemon.monitor.overruns),
    }


def figures_text(r: dict[str, Any]) -> str:
    """The human-readable figures printed before the JSON line."""
    mins = r["minutes_above_limit"]
    fb = ", ".join(f"{k} {v}" for k, v in r["fallbacks"].items()) or "none"
    return "\n".join([
        f"soak ({r['database']}, seed {r['seed']}): {r['cycles']} of {r['cycles_requested']} cycles "
        f"({r['simulated_days']:.1f} simulated days) in {r['run_s']:.0f} s = {r['cycles_per_s']} cycles/s "
        f"(set-up {r['setup_s']:.0f} s); cycle errors {r['cycle_errors']}",
        f"cycle job: median {r['cycle_job_median_ms']} ms, p95 {r['cycle_job_p95_ms']} ms; "
        f"decision alone: median {r['decide_median_ms']} ms",
        f"RSS: {r['rss_start_mib']} MiB after {r['rss_warmup_cycles']} warm-up cycles, {r['rss_end_mib']} MiB at the "
        f"end: {r['rss_growth_pct']:+.2f} % (target <= {r['rss_target_pct']:g} %)",
        f"decisions: {', '.join(f'{k} {v}' for k, v in r['outcomes'].items())}; fallbacks: {fb}",
        f"true hottest rack inlet above {r['rack_inlet_limit_c']:g} C: CoolPilot {mins['coolpilot']:g} min, "
        f"rules twin {mins['rules_twin']:g} min (max {r['rack_inlet_max_c']['coolpilot']} C vs "
        f"{r['rack_inlet_max_c']['rules_twin']} C)",
        f"lost rows: {r['lost_rows']} (decisions {r['lost']['decisions']} of {r['decisions_made']}, readings "
        f"{r['lost']['readings']} of {r['readings_written']}, commands {r['lost']['commands']} of "
        f"{r['setpoints_sent']}); recorder dropped {r['recorder_dropped']}",
        f"faults started: {', '.join(f'{k} {v}' for k, v in r['faults_started'].items())}; config reloads "
        f"{r['config_reloads']}; {r['statements_refused_in_outages']} statements refused in outages, "
        f"{r['failed_sends']} failed sends, corrupted readings {r['corrupted_readings']}",
        f"trainings in run: {r['trainings_in_run']} ({r['promoted_in_run']} promoted, {r['trainings_failed']} "
        f"failed); log errors "
        f"{r['log_errors']}, tracebacks {r['log_tracebacks']}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20_000, help="control cycles (5 plant minutes each)")
    parser.add_argument("--seed", type=int, default=0, help="plant, history, training and fault seed")
    parser.add_argument("--db", default=None, help="database URL of a fresh database (default: SQLite in --workdir)")
    parser.add_argument("--fault-rate", type=float, default=0.01, help="probability per cycle that a fault starts")
    parser.add_argument("--days", type=float, default=21.0, help="simulated history to train on [days]")
    parser.add_argument("--max-epochs", type=int, default=30, help="training epochs (first model and retraining)")
    parser.add_argument("--retrain-every-days", type=float, default=1.0,
                        help="retrain every N simulated days, as the nightly job (0: never)")
    parser.add_argument("--warmup", type=int, default=500, help="cycles before the starting RSS is taken")
    parser.add_argument("--progress-every", type=int, default=1000, help="cycles between progress lines")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep database, config, models and soak.log here (default: a temporary folder)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.cycles < 1 or not 0.0 <= args.fault_rate <= 1.0:
        parser.error("--cycles must be positive and --fault-rate a probability in [0, 1]")
    args.signals = True  # Ctrl-C / SIGTERM end the run after the running cycle, with figures

    def say(message: str) -> None:
        if not args.json_only:
            print(message, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coolpilot-soak-")))
        workdir.mkdir(parents=True, exist_ok=True)
        counter = stack.enter_context(_logging_to(workdir / "soak.log"))
        result = run_soak(args, workdir, say)
        result["log_errors"] = dict(counter.errors)
        result["log_tracebacks"] = counter.tracebacks
    result["meets_target"] = (result["lost_rows"] == 0 and result["rss_growth_pct"] <= RSS_TARGET_PCT
                              and result["cycles"] == args.cycles and result["cycle_errors"] == 0)
    if not args.json_only:
        print(figures_text(result))
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
