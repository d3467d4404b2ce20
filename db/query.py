"""Read history as a wide frame on a regular time grid, with gaps left as NaN and counted.

Bucketing: the row labelled ``t`` holds the mean of the readings with
``t - freq < ts <= t`` (right-closed, right-labelled, like pandas
``resample(closed="right", label="right")``). So a row never contains data from after
its own timestamp, which keeps forecasts and control decisions causal; readings that
sit exactly on the grid land on their own row. Several points sharing a role are
averaged the same way. Empty buckets stay NaN: nothing is interpolated or carried
forward here; callers decide what a gap means.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from db.catalog import points_for_roles, site_id
from db.engine import translate_errors
from db.grid import GRID_FREQ
from db.roles import ROLES
from db.schema import points, readings, sites

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

US_PER_S = 1_000_000


@dataclass(frozen=True)
class WideFrame:
    """``frame``: UTC index on the grid [start, end), one float column per role, NaN = gap.
    ``gaps``: number of missing cells per role."""

    frame: pd.DataFrame
    gaps: dict[str, int]

    @property
    def total_gaps(self) -> int:
        """Missing cells over all roles."""
        return sum(self.gaps.values())


@dataclass(frozen=True)
class Grid:
    """A regular time grid: ``n`` rows from ``start_us`` every ``step_us`` [µs since epoch]."""

    start_us: int
    step_us: int
    n: int

    def index(self) -> pd.DatetimeIndex:
        """The grid as a tz-aware UTC DatetimeIndex named ``ts``."""
        start = pd.Timestamp(self.start_us, unit="us", tz=UTC)
        return pd.date_range(start, periods=self.n, freq=pd.Timedelta(microseconds=self.step_us), name="ts")

    def window_s(self) -> tuple[int, int]:
        """Readings that can land on the grid have ``lo < ts_s <= hi`` [s]."""
        lo_us = self.start_us - self.step_us
        hi_us = self.start_us + (self.n - 1) * self.step_us
        return lo_us // US_PER_S, hi_us // US_PER_S


def _aware_utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} {value.isoformat()} is naive; pass a timezone-aware datetime")
    return value.astimezone(UTC)


def freq_us(freq: str) -> int:
    """A pandas frequency string ('5min', '1h', '30s') as a positive step in µs."""
    try:
        step = pd.Timedelta(freq)
    except (ValueError, TypeError) as err:
        raise ValueError(f"invalid frequency {freq!r}: use e.g. '5min', '1h', '30s'") from err
    step_us = int(step / pd.Timedelta(microseconds=1))
    if step_us <= 0:
        raise ValueError(f"frequency {freq!r} must be positive")
    return step_us


def make_grid(start: datetime, end: datetime, freq: str) -> Grid:
    """The grid [start, end) every ``freq``; start and end must be timezone-aware."""
    start_utc, end_utc = _aware_utc(start, "start"), _aware_utc(end, "end")
    step_us = freq_us(freq)
    start_us = int(pd.Timestamp(start_utc).as_unit("us").asm8.astype(np.int64))
    end_us = int(pd.Timestamp(end_utc).as_unit("us").asm8.astype(np.int64))
    if end_us < start_us:
        raise ValueError(f"end {end_utc.isoformat()} is before start {start_utc.isoformat()}")
    return Grid(start_us, step_us, -(-(end_us - start_us) // step_us))


def check_roles(roles: Sequence[str]) -> list[str]:
    """Roles as a list; unknown or repeated roles are a `ValueError` naming them."""
    if isinstance(roles, str):
        raise TypeError("roles must be a sequence of role names, not a single string")
    out = list(roles)
    unknown = [r for r in out if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; known roles: {', '.join(ROLES)}")
    if len(set(out)) != len(out):
        raise ValueError(f"roles repeated in {out}")
    return out


def bucket_to_grid(col: IntArray, ts_s: IntArray, value: FloatArray, grid: Grid, n_cols: int) -> FloatArray:
    """Mean of the readings per (grid row, column), NaN where none: shape (grid.n, n_cols).

    Pure function; ``col`` indexes the output column of each reading. Readings outside
    the grid's window are ignored.
    """
    offset = ts_s.astype(np.int64) * US_PER_S - grid.start_us
    row = -(-offset // grid.step_us)  # ceil: (t - step, t] lands on t
    keep = (row >= 0) & (row < grid.n) & (col >= 0) & ~np.isnan(value)
    flat = col[keep] * grid.n + row[keep]
    size = n_cols * grid.n
    sums = np.bincount(flat, weights=value[keep], minlength=size)
    counts = np.bincount(flat, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means.reshape(n_cols, grid.n).T


def to_wide_frame(cells: FloatArray, grid: Grid, roles: list[str]) -> WideFrame:
    """Wrap bucketed cells as a `WideFrame` (index, columns, gap counts)."""
    frame = pd.DataFrame(cells, index=grid.index(), columns=pd.Index(roles), dtype=np.float64)
    missing = np.isnan(cells).sum(axis=0) if len(roles) else np.zeros(0)
    return WideFrame(frame, {role: int(n) for role, n in zip(roles, missing.tolist(), strict=True)})


def _window_select(n_points: int) -> sa.Select[Any]:
    """(point_id, ts_s, value) of every reading of points ``:p_0`` .. ``:p_{n-1}`` with
    ``:lo_s < ts_s <= :hi_s``: one statement for all of a window's points."""
    ids = [sa.bindparam(f"p_{i}", type_=sa.Integer) for i in range(n_points)]
    return sa.select(readings.c.point_id, readings.c.ts_s, readings.c.value).where(
        readings.c.point_id.in_(ids),
        readings.c.ts_s > sa.bindparam("lo_s", type_=sa.BigInteger),
        readings.c.ts_s <= sa.bindparam("hi_s", type_=sa.BigInteger),
    )


@functools.lru_cache(maxsize=256)
def _window_sql(dialect: sa.Dialect, n_points: int) -> tuple[str, tuple[str, ...] | None]:
    """The statement's SQL for one dialect and its positional parameter order (None: named).

    Compiled once per shape: compiling costs a few ms, as much as the read on SQLite.
    """
    compiled = _window_select(n_points).compile(dialect=dialect)
    order = compiled.positiontup
    return str(compiled), None if order is None else tuple(order)


def _fetch_window(
    conn: sa.Connection, by_point: dict[int, int], lo_s: int, hi_s: int
) -> tuple[IntArray, IntArray, FloatArray]:
    """(column, ts_s, value) arrays of the window's readings; ``by_point``: {point_id: column}.

    One query for all points, run on the driver's cursor with bound parameters:
    building SQLAlchemy Row objects for half a million readings costs more than the query.
    """
    point_ids = sorted(by_point)
    sql, order = _window_sql(conn.dialect, len(point_ids))
    params: dict[str, Any] = {"lo_s": lo_s, "hi_s": hi_s} | {f"p_{i}": pid for i, pid in enumerate(point_ids)}
    bound = params if order is None else tuple(params[name] for name in order)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, bound)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    triples = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=3 * len(rows)).reshape(-1, 3)
    slot = np.searchsorted(np.asarray(point_ids, dtype=np.int64), triples[:, 0].astype(np.int64))
    cols = np.asarray([by_point[p] for p in point_ids], dtype=np.int64)[slot]
    return cols, triples[:, 1].astype(np.int64), np.ascontiguousarray(triples[:, 2])


@translate_errors
def read_wide(
    engine: sa.Engine,
    roles: Sequence[str],
    start: datetime,
    end: datetime,
    freq: str = GRID_FREQ,
    site: str = "default",
) -> WideFrame:
    """Roles of a site over [start, end) on a regular grid; see the module doc for bucketing.

    The site's points for these roles, then one query for all their readings, bucketed
    in numpy. An unknown site or a role without points yields all-NaN columns (counted
    as gaps).
    """
    role_list = check_roles(roles)
    grid = make_grid(start, end, freq)
    cells = np.full((grid.n, len(role_list)), np.nan)
    if grid.n and role_list:
        with engine.connect() as conn:
            sid = site_id(conn, site)
            roles_of = points_for_roles(conn, sid, role_list) if sid is not None else {}
            if roles_of:
                by_point = {point: role_list.index(role) for point, role in roles_of.items()}
                col, ts_s, value = _fetch_window(conn, by_point, *grid.window_s())
                cells = bucket_to_grid(col, ts_s, value, grid, len(role_list))
    return to_wide_frame(cells, grid, role_list)


def _site_filter(site: str) -> sa.ColumnElement[bool]:
    return points.c.site_id == sa.select(sites.c.id).where(sites.c.name == site).scalar_subquery()


def _extreme_ts(conn: sa.Connection, site: str, fn: Any) -> int | None:
    """min/max ts_s over a site's points, one index probe per point (fast on both backends)."""
    per_point = (
        sa.select(fn(readings.c.ts_s)).where(readings.c.point_id == points.c.id).scalar_subquery()
    )
    value = conn.execute(sa.select(fn(per_point)).where(_site_filter(site))).scalar()
    return None if value is None else int(value)


@translate_errors
def latest_timestamp(engine: sa.Engine, site: str = "default") -> datetime | None:
    """Time of the newest reading of a site (UTC), or None when it has none."""
    with engine.connect() as conn:
        value = _extreme_ts(conn, site, sa.func.max)
    return None if value is None else datetime.fromtimestamp(value, UTC)


@translate_errors
def time_span(engine: sa.Engine, site: str = "default") -> tuple[datetime, datetime] | None:
    """(oldest, newest) reading times of a site (UTC), or None when it has none."""
    with engine.connect() as conn:
        lo = _extreme_ts(conn, site, sa.func.min)
        hi = _extreme_ts(conn, site, sa.func.max)
    if lo is None or hi is None:
        return None
    return datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)


@translate_errors
def site_stats(engine: sa.Engine) -> list[dict[str, Any]]:
    """Per site: name, points, readings, first and last reading time (None when empty)."""
    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        names = conn.execute(sa.select(sites.c.id, sites.c.name).order_by(sites.c.name)).all()
        for sid, name in names:
            n_points = conn.execute(
                sa.select(sa.func.count()).select_from(points).where(points.c.site_id == sid)
            ).scalar_one()
            n_readings = conn.execute(
                sa.select(sa.func.count()).select_from(readings.join(points, readings.c.point_id == points.c.id)).where(points.c.site_id == sid)
            ).scalar_one()
            lo = _extreme_ts(conn, name, sa.func.min)
            hi = _extreme_ts(conn, name, sa.func.max)
            out.append({
                "site": name,
                "points": int(n_points),
                "readings": int(n_readings),
                "start": None if lo is None else datetime.fromtimestamp(lo, UTC),
                "end": None if hi is None else datetime.fromtimestamp(hi, UTC),
            })
    return out
