"""Controller commands: ``decide --once``, ``config check`` and ``explain``.

These are thin edges: they load the config, open the database, wire the cycle's
inputs (historian, model registry, actuator, recorder, wall clock) and print. All
logic lives in ``controller.cycle`` and friends.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from controller.config import RESTART_REQUIRED, Config, ConfigError, load_config
from controller.decision import Decision
from controller.seams import ActuationResult
from coolpilot.cli_common import CliError, add_at_arg, add_db_arg, add_json_arg, emit, parse_at, progress
from coolpilot.replay import AsOfSource

CONFIG_ENV = "COOLPILOT_CONFIG"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("decide", help="run one control cycle and print the decision",
                              description="Run one control cycle: read the sensor window, check it, search setpoints "
                                          "with the current model, verify, record the decision, and apply it unless "
                                          "the mode is advisory.")
    p.add_argument("--once", action="store_true", help="run exactly one cycle (required; the daemon is `coolpilot run`)")
    _config_arg(p)
    add_at_arg(p, "decide on the window, quality and freshness checks; advisory only, nothing is applied")
    add_db_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_decide)

    c = subparsers.add_parser("config", help="controller configuration tools")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = csub.add_parser("check", help="validate a config file and print the effective settings")
    check.add_argument("file", metavar="FILE", help="TOML config file")
    add_json_arg(check)
    check.set_defaults(func=cmd_config_check)
    c.set_defaults(func=lambda _args: _usage(c))

    e = subparsers.add_parser("explain", help="show why the controller decided what it did",
                              description="Show a stored decision: the constraint that bound, the runner-up "
                                          "candidates and a what-if table of each setpoint moved by one step.")
    which = e.add_mutually_exclusive_group()
    which.add_argument("--last", action="store_true", help="the most recent decision (default)")
    which.add_argument("--at", metavar="TIME", help="the decision in force at TIME (ISO 8601, e.g. 2024-07-01T12:00Z)")
    _config_arg(e)
    e.add_argument("--site", default=None, help="site name (default: the config's site_id)")
    add_db_arg(e)
    add_json_arg(e)
    e.set_defaults(func=cmd_explain)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help=f"controller config (default: ${CONFIG_ENV}, else built-in defaults in advisory mode)")


def _config_path(path: str | None) -> str | None:
    return path or os.environ.get(CONFIG_ENV) or None


def _config_dir(path: str | None) -> Path | None:
    given = _config_path(path)
    return None if given is None else Path(given).resolve().parent


def _load(path: str | None, *, read_only: bool = False) -> Config:
    path = _config_path(path)
    try:
        if path is None:
            if not read_only:  # a command that only reads (explain) has nothing to apply: no warning
                progress("no --config given: using built-in defaults (mode advisory, nothing is applied)")
            return Config()
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _engine(args: argparse.Namespace, config: Config) -> sa.Engine:
    from db.engine import DatabaseError, make_engine, resolve_url
    from db.migrate import require_schema

    try:
        engine = make_engine(resolve_url(args.db or config.database.url))
        require_schema(engine)  # never creates an empty database file by accident
    except DatabaseError as exc:
        raise CliError(str(exc)) from None
    return engine


def cmd_decide(args: argparse.Namespace) -> int:
    if not args.once:
        raise CliError("decide runs a single cycle: pass --once (the continuous daemon is `coolpilot run`)")
    now = datetime.now(UTC)
    at = None if args.at is None else parse_at(args.at, now)
    config = _load(args.config)
    if at is not None:
        config = _replaying(config, at)
    engine = _engine(args, config)
    from controller.cycle import run_cycle
    from controller.service.actuators import make_actuator
    from controller.service.recorder import DecisionRecorder
    from db.engine import DatabaseError
    from db.historian import HistorianConfigError, historian_from_config
    from db.records import last_applied_setpoints

    site = config.site_id
    try:
        source = historian_from_config(None if config.historian is None else config.historian.section(), engine,
                                       site, base_dir=_config_dir(args.config))
        # a replay judges the past by its measured setpoints: what was applied since says nothing about then
        last_applied = {} if at is not None else last_applied_setpoints(engine, site)
    except (DatabaseError, HistorianConfigError) as exc:
        raise CliError(str(exc)) from None

    def champion() -> Any:
        from forecasting.registry import load_champion

        return load_champion(engine, site)

    recorder = DecisionRecorder(engine, site)
    actuator = make_actuator(config.actuator, site, engine, bacnet=config.bacnet,
                             mode=lambda: config.mode) if at is None else NeverSend()
    if at is not None:
        source = AsOfSource(source, at)
    try:
        decision = run_cycle(config, source, champion, actuator, recorder,
                             lambda: now if at is None else at, last_applied)
    finally:
        close = getattr(actuator, "close", None)
        if close is not None:
            close()
    emit(args, decision.to_json(), decision.summary())
    if recorder.queued:
        raise CliError(f"the decision could not be recorded: {recorder.last_error}")
    if decision.reason_code == "setpoint_unknown":  # nothing was written: say so, and fail the command
        progress(f"coolpilot decide: nothing written: {decision.reason}")
        return 3
    return 1 if decision.actuation.startswith("failed") else 0


class NeverSend:
    """The actuator of a replay: a past moment is never actuated."""

    def send(self, setpoints: Any, *, ts: datetime, decision_id: int | None, reason: str) -> ActuationResult:
        return ActuationResult(ok=False, status="not sent (replay of a past moment)")


def _replaying(config: Config, at: datetime) -> Config:
    """The config for a replay at ``at``: auto becomes advisory, and the operator is told so in one line."""
    note = ""
    if config.mode == "auto":
        config = config.model_copy(update={"mode": "advisory"})
        note = " (mode auto runs as advisory)"
    progress(f"replaying {at.isoformat()}: advisory only, nothing is applied{note}")
    return config


def _effective(config: Config) -> dict[str, Any]:
    from db.engine import redact_url, resolve_url

    data = config.model_dump(mode="json")
    data["database"]["url"] = redact_url(resolve_url(config.database.url))
    if data.get("historian") and data["historian"].get("url"):
        data["historian"]["url"] = redact_url(data["historian"]["url"])
    return data


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict) and data:
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, data)]


def _restart_only(dotted: str) -> bool:
    return any(dotted == r or dotted.startswith(r + ".") for r in RESTART_REQUIRED)


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    effective = _effective(config)
    lines = [f"{args.file}: valid (mode {config.mode}, site {config.site_id})",
             "effective settings ([restart] = takes effect only after a restart):"]
    for dotted, value in _flatten(effective):
        mark = "  [restart]" if _restart_only(dotted) else ""
        lines.append(f"  {dotted} = {value!r}{mark}")
    emit(args, {"file": str(Path(args.file)), "valid": True, "effective": effective,
                "restart_required": list(RESTART_REQUIRED)}, "\n".join(lines))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    config = _load(args.config, read_only=True)
    site = args.site or config.site_id
    when = parse_at(args.at, datetime.now(UTC)) if args.at else None
    engine = _engine(args, config)
    from controller.explain import explanation, render
    from db.engine import DatabaseError
    from db.records import decision_at, latest_decision

    try:
        row = decision_at(engine, site, when) if when is not None else latest_decision(engine, site)
    except DatabaseError as exc:
        raise CliError(str(exc)) from None
    if row is None:
        where = f"at or before {when.isoformat()}" if when is not None else "yet"
        raise CliError(f"site {site!r} has no decision {where}: run `coolpilot decide --once` first")
    decision = Decision.from_row(row)
    emit(args, explanation(decision), render(decision))
    return 0
