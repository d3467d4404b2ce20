"""Closed-loop benchmark: `coolpilot evaluate` on the digital twin, four climates, summer and winter, several seeds.

Each run trains the ensemble on simulated history before its window and compares
CoolPilot (auto mode, the real control cycle) with the legacy rules, the tuned rules
and the oracle over the same weeks (``coolpilot.evaluation.run``). The window starts
are fixed in advance (15 July and 15 January, UTC), not chosen after seeing results.
Facility energy comes first; the net saving against a baseline is (baseline facility
- facility) / baseline cooling energy. Targets (the issue's, for the twin): fallback in
at most 15 % of cycles; net saving against tuned at least 10 % on average over all runs
and never negative; no minute above 27 C at any rack inlet that the tuned rules did
not also have.

The full set (4 climates x 2 seasons x 3 seeds x 14 days) takes hours on two cores;
run it in the background, or a subset:

    python benchmarks/bench_closed_loop.py                                  # everything, seeds 0, 1, 2
    python benchmarks/bench_closed_loop.py --climates leesburg --seasons summer --seeds 0
    python benchmarks/bench_closed_loop.py --days 2 --train-days 14 --max-epochs 10 --no-docs   # a quick look
    python benchmarks/bench_closed_loop.py --jobs 8     # at most 8 runs at a time, cores / 8 torch threads each
    python benchmarks/bench_closed_loop.py --ray-address 10.0.0.5:6379    # on an existing Ray cluster

The runs are Ray tasks (``coolpilot.evaluation.sweep``; a local cluster unless
``--ray-address``), or run in turn with ``--executor sequential`` (the default without
Ray, or with ``--jobs 1``). The JSON lines come in the order the runs finish (each
names its run).

Progress goes to stderr; stdout gets one JSON line per run and, last, one summary line
(medians and spreads over seeds, targets). Each run's report, plots and JSON land in
``--out/<climate>-<season>[-seed<k>]/``. The table of medians and min-max spreads over
the seeds, with the commit and the exact command, is written into docs/results.md
between ``<!-- closed-loop:begin -->`` and ``<!-- closed-loop:end -->`` (``--no-docs``:
not written; ``--markdown FILE``: the per-run table, also written as the runs finish).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controller.config import ConfigError, load_config  # noqa: E402
from coolpilot.evaluation.run import EvaluationOptions  # noqa: E402
from coolpilot.evaluation.sweep import RunOutcome, RunSpec, run_sweep  # noqa: E402
from coolpilot.fleet.executor import EXECUTORS, Executor, default_executor, open_executor, ray_available  # noqa: E402
from coolpilot.sweep_cli import seed_list as seed_list  # noqa: E402  (re-exported for bench_energyplus and bench_ray)
from db.jsonable import jsonable  # noqa: E402

CLIMATES = ("leesburg", "dallas", "chicago", "san_jose")
SEASON_STARTS = {"summer": datetime(2023, 7, 15, tzinfo=UTC), "winter": datetime(2023, 1, 15, tzinfo=UTC)}
DEFAULT_SEEDS = (0, 1, 2)
RESULTS_MD = ROOT / "docs" / "results.md"
MARKER = "closed-loop"


# --- shared with bench_energyplus.py ---------------------------------------------------


def _list(text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
    return items


def commit_hash() -> str:
    """The checked-out commit (short), with ``+dirty`` when tracked files outside docs/ changed; ``unknown`` without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        # docs/ is left out: the benchmarks write their own tables there while they run
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"], cwd=ROOT,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def spread(values: Iterable[float | None]) -> dict[str, float]:
    """Median, min and max of the finite values, and how many there were (NaN when none)."""
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite), "n": len(finite)}


def fmt(v: Any, d: int = 1) -> str:
    return "n/a" if v is None or not isinstance(v, int | float) or not math.isfinite(v) else f"{v:.{d}f}"


def fmt_spread(s: Mapping[str, float], d: int = 1) -> str:
    """``median [min-max]``, or just the value for one seed."""
    if not s.get("n"):
        return "n/a"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"], d)
    return f"{fmt(s['median'], d)} [{fmt(s['min'], d)} to {fmt(s['max'], d)}]"


def write_marked_section(path: Path, marker: str, body: str) -> None:
    """Replace what lies between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` in ``path``
    (appended at the end, with the markers, when they are not there yet)."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--ray-address``, ``--jobs``, ``--threads``: where the runs go."""
    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help="ray (default where Ray is installed: a local cluster, or --ray-address) or sequential")
    parser.add_argument("--ray-address", default=None, metavar="ADDR", help="run on this Ray cluster")
    parser.add_argument("--jobs", type=int, default=None,
                        help="at most N runs at a time on a local Ray cluster (1: in turn; default: one per core)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: cores / --jobs, else 1 on Ray, torch's own in turn)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse each run whose --out folder holds its JSON line from this commit (after an "
                             "interrupted benchmark); the others run")


@contextlib.contextmanager
def executor_for(args: argparse.Namespace) -> Iterator[Executor]:
    """The executor the flags ask for (``coolpilot.fleet.executor``); evaluation runs use no GPU."""
    if args.jobs is not None and args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    name = args.executor or ("sequential" if args.jobs == 1 else default_executor())
    if name == "ray" and not ray_available():
        raise SystemExit("the Ray executor needs Ray: pip install 'coolpilot[ray]' (or --executor sequential)")
    if name == "sequential" and args.ray_address is not None:
        raise SystemExit("--ray-address needs --executor ray")
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs else None)
    num_cpus = args.jobs * (threads or 1) if args.jobs and args.ray_address is None else None
    with open_executor(name, address=args.ray_address, threads=threads, gpus=0, num_cpus=num_cpus) as executor:
        print(f"runs go to the {executor.name} executor", file=sys.stderr, flush=True)
        yield executor


def run_all(specs: Sequence[RunSpec], args: argparse.Namespace,
            line_of: Callable[[RunOutcome], dict[str, Any]], done: Callable[[dict[str, Any]], None]) -> None:
    """Every run through the executor; ``done`` gets each run's JSON line as it finishes.

    A failed run is named on stderr and the others go on; then the benchmark stops
    (exit 1) without a summary, as a failed run leaves the set incomplete.
    """
    failed: list[str] = []
    commit = commit_hash()

    def finished(outcome: RunOutcome) -> None:
        if outcome.summary is None:
            failed.append(outcome.spec.tag)
            print(f"[{outcome.spec.tag}] FAILED: {outcome.error}", file=sys.stderr, flush=True)
        else:
            line = line_of(outcome)
            save_line(outcome.spec.out_dir, commit, line)
            done(line)

    todo = []
    for spec in specs:
        saved = load_line(spec.out_dir, commit) if getattr(args, "resume", False) else None
        if saved is None:
            todo.append(spec)
        else:
            print(f"[{spec.tag}] reused from {spec.out_dir} (--resume)", file=sys.stderr, flush=True)
            done(saved)
    if todo:
        with executor_for(args) as executor:
            run_sweep(todo, executor, finished)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(specs)} run(s) failed: {', '.join(failed)}")


LINE_FILE = "bench_line.json"


def save_line(out_dir: str, commit: str, line: Mapping[str, Any]) -> None:
    """Keep a finished run's JSON line beside its outputs, with the commit it ran (for ``--resume``)."""
    path = Path(out_dir) / LINE_FILE
    if path.parent.is_dir():
        path.write_text(json.dumps(jsonable({"commit": commit, "line": dict(line)}), sort_keys=True), encoding="utf-8")


def load_line(out_dir: str, commit: str) -> dict[str, Any] | None:
    """The JSON line a run left in ``out_dir`` at ``commit``; None if absent, unreadable or from another commit."""
    path = Path(out_dir) / LINE_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("commit") != commit or not isinstance(saved.get("line"), dict):
        return None
    line: dict[str, Any] = saved["line"]
    return line


def invocation() -> str:
    """The exact command this benchmark was started with."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(ROOT):
        script = script.relative_to(ROOT)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def targets_of(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: {"value": t["value"], "met": t["met"], "shortfall": t["shortfall"]}
            for t in summary["targets"]}


def controller_figures(summary: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {n: v.get(key) for n, v in summary["controllers"].items()}


def coolpilot_figures(cp: Mapping[str, Any]) -> dict[str, Any]:
    """CoolPilot's decision and closed-loop forecast figures of one run (every benchmark's JSON line has them)."""
    decisions = cp.get("decisions", {})
    return {
        "fallback_share_pct": cp.get("fallback_share_pct"),
        "outcomes": decisions.get("outcomes"),
        "fallback_reasons": decisions.get("fallback_reasons"),
        "cycle_median_ms": cp.get("cycle_median_ms"),
        "forecast_mae_kw": cp.get("prediction", {}).get("mae_kw"),
        "forecast_coverage_pct": cp.get("prediction", {}).get("coverage_pct"),
        "it_forecast_mae_kw": cp.get("prediction_it", {}).get("mae_kw"),
        "interval_coverage": decisions.get("interval_coverage") or {},
    }


# --- this benchmark ----------------------------------------------------------------------


def run_line(climate: str, season: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The one JSON line of a run: the headline figures (facility energy first) and every target."""
    c = summary["controllers"]
    cp = c["coolpilot"]
    return {
        "bench": "closed_loop", "climate": climate, "season": season,
        "start": summary["settings"]["start"], "days": summary["settings"]["days"],
        "train_days": summary["settings"]["train_days"], "seed": summary["settings"]["seed"],
        "facility_kwh": controller_figures(summary, "facility_kwh"),
        "cooling_kwh": controller_figures(summary, "cooling_kwh"),
        "it_kwh": controller_figures(summary, "it_kwh"),
        "pue": controller_figures(summary, "pue"),
        "best_baseline": summary.get("best_baseline"),
        "net_saving_vs_tuned_pct": cp.get("net_saving_vs_tuned_pct"),
        "net_saving_vs_legacy_pct": cp.get("net_saving_vs_legacy_pct"),
        "net_saving_vs_best_pct": cp.get("net_saving_vs_best_pct"),
        "oracle_net_saving_vs_tuned_pct": c.get("oracle", {}).get("net_saving_vs_tuned_pct"),
        "savings_vs_legacy_pct": cp.get("savings_vs_legacy_pct"),
        "savings_vs_tuned_pct": cp.get("savings_vs_tuned_pct"),
        "oracle_savings_vs_tuned_pct": c.get("oracle", {}).get("savings_vs_tuned_pct"),
        "oracle_share_vs_tuned_pct": cp.get("oracle_share_vs_tuned_pct"),
        "minutes_above_limit": controller_figures(summary, "minutes_above_limit"),
        "excess_minutes_above_limit_vs_tuned": cp.get("excess_minutes_above_limit_vs_tuned"),
        "rack_inlet_max_c": controller_figures(summary, "rack_inlet_max_c"),
        "inlet_change_max_c_per_h": cp["change_max_c_per_h"],
        **coolpilot_figures(cp),
        "targets": targets_of(summary),
        "targets_met": summary["targets_met"],
        "consistency_problems": summary["consistency_problems"],
        "seconds": seconds,
    }


def markdown_table(lines: list[dict[str, Any]]) -> str:
    """The per-run table (``--markdown``): facility energy first."""
    out = ["| climate | season | seed | legacy facility kWh | tuned facility kWh | CoolPilot facility kWh "
           "| oracle facility kWh | net saving vs tuned % | net saving vs legacy % | oracle net saving vs tuned % "
           "| cooling saving vs tuned % | min > 27 C (CoolPilot / tuned) | fallback % | targets met |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in lines:
        k, m = r["facility_kwh"], r["minutes_above_limit"]
        met = "all" if r["targets_met"] else "missed: " + ", ".join(n for n, t in r["targets"].items() if not t["met"])
        out.append(f"| {r['climate']} | {r['season']} | {r['seed']} | {fmt(k.get('legacy'), 0)} | "
                   f"{fmt(k.get('tuned'), 0)} | {fmt(k.get('coolpilot'), 0)} | {fmt(k.get('oracle'), 0)} | "
                   f"{fmt(r['net_saving_vs_tuned_pct'])} | {fmt(r['net_saving_vs_legacy_pct'])} | "
                   f"{fmt(r['oracle_net_saving_vs_tuned_pct'])} | {fmt(r['savings_vs_tuned_pct'])} | "
                   f"{fmt(m.get('coolpilot'), 0)} / {fmt(m.get('tuned'), 0)} | {fmt(r['fallback_share_pct'])} | "
                   f"{met} |")
    return "\n".join(out) + "\n"


def aggregate(lines: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians and spreads over seeds per climate and season, and the issue's targets over all runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in lines:
        groups.setdefault((r["climate"], r["season"]), []).append(r)
    rows = []
    for (climate, season), rs in groups.items():
        rows.append({
            "climate": climate, "season": season, "seeds": sorted(r["seed"] for r in rs),
            "facility_kwh": {n: spread(r["facility_kwh"].get(n) for r in rs)
                             for n in ("legacy", "tuned", "coolpilot", "oracle")},
            "net_saving_vs_tuned_pct": spread(r["net_saving_vs_tuned_pct"] for r in rs),
            "net_saving_vs_legacy_pct": spread(r["net_saving_vs_legacy_pct"] for r in rs),
            "oracle_net_saving_vs_tuned_pct": spread(r["oracle_net_saving_vs_tuned_pct"] for r in rs),
            "fallback_share_pct": spread(r["fallback_share_pct"] for r in rs),
            "minutes_above_limit": {n: spread(r["minutes_above_limit"].get(n) for r in rs)
                                    for n in ("legacy", "tuned", "coolpilot", "oracle")},
            "rack_inlet_max_c": {n: spread(r.get("rack_inlet_max_c", {}).get(n) for r in rs)
                                 for n in ("legacy", "tuned", "coolpilot", "oracle")},
            "coverage": spread(c for r in rs for c in (r.get("interval_coverage") or {}).values()),
            "excess_minutes_above_limit_vs_tuned": spread(r["excess_minutes_above_limit_vs_tuned"] for r in rs),
            "runs_meeting_all_targets": sum(bool(r["targets_met"]) for r in rs),
        })
    net = [r["net_saving_vs_tuned_pct"] for r in lines]
    finite_net = [v for v in net if isinstance(v, int | float) and math.isfinite(v)]
    mean_net = statistics.fmean(finite_net) if finite_net else math.nan
    fallback = spread(r["fallback_share_pct"] for r in lines)
    excess = spread(r["excess_minutes_above_limit_vs_tuned"] for r in lines)
    targets = {
        "fallback_share_pct_max": {"value": fallback["max"], "threshold": 15.0,
                                   "met": fallback["n"] == len(lines) and fallback["max"] <= 15.0},
        "net_saving_vs_tuned_pct_mean": {"value": mean_net, "threshold": 10.0,
                                         "met": math.isfinite(mean_net) and mean_net >= 10.0},
        "net_saving_vs_tuned_pct_min": {"value": min(finite_net) if finite_net else math.nan, "threshold": 0.0,
                                        "met": len(finite_net) == len(lines) and min(finite_net, default=-1) >= 0.0},
        "excess_minutes_above_limit_vs_tuned_max": {"value": excess["max"], "threshold": 0.0,
                                                    "met": excess["n"] == len(lines) and excess["max"] <= 0.0},
    }
    for t in targets.values():
        v = t["value"]
        higher = t is targets["net_saving_vs_tuned_pct_mean"] or t is targets["net_saving_vs_tuned_pct_min"]
        gap = (t["threshold"] - v) if higher else (v - t["threshold"])
        t["shortfall"] = max(gap, 0.0) if isinstance(v, int | float) and math.isfinite(v) else math.nan
    return {"rows": rows, "targets": targets, "n_runs": len(lines)}


def docs_section(agg: Mapping[str, Any], command: str, commit: str, when: str, days: float,
                 train_days: float, config_note: str = "default controller config") -> str:
    """The marker section of docs/results.md: medians and [min to max] over seeds, facility energy first."""
    out = [f"Digital twin, {days:g}-day windows, {train_days:g} days of training history, {config_note}; "
           f"medians over seeds with [min to max]. Commit `{commit}`, run {when}:", "",
           "```bash", command, "```", "",
           "| climate | season | seeds | facility kWh legacy / tuned / CoolPilot / oracle (medians) "
           "| net saving vs tuned % | net saving vs legacy % | oracle's net saving vs tuned % | fallback % "
           "| min > 27 C legacy / tuned / CoolPilot / oracle (max) | hottest inlet C legacy / tuned / CoolPilot / "
           "oracle (max) | excess min vs tuned (max) | 90 % interval coverage, all targets [min to max] "
           "| runs meeting all targets |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    who = ("legacy", "tuned", "coolpilot", "oracle")
    for r in agg["rows"]:
        f, m, hot = r["facility_kwh"], r["minutes_above_limit"], r["rack_inlet_max_c"]
        facility = " / ".join(fmt(f[n]["median"], 0) for n in who)
        minutes = " / ".join(fmt(m[n]["max"], 0) for n in who)
        hottest = " / ".join(fmt(hot[n]["max"], 1) for n in who)
        out.append(f"| {r['climate']} | {r['season']} | {', '.join(map(str, r['seeds']))} | {facility} | "
                   f"{fmt_spread(r['net_saving_vs_tuned_pct'])} | {fmt_spread(r['net_saving_vs_legacy_pct'])} | "
                   f"{fmt_spread(r['oracle_net_saving_vs_tuned_pct'])} | {fmt_spread(r['fallback_share_pct'])} | "
                   f"{minutes} | {hottest} | {fmt(r['excess_minutes_above_limit_vs_tuned']['max'], 0)} | "
                   f"{fmt(r['coverage'].get('min'), 2)} to {fmt(r['coverage'].get('max'), 2)} | "
                   f"{r['runs_meeting_all_targets']} of {len(r['seeds'])} |")
    out += ["", f"Targets over all {agg['n_runs']} runs:", ""]
    names = {"fallback_share_pct_max": "fallback share, worst run <= 15 %",
             "net_saving_vs_tuned_pct_mean": "net saving vs tuned, mean over runs >= 10 %",
             "net_saving_vs_tuned_pct_min": "net saving vs tuned, worst run >= 0 % (never negative)",
             "excess_minutes_above_limit_vs_tuned_max": "minutes above 27 C that tuned did not have, worst run = 0"}
    for key, t in agg["targets"].items():
        verdict = "met" if t["met"] else f"**missed** by {fmt(t['shortfall'], 2)}"
        out.append(f"- {names[key]}: {fmt(t['value'], 2)} ({verdict})")
    return "\n".join(out) + "\n"


def spec_for(climate: str, season: str, seed: int, args: argparse.Namespace) -> RunSpec:
    """One evaluation run as plain data: its options, output folder and reproducing command."""
    train_config = None
    if args.max_epochs is not None:
        from forecasting.train import TrainConfig

        train_config = TrainConfig(baselines=False, seed=seed, max_epochs=args.max_epochs)
    start = SEASON_STARTS[season]
    out = args.out / (f"{climate}-{season}" if len(args.seeds) == 1 else f"{climate}-{season}-seed{seed}")
    command = shlex.join(["coolpilot", "evaluate", "--climate", climate, "--start", f"{start:%Y-%m-%d}",
                          "--days", f"{args.days:g}", "--train-days", f"{args.train_days:g}", "--seed",
                          str(seed), "--out", str(out)]
                         + (["--max-epochs", str(args.max_epochs)] if args.max_epochs else [])
                         + (["--config", str(args.config)] if args.config else []))
    opts = EvaluationOptions(climate=climate, start=start, days=args.days, train_days=args.train_days,
                             seed=seed, train_config=train_config,
                             config=load_config(args.config) if args.config else None)
    return RunSpec(f"{climate} {season} seed {seed}", opts, str(out.resolve()), command,
                   {"climate": climate, "season": season, "seed": seed})


def line_of(outcome: RunOutcome) -> dict[str, Any]:
    """A finished run's JSON line."""
    labels = outcome.spec.labels
    return run_line(labels["climate"], labels["season"], outcome.summary or {}, outcome.seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--climates", type=lambda t: _list(t, CLIMATES), default=list(CLIMATES))
    parser.add_argument("--seasons", type=lambda t: _list(t, tuple(SEASON_STARTS)), default=list(SEASON_STARTS))
    parser.add_argument("--days", type=float, default=14.0, help="evaluated days per run (default 14)")
    parser.add_argument("--train-days", type=float, default=42.0, help="training history per run (default 42)")
    parser.add_argument("--seeds", type=seed_list, default=None,
                        help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--seed", type=int, default=None, help="one seed (the same as --seeds S)")
    parser.add_argument("--max-epochs", type=int, default=None, help="training epochs (default: training's)")
    parser.add_argument("--out", type=Path, default=Path("coolpilot-eval/bench"),
                        help="output folder (default coolpilot-eval/bench, git-ignored)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the per-run table here")
    parser.add_argument("--results", type=Path, default=RESULTS_MD,
                        help=f"page whose marker section gets the table (default {RESULTS_MD.relative_to(ROOT)})")
    parser.add_argument("--no-docs", action="store_true", help="do not write the table into --results")
    parser.add_argument("--config", type=Path, default=None, metavar="TOML",
                        help="controller config for every run (e.g. a wider supply-air envelope; the rules and the "
                             "oracle share its envelope); default: the controller's defaults")
    parser.add_argument("--marker", default=MARKER,
                        help=f"marker name of the section written into --results (default {MARKER})")
    add_executor_args(parser)
    args = parser.parse_args(argv)
    if args.seed is not None and args.seeds is not None:
        parser.error("give --seed or --seeds, not both")
    args.seeds = [args.seed] if args.seed is not None else (args.seeds or list(DEFAULT_SEEDS))
    if args.config is not None:
        try:
            load_config(args.config)  # refused here, before hours of runs, not in the first run
        except ConfigError as exc:
            parser.error(str(exc))

    command, commit = invocation(), commit_hash()
    runs = [(c, s, k) for c in args.climates for s in args.seasons for k in args.seeds]
    lines: list[dict[str, Any]] = []

    def done(line: dict[str, Any]) -> None:
        lines.append(line)
        print(json.dumps(jsonable(line), sort_keys=True), flush=True)
        if args.markdown is not None:  # rewritten after every run, so a long benchmark can be read as it goes
            args.markdown.write_text(markdown_table(lines), encoding="utf-8")

    run_all([spec_for(c, s, k, args) for c, s, k in runs], args, line_of, done)
    order = {(c, s, k): i for i, (c, s, k) in enumerate(runs)}
    lines.sort(key=lambda r: order[(r["climate"], r["season"], r["seed"])])
    agg = aggregate(lines)
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    note = f"controller config `{args.config}`" if args.config else "default controller config"
    section = docs_section(agg, command, commit, when, args.days, args.train_days, note)
    print(section, file=sys.stderr)
    if not args.no_docs:
        write_marked_section(args.results, args.marker, section)
        print(f"wrote the table into {args.results} ({args.marker} markers)", file=sys.stderr)
    print(json.dumps(jsonable({"bench": "closed_loop_summary", "commit": commit, "command": command,
                               **agg}), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
