"""``coolpilot --help`` and every sub-command's ``--help`` answer without the heavy libraries.

torch, scikit-learn and matplotlib load only where a command's work starts (inside its
handler), so that asking for help is instant and works where those are broken. Each
probe runs in a fresh interpreter; the commands are found by walking the parser itself,
so a new sub-command is covered without touching this file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from coolpilot.cli import build_parser

HEAVY = ("torch", "sklearn", "matplotlib")
PROBE = f"HEAVY = {HEAVY!r}\n" + """
import json, sys
from coolpilot.cli import main
try:
    code = main(sys.argv[1:] + ["--help"])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": [m for m in HEAVY if m in sys.modules]}))
"""


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path the parser knows: () for the top level, then each sub-command, depth first."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _command_paths(sub, (*prefix, name))


PATHS = list(_command_paths(build_parser()))


@pytest.fixture(scope="module")
def probes() -> dict[tuple[str, ...], dict[str, object]]:
    """Run every probe at once (one fresh interpreter each) and collect what each printed."""
    running = {path: subprocess.Popen([sys.executable, "-c", PROBE, *path], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
               for path in PATHS}
    results: dict[tuple[str, ...], dict[str, object]] = {}
    for path, proc in running.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"probe for {path} exited {proc.returncode}"
        results[path] = json.loads(out.strip().splitlines()[-1])
    return results


def test_the_parser_walk_finds_the_commands() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"", "db", "db init", "ingest", "simulate", "train", "models", "models list", "decide", "config",
            "config check", "explain", "run", "demo", "evaluate"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "coolpilot")
def test_help_loads_no_heavy_library(path: tuple[str, ...], probes: dict[tuple[str, ...], dict[str, object]]) -> None:
    result = probes[path]
    assert result["code"] == 0
    assert result["loaded"] == [], f"`coolpilot {' '.join(path)} --help` imported {result['loaded']}"


def test_train_device_choices_match_forecasting() -> None:
    from coolpilot.train_cli import DEVICE_CHOICES
    from forecasting.device import DEVICE_CHOICES as FORECASTING_CHOICES

    assert DEVICE_CHOICES == FORECASTING_CHOICES
