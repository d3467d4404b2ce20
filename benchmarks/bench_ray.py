"""Ray against one process in turn, on this machine: a fleet retraining and a small evaluation set.

(a) Retraining: ``--halls`` halls (default 20), each with its own synthetic history
(``tests/_forecast_synth.py``, its own seed; ``--history-days`` days: the twin would take
minutes a hall just to simulate, and training cost depends on samples, not physics), trained by
``coolpilot.fleet.train.train_fleet`` exactly as ``coolpilot train --all-sites`` does:
first in turn (``--executor sequential``: one process, torch's own thread count), then
as Ray tasks on a local cluster (one CPU and one torch thread per task), each into its
own fresh SQLite database so that both start without champions.

(b) Evaluation: a small set of twin evaluations (``--climates`` x ``--seeds``, ``--days``
each, tiny training, a small candidate search) through ``coolpilot.evaluation.sweep``,
in turn and then on Ray.

Both are measured in the same run on the same machine, so the ratio holds for this
machine's load at the time. Ray's cluster start-up is timed apart from the work.
Progress goes to stderr; stdout gets one JSON line; the figures go into
docs/performance.md between ``<!-- ray:begin -->`` and ``<!-- ray:end -->``
(``--no-docs``: not written).

    python benchmarks/bench_ray.py                       # 20 halls, 4 evaluations
    python benchmarks/bench_ray.py --halls 4 --seeds 0 --climates leesburg --no-docs   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_closed_loop import (  # noqa: E402
    CLIMATES,
    _list,
    commit_hash,
    fmt,
    invocation,
    seed_list,
    write_marked_section,
)
from coolpilot.evaluation.sweep import RunSpec, run_sweep  # noqa: E402
from coolpilot.fleet.executor import open_executor  # noqa: E402
from coolpilot.fleet.train import SiteJob, train_fleet  # noqa: E402
from db.jsonable import jsonable  # noqa: E402

PERF_MD = ROOT / "docs" / "performance.md"
MARKER = "ray"
HISTORY_START = datetime(2023, 6, 1, tzinfo=UTC)
EVAL_START = datetime(2023, 7, 20, tzinfo=UTC)
SMALL_SEARCH = """site_id = "eval"
[optimizer]
grid_points_per_role = 5
random_candidates = 300
refine_iterations = 0
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fleet_databases(halls: int, days: float, root: Path) -> dict[str, str]:
    """Two fresh SQLite databases (in turn, Ray) holding the same ``halls`` simulated histories."""
    from db.engine import make_engine
    from db.ingest import write_wide
    from db.migrate import upgrade
    from tests._forecast_synth import synthetic_history

    urls = {name: f"sqlite:///{root / f'fleet-{name}.db'}" for name in ("sequential", "ray")}
    engines = {name: make_engine(url) for name, url in urls.items()}
    for engine in engines.values():
        upgrade(engine)
    for k in range(halls):
        frame = synthetic_history(days=days, seed=k, start=f"{HISTORY_START:%Y-%m-%d}")
        for engine in engines.values():
            write_wide(engine, frame, site=f"hall-{k:03d}")
    say(f"{halls} halls, {days:g} days of synthetic history each")
    for engine in engines.values():
        engine.dispose()
    return urls


def time_training(name: str, url: str, halls: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Train every hall with the ``name`` executor: start-up and run seconds, outcomes."""
    threads = 1 if name == "ray" else None
    jobs = [SiteJob(db_url=url, site=f"hall-{k:03d}", models_dir=str(root / f"models-{name}"),
                    days=math.ceil(args.history_days), max_epochs=args.max_epochs, device="cpu", threads=threads)
            for k in range(halls)]
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    with open_executor(name, threads=threads, gpus=0) as executor:
        t1 = time.perf_counter()
        say(f"retraining {halls} halls, {name} ...")
        results = train_fleet(jobs, executor, lambda r: say(f"  {r.site}: {'ok' if r.ok else r.error} "
                                                             f"{r.seconds:.1f} s"))
        t2 = time.perf_counter()
    load = (load0, os.getloadavg()[0])  # the machine's 1-minute load average before and after
    task = [r.seconds for r in results if r.ok]
    return {"executor": name, "startup_s": t1 - t0, "run_s": t2 - t1, "trained": len(task), "load_1m": load,
            "promoted": sum(r.promoted for r in results), "failed": [r.site for r in results if not r.ok],
            "task_s_median": statistics.median(task) if task else math.nan, "task_s_sum": sum(task)}


def eval_specs(args: argparse.Namespace, root: Path) -> list[RunSpec]:
    """The small evaluation set: every climate and seed, a short window, tiny training."""
    from controller.config import parse_config
    from coolpilot.evaluation.run import EvaluationOptions
    from forecasting.train import TrainConfig

    config = parse_config(SMALL_SEARCH, "<bench_ray>")
    specs = []
    for climate in args.climates:
        for seed in args.seeds:
            train = TrainConfig(baselines=False, seed=seed, members=3, hidden=(32,), max_epochs=args.max_epochs,
                                min_samples=1000)
            opts = EvaluationOptions(climate=climate, start=EVAL_START, days=args.days, train_days=args.train_days,
                                     seed=seed, config=config, train_config=train)
            specs.append(RunSpec(f"{climate} seed {seed}", opts, str(root / f"{climate}-seed{seed}"),
                                 f"bench_ray {climate} seed {seed}", {"climate": climate, "seed": seed}))
    return specs


def time_sweep(name: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The evaluation set with the ``name`` executor: start-up and run seconds, outcomes."""
    specs = eval_specs(args, root / name)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    with open_executor(name, threads=1 if name == "ray" else None, gpus=0) as executor:
        t1 = time.perf_counter()
        say(f"evaluating {len(specs)} runs, {name} ...")
        outcomes = run_sweep(specs, executor)
        t2 = time.perf_counter()
    load = (load0, os.getloadavg()[0])  # the machine's 1-minute load average before and after
    done = [o for o in outcomes if o.summary is not None]
    return {"executor": name, "startup_s": t1 - t0, "run_s": t2 - t1, "runs": len(specs), "ok": len(done),
            "load_1m": load,
            "failed": [o.error for o in outcomes if o.summary is None],
            "facility_kwh": [o.summary["controllers"]["coolpilot"]["facility_kwh"] for o in done if o.summary],
            "task_s_median": statistics.median([o.seconds for o in done]) if done else math.nan}


def ratio(seq: dict[str, Any], ray: dict[str, Any]) -> dict[str, float]:
    """In-turn seconds over Ray seconds: the work alone, and with Ray's start-up counted."""
    return {"work": seq["run_s"] / ray["run_s"],
            "with_startup": (seq["startup_s"] + seq["run_s"]) / (ray["startup_s"] + ray["run_s"])}


def docs_section(result: dict[str, Any], command: str, commit: str, when: str) -> str:
    t, e = result["training"], result["evaluation"]
    cores = result["cpu_count"]
    per_hall = t["ray"]["task_s_median"]
    lines = [f"Local Ray against one process in turn, both in the same run on this {cores}-core machine, shared "
             f"with other workers' jobs at the time (so the seconds are this machine's at that moment). Commit "
             f"`{commit}`, run {when}:", "", "```bash", command, "```", "",
             "| work | in turn s | Ray s (start-up + work) | ratio, work | ratio, with start-up | outcome |",
             "|---|---:|---:|---:|---:|---|"]
    for label, part, what in ((f"retraining {result['halls']} halls ({result['history_days']:g} days each, "
                               f"{result['max_epochs']} epochs)", t, "trained"),
                              (f"evaluation set ({e['sequential']['runs']} twin runs, {result['days']:g} day each)",
                               e, "ok")):
        s, r = part["sequential"], part["ray"]
        lines.append(f"| {label} | {fmt(s['run_s'])} | {fmt(r['startup_s'])} + {fmt(r['run_s'])} | "
                     f"{fmt(part['ratio']['work'], 2)} | {fmt(part['ratio']['with_startup'], 2)} | "
                     f"{r[what]} of {r.get('runs', result['halls'])} on Ray, {s[what]} in turn; load "
                     f"{fmt(s['load_1m'][0])}-{fmt(s['load_1m'][1])} in turn, {fmt(r['load_1m'][0])}-"
                     f"{fmt(r['load_1m'][1])} on Ray |")
    hundreds = 200 * per_hall / 64.0 / 60.0 if math.isfinite(per_hall) else math.nan
    lines += ["", f"How it scales: the jobs are independent, so a cluster of C cores takes about "
              f"ceil(halls / C) x one hall's task time (here {fmt(per_hall)} s a hall with one thread on Ray): "
              f"200 halls on 4 nodes x 16 cores = 200 x {fmt(per_hall)} s / 64 = {fmt(hundreds)} min, plus the "
              "cluster's start-up and the database's share of the reads. Not yet checked on a real multi-node "
              "cluster (none was at hand); `--ray-address` joins one when it exists."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--halls", type=int, default=20, help="halls retrained (default 20)")
    parser.add_argument("--history-days", type=float, default=9.0, help="history per hall (default 9 days)")
    parser.add_argument("--max-epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument("--climates", type=lambda t: _list(t, CLIMATES), default=["leesburg", "dallas"])
    parser.add_argument("--seeds", type=seed_list, default=[0, 1], help="evaluation seeds (default 0,1)")
    parser.add_argument("--days", type=float, default=0.5, help="evaluated days per run (default 0.5)")
    parser.add_argument("--train-days", type=float, default=8.0, help="training history per run (default 8)")
    parser.add_argument("--no-docs", action="store_true", help=f"do not write into {PERF_MD.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.halls < 1:
        parser.error("--halls must be at least 1")
    command, commit = invocation(), commit_hash()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        urls = fleet_databases(args.halls, args.history_days, root)
        training = {name: time_training(name, urls[name], args.halls, args, root) for name in ("sequential", "ray")}
        training["ratio"] = ratio(training["sequential"], training["ray"])
        evaluation = {name: time_sweep(name, args, root) for name in ("sequential", "ray")}
        evaluation["ratio"] = ratio(evaluation["sequential"], evaluation["ray"])
    result = {"bench": "ray", "commit": commit, "command": command, "cpu_count": os.cpu_count(),
              "load_average_1m": os.getloadavg()[0], "halls": args.halls, "history_days": args.history_days,
              "max_epochs": args.max_epochs, "days": args.days, "training": training, "evaluation": evaluation}
    section = docs_section(result, command, commit, f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    say(section)
    if not args.no_docs:
        write_marked_section(PERF_MD, MARKER, section)
        say(f"wrote the figures into {PERF_MD} ({MARKER} markers)")
    print(json.dumps(jsonable(result), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
