"""``coolpilot evaluate --seeds 0,1,2``: the same evaluation fanned out over seeds (``coolpilot.evaluation.sweep``).

Each seed is one run in ``--out/seed<k>`` with its own report; the runs go to Ray
(a local cluster, or ``--ray-address``) or run in turn (``--executor sequential``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coolpilot.cli_common import CliError, emit, progress
from coolpilot.evaluation.run import EvaluationOptions
from coolpilot.evaluation.sweep import RunOutcome, RunSpec, run_sweep
from coolpilot.fleet.executor import EXECUTORS, open_executor


def seed_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (non-negative, distinct)."""
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give distinct non-negative seeds, got {text!r}")
    return seeds


def add_sweep_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sweep over seeds (one run per seed, on Ray where installed)")
    group.add_argument("--seeds", type=seed_list, default=None, metavar="S,S",
                       help="evaluate each seed (replaces --seed); runs land in --out/seed<S>")
    group.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="ray (default where Ray is installed) or sequential")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="join this Ray cluster (default: start a local one)")


def spec_for_seed(args: argparse.Namespace, opts: EvaluationOptions, seed: int,
          command_of: Callable[[argparse.Namespace], str]) -> RunSpec:
    """The run of one seed: its options (training seed too), ``--out/seed<S>`` and its own command."""
    out = Path(args.out) / f"seed{seed}"
    one = copy.copy(args)
    one.seed, one.out = seed, str(out)
    train = opts.train_config
    train = dataclasses.replace(train, seed=seed) if train is not None else None
    return RunSpec(f"seed {seed}", dataclasses.replace(opts, seed=seed, train_config=train), str(out.resolve()),
                   command_of(one), {"seed": seed})


def _fmt(v: Any, digits: int = 1) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) and math.isfinite(v) else "-"


def _human(outcomes: list[RunOutcome]) -> str:
    lines = [f"{'seed':>4} {'best baseline':>13} {'CoolPilot kWh':>13} {'net vs best %':>13} {'fallback %':>10}"
             "  targets / report"]
    for o in outcomes:
        if o.summary is None:
            lines.append(f"{o.spec.labels['seed']:>4} FAILED: {o.error}")
            continue
        cp = o.summary["controllers"]["coolpilot"]
        met = "all met" if o.summary["targets_met"] else "missed some"
        lines.append(f"{o.spec.labels['seed']:>4} {o.summary.get('best_baseline') or '-':>13} "
                     f"{_fmt(cp['facility_kwh'], 0):>13} {_fmt(cp.get('net_saving_vs_best_pct')):>13} "
                     f"{_fmt(cp.get('fallback_share_pct')):>10}  {met} / {o.spec.out_dir}/report.md")
    return "\n".join(lines)


def evaluate_seeds(args: argparse.Namespace, opts: EvaluationOptions,
                   command_of: Callable[[argparse.Namespace], str]) -> int:
    """Run ``opts`` once per ``--seeds`` seed; the table (or ``--json``); exit 1 when a run failed."""
    specs = [spec_for_seed(args, opts, seed, command_of) for seed in args.seeds]
    try:
        with open_executor(args.executor, address=args.ray_address, gpus=0) as executor:
            progress(f"{len(specs)} run(s) with the {executor.name} executor ...")
            outcomes = run_sweep(specs, executor, lambda o: progress(
                f"seed {o.spec.labels['seed']}: {'done' if o.summary is not None else 'FAILED'}"))
            name = executor.name
    except ValueError as exc:
        raise CliError(str(exc)) from None
    payload = {"executor": name, "runs": [{"seed": o.spec.labels["seed"], "out_dir": o.spec.out_dir,
                                           "seconds": o.seconds, "error": o.error, "summary": o.summary}
                                          for o in outcomes]}
    emit(args, payload, _human(outcomes))
    return 1 if any(o.summary is None for o in outcomes) else 0
