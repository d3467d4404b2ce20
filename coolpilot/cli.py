"""The `coolpilot` command line: one entry point, sub-commands registered per package.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` (a handler taking the parsed args, returning the exit
status). To add a command, write such a module and add it to the list.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from coolpilot.cli_common import CliError

COMMAND_MODULES: tuple[str, ...] = (
    "coolpilot.db_cli",
    "coolpilot.decide_cli",
    "coolpilot.simulate_cli",
    "coolpilot.run_cli",
    "coolpilot.train_cli",
    "coolpilot.evaluate_cli",
    "coolpilot.fleet_cli",
    "coolpilot.bacnet_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coolpilot",
        description="CoolPilot: safe ML setpoint optimisation for data-centre cooling plants.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except CliError as exc:
        sys.stderr.write(f"coolpilot {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
