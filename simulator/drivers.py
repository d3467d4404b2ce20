"""Real drivers for the plant: weather from EPW files, IT utilisation from a trace.

EPW (EnergyPlus weather): 8 header lines, then one comma-separated row an hour;
columns 6-9 (0-based) are dry-bulb [C], dew point [C], relative humidity [%] and
station pressure [Pa]. Wet-bulb follows from dry-bulb, humidity and pressure
(psychrolib, via ``db.psychro``). Shipped climates are compact CSV copies of
four EPW years (see simulator/data/README.md), read by the same code.

A typical-year file has no calendar year of its own: plant time maps onto it by hour
of the year (wrapping), and onto the utilisation trace by hours since 1 January.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from db.psychro import wetbulb_c

FloatArray = npt.NDArray[np.float64]

SHIPPED_CLIMATES: dict[str, str] = {
    "leesburg": "weather_leesburg_va.csv.gz",
    "dallas": "weather_dallas_tx.csv.gz",
    "chicago": "weather_chicago_il.csv.gz",
    "san_jose": "weather_san_jose_ca.csv.gz",
}
DEFAULT_CLIMATE = "leesburg"
SHIPPED_WORKLOAD = "alibaba_2017_cpu_hourly.csv.gz"
EPW_HEADER_LINES = 8
_EPW_FIELDS = ((6, "dry-bulb temperature", 99.9), (8, "relative humidity", 999.0), (9, "station pressure", 999999.0))
WEATHER_COLUMNS = ("drybulb_c", "rh_pct", "pressure_pa", "wetbulb_c")


class DriverError(ValueError):
    """A driver file that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class Weather:
    """Hourly weather of one year; row i is hour i after 1 January 00:00."""

    drybulb_c: FloatArray
    rh_pct: FloatArray
    pressure_pa: FloatArray
    wetbulb_c: FloatArray
    source: str

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({c: getattr(self, c) for c in WEATHER_COLUMNS})


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise DriverError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _fill_gaps(values: FloatArray, path: Path, field: str) -> FloatArray:
    bad = ~np.isfinite(values)
    if bad.mean() > 0.1:
        raise DriverError(f"{path}: {field} is missing in {int(bad.sum())} of {len(values)} rows (more than 10 %)")
    if bad.any():
        idx = np.arange(len(values))
        values = values.copy()
        values[bad] = np.interp(idx[bad], idx[~bad], values[~bad])
    return values


def _weather(drybulb: FloatArray, rh: FloatArray, pressure: FloatArray, path: Path) -> Weather:
    drybulb = _fill_gaps(drybulb, path, "dry-bulb temperature")
    rh = _fill_gaps(rh, path, "relative humidity")
    pressure = _fill_gaps(pressure, path, "station pressure")
    wet = wetbulb_c(drybulb, rh, float(np.mean(pressure)))
    return Weather(drybulb, rh, pressure, wet, str(path))


def read_epw(path: str | Path) -> Weather:
    """Read an EPW file (optionally .gz); EPW's missing-value codes are interpolated."""
    p = Path(path)
    rows: list[tuple[float, float, float]] = []
    with _open_text(p) as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno <= EPW_HEADER_LINES or not line.strip():
                continue
            fields = line.split(",")
            if len(fields) < 10:
                raise DriverError(f"{p}:{lineno}: expected at least 10 comma-separated fields, got {len(fields)}")
            values = []
            for col, name, missing in _EPW_FIELDS:
                try:
                    v = float(fields[col])
                except ValueError:
                    raise DriverError(f"{p}:{lineno}: {name} (column {col + 1}) is not a number: {fields[col]!r}") from None
                values.append(math.nan if v >= missing else v)
            rows.append((values[0], values[1], values[2]))
    if len(rows) < 24:
        raise DriverError(f"{p}: an EPW file needs hourly rows after {EPW_HEADER_LINES} header lines; found {len(rows)}")
    arr = np.array(rows, dtype=np.float64)
    return _weather(arr[:, 0], arr[:, 1], arr[:, 2], p)


def read_compact_weather(path: str | Path) -> Weather:
    """Read a compact weather CSV (columns drybulb_c, rh_pct, pressure_pa[, wetbulb_c])."""
    p = Path(path)
    if not p.is_file():
        raise DriverError(f"{p}: no such file")
    try:
        frame = pd.read_csv(p, comment="#")
    except (ValueError, OSError) as exc:
        raise DriverError(f"{p}: cannot read as CSV: {exc}") from None
    missing = [c for c in WEATHER_COLUMNS[:3] if c not in frame.columns]
    if missing:
        raise DriverError(f"{p}: missing column(s) {', '.join(missing)}; a weather CSV needs {', '.join(WEATHER_COLUMNS[:3])}")
    cols = {}
    for c in frame.columns:
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = values.isna() & frame[c].notna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise DriverError(f"{p}:{line}: column {c} is not a number: {frame[c][bad].iloc[0]!r}")
        cols[c] = values.to_numpy(dtype=np.float64)
    if len(frame) < 24:
        raise DriverError(f"{p}: needs at least 24 hourly rows, found {len(frame)}")
    if "wetbulb_c" in cols and np.isfinite(cols["wetbulb_c"]).all():
        return Weather(cols["drybulb_c"], cols["rh_pct"], cols["pressure_pa"], cols["wetbulb_c"], str(p))
    return _weather(cols["drybulb_c"], cols["rh_pct"], cols["pressure_pa"], p)


def _data_file(name: str) -> Path:
    return Path(str(resources.files("simulator") / "data" / name))


def load_climate(climate: str | Path | None = None) -> Weather:
    """A shipped climate by name (``leesburg``, ``dallas``, ``chicago``, ``san_jose``), or a file.

    Files ending in .epw / .epw.gz are read as EPW, .csv / .csv.gz as compact weather.
    """
    if climate is None:
        climate = DEFAULT_CLIMATE
    if isinstance(climate, str) and climate in SHIPPED_CLIMATES:
        return read_compact_weather(_data_file(SHIPPED_CLIMATES[climate]))
    p = Path(climate)
    name = p.name.lower()
    if name.endswith((".epw", ".epw.gz")):
        return read_epw(p)
    if name.endswith((".csv", ".csv.gz")):
        return read_compact_weather(p)
    raise DriverError(
        f"climate {str(climate)!r}: not a shipped climate ({', '.join(SHIPPED_CLIMATES)}) "
        "nor an .epw / .csv file"
    )


def read_workload(path: str | Path, column: str = "cpu_load") -> FloatArray:
    """Hourly utilisation [0, 1] from a CSV with column ``column`` (or a single data column)."""
    p = Path(path)
    if not p.is_file():
        raise DriverError(f"{p}: no such file")
    try:
        frame = pd.read_csv(p)
    except (ValueError, OSError) as exc:
        raise DriverError(f"{p}: cannot read as CSV: {exc}") from None
    data_cols = [c for c in frame.columns if not str(c).startswith("Unnamed")]
    if column in frame.columns:
        col = column
    elif len(data_cols) == 1:
        col = data_cols[0]
    else:
        raise DriverError(f"{p}: no column {column!r}; columns are {', '.join(map(str, frame.columns))}")
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DriverError(
            f"{p}:{i + 2}: {col} = {frame[col].iloc[i]!r} is not a utilisation in [0, 1] "
            "(fractions, not percent)"
        )
    if len(values) < 24:
        raise DriverError(f"{p}: needs at least 24 hourly rows, found {len(values)}")
    return values


def load_workload(workload: str | Path | None = None) -> FloatArray:
    """The shipped Alibaba 2017 trace, or a workload CSV."""
    return read_workload(_data_file(SHIPPED_WORKLOAD) if workload is None else workload)


def hours_since_new_year(when: datetime) -> float:
    """Hours since 1 January 00:00 UTC of ``when``'s year (index into hourly driver data)."""
    if when.tzinfo is None:
        raise ValueError("driver time must be timezone-aware")
    when = when.astimezone(UTC)
    return (when - datetime(when.year, 1, 1, tzinfo=UTC)).total_seconds() / 3600.0


class HourlySeries:
    """Linear interpolation of an hourly, wrapping series at any hour (fast on floats)."""

    def __init__(self, values: Sequence[float] | FloatArray) -> None:
        self._v: list[float] = [float(v) for v in values]
        self._n = len(self._v)

    def at(self, hour: float) -> float:
        i = math.floor(hour)
        f = hour - i
        v = self._v
        a = v[i % self._n]
        return a + f * (v[(i + 1) % self._n] - a)

    def window(self, start_hour: float, hours: int) -> FloatArray:
        """Values at start_hour, start_hour + 1, ... (for summaries and tests)."""
        return np.array([self.at(start_hour + h) for h in range(hours)], dtype=np.float64)
