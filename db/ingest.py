"""Ingest sensor history: CSV files (long or wide) and frames from programmatic writers.

Formats (header on line 1; timestamps ISO 8601):

* long: ``timestamp,tag,value`` (optionally ``unit``), one reading per line;
* wide: ``timestamp,TAG1,TAG2,...``, one column per tag; a header may declare a unit
  as ``TAG [unit]``.

Timestamps with an offset (``Z``, ``+02:00``) are converted to UTC; naive ones need an
explicit IANA time zone (``--timezone``), and local times that do not exist or are
ambiguous at a DST change are errors. Timestamps are stored to the whole second
(fractions are floored). Empty cells (and ``NaN``/``NA``/``N/A``/``null``/``None``) are
gaps: skipped and counted, never stored and never filled.

A value outside its role's physical range (``db.roles``: rack inlet 99 C, IT power
1e300 kW, a negative power, infinity) rejects the file: the error counts them and lists
the first ``MAX_REPORTED`` in file order (file, line, field, value, range), with a hint
where a Celsius column's values look like Fahrenheit. The schema has no quality flag,
so there is no option to store them anyway.

Everything is validated before anything is written, then written in one transaction,
so a bad file writes nothing. Readings already stored are skipped (first write wins):
re-ingesting a file changes nothing. Two different values for the same tag and time
within one file are an error.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from db.bulk import insert_readings
from db.catalog import PointConflictError, check_site_name, ensure_points, ensure_site
from db.csvfile import IngestError, located, parse_header, read_bytes, read_table
from db.engine import translate_errors
from db.migrate import require_schema
from db.roles import ROLES
from db.tagmap import TagMap, check_unit

__all__ = ["IngestError", "IngestReport", "ingest_csv", "parse_timezone", "write_wide"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

TIME_COLUMNS = ("timestamp", "time", "ts", "datetime")
MIN_TS_S = 0  # 1970-01-01
MAX_TS_S = 7_258_118_400  # 2200-01-01
_WIDE_UNIT = re.compile(r"^(?P<tag>.*?)\s*\[(?P<unit>[^\]]*)\]$")
MAX_REPORTED = 20  # out-of-range lines listed in an error


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did. ``readings_skipped_duplicate`` counts readings already stored
    and exact repeats within the file; ``values_missing`` counts empty cells (gaps)."""

    path: str | None
    format: Literal["long", "wide", "frame"]
    site: str
    rows_read: int
    readings_in_file: int
    values_missing: int
    readings_inserted: int
    readings_skipped_duplicate: int
    points_created: int
    start: datetime | None
    end: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (timestamps as ISO 8601 UTC strings)."""
        out = asdict(self)
        for key in ("start", "end"):
            out[key] = None if out[key] is None else out[key].isoformat()
        return out


@dataclass(frozen=True)
class _Readings:
    """Validated readings of one file, before deduplication."""

    tags: list[str]  # distinct tags used, indexed by tag_idx
    roles: list[str]
    tag_idx: IntArray
    ts_s: IntArray
    value: FloatArray
    line: IntArray
    rows_read: int
    values_missing: int
    fields: list[str]  # CSV column holding each tag's values, for error messages


def parse_timezone(name: str | None) -> ZoneInfo | None:
    """An IANA zone ('Europe/Berlin', 'UTC') or None; unknown names are an `IngestError`."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise IngestError(f"unknown time zone {name!r}: use an IANA name such as 'America/New_York' or 'UTC'") from err


def _first_line(codes: IntArray, lines: IntArray, code: int) -> int:
    return int(lines[int(np.argmax(codes == code))])


def parse_timestamps(path: str, field: str, texts: pd.Series, lines: IntArray, zone: ZoneInfo | None) -> IntArray:
    """ISO 8601 strings -> epoch seconds UTC [s] (floored), each distinct string parsed once."""
    codes, uniques = pd.factorize(texts, use_na_sentinel=False)
    codes = np.asarray(codes, dtype=np.int64)
    epoch = np.zeros(len(uniques), dtype=np.int64)
    naive_pos: list[int] = []
    naive_dt: list[datetime] = []
    for i, text in enumerate(uniques):
        try:
            stamp = datetime.fromisoformat(str(text).strip())
        except ValueError:
            raise IngestError(
                located(path, _first_line(codes, lines, i), field, f"{text!r} is not an ISO 8601 timestamp")
            ) from None
        if stamp.tzinfo is None or stamp.utcoffset() is None:
            naive_pos.append(i)
            naive_dt.append(stamp)
        else:
            epoch[i] = math.floor(stamp.timestamp())
    if naive_pos:
        line = _first_line(codes, lines, naive_pos[0])
        if zone is None:
            raise IngestError(located(
                path, line, field,
                f"timestamp {uniques[naive_pos[0]]!r} has no UTC offset: give the file's time zone "
                "(--timezone, e.g. America/New_York) or write offsets such as +00:00",
            ))
        naive = pd.DatetimeIndex(naive_dt).as_unit("us")
        local = naive.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        bad = np.flatnonzero(local.isna())
        if len(bad):
            text = uniques[naive_pos[int(bad[0])]]
            kind = "does not exist" if naive[int(bad[0])].tz_localize(zone, ambiguous=True, nonexistent="NaT") is pd.NaT \
                else "is ambiguous"
            raise IngestError(located(
                path, _first_line(codes, lines, naive_pos[int(bad[0])]), field,
                f"local time {text!r} {kind} in {zone.key} (DST change); use timestamps with UTC offsets",
            ))
        epoch[np.asarray(naive_pos)] = local.asi8 // 1_000_000
    out_of_range = np.flatnonzero((epoch < MIN_TS_S) | (epoch >= MAX_TS_S))
    if len(out_of_range):
        i = int(out_of_range[0])
        raise IngestError(located(
            path, _first_line(codes, lines, i), field, f"timestamp {uniques[i]!r} is outside 1970..2200"
        ))
    return epoch[codes]


def _column(header: list[str], name: str) -> str | None:
    return next((h for h in header if h.lower() == name), None)


def _parse_long(path: str, data: bytes, header: list[str], tag_map: TagMap, zone: ZoneInfo | None) -> _Readings:
    ts_col, tag_col, value_col = header[0], _column(header, "tag"), _column(header, "value")
    unit_col = _column(header, "unit")
    assert tag_col is not None and value_col is not None
    text_cols = {ts_col, tag_col} | ({unit_col} if unit_col else set())
    table = read_table(path, data, header, text_cols)
    frame, lines = table.frame, table.lines
    ts_all = parse_timestamps(path, ts_col, frame[ts_col], lines, zone)
    codes_raw, uniques = pd.factorize(frame[tag_col], use_na_sentinel=False)
    codes = np.asarray(codes_raw, dtype=np.int64)
    tags: list[str] = []
    roles: list[str] = []
    index_of: dict[str, int] = {}
    to_tag = np.full(len(uniques), -1, dtype=np.int64)
    for i, raw in enumerate(uniques):
        tag = str(raw).strip()
        if not tag:
            raise IngestError(located(path, _first_line(codes, lines, i), tag_col, "empty tag"))
        try:
            role_name = tag_map.role_for(tag)
        except KeyError:
            raise IngestError(located(
                path, _first_line(codes, lines, i), tag_col, f"unknown tag {tag!r}: not in {tag_map.source}"
            )) from None
        if role_name is None:
            continue  # ignored by the tag map
        if tag not in index_of:
            index_of[tag] = len(tags)
            tags.append(tag)
            roles.append(role_name)
        to_tag[i] = index_of[tag]
    if unit_col:
        _check_long_units(path, unit_col, frame[unit_col], codes, uniques, to_tag, roles, lines)
    tag_idx = to_tag[codes]
    value = frame[value_col].to_numpy(dtype=np.float64)
    used = tag_idx >= 0
    present = used & ~np.isnan(value)
    return _Readings(
        tags, roles, tag_idx[present], ts_all[present], value[present], lines[present],
        rows_read=len(frame), values_missing=int((used & ~present).sum()), fields=[value_col] * len(tags),
    )


def _check_long_units(
    path: str, unit_col: str, units: pd.Series, tag_codes: IntArray, tag_uniques: Any,
    to_tag: IntArray, roles: list[str], lines: IntArray,
) -> None:
    """Every (tag, unit) pair in the file must be the role's unit (or an empty cell)."""
    unit_codes_raw, unit_uniques = pd.factorize(units, use_na_sentinel=False)
    unit_codes = np.asarray(unit_codes_raw, dtype=np.int64)
    pair = tag_codes * len(unit_uniques) + unit_codes
    distinct, first = np.unique(pair, return_index=True)
    for code, row in zip(distinct.tolist(), first.tolist(), strict=True):
        tag_code, unit_code = divmod(code, len(unit_uniques))
        unit = str(unit_uniques[unit_code]).strip()
        if not unit or to_tag[tag_code] < 0:
            continue
        problem = check_unit(roles[int(to_tag[tag_code])], unit)
        if problem:
            tag = str(tag_uniques[tag_code]).strip()
            raise IngestError(located(path, int(lines[row]), unit_col, f"tag {tag!r}: {problem}"))


def _parse_wide(path: str, data: bytes, header: list[str], tag_map: TagMap, zone: ZoneInfo | None) -> _Readings:
    ts_col = header[0]
    columns: list[str] = []
    tags: list[str] = []
    roles: list[str] = []
    for name in header[1:]:
        match = _WIDE_UNIT.match(name)
        tag, unit = (match.group("tag"), match.group("unit").strip()) if match else (name, "")
        try:
            role_name = tag_map.role_for(tag)
        except KeyError:
            raise IngestError(located(path, 1, name, f"unknown tag {tag!r}: not in {tag_map.source}")) from None
        if role_name is None:
            continue
        if tag in tags:
            raise IngestError(located(path, 1, name, f"tag {tag!r} has two columns"))
        problem = check_unit(role_name, unit) if unit else None
        if problem:
            raise IngestError(located(path, 1, name, f"tag {tag!r}: {problem}"))
        columns.append(name)
        tags.append(tag)
        roles.append(role_name)
    table = read_table(path, data, header, {ts_col})
    frame, lines = table.frame, table.lines
    ts_rows = parse_timestamps(path, ts_col, frame[ts_col], lines, zone)
    values = frame[columns].to_numpy(dtype=np.float64) if columns else np.empty((len(frame), 0))
    present = ~np.isnan(values)
    row_idx, col_idx = np.nonzero(present)
    return _Readings(
        tags, roles, col_idx.astype(np.int64), ts_rows[row_idx], values[row_idx, col_idx], lines[row_idx],
        rows_read=len(frame), values_missing=int(values.size - present.sum()), fields=columns,
    )


def _dedupe(path: str, r: _Readings) -> tuple[IntArray, IntArray, FloatArray, int]:
    """Drop exact repeats of (tag, time); conflicting values for one (tag, time) are an error."""
    order = np.lexsort((r.line, r.ts_s, r.tag_idx))
    tag, ts, value, line = r.tag_idx[order], r.ts_s[order], r.value[order], r.line[order]
    same = (tag[1:] == tag[:-1]) & (ts[1:] == ts[:-1])
    if not same.any():
        return tag, ts, value, 0
    conflict = np.flatnonzero(same & (value[1:] != value[:-1]))
    if len(conflict):
        j = int(conflict[np.argmin(line[conflict + 1])])
        when = datetime.fromtimestamp(int(ts[j]), UTC).isoformat()
        raise IngestError(located(
            path, int(line[j + 1]), r.fields[int(tag[j])],
            f"tag {r.tags[int(tag[j])]!r} at {when} has value {float(value[j + 1])!r} here but {float(value[j])!r} "
            f"on line {int(line[j])}",
        ))
    keep = np.concatenate(([True], ~same))
    return tag[keep], ts[keep], value[keep], int(same.sum())


def _fahrenheit_fields(r: _Readings, lo: FloatArray, hi: FloatArray, bad: npt.NDArray[np.bool_]) -> set[int]:
    """Celsius tags with a bad value whose every value, read as Fahrenheit, is in the role's range."""
    as_c = (r.value - 32.0) / 1.8
    fits = (as_c >= lo) & (as_c <= hi)
    out = set()
    for tag in np.unique(r.tag_idx[bad]).tolist():
        mine = r.tag_idx == tag
        if ROLES[r.roles[tag]].unit == "C" and bool(fits[mine].all()):
            out.add(int(tag))
    return out


def _check_ranges(path: str, r: _Readings) -> None:
    """Refuse values outside their role's physical range: count them and list the first ``MAX_REPORTED``."""
    if not len(r.value):
        return
    lo = np.array([ROLES[x].physical_min for x in r.roles])[r.tag_idx]
    hi = np.array([ROLES[x].physical_max for x in r.roles])[r.tag_idx]
    bad = ~((r.value >= lo) & (r.value <= hi))  # infinities fail too
    if not bad.any():
        return
    fahrenheit = _fahrenheit_fields(r, lo, hi, bad)
    where = np.flatnonzero(bad)
    where = where[np.lexsort((r.tag_idx[where], r.line[where]))]  # file order: line, then column
    lines = []
    for i in where[:MAX_REPORTED].tolist():
        tag = int(r.tag_idx[i])
        role = ROLES[r.roles[tag]]
        hint = " (looks like Fahrenheit? the role is in C)" if tag in fahrenheit else ""
        named = "" if r.fields[tag].startswith(r.tags[tag]) else f"tag {r.tags[tag]!r}: "
        lines.append("  " + located(path, int(r.line[i]), r.fields[tag], (
            f"{named}{float(r.value[i])!r} is outside {role.name}'s physical range "
            f"[{role.physical_min:g}, {role.physical_max:g}] {role.unit}{hint}")))
    first = int(r.tag_idx[where[0]])
    more = len(where) - len(lines)
    raise IngestError("\n".join([
        located(path, int(r.line[where[0]]), r.fields[first],
                f"{len(where)} value(s) in the file are outside their role's physical range (db/roles.py), the "
                f"first here; nothing was stored (fix or blank them: an empty cell is a gap):"),
        *lines,
        *([f"  ... and {more} more"] if more else []),
    ]))


def _store(
    conn: sa.Connection, site: str, tag_roles: dict[str, str], tags: list[str],
    tag_idx: IntArray, ts_s: IntArray, value: FloatArray,
) -> tuple[int, int]:
    sid = ensure_site(conn, site)
    ids, created = ensure_points(conn, sid, tag_roles)
    point_of = np.array([ids[t] for t in tags], dtype=np.int64)
    inserted = insert_readings(conn, point_of[tag_idx], ts_s, value) if len(tag_idx) else 0
    return inserted, created


def _span(ts_s: IntArray) -> tuple[datetime | None, datetime | None]:
    if not len(ts_s):
        return None, None
    return datetime.fromtimestamp(int(ts_s.min()), UTC), datetime.fromtimestamp(int(ts_s.max()), UTC)


@translate_errors
def ingest_csv(
    engine: sa.Engine,
    path: str | Path,
    tag_map: TagMap | None = None,
    timezone: str | None = None,
    site: str = "default",
) -> IngestReport:
    """Validate a long or wide CSV file completely, then load it in one transaction.

    Raises `IngestError` naming file, line and field for bad input (nothing is written),
    `db.engine.DatabaseError` for database problems.
    """
    tag_map = tag_map if tag_map is not None else TagMap.identity()
    zone = parse_timezone(timezone)
    try:
        check_site_name(site)
    except ValueError as err:
        raise IngestError(str(err)) from err
    require_schema(engine)
    name = str(path)
    data = read_bytes(path)
    header = parse_header(name, data)
    if header[0].lower() not in TIME_COLUMNS:
        raise IngestError(located(name, 1, header[0], f"first column must be the timestamp ({'/'.join(TIME_COLUMNS)})"))
    if len(header) < 2:
        raise IngestError(located(name, 1, None, "need a timestamp column and at least one more column"))
    rest = sorted(h.lower() for h in header[1:])  # a list: 'value' and 'VALUE' must not collapse into one
    fmt: Literal["long", "wide"] = "long" if rest in (["tag", "value"], ["tag", "unit", "value"]) else "wide"
    if fmt == "wide" and {"tag", "value"} <= set(rest):
        raise IngestError(located(name, 1, None, "long format is timestamp,tag,value[,unit] with nothing else"))
    parsed = (_parse_long if fmt == "long" else _parse_wide)(name, data, header, tag_map, zone)
    _check_ranges(name, parsed)
    tag_idx, ts_s, value, _ = _dedupe(name, parsed)
    tag_roles = dict(zip(parsed.tags, parsed.roles, strict=True))
    try:
        with engine.begin() as conn:
            inserted, created = _store(conn, site, tag_roles, parsed.tags, tag_idx, ts_s, value)
    except PointConflictError as err:
        raise IngestError(f"{name}: {err} (tag map: {tag_map.source})") from err
    start, end = _span(ts_s)
    return IngestReport(
        path=name, format=fmt, site=site, rows_read=parsed.rows_read, readings_in_file=len(parsed.ts_s),
        values_missing=parsed.values_missing, readings_inserted=inserted,
        readings_skipped_duplicate=len(parsed.ts_s) - inserted, points_created=created, start=start, end=end,
    )


@translate_errors
def write_wide(engine: sa.Engine, frame: pd.DataFrame, site: str = "default") -> int:
    """Write a wide frame (tz-aware index, role-name columns) as readings; returns rows inserted.

    NaN cells are skipped (a gap stays a gap); points are created with tag = role name;
    rows already stored are skipped, so re-writing the same rows inserts nothing.
    """
    check_site_name(site)
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError("frame index must be a timezone-aware DatetimeIndex (UTC)")
    unknown = [str(c) for c in frame.columns if c not in ROLES]
    if unknown:
        raise ValueError(f"frame columns {unknown} are not roles; known roles: {', '.join(ROLES)}")
    if index.has_duplicates:
        raise ValueError(f"frame index has duplicate timestamps, first {index[index.duplicated()][0]}")
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"frame values must be numeric: {err}") from err
    if np.isinf(values).any():
        raise ValueError("frame holds infinite values; use NaN for a missing reading")
    ts_rows = index.tz_convert(UTC).as_unit("us").asi8 // 1_000_000
    if len(np.unique(ts_rows)) != len(ts_rows):
        raise ValueError("frame index has timestamps within the same second; readings are stored per second")
    row_idx, col_idx = np.nonzero(~np.isnan(values))
    roles = [str(c) for c in frame.columns]
    with engine.begin() as conn:
        inserted, _ = _store(
            conn, site, {r: r for r in roles}, roles, col_idx.astype(np.int64),
            ts_rows[row_idx].astype(np.int64), values[row_idx, col_idx],
        )
    return inserted
