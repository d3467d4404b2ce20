"""`coolpilot db init`, `coolpilot db stats` and `coolpilot ingest`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from coolpilot.cli import main

DATA = Path(__file__).resolve().parent / "data"
SECRET = "s3cr3t-Pa55"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _json(out: str) -> dict[str, object]:
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line, got {out!r}"
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def test_init_creates_then_is_a_no_op(blank_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "db", "init", "--db", blank_db_url, "--json")
    first = _json(out)
    assert code == 0 and first["changed"] is True and first["previous_revision"] is None
    code, out, _ = _run(capsys, "db", "init", "--db", blank_db_url, "--json")
    second = _json(out)
    assert code == 0 and second["changed"] is False and second["revision"] == first["revision"]
    code, out, _ = _run(capsys, "db", "init", "--db", blank_db_url)
    assert code == 0 and "nothing to do" in out


def test_ingest_then_stats(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.read_csv(DATA / "historian_wide.csv")
    used = [c for c in frame.columns[1:] if "FILTER_DP" not in c]  # that tag is ignored by the map
    n_values = int(frame[used].notna().sum().sum())
    code, out, _ = _run(capsys, "ingest", str(DATA / "historian_wide.csv"), "--db", db_url,
                        "--tag-map", str(DATA / "tagmap.toml"), "--site", "dc1", "--json")
    report = _json(out)
    assert code == 0 and report["readings_inserted"] == n_values and report["site"] == "dc1"
    code, out, _ = _run(capsys, "ingest", str(DATA / "historian_wide.csv"), "--db", db_url,
                        "--tag-map", str(DATA / "tagmap.toml"), "--site", "dc1", "--json")
    assert _json(out)["readings_inserted"] == 0
    code, out, _ = _run(capsys, "db", "stats", "--db", db_url, "--json")
    stats = _json(out)
    assert code == 0 and stats["readings"] == n_values and stats["points"] == len(used)
    assert stats["start"] == "2024-01-15T12:00:00+00:00" and stats["end"] == "2024-01-15T12:55:00+00:00"
    code, out, _ = _run(capsys, "db", "stats", "--db", db_url)
    assert code == 0 and f"site dc1: {len(used)} points, {n_values} readings" in out


def test_ingest_with_timezone_flag(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "local.csv"
    path.write_text("timestamp,chw_supply_c\n2024-07-01 08:00:00,7.0\n", encoding="utf-8")
    code, _, err = _run(capsys, "ingest", str(path), "--db", db_url)
    assert code == 2 and "--timezone" in err
    code, out, _ = _run(capsys, "ingest", str(path), "--db", db_url, "--timezone", "Europe/Madrid", "--json")
    assert code == 0 and _json(out)["start"] == "2024-07-01T06:00:00+00:00"


def _one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and SECRET not in err
    return lines[0]


def test_bad_csv_is_one_line_naming_file_line_field(db_url: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,abc\n", encoding="utf-8")
    line = _one_error_line(*_run(capsys, "ingest", str(path), "--db", db_url, "--json"))
    assert line.endswith("bad.csv:2: field 'value': 'abc' is not a number")
    code, out, _ = _run(capsys, "db", "stats", "--db", db_url, "--json")
    assert code == 0 and _json(out)["readings"] == 0


def test_bad_tag_map_is_one_line(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tag_map = tmp_path / "map.csv"
    tag_map.write_text("tag,role\nX,not_a_role\n", encoding="utf-8")
    line = _one_error_line(*_run(capsys, "ingest", str(DATA / "historian_long.csv"), "--db", db_url,
                                 "--tag-map", str(tag_map)))
    assert "map.csv:2: unknown role 'not_a_role'" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["db", "stats", "--db", "nonsense"], "invalid database URL"),
        (["db", "init", "--db", f"oracle://scott:{SECRET}@db/x"], "unsupported database URL scheme"),
        (["db", "stats", "--db", f"postgresql://postgres:{SECRET}@127.0.0.1:1/x?connect_timeout=3"],
         "cannot use database postgresql+psycopg://postgres:***@127.0.0.1:1/x"),
    ],
)
def test_database_problems_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_error_line(*_run(capsys, *argv))
    assert message in line


def test_stats_without_schema_says_init(blank_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    if blank_db_url.startswith("sqlite"):
        Path(blank_db_url.removeprefix("sqlite:///")).touch()
    line = _one_error_line(*_run(capsys, "db", "stats", "--db", blank_db_url))
    assert "run `coolpilot db init`" in line


def test_console_entry_point_uses_env_url_and_exits_2(tmp_path: Path) -> None:
    """The real process: the database URL from the environment, no traceback, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "COOLPILOT_DATABASE_URL"}
    env["COOLPILOT_DATABASE_URL"] = f"postgresql://postgres:{SECRET}@127.0.0.1:1/x?connect_timeout=3"
    proc = subprocess.run([sys.executable, "-m", "coolpilot.cli", "db", "init"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("coolpilot db: error: cannot use database")
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout
