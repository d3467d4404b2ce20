"""`scripts/bootstrap.sh` says what it does before each long step, and nothing on a re-run.

The script runs in a scratch copy of the repository whose ``.venv`` wraps this
interpreter; only ``python -m pip`` is replaced (by a line in a log), so that the test
installs nothing while the script's own logic decides what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def scratch(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "bootstrap.sh", tmp_path / "scripts" / "bootstrap.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "pip.log"
    python = bin_dir / "python"
    python.write_text('#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "$*" >> "$PIPLOG"; exit 0; fi\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"; export PATH\n')
    return tmp_path, log


def bootstrap(repo: Path, log: Path) -> str:
    env = {**os.environ, "PIPLOG": str(log)}
    proc = subprocess.run(["bash", str(repo / "scripts" / "bootstrap.sh")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs sha256sum")
def test_first_run_announces_the_install_and_a_rerun_is_quiet(tmp_path: Path) -> None:
    repo, log = scratch(tmp_path)
    first = bootstrap(repo, log)
    assert "bootstrap: installing CoolPilot" in first
    assert "install -q -e" in log.read_text()
    installs = log.read_text()

    again = bootstrap(repo, log)
    lines = again.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bootstrap: ready"), again
    assert log.read_text() == installs  # nothing installed again
