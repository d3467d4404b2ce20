"""Command line for the historian: ``coolpilot db init``, ``coolpilot db stats``, ``coolpilot ingest``.

Every failure the operator can fix (bad URL, server down, no schema, bad CSV line)
becomes one `CliError` line; with ``--json`` stdout carries exactly one JSON object.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from coolpilot.cli_common import CliError, add_db_arg, add_json_arg, emit, progress
from db.engine import DatabaseError, make_engine, redact_url, resolve_url
from db.tagmap import TagMap, TagMapError


@contextmanager
def _operator_errors() -> Iterator[None]:
    """Expected failures -> one line for the operator (no traceback)."""
    from db.csvfile import IngestError

    try:
        yield
    except (DatabaseError, IngestError, TagMapError) as err:
        raise CliError(str(err)) from err


def cmd_db_init(args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    url = resolve_url(args.db)
    with _operator_errors():
        engine = make_engine(url)
        try:
            previous = _revision_if_exists(engine)
            revision = upgrade(engine)
        finally:
            engine.dispose()
    changed = previous != revision
    payload = {"url": redact_url(url), "revision": revision, "previous_revision": previous, "changed": changed}
    if changed:
        human = f"database {redact_url(url)}: schema {'created' if previous is None else 'upgraded'} at revision {revision}"
    else:
        human = f"database {redact_url(url)}: schema already at revision {revision} (nothing to do)"
    emit(args, payload, human)
    return 0


def _revision_if_exists(engine: Any) -> str | None:
    """Current revision without creating a missing SQLite file."""
    from db.engine import sqlite_path
    from db.migrate import current_revision

    path = sqlite_path(engine)
    if path is not None and not path.exists():
        return None
    return current_revision(engine)


def cmd_db_stats(args: argparse.Namespace) -> int:
    from db.migrate import require_schema
    from db.query import site_stats

    url = resolve_url(args.db)
    with _operator_errors():
        engine = make_engine(url)
        try:
            revision = require_schema(engine)
            per_site = site_stats(engine)
        finally:
            engine.dispose()
    if args.site is not None:
        per_site = [s for s in per_site if s["site"] == args.site]
        if not per_site:
            raise CliError(f"no site named {args.site!r} in {redact_url(url)}")
    starts = [s["start"] for s in per_site if s["start"] is not None]
    ends = [s["end"] for s in per_site if s["end"] is not None]
    payload: dict[str, Any] = {
        "url": redact_url(url),
        "revision": revision,
        "sites": per_site,
        "points": sum(s["points"] for s in per_site),
        "readings": sum(s["readings"] for s in per_site),
        "start": min(starts) if starts else None,
        "end": max(ends) if ends else None,
    }
    lines = [f"database {payload['url']} (schema {revision})"]
    for s in per_site:
        span = f"{s['start'].isoformat()} .. {s['end'].isoformat()}" if s["start"] else "no readings"
        lines.append(f"  site {s['site']}: {s['points']} points, {s['readings']} readings, {span}")
    if not per_site:
        lines.append("  no sites yet: load data with `coolpilot ingest FILE.csv`")
    emit(args, payload, "\n".join(lines))
    return 0


def cmd_db_retention(args: argparse.Namespace) -> int:
    """Drop readings older than --keep-days (or the config's database.retention_days)."""
    from datetime import UTC, datetime

    from db.migrate import require_schema
    from db.partitions import apply_retention

    keep_days, url = args.keep_days, args.db
    if args.config is not None:
        from controller.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as err:
            raise CliError(str(err)) from err
        keep_days = keep_days if keep_days is not None else cfg.database.retention_days
        url = url if url is not None else cfg.database.url
    if keep_days is None:
        raise CliError("give --keep-days N, or --config FILE with [database] retention_days")
    if keep_days < 1:
        raise CliError(f"--keep-days must be at least 1, got {keep_days}")
    url = resolve_url(url)
    with _operator_errors():
        engine = make_engine(url)
        try:
            require_schema(engine)
            with engine.begin() as conn:
                report = apply_retention(conn, keep_days, datetime.now(UTC))
        finally:
            engine.dispose()
    payload = {"url": redact_url(url), "keep_days": keep_days, "cutoff": report.cutoff,
               "partitions_dropped": list(report.partitions_dropped), "rows_deleted": report.rows_deleted}
    dropped = ", ".join(report.partitions_dropped) or "none"
    emit(args, payload, f"database {payload['url']}: readings before {report.cutoff.isoformat()} removed "
                        f"(partitions dropped: {dropped}; rows deleted: {report.rows_deleted})")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from db.ingest import ingest_csv

    url = resolve_url(args.db)
    with _operator_errors():
        tag_map = TagMap.load(args.tag_map) if args.tag_map else None
        engine = make_engine(url)
        try:
            if not args.json:
                progress(f"ingesting {args.file} into {redact_url(url)} (site {args.site})")
            report = ingest_csv(engine, args.file, tag_map=tag_map, timezone=args.timezone, site=args.site)
        finally:
            engine.dispose()
    data = report.to_dict()
    span = f"{data['start']} .. {data['end']}" if data["start"] else "no readings"
    human = (
        f"{report.path} ({report.format}, site {report.site}): {report.readings_inserted} readings inserted, "
        f"{report.readings_skipped_duplicate} already stored or repeated, {report.values_missing} empty values, "
        f"{report.points_created} new points; {span}"
    )
    emit(args, data, human)
    return 0


def register(subparsers: Any) -> None:
    """Add ``db`` (init, stats) and ``ingest`` to the ``coolpilot`` command line."""
    db_parser = subparsers.add_parser("db", help="create/upgrade the database schema, show statistics")
    db_sub = db_parser.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)

    init = db_sub.add_parser("init", help="create the schema, or upgrade it to this version (idempotent)")
    add_db_arg(init)
    add_json_arg(init)
    init.set_defaults(func=cmd_db_init)

    stats = db_sub.add_parser("stats", help="points, readings and time span per site")
    add_db_arg(stats)
    add_json_arg(stats)
    stats.add_argument("--site", default=None, help="only this site")
    stats.set_defaults(func=cmd_db_stats)

    retention = db_sub.add_parser(
        "retention", help="remove old readings (PostgreSQL: drops whole months' partitions; SQLite: deletes rows)"
    )
    add_db_arg(retention)
    retention.add_argument("--keep-days", type=int, default=None, metavar="N", help="keep the last N days [days]")
    retention.add_argument("--config", default=None, metavar="FILE",
                           help="take retention_days (and the url) from this config's [database] section")
    add_json_arg(retention)
    retention.set_defaults(func=cmd_db_retention)

    ingest = subparsers.add_parser(
        "ingest",
        help="load sensor history from a CSV file (long: timestamp,tag,value; wide: timestamp,TAG,...)",
        description="Validate the whole file, then load it in one transaction. Re-ingesting changes nothing. "
                    "Empty cells and N/A, NA, NaN, null, None mean no reading: a gap, counted and not stored "
                    "(never filled). A value outside its role's physical range (db/roles.py) rejects the whole "
                    "file: the error counts them and lists the first 20 lines (file, line, field, value, range).",
    )
    ingest.add_argument("file", metavar="FILE", help="CSV file, long or wide format, UTF-8")
    add_db_arg(ingest)
    ingest.add_argument("--tag-map", metavar="FILE", default=None,
                        help="TOML or CSV map from your tags to CoolPilot roles (default: tags are role names)")
    ingest.add_argument("--timezone", metavar="TZ", default=None,
                        help="IANA zone of timestamps written without an offset, e.g. America/New_York")
    ingest.add_argument("--site", metavar="NAME", default="default", help="site name (default: default)")
    add_json_arg(ingest)
    ingest.set_defaults(func=cmd_ingest)
