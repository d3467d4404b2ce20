"""`coolpilot train` and `coolpilot models list|show|promote|rollback`.

Training reads the last N days of a site's history, trains the ensemble and its
baselines on the same time-ordered split, stores the artifact, and makes it champion
only if it beats the current champion on the same recent window (unless pinned).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import sqlalchemy as sa

from coolpilot.cli_common import CliError, add_at_arg, add_db_arg, add_json_arg, emit, parse_at, progress
from coolpilot.fleet.cli import add_fleet_args, cmd_train_fleet, is_fleet
from db.engine import DatabaseError, make_engine, resolve_url
from db.migrate import require_schema
from forecasting.features import TARGETS, FeatureError, FeatureSpec
from forecasting.history import load_history

if TYPE_CHECKING:  # torch and scikit-learn load only when a command runs, never for --help
    from forecasting.registry import ModelEntry
    from forecasting.train import EpochReport

MODELS_DIR_ENV = "COOLPILOT_MODELS_DIR"
DEFAULT_MODELS_DIR = "coolpilot-data/models"
# forecasting.device.DEVICE_CHOICES, spelled out so that --help does not import torch
# (tests/test_cli_help.py checks that the two agree).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
# ArtifactError and RegistryError (forecasting.artifact, forecasting.registry) are ValueErrors.
EXPECTED_ERRORS = (DatabaseError, FeatureError, ValueError)


def register(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train the forecasting ensemble on recent history")
    add_db_arg(train)
    train.add_argument("--site", default="default", help="site name (default: default)")
    train.add_argument("--days", type=int, default=365, metavar="N", help="days of history to learn from (default 365)")
    train.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto = CUDA when present")
    _models_dir_arg(train)
    train.add_argument("--seed", type=int, default=0, help="random seed (runs repeat exactly on the CPU)")
    train.add_argument("--max-epochs", type=int, default=None, metavar="N")  # None: TrainConfig's default
    add_at_arg(train, "learn from the --days before TIME")
    add_json_arg(train)
    add_fleet_args(train)
    train.set_defaults(func=_guarded(cmd_train))

    models = subparsers.add_parser("models", help="list, inspect, promote or roll back trained models")
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    for name, helptext in (("list", "list stored models"), ("show", "show one model (default: champion)"),
                           ("promote", "make a model the champion"), ("rollback", "restore the previous champion")):
        p = sub.add_parser(name, help=helptext)
        add_db_arg(p)
        p.add_argument("--site", default="default", help="site name (default: default)")
        add_json_arg(p)
        if name in ("show", "promote"):
            p.add_argument("version", nargs="?" if name == "show" else None, help="model version")
        if name == "promote":
            pin = p.add_mutually_exclusive_group()
            pin.add_argument("--pin", action="store_true", help="keep it champion: training will not replace it")
            pin.add_argument("--unpin", action="store_true", help="let a better newly trained model replace it")
    sub.choices["list"].set_defaults(func=_guarded(cmd_list))
    sub.choices["show"].set_defaults(func=_guarded(cmd_show))
    sub.choices["promote"].set_defaults(func=_guarded(cmd_promote))
    sub.choices["rollback"].set_defaults(func=_guarded(cmd_rollback))


def _models_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", metavar="DIR", default=None,
                        help=f"where artifacts are written (default: ${MODELS_DIR_ENV}, else ./{DEFAULT_MODELS_DIR})")


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected failures (bad data, database, artifact) become one clear line and exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except EXPECTED_ERRORS as exc:
            raise CliError(str(exc)) from exc

    return run


def _engine(args: argparse.Namespace) -> sa.Engine:
    engine = make_engine(resolve_url(args.db))
    require_schema(engine)
    return engine


def progress_bar(stream: TextIO) -> Callable[[EpochReport], None]:
    """An in-place one-line progress bar for a terminal."""

    def show(r: EpochReport) -> None:
        width = 24
        done = int(width * r.epoch / r.max_epochs)
        stream.write(f"\rtraining [{'#' * done}{'.' * (width - done)}] epoch {r.epoch}/{r.max_epochs} "
                     f"train NLL {r.train_loss:+.3f} val MSE {r.val_loss:.3f} best {r.best_val_loss:.3f} "
                     f"{r.elapsed_s:5.1f} s")
        stream.flush()

    return show


def _counts(by_role: dict[str, int]) -> str:
    """``role N readings, ...``, or "none"."""
    return ", ".join(f"{role} {n} readings" for role, n in sorted(by_role.items())) or "none"


def _metrics_table(metrics: dict[str, Any]) -> str:
    lines = [f"{'model':<24} {'cool MAE kW':>11} {'cool MAPE %':>11} {'rack MAE C':>10} {'cover90 cool/rack':>18} "
             f"{'train s':>8}  device"]
    for name, m in metrics.items():
        if "train_seconds" not in m:  # not a model: the promotion comparison
            continue
        cov = "-"
        if "coverage" in m[TARGETS[0]]:
            cov = f"{m[TARGETS[0]]['coverage']:.3f}/{m[TARGETS[1]]['coverage']:.3f}"
        lines.append(f"{name:<24} {m[TARGETS[0]]['mae']:>11.2f} {m[TARGETS[0]]['mape_pct']:>11.2f} "
                     f"{m[TARGETS[1]]['mae']:>10.3f} {cov:>18} {m['train_seconds']:>8.1f}  {m['device']}")
    return "\n".join(lines)


def _baseline_table(verdicts: list[dict[str, Any]]) -> str:
    """The promotion rule, plainly: per target, held-out MAE of the ensemble and its baselines, and
    whether a baseline beats the ensemble beyond noise."""
    lines = [f"{'target':<18} {'ensemble MAE':>12} {'HGB MAE':>9} {'ridge MAE':>9}  verdict"]
    for v in verdicts:
        base = v["baseline_mae"]
        cells = [f"{base[n]:>9.3f}" if n in base else f"{'-':>9}" for n in ("hist_gradient_boosting", "ridge")]
        best = base.get(v["best"]) if v.get("best") else None
        verdict = (f"worse than {', '.join(v.get('worse_than') or [v['best']])}" if not v["ok"]
                   else "ok (behind, within noise)" if best is not None and v["ensemble_mae"] > best else "ok")
        lines.append(f"{v['target']:<18} {v['ensemble_mae']:>12.3f} {cells[0]} {cells[1]}  {verdict}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from controller.config import QualitySettings
    from controller.service.retraining import fit_without_stuck
    from db.records import controlled_since
    from forecasting.registry import register_trained
    from forecasting.train import TrainConfig

    if is_fleet(args):  # --all-sites / --sites: one job per site (coolpilot.fleet)
        return cmd_train_fleet(args, Path(args.models_dir or os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR))
    until = None if args.at is None else parse_at(args.at, datetime.now(UTC))
    engine = _engine(args)
    frame = load_history(engine, args.site, args.days, until=until)
    spec = FeatureSpec.for_history(frame)  # the roles and varying setpoints this site has
    config = TrainConfig(seed=args.seed,
                         max_epochs=TrainConfig.max_epochs if args.max_epochs is None else args.max_epochs)
    quiet = args.json or not sys.stderr.isatty()
    if not args.json:
        progress(f"training on {len(frame)} rows of site {args.site!r} ({frame.index[0]} .. {frame.index[-1]})")
    bar = None if quiet else progress_bar(sys.stderr)
    # as the daemon does: what CoolPilot did since it took control is trained on, not held out
    since = controlled_since(engine, args.site)
    # as the daemon does: what the stuck check in force flags is not learned (default quality settings)
    result, cleaned = fit_without_stuck(engine, args.site, frame, QualitySettings(), spec=spec, config=config,
                                        device=args.device, on_epoch=bar, recent_from=since)
    if bar is not None:
        sys.stderr.write("\n")
    models_dir = Path(args.models_dir or os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR)
    decision = register_trained(engine, result, cleaned, models_dir, site=args.site)
    r = result.report
    payload = {**r, "decision": decision.as_dict(), "artifact": str(decision.artifact_path)}
    g = r["gaps"]
    human = "\n".join([
        f"model {r['version']}: {r['samples']['train']} training samples, test window "
        f"{r['window']['test'][0]} .. {r['window']['test'][1]} ({r['samples']['test']} samples)"
        + (f"; trained on CoolPilot's own operation since {since:%Y-%m-%d %H:%M} UTC" if since is not None else ""),
        f"gaps: {g['rows'] - g['samples']} of {g['rows']} rows unusable ({g['missing_grid_rows']} absent, "
        f"{g['dropped_state']} state gaps, {g['dropped_horizon']} horizon gaps; {g['outliers_removed']} readings "
        f"removed as spikes or out of range); none were filled",
        f"left out as stuck sensors: {_counts(r['suspect_removed'])}",
        f"epochs {r['epochs_run']} (best {r['best_epoch']}) on {r['device']} in {r['train_seconds']:.1f} s",
        _metrics_table(r["metrics"]),
        _baseline_table(decision.as_dict()["baselines"]),
        f"{decision.reason}",
        f"artifact: {decision.artifact_path}",
    ])
    emit(args, payload, human)
    return 0


def _entry_line(e: ModelEntry) -> str:
    pin = " pinned" if e.pinned else ""
    score = e.metrics.get("ensemble", {}).get("score")
    score_s = f"{score:.3f}" if isinstance(score, float) else "-"
    return f"{e.version:<28} {e.status:<10}{pin:<7} score {score_s:>7}  created {e.created_at:%Y-%m-%d %H:%M} UTC"


def cmd_list(args: argparse.Namespace) -> int:
    from forecasting.registry import list_entries

    entries = list_entries(_engine(args), site=args.site)
    human = "\n".join(_entry_line(e) for e in entries) if entries else f"no models for site {args.site!r}"
    emit(args, {"models": [e.as_dict() for e in entries]}, human)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from forecasting.registry import get_entry

    e = get_entry(_engine(args), args.version, site=args.site)
    lines = [_entry_line(e), f"artifact {e.artifact_path} sha256 {e.sha256}"]
    if e.meta.get("decision"):  # why it was promoted or rejected, and on which windows
        lines.append(f"decision: {e.meta['decision']}")
    lines.append(_metrics_table(e.metrics) if e.metrics else "no metrics")
    human = "\n".join(lines)
    emit(args, e.as_dict(), human)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from forecasting.registry import promote

    pin = True if args.pin else (False if args.unpin else None)
    e = promote(_engine(args), args.version, pin=pin, site=args.site)
    emit(args, e.as_dict(), f"champion is now {e.version}{' (pinned)' if e.pinned else ''}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from forecasting.registry import rollback

    old, new = rollback(_engine(args), site=args.site)
    emit(args, {"rejected": old.as_dict(), "champion": new.as_dict()},
         f"rolled back: {old.version} rejected, champion is now {new.version}")
    return 0
