"""``coolpilot simulate``: run the plant in closed loop and write its history to the database.

The run goes in chunks of at most a week: each chunk is simulated, written in one
transaction through ``db.ingest.write_wide`` (idempotent, so a re-run with the same
seed writes nothing new) and reported on stderr. The summary is computed from the
plant's true values where the plant offers them (the simulator does), else from the
readings. ``--energyplus`` / ``--point-map`` run an EnergyPlus building model instead
of the twin; only the setpoints the plant has are commanded (there, supply air within
the EnergyPlus envelope of ``coolpilot.evaluation.run``).
"""

from __future__ import annotations

import argparse
import logging
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from controller.bounds import SetpointEnvelope
from controller.rules import PRESETS
from coolpilot.cli_common import (
    CliError,
    add_db_arg,
    add_energyplus_args,
    add_json_arg,
    emit,
    parse_start,
    progress,
)
from coolpilot.evaluate_cli import plant_choice
from coolpilot.harness.history import ExploringRules, run_closed_loop
from db.roles import MEASUREMENT_ROLES, SETPOINT_ROLES
from simulator.drivers import SHIPPED_CLIMATES, DriverError
from simulator.plant import Plant, PlantFactory
from simulator.summary import summarize_run

CHUNK_DAYS = 7.0
MAX_DAYS = 3660.0


def _build_plant(args: argparse.Namespace) -> tuple[Plant, SetpointEnvelope | None]:
    """The plant, and the envelope to explore and command within (None: the default envelope)."""
    energyplus, point_map, climate = plant_choice(args)
    start = None if args.start is None else parse_start(args.start)
    if energyplus is not None or point_map is not None:
        return _build_energyplus(args, energyplus, point_map, climate, start)
    return _build_factory_plant(args, climate, start), None


def _build_energyplus(args: argparse.Namespace, model: str | None, point_map: str | None, climate: str | None,
                      start: datetime | None) -> tuple[Plant, SetpointEnvelope]:
    from coolpilot.evaluation.plants import EvaluationError, check_energyplus
    from coolpilot.evaluation.run import run_config

    if args.workload is not None:
        raise CliError("the EnergyPlus models carry their own IT load schedules: --workload does not apply")
    try:
        check_energyplus(model, point_map, climate)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    from simulator.energyplus import EnergyPlusError, make_plant

    try:
        plant: Plant = make_plant(climate, start, model=model, point_map=point_map, days=args.days + 1.0)
    except (ValueError, OSError, EnergyPlusError) as exc:
        raise CliError(str(exc).strip().splitlines()[0]) from None
    roles = tuple(r for r in SETPOINT_ROLES if r in plant.setpoints())
    try:
        return plant, run_config(None, roles, "energyplus").envelope()
    except EvaluationError as exc:
        _close(plant)
        raise CliError(str(exc)) from None


def _close(plant: Plant) -> None:
    close = getattr(plant, "close", None)
    if callable(close):
        close()


def _build_factory_plant(args: argparse.Namespace, climate: str | None, start: datetime | None) -> Plant:
    offered: dict[str, Any] = {"climate": climate, "workload": args.workload, "seed": args.seed, "start": start}
    try:
        factory = PlantFactory(args.plant or "simulator.plant_sim:make_plant")
        factory.refuse_untaken(offered, optional=("seed",))
        return factory.build(**offered)
    except (DriverError, ValueError, OSError) as exc:
        raise CliError(str(exc)) from None


def cmd_simulate(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        logging.getLogger("alembic").setLevel(logging.WARNING)
    from db.engine import DatabaseError, make_engine, redact_url, resolve_url
    from db.ingest import write_wide
    from db.migrate import upgrade

    if not (math.isfinite(args.days) and 0 < args.days <= MAX_DAYS):
        raise CliError(f"--days must be in (0, {MAX_DAYS:g}], got {args.days}")
    if not 0.0 <= args.explore <= 1.0:
        raise CliError(f"--explore is a share of time in [0, 1], got {args.explore}")
    plant, envelope = _build_plant(args)
    setpoint_roles = [r for r in SETPOINT_ROLES if r in plant.setpoints()]
    url = resolve_url(args.db)
    try:
        engine = make_engine(url)
        upgrade(engine)
    except DatabaseError as exc:
        _close(plant)
        raise CliError(str(exc)) from None
    policy = ExploringRules(args.explore, _policy_rng(args.seed), args.controller, envelope)
    true_record = getattr(plant, "true_record", None)
    truth: list[dict[str, float]] = []

    def on_record(_when: datetime, readings: dict[str, float], _sp: dict[str, float]) -> None:
        truth.append(true_record() if callable(true_record) else readings)

    written, done, frames = 0, 0.0, []
    try:
        while done < args.days - 1e-9:
            chunk = min(CHUNK_DAYS, args.days - done)
            frame = run_closed_loop(plant, policy, chunk, on_record=on_record)
            written += write_wide(engine, frame, site=args.site)
            frames.append(frame.index)
            done += chunk
            progress(f"simulate: {done:g} of {args.days:g} days, {written} readings written")
    except DatabaseError as exc:
        raise CliError(str(exc)) from None
    finally:
        engine.dispose()
        _close(plant)
    index = frames[0].append(frames[1:]) if frames else pd.DatetimeIndex([], tz=UTC)
    truth_frame = pd.DataFrame(truth, index=index, columns=[r for r in MEASUREMENT_ROLES if truth and r in truth[0]])
    summary = summarize_run(truth_frame, plant.record_interval_s)
    payload = {
        **summary,
        "readings_written": written,
        "explored_share": policy.explored_records / max(policy.records, 1),
        "controller": args.controller,
        "seed": args.seed,
        "start": index[0] if len(index) else None,
        "summary_source": "true values" if callable(true_record) else "readings",
        "setpoints": setpoint_roles,
        "db": redact_url(url),
        "site": args.site,
    }
    human = (
        f"simulated {summary['days']:g} days from {payload['start']} ({args.controller} rules, "
        f"{100 * payload['explored_share']:.0f} % exploring), {written} readings written to {payload['db']}\n"
        f"  PUE mean {summary['pue_mean']:.3f}, p95 {summary['pue_p95']:.3f}\n"
        f"  cooling energy {summary['cooling_energy_kwh']:.0f} kWh\n"
        f"  max rack inlet {summary['rack_inlet_max_c']:.1f} C\n"
        f"  economiser hours {summary['economizer_hours']:.0f}"
    )
    emit(args, payload, human)
    return 0


def _policy_rng(seed: int) -> np.random.Generator:
    """The exploration's own stream, independent of the plant's (which uses ``seed`` itself)."""
    return np.random.default_rng([seed, 1])


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run the digital twin (or an EnergyPlus model) in closed loop and write its history to the database",
        description=(
            "Simulate the cooling plant under rule-based control (with optional safe exploration) and "
            "write readings and setpoints to the database. Same seed, same output."
        ),
    )
    add_energyplus_args(p)
    p.add_argument("--days", type=float, required=True, help="simulated days")
    p.add_argument("--start", default=None, help="UTC start, ISO date or date-time (default 2023-07-01)")
    p.add_argument(
        "--climate", default=None, metavar="EPW",
        help=f"EPW file, compact weather CSV or shipped climate ({', '.join(SHIPPED_CLIMATES)}); default leesburg",
    )
    p.add_argument("--workload", default=None, metavar="CSV", help="utilisation CSV (column cpu_load, 0..1); default Alibaba 2017")
    p.add_argument("--controller", choices=PRESETS, default="tuned", help="rule preset (default tuned)")
    p.add_argument("--explore", type=float, default=0.0, metavar="SHARE", help="share of time in random exploration, 0..1")
    p.add_argument("--seed", type=int, default=0, help="random seed (sensors, faults, exploration)")
    p.add_argument("--plant", default=None, metavar="MODULE:FACTORY", help="plant factory (default simulator.plant_sim:make_plant)")
    p.add_argument("--site", default="default", help="site name in the database (default 'default')")
    add_db_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_simulate)
