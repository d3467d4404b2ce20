"""Shared pieces of the `coolpilot` command line: common flags, output and errors.

Every command that reports takes ``--json`` and then prints exactly one JSON object on
stdout (progress and logs go to stderr). Expected failures raise `CliError`, which the
entry point turns into one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from db.jsonable import jsonable

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """An expected failure with a message for the operator (one line, no traceback)."""


def add_db_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="SQLAlchemy database URL (default: $COOLPILOT_DATABASE_URL, else sqlite:///coolpilot.db)",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")




def emit(args: argparse.Namespace, payload: Mapping[str, Any], human: str) -> None:
    """Print the JSON object under --json, else the human-readable text."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(jsonable(payload), sort_keys=True) + "\n")
    else:
        sys.stdout.write(human.rstrip("\n") + "\n")
    sys.stdout.flush()


def parse_start(text: str) -> datetime:
    """A ``--start`` value as an aware UTC datetime; naive values are taken as UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--start {text!r} is not an ISO date or date-time (e.g. 2023-07-01 or 2023-07-01T06:00)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def add_at_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--at TIME``: replay a past moment of the historian (``what`` says what it changes)."""
    parser.add_argument("--at", metavar="TIME", default=None,
                        help=f"replay a past moment: {what} as of TIME (UTC ISO 8601, e.g. 2023-07-10T23:55Z; "
                             "naive times are UTC); default now")


def parse_at(text: str, now: datetime) -> datetime:
    """An ``--at`` value as an aware UTC datetime, refused when it lies after ``now``."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CliError(f"--at {text!r}: not an ISO 8601 time, e.g. 2023-07-10T23:55:00Z") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when > now:
        raise CliError(f"--at {when.isoformat()} is in the future (now {now.isoformat(timespec='seconds')})")
    return when


def progress(message: str) -> None:
    """A progress line for the operator, on stderr so that --json stdout stays clean."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def add_energyplus_args(parser: argparse.ArgumentParser) -> None:
    """``--energyplus``, ``--point-map`` and ``--weather``: the EnergyPlus plant family's flags."""
    parser.add_argument("--energyplus", default=None, metavar="MODEL",
                        help="run on an EnergyPlus model: a shipped one (2zone, crac) or your .epJSON "
                             "(with --point-map); excludes --plant")
    parser.add_argument("--point-map", default=None, metavar="TOML",
                        help="point map for your own EnergyPlus model (its [map] model names the .epJSON)")
    parser.add_argument("--weather", default=None, metavar="EPW",
                        help="an .epw / .epw.gz weather file (instead of --climate)")
