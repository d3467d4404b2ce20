"""Ingest refuses physically impossible values, lists them in file order, and stores nothing (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from db.ingest import MAX_REPORTED, IngestError, ingest_csv
from db.migrate import upgrade
from db.query import site_stats


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    from db.engine import make_engine

    eng = make_engine(f"sqlite:///{tmp_path / 'ingest.db'}")
    upgrade(eng)
    return eng


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plant.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _readings(engine: sa.Engine) -> int:
    return sum(int(s["readings"]) for s in site_stats(engine))


def test_impossible_values_reject_the_file_with_every_line_in_order(engine: sa.Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, "\n".join([
        "timestamp,rack_inlet_max_c,it_power_kw,cooling_power_kw",
        "2024-01-15T12:00:00Z,24.0,800,200",
        "2024-01-15T12:05:00Z,99,800,-5e12",
        "2024-01-15T12:10:00Z,24.1,1e300,200",
        "2024-01-15T12:15:00Z,24.2,810,-0.5",
    ]) + "\n")
    with pytest.raises(IngestError) as caught:
        ingest_csv(engine, path)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(f"{path}:3: field 'rack_inlet_max_c': 4 value(s) in the file are outside")
    assert "nothing was stored" in lines[0]
    listed = [ln.strip() for ln in lines[1:]]
    assert [ln.split(": field ")[0] for ln in listed] == [f"{path}:{n}" for n in (3, 3, 4, 5)]
    assert listed[0].endswith("field 'rack_inlet_max_c': 99.0 is outside rack_inlet_max_c's physical range [5, 55] C")
    assert "field 'cooling_power_kw': -5000000000000.0 is outside" in listed[1]
    assert "field 'it_power_kw': 1e+300 is outside" in listed[2] and "[0, 100000] kW" in listed[2]
    assert "field 'cooling_power_kw': -0.5 is outside" in listed[3]
    assert _readings(engine) == 0  # the good rows were not stored either


def test_the_list_stops_at_the_limit_and_says_how_many_more(engine: sa.Engine, tmp_path: Path) -> None:
    rows = [f"2024-01-15T{h:02d}:{m:02d}:00Z,{-1 - m}" for h in range(3) for m in range(0, 60, 5)]
    path = _write(tmp_path, "timestamp,rack_inlet_max_c\n" + "\n".join(rows) + "\n")
    with pytest.raises(IngestError) as caught:
        ingest_csv(engine, path)
    lines = str(caught.value).splitlines()
    assert "36 value(s)" in lines[0]
    assert len(lines) == 1 + MAX_REPORTED + 1 and lines[-1] == f"  ... and {36 - MAX_REPORTED} more"
    assert [int(ln.split(":")[1]) for ln in lines[1:-1]] == list(range(2, 2 + MAX_REPORTED))


def test_fahrenheit_in_a_celsius_column_gets_a_hint_and_a_single_glitch_does_not(
        engine: sa.Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, "\n".join([
        "timestamp,long_tag,value",
        "2024-01-15T12:00:00Z,supply_air_c,64.4",
        "2024-01-15T12:00:00Z,rack_inlet_max_c,24.0",
        "2024-01-15T12:05:00Z,supply_air_c,65.1",
        "2024-01-15T12:05:00Z,rack_inlet_max_c,99",
    ]).replace("long_tag", "tag") + "\n")
    with pytest.raises(IngestError) as caught:
        ingest_csv(engine, path)
    listed = str(caught.value).splitlines()[1:]
    assert len(listed) == 3
    assert "tag 'supply_air_c': 64.4 is outside" in listed[0] and "looks like Fahrenheit?" in listed[0]
    assert "looks like Fahrenheit?" in listed[1]
    assert "tag 'rack_inlet_max_c': 99.0" in listed[2] and "Fahrenheit" not in listed[2]  # 24.0 is not 24 F


def test_na_and_empty_cells_are_gaps_not_errors(engine: sa.Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, "timestamp,rack_inlet_max_c,it_power_kw\n2024-01-15T12:00:00Z,N/A,800\n"
                            "2024-01-15T12:05:00Z,,NA\n")
    report = ingest_csv(engine, path)
    assert report.readings_inserted == 1 and report.values_missing == 3


def test_ingest_help_says_what_empty_cells_and_ranges_mean(capsys: pytest.CaptureFixture[str]) -> None:
    from coolpilot.cli import main

    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "N/A" in text and "a gap, counted and not stored" in text
    assert "physical range" in text and "first 20 lines" in text
