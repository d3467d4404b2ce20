"""``coolpilot fleet sd``: Prometheus file-based service discovery for a fleet of daemons.

A fleet runs one daemon per hall (``coolpilot@<site>.service``), each with its own
config and its own metrics endpoint. Prometheus finds them through one JSON file
(``file_sd_configs``) written from those configs: one target per hall with a ``site``
label, so dashboards and alerts can group and filter by hall. Prometheus re-reads the
file when it changes; it is written atomically (temporary file, then rename) so a
scrape never sees half a file.

Two halls on one port or with one site name would shadow each other: both are errors
naming the two files. Halls with metrics disabled are left out and reported.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.config import Config, ConfigError, load_config
from coolpilot.cli_common import CliError, add_json_arg, emit, progress

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class Hall:
    """One daemon of the fleet as Prometheus sees it."""

    config_path: str
    site: str
    target: str | None  # host:port, None when its metrics are disabled


def hall_of(path: str, cfg: Config, wildcard_host: str) -> Hall:
    """The scrape target of one config; a wildcard listen address is scraped at ``wildcard_host``."""
    if not cfg.metrics.enabled:
        return Hall(path, cfg.site_id, None)
    host = wildcard_host if cfg.metrics.host in WILDCARD_HOSTS else cfg.metrics.host
    host = f"[{host}]" if ":" in host else host
    return Hall(path, cfg.site_id, f"{host}:{cfg.metrics.port}")


def check_unique(halls: Sequence[Hall]) -> None:
    """Two configs with one site name or one metrics address are an error naming both files."""
    seen_site: dict[str, str] = {}
    seen_target: dict[str, str] = {}
    for hall in halls:
        if hall.site in seen_site:
            raise ValueError(f"{hall.config_path}: site_id {hall.site!r} is also used by {seen_site[hall.site]}")
        seen_site[hall.site] = hall.config_path
        if hall.target is not None:
            if hall.target in seen_target:
                raise ValueError(
                    f"{hall.config_path}: metrics address {hall.target} is also used by {seen_target[hall.target]}"
                )
            seen_target[hall.target] = hall.config_path


def sd_groups(halls: Sequence[Hall], job_labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups: one per hall, labelled with its site."""
    return [
        {"targets": [h.target], "labels": {**(job_labels or {}), "site": h.site}}
        for h in sorted(halls, key=lambda h: h.site) if h.target is not None
    ]


def expand(patterns: Sequence[str]) -> list[str]:
    """Config paths: each argument a file or a glob (quoted globs work too), sorted, no repeats."""
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise CliError(f"no config file matches {pattern!r}")
        paths += [m for m in matches if m not in paths]
    return paths


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, so a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # Prometheus runs as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_fleet_sd(args: argparse.Namespace) -> int:
    halls: list[Hall] = []
    for path in expand(args.configs):
        try:
            halls.append(hall_of(path, load_config(path), args.wildcard_host))
        except ConfigError as err:
            raise CliError(str(err)) from err
    try:
        check_unique(halls)
    except ValueError as err:
        raise CliError(str(err)) from err
    groups = sd_groups(halls)
    text = json.dumps(groups, indent=2, sort_keys=True) + "\n"
    if args.out == "-":
        progress(f"{len(groups)} target(s)")
        print(text, end="")
        return 0
    write_atomic(Path(args.out), text)
    skipped = [h.site for h in halls if h.target is None]
    payload = {"out": args.out, "targets": groups, "metrics_disabled": skipped}
    lines = [f"{args.out}: {len(groups)} target(s)"] + [f"  {g['labels']['site']}: {g['targets'][0]}" for g in groups]
    lines += [f"  {site}: metrics disabled, not scraped" for site in skipped]
    emit(args, payload, "\n".join(lines))
    return 0


def register(subparsers: Any) -> None:
    """Add ``fleet sd`` to the ``coolpilot`` command line."""
    fleet = subparsers.add_parser("fleet", help="many halls: Prometheus service discovery for their daemons")
    sub = fleet.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND", required=True)
    sd = sub.add_parser(
        "sd", help="write a Prometheus file_sd JSON file: one target per hall config, labelled site=<site_id>",
        description="Reads each daemon's config ([metrics] host/port, site_id) and writes the file "
                    "Prometheus's file_sd_configs watches (atomically).",
    )
    sd.add_argument("--configs", nargs="+", required=True, metavar="TOML",
                    help="hall configs, files or globs (e.g. '/etc/coolpilot/*.toml')")
    sd.add_argument("--out", required=True, metavar="FILE", help="the targets JSON file ('-' for stdout)")
    sd.add_argument("--wildcard-host", default="127.0.0.1", metavar="HOST",
                    help="address to scrape a daemon listening on 0.0.0.0 or :: at (default 127.0.0.1)")
    add_json_arg(sd)
    sd.set_defaults(func=cmd_fleet_sd)
