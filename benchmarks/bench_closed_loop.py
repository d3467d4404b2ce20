"""Closed-loop benchmark: `coolpilot evaluate` on the shipped climates, summer and winter.

Each run trains the ensemble on simulated history before its window and compares
CoolPilot (auto mode, the real control cycle) with the legacy rules, the tuned rules
and the oracle over the same weeks (``coolpilot.evaluation.run``). The window starts
are fixed in advance (15 July and 15 January, UTC), not chosen after seeing results.
Targets, every run: >= 30 % cooling-energy saving against legacy, >= 10 % against
tuned, >= 85 % of the oracle's saving against tuned, no minute above 27 C at any rack
inlet that the tuned rules did not also have, never above 32 C.

The full set (4 climates x 2 seasons x 14 days) takes hours on two cores; run it in
the background, or a subset:

    python benchmarks/bench_closed_loop.py                                  # everything
    python benchmarks/bench_closed_loop.py --climates leesburg --seasons summer
    python benchmarks/bench_closed_loop.py --days 2 --train-days 14 --max-epochs 10   # a quick look
    python benchmarks/bench_closed_loop.py --jobs 8     # the set in parallel on a 16-core machine

With ``--jobs N`` the runs go to N worker processes, each with cores / N torch threads;
the JSON lines then come in the order the runs finish (each names its run).

Progress goes to stderr; stdout gets one JSON line per run. Each run's report, plots
and JSON land in ``--out/<climate>-<season>/``; ``--markdown FILE`` also writes the
results table used in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coolpilot.evaluation.report import write_outputs  # noqa: E402
from coolpilot.evaluation.run import EvaluationOptions, evaluate  # noqa: E402
from db.jsonable import jsonable  # noqa: E402

CLIMATES = ("leesburg", "dallas", "chicago", "san_jose")
SEASON_STARTS = {"summer": datetime(2023, 7, 15, tzinfo=UTC), "winter": datetime(2023, 1, 15, tzinfo=UTC)}


def _list(text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
    return items


def run_line(climate: str, season: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The one JSON line of a run: the headline figures and every target."""
    c = summary["controllers"]
    cp = c["coolpilot"]
    return {
        "bench": "closed_loop", "climate": climate, "season": season,
        "start": summary["settings"]["start"], "days": summary["settings"]["days"],
        "train_days": summary["settings"]["train_days"], "seed": summary["settings"]["seed"],
        "cooling_kwh": {n: v["cooling_kwh"] for n, v in c.items()},
        "pue": {n: v["pue"] for n, v in c.items()},
        "savings_vs_legacy_pct": cp.get("savings_vs_legacy_pct"),
        "savings_vs_tuned_pct": cp.get("savings_vs_tuned_pct"),
        "oracle_savings_vs_tuned_pct": c.get("oracle", {}).get("savings_vs_tuned_pct"),
        "oracle_share_vs_tuned_pct": cp.get("oracle_share_vs_tuned_pct"),
        "minutes_above_limit": {n: v["minutes_above_limit"] for n, v in c.items()},
        "excess_minutes_above_limit_vs_tuned": cp.get("excess_minutes_above_limit_vs_tuned"),
        "rack_inlet_max_c": {n: v["rack_inlet_max_c"] for n, v in c.items()},
        "inlet_change_max_c_per_h": cp["change_max_c_per_h"],
        "fallback_share_pct": cp.get("fallback_share_pct"),
        "outcomes": cp.get("decisions", {}).get("outcomes"),
        "cycle_median_ms": cp.get("cycle_median_ms"),
        "forecast_mae_kw": cp.get("prediction", {}).get("mae_kw"),
        "targets": {t["name"]: {"value": t["value"], "met": t["met"], "shortfall": t["shortfall"]}
                    for t in summary["targets"]},
        "targets_met": summary["targets_met"],
        "consistency_problems": summary["consistency_problems"],
        "seconds": seconds,
    }


def markdown_table(lines: list[dict[str, Any]]) -> str:
    """The results table of docs/results.md."""

    def f(v: Any, d: int = 1) -> str:
        return "n/a" if v is None or v != v else f"{v:.{d}f}"

    out = ["| climate | season | legacy kWh | tuned kWh | CoolPilot kWh | oracle kWh | saving vs legacy % "
           "| saving vs tuned % | oracle saving vs tuned % | share of oracle % | min > 27 C (CoolPilot / tuned) "
           "| max inlet C | fallback % | targets met |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in lines:
        k, m = r["cooling_kwh"], r["minutes_above_limit"]
        met = "all" if r["targets_met"] else "missed: " + ", ".join(n for n, t in r["targets"].items() if not t["met"])
        out.append(f"| {r['climate']} | {r['season']} | {f(k.get('legacy'), 0)} | {f(k.get('tuned'), 0)} | "
                   f"{f(k.get('coolpilot'), 0)} | {f(k.get('oracle'), 0)} | {f(r['savings_vs_legacy_pct'])} | "
                   f"{f(r['savings_vs_tuned_pct'])} | {f(r['oracle_savings_vs_tuned_pct'])} | "
                   f"{f(r['oracle_share_vs_tuned_pct'])} | {f(m.get('coolpilot'), 0)} / {f(m.get('tuned'), 0)} | "
                   f"{f(r['rack_inlet_max_c'].get('coolpilot'), 2)} | {f(r['fallback_share_pct'])} | {met} |")
    return "\n".join(out) + "\n"


def run_one(climate: str, season: str, args: argparse.Namespace, threads: int | None = None) -> dict[str, Any]:
    """One evaluation run, its outputs written, and its JSON line (also the worker of ``--jobs``)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    train_config = None
    if args.max_epochs is not None:
        from forecasting.train import TrainConfig

        train_config = TrainConfig(baselines=False, seed=args.seed, max_epochs=args.max_epochs)
    start = SEASON_STARTS[season]
    out = args.out / f"{climate}-{season}"
    command = shlex.join(["coolpilot", "evaluate", "--climate", climate, "--start", f"{start:%Y-%m-%d}",
                          "--days", f"{args.days:g}", "--train-days", f"{args.train_days:g}", "--seed",
                          str(args.seed), "--out", str(out)]
                         + (["--max-epochs", str(args.max_epochs)] if args.max_epochs else []))
    tag = f"[{climate} {season}]"
    print(f"{tag} {command}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    opts = EvaluationOptions(climate=climate, start=start, days=args.days, train_days=args.train_days,
                             seed=args.seed, train_config=train_config)

    def say(message: str) -> None:
        print(f"{tag} {message}", file=sys.stderr, flush=True)

    result = evaluate(opts, out, say=say)
    summary = write_outputs(result, out, command=command)
    return run_line(climate, season, summary, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--climates", type=lambda t: _list(t, CLIMATES), default=list(CLIMATES))
    parser.add_argument("--seasons", type=lambda t: _list(t, tuple(SEASON_STARTS)), default=list(SEASON_STARTS))
    parser.add_argument("--days", type=float, default=14.0, help="evaluated days per run (default 14)")
    parser.add_argument("--train-days", type=float, default=42.0, help="training history per run (default 42)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None, help="training epochs (default: training's)")
    parser.add_argument("--out", type=Path, default=Path("coolpilot-eval/bench"),
                        help="output folder (default coolpilot-eval/bench, git-ignored)")
    parser.add_argument("--markdown", type=Path, default=None, help="write the results table here")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    args = parser.parse_args(argv)

    runs = [(c, s) for c in args.climates for s in args.seasons]
    lines: list[dict[str, Any]] = []

    def done(line: dict[str, Any]) -> None:
        lines.append(line)
        print(json.dumps(jsonable(line), sort_keys=True), flush=True)
        if args.markdown is not None:  # rewritten after every run, so a long benchmark can be read as it goes
            args.markdown.write_text(markdown_table(lines), encoding="utf-8")

    if args.jobs <= 1:
        for climate, season in runs:
            done(run_one(climate, season, args))
        return 0
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, c, s, args, threads) for c, s in runs]
        for future in as_completed(futures):
            done(future.result())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
