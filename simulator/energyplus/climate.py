"""Weather for the EnergyPlus plant: the shipped EPW years by climate name, or a user's EPW.

The four shipped EPWs (gzipped in ``weather/``) are the same TMYx years the digital
twin's compact climates come from, under the twin's names. EnergyPlus reads plain EPW
only, so a gzipped file is unpacked into the plant's work folder. The header's
LOCATION line gives the time zone: EnergyPlus runs in local standard time, the plant
speaks UTC.
"""

from __future__ import annotations

import gzip
import io
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SHIPPED_WEATHER: dict[str, str] = {
    "leesburg": "USA_VA_Leesburg.Exec.epw.gz",
    "dallas": "USA_TX_Dallas-Fort.Worth.epw.gz",
    "chicago": "USA_IL_Chicago.OHare.epw.gz",
    "san_jose": "USA_CA_San.Jose-Mineta.epw.gz",
}
DEFAULT_CLIMATE = "leesburg"
EPW_HEADER_LINES = 8


@dataclass(frozen=True)
class EpwHeader:
    """What the plant needs from an EPW header."""

    city: str
    latitude: float
    longitude: float
    utc_offset_h: float


def shipped_weather(name: str) -> Path:
    return Path(str(resources.files("simulator.energyplus") / "weather" / SHIPPED_WEATHER[name]))


def resolve_weather(climate: str | Path | None) -> Path:
    """A shipped climate name or an .epw / .epw.gz path; one clear error line otherwise."""
    if climate is None:
        climate = DEFAULT_CLIMATE
    if isinstance(climate, str) and climate in SHIPPED_WEATHER:
        return shipped_weather(climate)
    p = Path(climate)
    if not p.name.lower().endswith((".epw", ".epw.gz")):
        raise ValueError(f"weather {str(climate)!r}: not a shipped climate ({', '.join(SHIPPED_WEATHER)}) "
                         "nor an .epw / .epw.gz file")
    if not p.is_file():
        raise ValueError(f"weather {p}: no such file")
    return p


def _open(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="latin-1")
    return open(path, encoding="latin-1")


def read_header(path: Path) -> EpwHeader:
    """Parse and check the EPW header (LOCATION line and 8 header lines), with one clear error line."""
    try:
        with _open(path) as fh:
            head = [fh.readline() for _ in range(EPW_HEADER_LINES + 1)]
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"weather {path}: cannot read: {exc}") from None
    fields = head[0].strip().split(",")
    if fields[0].upper() != "LOCATION" or len(fields) < 10:
        raise ValueError(f"weather {path}: not an EPW file (the first line must be 'LOCATION,...' with 10 fields)")
    if not head[EPW_HEADER_LINES].strip() or len(head[EPW_HEADER_LINES].split(",")) < 20:
        raise ValueError(f"weather {path}: not an EPW file (no hourly data row after {EPW_HEADER_LINES} header lines)")
    try:
        lat, lon, tz = float(fields[6]), float(fields[7]), float(fields[8])
    except ValueError:
        raise ValueError(f"weather {path}: LOCATION latitude, longitude and time zone must be numbers") from None
    if not -12.0 <= tz <= 14.0:
        raise ValueError(f"weather {path}: LOCATION time zone {tz:g} h is not a UTC offset")
    return EpwHeader(city=fields[1], latitude=lat, longitude=lon, utc_offset_h=tz)


def with_leap_day(lines: list[str]) -> list[str]:
    """The EPW lines with 29 February added (a copy of 28 February) and 'leap year observed' set.

    Typical-year files have no 29 February; in a leap year EnergyPlus would then skip
    a day of the calendar. A modeller repeats 28 February; so does this.
    """
    head, rows = lines[:EPW_HEADER_LINES], lines[EPW_HEADER_LINES:]
    if any(r.split(",", 3)[1:3] == ["2", "29"] for r in rows if r.strip()):
        return lines
    fields = head[4].rstrip("\r\n").split(",")
    if fields[0].upper().startswith("HOLIDAYS") and len(fields) > 1:
        fields[1] = "Yes"
        head = [*head[:4], ",".join(fields) + "\n", *head[5:]]
    out: list[str] = []
    feb28: list[str] = []

    def leap_copies() -> list[str]:
        return [",".join([r.split(",")[0], "2", "29", *r.split(",")[3:]]) for r in feb28]

    for row in rows:
        parts = row.split(",")
        is_feb28 = len(parts) > 3 and parts[1] == "2" and parts[2] == "28"
        if feb28 and not is_feb28:
            out += leap_copies()
            feb28 = []
        out.append(row)
        if is_feb28:
            feb28.append(row)
    out += leap_copies()
    return head + out


def materialize(path: Path, workdir: Path, *, leap_day: bool = False) -> Path:
    """A plain EPW that EnergyPlus can read: ``path`` itself, or a copy in ``workdir``.

    The copy is unpacked from .gz, and with ``leap_day`` gets a 29 February (see ``with_leap_day``).
    """
    if not path.name.lower().endswith(".gz") and not leap_day:
        return path.resolve()
    name = path.name[: -len(".gz")] if path.name.lower().endswith(".gz") else path.name
    target = workdir / name
    if not leap_day:
        with gzip.open(path, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return target
    with _open(path) as fh:
        lines = fh.readlines()
    target.write_text("".join(with_leap_day(lines)), encoding="latin-1")
    return target
