"""``coolpilot train --all-sites`` / ``--sites a,b``: every site's retraining as one job each.

The flags are added to ``coolpilot train`` by ``add_fleet_args``; nothing here imports
Ray or torch until a fleet run starts (``coolpilot train --help`` stays light).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from coolpilot.cli_common import CliError, emit, progress
from coolpilot.fleet.executor import EXECUTORS, default_executor, open_executor
from coolpilot.fleet.train import SiteJob, SiteResult, results_table, sites_with_readings, train_fleet
from db.engine import make_engine, resolve_url
from db.migrate import require_schema


def site_list(text: str) -> list[str]:
    """``a,b,c`` -> ["a", "b", "c"] (no blanks, no repeats)."""
    names = [t.strip() for t in text.split(",")]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"give distinct comma-separated site names, got {text!r}")
    return names


def add_fleet_args(parser: argparse.ArgumentParser) -> None:
    """The fleet flags of ``coolpilot train``."""
    fleet = parser.add_argument_group("fleet (one job per site, on Ray where installed)")
    which = fleet.add_mutually_exclusive_group()
    which.add_argument("--all-sites", action="store_true", help="train every site that has readings")
    which.add_argument("--sites", type=site_list, default=None, metavar="A,B,C", help="train these sites")
    fleet.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="ray (default where Ray is installed) or sequential")
    fleet.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="join this Ray cluster (default: start a local one for the run)")
    fleet.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads per site job (default 1 on Ray; torch's default in turn)")


def is_fleet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "all_sites", False) or getattr(args, "sites", None))


def shareable_url(url: str) -> str:
    """The database URL as a worker in another folder must see it: a SQLite file by absolute path."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return url
    if not parsed.database or parsed.database == ":memory:":
        raise CliError("an in-memory SQLite database cannot be shared with training jobs: give a file or PostgreSQL")
    return parsed.set(database=str(Path(parsed.database).resolve())).render_as_string(hide_password=False)


def _jobs(args: argparse.Namespace, url: str, names: list[str], models_dir: Path) -> list[SiteJob]:
    threads = args.threads if args.threads is not None else (1 if (args.executor or default_executor()) == "ray"
                                                             else None)
    return [SiteJob(db_url=url, site=name, models_dir=str(models_dir.resolve()), days=args.days, seed=args.seed,
                    max_epochs=args.max_epochs, device=args.device, threads=threads) for name in names]


def cmd_train_fleet(args: argparse.Namespace, models_dir: Path) -> int:
    """Train every chosen site; print the table (or ``--json``); exit 1 when any site failed."""
    if getattr(args, "at", None) is not None:
        raise CliError("--at applies to one site's training (--site), not to --all-sites / --sites")
    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be at least 1, got {args.threads}")
    url = shareable_url(resolve_url(args.db))
    engine = make_engine(url)
    try:
        require_schema(engine)
        names = args.sites or sites_with_readings(engine)
    finally:
        engine.dispose()
    if not names:
        raise CliError("no site has readings: ingest sensor data first (coolpilot db ingest)")
    jobs = _jobs(args, url, names, models_dir)

    def finished(r: SiteResult) -> None:
        if not args.json:
            outcome = "failed: " + str(r.error) if not r.ok else ("promoted" if r.promoted else "kept champion")
            progress(f"site {r.site}: {outcome} ({r.seconds:.1f} s)")

    t0 = time.perf_counter()
    try:
        with open_executor(args.executor, address=args.ray_address, threads=jobs[0].threads) as executor:
            if not args.json:
                progress(f"training {len(jobs)} site(s) with the {executor.name} executor ...")
            results = train_fleet(jobs, executor, on_result=finished)
            name = executor.name
    except ValueError as exc:  # unknown executor, Ray missing, --ray-address without Ray
        raise CliError(str(exc)) from None
    seconds = time.perf_counter() - t0
    failed = [r.site for r in results if not r.ok]
    payload = {"executor": name, "seconds": seconds, "sites": [r.as_dict() for r in results],
               "promoted": sum(r.promoted for r in results), "failed": failed,
               "models_dir": str(models_dir.resolve())}
    human = (f"{results_table(results)}\n{len(results) - len(failed)} of {len(results)} site(s) trained "
             f"({payload['promoted']} promoted) with the {name} executor in {seconds:.1f} s")
    emit(args, payload, human)
    return 1 if failed else 0
