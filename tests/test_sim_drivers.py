"""Driver data: EPW and compact weather, the utilisation trace, interpolation, clear errors."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from simulator.drivers import (
    SHIPPED_CLIMATES,
    DriverError,
    HourlySeries,
    hours_since_new_year,
    load_climate,
    load_workload,
    read_epw,
    read_workload,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LEESBURG_EPW = SHARED / "weather" / "USA_VA_Leesburg.Exec.epw"


def _epw(path: Path, rows: list[str]) -> Path:
    header = [f"HEADER {i}" for i in range(8)]
    path.write_text("\n".join(header + rows) + "\n")
    return path


def _row(drybulb: str = "20.0", rh: str = "50", pressure: str = "100000") -> str:
    return f"2010,1,1,1,0,flags,{drybulb},10.0,{rh},{pressure},0"


@pytest.mark.parametrize("name", sorted(SHIPPED_CLIMATES))
def test_shipped_climates_are_a_full_plausible_year(name: str) -> None:
    w = load_climate(name)
    assert len(w.drybulb_c) == 8760
    assert np.all(w.wetbulb_c <= w.drybulb_c + 1e-6)
    assert np.all((w.rh_pct >= 0) & (w.rh_pct <= 100))
    assert -40 < w.drybulb_c.min() < w.drybulb_c.max() < 50


@pytest.mark.skipif(not LEESBURG_EPW.exists(), reason="shared EPW data not present")
def test_epw_reader_matches_the_shipped_compact_copy() -> None:
    full = read_epw(LEESBURG_EPW)
    compact = load_climate("leesburg")
    np.testing.assert_allclose(full.drybulb_c, compact.drybulb_c, atol=0.051)
    np.testing.assert_allclose(full.wetbulb_c, compact.wetbulb_c, atol=0.01)
    assert np.isclose(full.wetbulb_c, full.drybulb_c, atol=0.05)[full.rh_pct >= 99.5].all()  # saturated air


def test_epw_reads_gzip_and_interpolates_missing_codes(tmp_path: Path) -> None:
    rows = [_row("10.0"), _row("99.9"), _row("14.0")] + [_row() for _ in range(30)]
    path = tmp_path / "site.epw.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join([f"H{i}" for i in range(8)] + rows) + "\n")
    w = load_climate(path)
    assert w.drybulb_c[1] == pytest.approx(12.0)  # 99.9 is EPW's "missing"


def test_epw_errors_name_file_line_and_field(tmp_path: Path) -> None:
    bad = _epw(tmp_path / "bad.epw", [_row() for _ in range(5)] + [_row(drybulb="warm")] + [_row() for _ in range(30)])
    with pytest.raises(DriverError, match=r"bad\.epw:14: dry-bulb temperature \(column 7\) is not a number: 'warm'"):
        read_epw(bad)
    short = _epw(tmp_path / "short.epw", ["1,2,3"])
    with pytest.raises(DriverError, match=r"short\.epw:9: expected at least 10"):
        read_epw(short)
    with pytest.raises(DriverError, match="no such file"):
        load_climate(tmp_path / "missing.epw")
    with pytest.raises(DriverError, match="not a shipped climate"):
        load_climate("atlantis")


def test_workload_trace_and_errors(tmp_path: Path) -> None:
    util = load_workload()
    assert len(util) > 8000 and 0.0 <= util.min() < util.max() <= 1.0
    pct = tmp_path / "pct.csv"
    pct.write_text("hour,cpu_load\n" + "".join(f"{i},{40 + i % 7}\n" for i in range(48)))
    with pytest.raises(DriverError, match=r"pct\.csv:2: cpu_load = .*not a utilisation in \[0, 1\] \(fractions, not percent\)"):
        read_workload(pct)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n" + "".join("0.1,0.2\n" for _ in range(48)))
    with pytest.raises(DriverError, match="no column 'cpu_load'"):
        read_workload(other)
    single = tmp_path / "single.csv"
    single.write_text("util\n" + "".join(f"{0.5 + 0.01 * (i % 3)}\n" for i in range(48)))
    assert read_workload(single)[1] == pytest.approx(0.51)


def test_hourly_series_interpolates_and_wraps_over_the_year() -> None:
    s = HourlySeries([0.0, 10.0, 20.0])
    assert s.at(0.5) == pytest.approx(5.0)
    assert s.at(2.5) == pytest.approx(10.0)  # between the last hour and the first again
    assert s.at(3.25) == pytest.approx(2.5)
    assert hours_since_new_year(datetime(2023, 1, 2, 6, tzinfo=UTC)) == 30.0
    with pytest.raises(ValueError, match="timezone-aware"):
        hours_since_new_year(datetime(2023, 1, 2))
