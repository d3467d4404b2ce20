"""``coolpilot evaluate``: the reproducible closed-loop comparison (see ``coolpilot.evaluation.run``)."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from coolpilot.cli_common import CliError, add_energyplus_args, add_json_arg, emit, parse_start, progress
from coolpilot.evaluation.plants import EvaluationError
from coolpilot.evaluation.run import DEFAULT_PLANT, DEFAULT_START, EvaluationOptions
from coolpilot.sweep_cli import add_sweep_args, evaluate_seeds

DEFAULT_OUT = "coolpilot-eval"
T = TypeVar("T")


def _command(args: argparse.Namespace) -> str:
    """The exact command that reproduces this run, every setting spelled out."""
    parts = ["coolpilot", "evaluate"]
    for flag, value in (("--energyplus", args.energyplus), ("--point-map", args.point_map),
                        ("--climate", args.climate), ("--weather", args.weather), ("--workload", args.workload),
                        ("--start", args.start), ("--days", args.days), ("--train-days", args.train_days),
                        ("--seed", args.seed), ("--explore", args.explore), ("--plant", args.plant),
                        ("--config", args.config), ("--max-epochs", args.max_epochs), ("--device", args.device),
                        ("--retrain-every-days", args.retrain_every_days),
                        ("--out", args.out)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts)


def _human(summary: dict[str, Any]) -> str:
    best = summary.get("best_baseline") or "-"
    lines = [f"{'controller':<13} {'facility kWh':>12} {'cooling kWh':>11} {'IT kWh':>9} {'PUE':>6} "
             f"{'net vs best %':>13} {'net vs tuned %':>14} {'min >limit':>10} {'max inlet C':>11} "
             f"{'fallback %':>10}"]
    for name, c in summary["controllers"].items():
        def pct(key: str, c: dict[str, Any] = c) -> str:
            v = c.get(key)
            return "-" if v is None or v != v else f"{v:.1f}"

        lines.append(f"{name:<13} {c['facility_kwh']:>12.0f} {c['cooling_kwh']:>11.0f} {c['it_kwh']:>9.0f} "
                     f"{c['pue']:>6.3f} {pct('net_saving_vs_best_pct'):>13} {pct('net_saving_vs_tuned_pct'):>14} "
                     f"{c['minutes_above_limit']:>10.0f} {c['rack_inlet_max_c']:>11.2f} "
                     f"{pct('fallback_share_pct'):>10}")
    lines.append(f"best baseline (lowest facility energy): {best}; net saving = (baseline facility - facility) "
                 "/ baseline cooling")
    for t in summary["targets"]:
        if t["value"] is None or t["value"] != t["value"]:
            lines.append(f"target {t['name']}: not measured")
            continue
        verdict = "met" if t["met"] else f"MISSED by {t['shortfall']:.2f} {t['unit']}"
        lines.append(f"target {t['name']}: {t['value']:.2f} {t['unit']} ({verdict})")
    for name, why in summary.get("skipped", {}).items():
        lines.append(f"not run: {name} ({why})")
    lines.append(f"report: {summary['out_dir']}/{summary['files']['report']}")
    return "\n".join(lines)


def plant_choice(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """(EnergyPlus model, point map, climate) from --energyplus / --point-map / --plant / --climate /
    --weather, refusing contradictory flags with one line (shared by evaluate and simulate)."""
    energyplus = getattr(args, "energyplus", None)
    point_map = getattr(args, "point_map", None)
    if (energyplus is not None or point_map is not None) and args.plant is not None:
        raise CliError("--energyplus / --point-map and --plant exclude each other: pick one plant")
    if energyplus is not None and point_map is None and energyplus not in SHIPPED_ENERGYPLUS \
            and not energyplus.lower().endswith((".epjson", ".idf")):
        raise CliError(f"--energyplus {energyplus!r}: not a shipped model ({', '.join(SHIPPED_ENERGYPLUS)}) "
                       "nor an .epJSON / .idf file")
    if energyplus is not None and energyplus not in SHIPPED_ENERGYPLUS:
        if not Path(energyplus).is_file():
            raise CliError(f"--energyplus {energyplus}: no such file")
        if point_map is None:
            raise CliError(f"--energyplus {energyplus}: your own model needs --point-map (see docs/energyplus.md)")
    if point_map is not None and not Path(point_map).is_file():
        raise CliError(f"--point-map {point_map}: no such file")
    weather = getattr(args, "weather", None)
    if weather is not None:
        if args.climate is not None:
            raise CliError("--weather and --climate exclude each other: give a shipped climate or an EPW file")
        if not weather.lower().endswith((".epw", ".epw.gz")):
            raise CliError(f"--weather {weather!r}: expected an .epw or .epw.gz file")
        if not Path(weather).is_file():
            raise CliError(f"--weather {weather}: no such file")
    return energyplus, point_map, weather if weather is not None else args.climate


SHIPPED_ENERGYPLUS = ("2zone", "crac")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from controller.config import ConfigError, load_config
    from coolpilot.evaluation.report import write_outputs
    from coolpilot.evaluation.run import evaluate

    if not getattr(args, "verbose", False):
        logging.getLogger("alembic").setLevel(logging.WARNING)
    energyplus, point_map, climate = plant_choice(args)
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
            climate=climate, workload=args.workload, energyplus=energyplus, point_map=point_map,
            start=parse_start(args.start) if args.start else DEFAULT_START, days=args.days,
            train_days=args.train_days, seed=args.seed, plant=args.plant or DEFAULT_PLANT,
            explore_share=args.explore, config=config, train_config=train_config, device=args.device,
            retrain_every_days=args.retrain_every_days,
        )
        if args.seeds:  # --seeds: one run per seed through coolpilot.evaluation.sweep
            return evaluate_seeds(args, opts, _command)
        result = _leaving_nothing_on_failure(out, lambda: evaluate(opts, out, say=progress))
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    summary = write_outputs(result, out, command=_command(args))
    summary["out_dir"] = str(out)
    emit(args, summary, _human(summary))
    return 0


def _leaving_nothing_on_failure(out: Path, run: Callable[[], T]) -> T:
    """``run()``; when it fails, remove what it added under ``out`` (its database, its models, the folder
    itself if it made it), so that no partial evaluation.db is mistaken for a result."""
    before = set(out.rglob("*")) if out.is_dir() else None
    try:
        return run()
    except BaseException:
        added = [p for p in out.rglob("*") if before is None or p not in before] if out.is_dir() else []
        added += [out / f"evaluation.db{s}" for s in ("", "-wal", "-shm")]  # replaced, so never a result
        for path in sorted(set(added), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if before is None and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="compare CoolPilot with legacy rules, tuned rules and the oracle on the same simulated weeks",
        description=(
            "Simulate training history (tuned rules with safe exploration), train the ensemble, then run the "
            "same evaluation window with identical weather, load and sensor noise under the legacy rules, the "
            "tuned rules, CoolPilot in auto mode and the oracle (digital twin) or the model's own controls "
            "(EnergyPlus). Judged on facility energy first. Writes report.md, plots and evaluation.json to --out."
        ),
    )
    add_energyplus_args(p)
    p.add_argument("--climate", default=None, metavar="NAME",
                   help="shipped climate (leesburg, dallas, chicago, san_jose) or an EPW file; default leesburg")
    p.add_argument("--workload", default=None, metavar="CSV", help="utilisation CSV; default Alibaba 2017")
    p.add_argument("--start", default=None, metavar="DATE",
                   help=f"first day of the evaluation window, UTC (default {DEFAULT_START:%Y-%m-%d})")
    p.add_argument("--days", type=float, default=7.0, metavar="N", help="days evaluated (default 7)")
    p.add_argument("--train-days", type=float, default=42.0, metavar="N",
                   help="days of training history before the window (default 42; at least 8: training needs a "
                        "week of usable 5-minute samples and a day for lags and the horizon)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed: weather-independent noise, exploration")
    p.add_argument("--plant", default=None, metavar="MODULE:FACTORY", help=f"plant factory (default {DEFAULT_PLANT})")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--explore", type=float, default=0.3, metavar="SHARE",
                   help="share of the training history in safe random exploration (default 0.3)")
    p.add_argument("--config", default=None, metavar="FILE", help="controller config TOML (mode is forced to auto)")
    p.add_argument("--max-epochs", type=int, default=None, metavar="N", help="training epochs (default: training's)")
    p.add_argument("--retrain-every-days", type=float, default=1.0, metavar="N",
                   help="retrain CoolPilot's model every N days of the window, on history that includes the "
                        "days it controlled, as the daemon's nightly job does (default 1; 0: never)")
    p.add_argument("--device", choices=("cpu", "auto", "cuda"), default="cpu",
                   help="training device (default cpu: repeatable bit for bit)")
    add_json_arg(p)
    add_sweep_args(p)
    p.set_defaults(func=cmd_evaluate)
