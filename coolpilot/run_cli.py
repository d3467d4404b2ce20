"""``coolpilot run`` (the daemon) and ``coolpilot demo``: wiring only.

``run`` loads the config, opens the database, starts the metrics listener, builds the
daemon's parts with `coolpilot.wiring.build_parts` (the demo and the soak use the same
wiring) and hands them to `controller.service.daemon.Daemon` on a wall-clock trigger.
With ``--plant module:factory`` it closes the loop around a simulated plant in
accelerated time (the lifecycle tests use this): the plant's clock and a paced
trigger, nothing else changes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from coolpilot.cli_common import CliError, add_db_arg, add_json_arg, progress

log = logging.getLogger(__name__)

CONFIG_ENV = "COOLPILOT_CONFIG"
MODELS_DIR_ENV = "COOLPILOT_MODELS_DIR"  # the same variable as `coolpilot train`
DEFAULT_MODELS_DIR = "coolpilot-data/models"
MIN_DEMO_DAYS = 9


def register(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "run", help="run the controller daemon: control cycle, retraining, data-quality checks, metrics",
        description="Run the CoolPilot daemon until SIGTERM/SIGINT. SIGHUP (or editing the config file) reloads "
                    "the config; an invalid file is rejected and the last good one stays in force.")
    r.add_argument("--config", metavar="FILE", default=None, help=f"controller config (default: ${CONFIG_ENV})")
    add_db_arg(r)
    r.add_argument("--models-dir", metavar="DIR", default=None,
                   help=f"model artifacts (default: ${MODELS_DIR_ENV}, else ./{DEFAULT_MODELS_DIR})")
    r.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="override [metrics] port (0: any free port, logged)")
    sim = r.add_argument_group("closed loop against a simulated plant (accelerated time)")
    sim.add_argument("--plant", metavar="MODULE:FACTORY", default=None,
                     help="drive this plant instead of a real site, e.g. simulator.plant_sim:make_plant; "
                          "the factory is called with start= and seed=")
    sim.add_argument("--speed", type=float, default=1.0, metavar="CPS",
                     help="cycles per second with --plant (0: as fast as possible; default 1)")
    sim.add_argument("--steps", type=int, default=None, metavar="N", help="stop after N cycles (with --plant)")
    sim.add_argument("--seed", type=int, default=0, help="plant seed (with --plant)")
    sim.add_argument("--retrain-every", type=int, default=0, metavar="CYCLES",
                     help="retrain every N cycles with --plant (default 0: never)")
    r.set_defaults(func=cmd_run)

    d = subparsers.add_parser(
        "demo", help="simulate, train and run the daemon closed loop with a live view (no set-up needed)",
        description="Create a local SQLite database, simulate a month of plant history with exploration, train "
                    "the ensemble, then run the daemon closed loop against the simulated plant in accelerated "
                    "time, beside a twin plant under the tuned rules. Ctrl-C (or --steps) ends it with a summary.")
    d.add_argument("--db", metavar="URL", default=None,
                   help="database URL (default: a fresh SQLite file in the work directory)")
    d.add_argument("--workdir", metavar="DIR", default="coolpilot-demo",
                   help="where the demo keeps its database, config and models (default ./coolpilot-demo)")
    d.add_argument("--site", default="demo", help="site name (default: demo)")
    d.add_argument("--days", type=float, default=28.0, metavar="N",
                   help=f"days of simulated history to train on (default 28; at least {MIN_DEMO_DAYS})")
    d.add_argument("--steps", type=int, default=None, metavar="N", help="stop after N cycles (default: at Ctrl-C)")
    d.add_argument("--speed", type=float, default=1.0, metavar="CPS",
                   help="cycles (5 plant minutes each) per second; 0 = as fast as possible (default 1)")
    d.add_argument("--seed", type=int, default=0, help="seed of the plant, its history and training")
    d.add_argument("--metrics-port", type=int, default=9109, metavar="PORT",
                   help="Prometheus metrics on 127.0.0.1:PORT (default 9109; 0 or a busy port: any free one)")
    d.add_argument("--climate", default=None, help="leesburg (default), dallas, chicago, san_jose, or an EPW file")
    d.add_argument("--workload", default=None, metavar="CSV", help="utilisation trace (default: Alibaba 2017)")
    d.add_argument("--mode", choices=("auto", "advisory", "rules"), default="auto", help="controller mode")
    d.add_argument("--retrain-every-days", type=float, default=1.0, metavar="N",
                   help="retrain every N simulated days while running (0: never; default 1)")
    d.add_argument("--max-epochs", type=int, default=None, metavar="N", help="training epochs (default: 60)")
    add_json_arg(d)
    d.set_defaults(func=cmd_demo)


def _models_dir(value: str | None) -> Path:
    return Path(value or os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR)


def cmd_run(args: argparse.Namespace) -> int:
    from controller.service.daemon import Daemon

    if not getattr(args, "verbose", False):  # "Running job ..." twice per cycle is noise, not news
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    holder = _load_config(args)
    engine = _open_database(args, holder.config)
    stack = contextlib.ExitStack()  # closed in reverse: actuator, metrics listener, then the engine
    stack.callback(engine.dispose)
    try:
        plant = None if args.plant is None else _simulated_plant(args, engine, holder.config.site_id)
        parts, trigger = _wire(args, holder, engine, plant, stack)
        return Daemon(parts, trigger).run()
    finally:
        stack.close()


def _load_config(args: argparse.Namespace) -> Any:
    from controller.config import ConfigError
    from controller.service.config_watch import ConfigHolder

    path = args.config or os.environ.get(CONFIG_ENV)
    if not path:
        raise CliError(f"--config FILE is required (or set ${CONFIG_ENV}); start from "
                       "deploy/config/coolpilot.example.toml")
    if args.plant is None and (args.steps is not None or args.retrain_every):
        raise CliError("--steps and --retrain-every only apply with --plant (accelerated closed loop)")
    try:
        holder = ConfigHolder(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if args.plant is not None and holder.config.historian is not None:
        raise CliError("--plant writes the simulated plant's readings to CoolPilot's own tables: "
                       "remove the [historian] section for a closed-loop run")
    return holder


def _open_database(args: argparse.Namespace, config: Any) -> Any:
    from db.engine import DatabaseError, make_engine, redact_url, resolve_url
    from db.migrate import require_schema

    url = resolve_url(args.db or config.database.url)
    try:
        engine = make_engine(url)
    except DatabaseError as exc:
        raise CliError(str(exc)) from None
    try:
        require_schema(engine)
    except DatabaseError as exc:
        engine.dispose()
        raise CliError(str(exc)) from None
    log.info("database %s, site %s", redact_url(url), config.site_id)
    return engine


def _wire(args: argparse.Namespace, holder: Any, engine: Any, plant: Any,
          stack: contextlib.ExitStack[Any]) -> tuple[Any, Any]:
    """Metrics listener, the daemon's parts (`coolpilot.wiring.build_parts`) and the trigger."""
    from prometheus_client import CollectorRegistry

    from controller.service.retraining import Retrainer
    from controller.service.triggers import PacedTrigger, WallClockTrigger
    from coolpilot.wiring import build_parts, plant_clock, utc_now
    from db.engine import DatabaseError
    from db.historian import HistorianConfigError

    config = holder.config
    registry = CollectorRegistry()
    _serve_metrics(args, config, registry, stack)
    retrain = Retrainer(engine, config.site_id, _models_dir(args.models_dir), config.retraining.history_days,
                        quality=config.quality)
    try:
        parts = stack.enter_context(build_parts(holder, engine=engine, registry=registry, retrain=retrain,
                                                clock=utc_now if plant is None else plant_clock(plant), plant=plant))
    except (DatabaseError, HistorianConfigError, OSError) as exc:  # OSError: e.g. the BACnet port is taken
        raise CliError(str(exc)) from None
    if plant is not None:
        return parts, PacedTrigger(cycles_per_s=args.speed, period_s=float(plant.record_interval_s),
                                   max_cycles=args.steps, retrain_every_cycles=args.retrain_every or None)
    needs_model = config.mode in ("auto", "advisory")
    return parts, WallClockTrigger(interval_s=float(config.cycle.interval_s), retrain_cron=config.retraining.cron,
                                   train_at_start=needs_model and _no_champion(engine, config.site_id))


def _serve_metrics(args: argparse.Namespace, config: Any, registry: Any, stack: contextlib.ExitStack[Any]) -> None:
    from controller.service.metrics import serve

    if not config.metrics.enabled:
        return
    port = config.metrics.port if args.metrics_port is None else args.metrics_port
    try:
        server = serve(registry, host=config.metrics.host, port=port)
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {config.metrics.host}:{port}: {exc.strerror or exc}") from None
    stack.callback(server.shutdown)
    log.info("metrics on %s", server.url)


def _no_champion(engine: Any, site: str) -> bool:
    from db.engine import DatabaseError
    from forecasting.registry import champion_entry

    try:
        return champion_entry(engine, site) is None
    except DatabaseError:
        return False


def _simulated_plant(args: argparse.Namespace, engine: Any, site: str) -> Any:
    from db.engine import DatabaseError
    from db.grid import GRID
    from db.query import latest_timestamp
    from simulator.plant import load_plant_factory

    try:
        factory: Any = load_plant_factory(args.plant)
        latest = latest_timestamp(engine, site)
    except (ValueError, DatabaseError) as exc:
        raise CliError(str(exc)) from None
    start = None if latest is None else latest + GRID  # continue the site's history
    try:
        plant = factory(start=start, seed=args.seed)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--plant {args.plant}: cannot build the plant: {exc}") from None
    log.info("closed loop against %s from %s", args.plant, plant.now.isoformat())
    return plant


def _check_demo_args(args: argparse.Namespace) -> None:
    if args.days < MIN_DEMO_DAYS:
        raise CliError(f"--days {args.days:g}: training needs at least {MIN_DEMO_DAYS} days of history (one week of "
                       "complete samples; sensor gaps cost some)")
    if args.steps is not None and args.steps < 1:
        raise CliError(f"--steps {args.steps}: give at least 1 cycle")
    if args.speed < 0:
        raise CliError(f"--speed {args.speed:g}: cycles per second cannot be negative (0 = as fast as possible)")
    if args.retrain_every_days < 0:
        raise CliError(f"--retrain-every-days {args.retrain_every_days:g}: cannot be negative (0 = never)")


def _log_to_file(workdir: Path) -> None:
    """Send log lines to a file: on the terminal they would tear the live view."""
    from coolpilot.demo import rotate_log

    workdir.mkdir(parents=True, exist_ok=True)
    rotate_log(workdir / "demo.log")  # the previous run's log stays as demo.log.1
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(workdir / "demo.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    progress(f"logs: {workdir / 'demo.log'} (-v shows them here)")


def cmd_demo(args: argparse.Namespace) -> int:
    import json

    from coolpilot.demo import DemoOptions, print_summary, run_demo, summary_text
    from db.jsonable import jsonable

    _check_demo_args(args)
    if not getattr(args, "verbose", False):
        _log_to_file(Path(args.workdir))
    opts = DemoOptions(
        workdir=Path(args.workdir), db_url=args.db, site=args.site, days=args.days, steps=args.steps,
        speed=args.speed, seed=args.seed, metrics_port=args.metrics_port, climate=args.climate,
        workload=args.workload, mode=args.mode, retrain_every_days=args.retrain_every_days,
        max_epochs=args.max_epochs,
    )
    summary = run_demo(opts, say=progress, view_stream=sys.stderr)
    text = json.dumps(jsonable(summary), sort_keys=True) if getattr(args, "json", False) else summary_text(summary)
    print_summary(text, sys.stdout, sys.stderr)  # also after Ctrl-C ended the reader of a pipe
    return 0
