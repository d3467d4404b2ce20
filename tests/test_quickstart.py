"""The README's quick start, run line by line as a new user would, in a fresh directory.

The commands are parsed from the fenced bash block under "## Quick start" in README.md,
so this test breaks when the README changes in a way that stops working. Each
``coolpilot`` line runs as a subprocess in a temporary directory holding copies of the
repository files it names; the database is a temporary SQLite file. Only the daemon
line (``coolpilot run``) is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COOLPILOT = Path(sys.executable).parent / "coolpilot"


def quickstart_commands(readme: str) -> list[list[str]]:
    """The ``coolpilot`` command lines of the first bash block under "## Quick start" (comments dropped)."""
    section = readme.split("\n## Quick start\n", 1)
    if len(section) != 2:
        raise AssertionError("README.md has no '## Quick start' section")
    block = re.search(r"```bash\n(.*?)```", section[1].split("\n## ", 1)[0], re.S)
    if block is None:
        raise AssertionError("the Quick start section has no ```bash block")
    lines = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [words for words in lines if words and words[0] == "coolpilot"]


def _copy_named_files(words: list[str], into: Path) -> None:
    for word in words:
        source = ROOT / word
        if not word.startswith("-") and "/" in word and source.is_file():
            (into / word).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, into / word)


def test_quickstart_parser_finds_the_commands() -> None:
    commands = quickstart_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    verbs = [c[1] for c in commands if len(c) > 1]
    for verb in ("ingest", "simulate", "train", "decide", "explain", "run"):
        assert verb in verbs, f"the quick start lost its {verb!r} line"


def test_readme_quickstart_gives_a_model_decision_and_an_explanation(tmp_path: Path) -> None:
    if not COOLPILOT.exists():
        pytest.skip(f"no coolpilot entry point next to {sys.executable}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOLPILOT_")}
    env.update(COOLPILOT_DATABASE_URL=f"sqlite:///{tmp_path / 'quickstart.db'}",
               COOLPILOT_MODELS_DIR=str(tmp_path / "models"))
    outputs: dict[str, str] = {}
    for words in quickstart_commands((ROOT / "README.md").read_text(encoding="utf-8")):
        if words[1:2] == ["run"]:
            continue  # the daemon runs until stopped
        _copy_named_files(words, tmp_path)
        done = subprocess.run([str(COOLPILOT), *words[1:]], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{shlex.join(words)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        outputs[words[1]] = done.stdout
    decision = json.loads(outputs["decide"])
    trained = json.loads(outputs["train"]).get("decision", {})
    assert decision["outcome"] in ("optimised", "hold"), (decision["reason"], trained.get("reason"))
    assert decision["reason_code"] is None
    assert decision["model_version"]
    explained = outputs["explain"]
    assert f"site {decision['site_id']}" in explained
    assert f"outcome {decision['outcome']}" in explained
    assert "what if (each setpoint moved" in explained
