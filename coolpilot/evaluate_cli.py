"""``coolpilot evaluate``: the reproducible closed-loop comparison (see ``coolpilot.evaluation.run``)."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path
from typing import Any

from coolpilot.cli_common import CliError, add_json_arg, emit, parse_start, progress
from coolpilot.evaluation.run import DEFAULT_PLANT, DEFAULT_START, EvaluationError, EvaluationOptions

DEFAULT_OUT = "coolpilot-eval"


def _command(args: argparse.Namespace) -> str:
    """The exact command that reproduces this run, every setting spelled out."""
    parts = ["coolpilot", "evaluate"]
    for flag, value in (("--climate", args.climate), ("--workload", args.workload), ("--start", args.start),
                        ("--days", args.days), ("--train-days", args.train_days), ("--seed", args.seed),
                        ("--explore", args.explore), ("--plant", args.plant), ("--config", args.config),
                        ("--max-epochs", args.max_epochs), ("--device", args.device), ("--out", args.out)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts)


def _human(summary: dict[str, Any]) -> str:
    lines = [f"{'controller':<12} {'cooling kWh':>12} {'PUE':>6} {'vs legacy %':>11} {'vs tuned %':>10} "
             f"{'min >limit':>10} {'max inlet C':>11} {'fallback %':>10}"]
    for name, c in summary["controllers"].items():
        def pct(key: str, c: dict[str, Any] = c) -> str:
            v = c.get(key)
            return "-" if v is None or v != v else f"{v:.1f}"

        lines.append(f"{name:<12} {c['cooling_kwh']:>12.0f} {c['pue']:>6.3f} {pct('savings_vs_legacy_pct'):>11} "
                     f"{pct('savings_vs_tuned_pct'):>10} {c['minutes_above_limit']:>10.0f} "
                     f"{c['rack_inlet_max_c']:>11.2f} {pct('fallback_share_pct'):>10}")
    for t in summary["targets"]:
        if t["value"] is None or t["value"] != t["value"]:
            lines.append(f"target {t['name']}: not measured")
            continue
        verdict = "met" if t["met"] else f"MISSED by {t['shortfall']:.2f} {t['unit']}"
        lines.append(f"target {t['name']}: {t['value']:.2f} {t['unit']} ({verdict})")
    lines.append(f"report: {summary['out_dir']}/{summary['files']['report']}")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from controller.config import ConfigError, load_config
    from coolpilot.evaluation.report import write_outputs
    from coolpilot.evaluation.run import evaluate

    if not getattr(args, "verbose", False):
        logging.getLogger("alembic").setLevel(logging.WARNING)
    config = None
    if args.config is not None:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
    train_config = None
    if args.max_epochs is not None:
        from forecasting.train import TrainConfig

        if args.max_epochs < 1:
            raise CliError(f"--max-epochs must be at least 1, got {args.max_epochs}")
        train_config = TrainConfig(baselines=False, seed=args.seed, max_epochs=args.max_epochs)
    out = Path(args.out)
    try:
        opts = EvaluationOptions(
            climate=args.climate, workload=args.workload,
            start=parse_start(args.start) if args.start else DEFAULT_START, days=args.days,
            train_days=args.train_days, seed=args.seed, plant=args.plant or DEFAULT_PLANT,
            explore_share=args.explore, config=config, train_config=train_config, device=args.device,
        )
        result = evaluate(opts, out, say=progress)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    summary = write_outputs(result, out, command=_command(args))
    summary["out_dir"] = str(out)
    emit(args, summary, _human(summary))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="compare CoolPilot with legacy rules, tuned rules and the oracle on the same simulated weeks",
        description=(
            "Simulate training history (tuned rules with safe exploration), train the ensemble, then run the "
            "same evaluation window with identical weather, load and sensor noise under the legacy rules, the "
            "tuned rules, CoolPilot in auto mode and the oracle. Writes report.md, plots and evaluation.json "
            "to --out."
        ),
    )
    p.add_argument("--climate", default=None, metavar="EPW",
                   help="EPW file or shipped climate (leesburg, dallas, chicago, san_jose); default leesburg")
    p.add_argument("--workload", default=None, metavar="CSV", help="utilisation CSV; default Alibaba 2017")
    p.add_argument("--start", default=None, metavar="DATE",
                   help=f"first day of the evaluation window, UTC (default {DEFAULT_START:%Y-%m-%d})")
    p.add_argument("--days", type=float, default=7.0, metavar="N", help="days evaluated (default 7)")
    p.add_argument("--train-days", type=float, default=42.0, metavar="N",
                   help="days of training history before the window (default 42)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed: weather-independent noise, exploration")
    p.add_argument("--plant", default=None, metavar="MODULE:FACTORY", help=f"plant factory (default {DEFAULT_PLANT})")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--explore", type=float, default=0.3, metavar="SHARE",
                   help="share of the training history in safe random exploration (default 0.3)")
    p.add_argument("--config", default=None, metavar="FILE", help="controller config TOML (mode is forced to auto)")
    p.add_argument("--max-epochs", type=int, default=None, metavar="N", help="training epochs (default: training's)")
    p.add_argument("--device", choices=("cpu", "auto", "cuda"), default="cpu",
                   help="training device (default cpu: repeatable bit for bit)")
    add_json_arg(p)
    p.set_defaults(func=cmd_evaluate)
