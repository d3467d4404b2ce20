"""Monthly partitions of ``readings`` on PostgreSQL, and retention on both backends.

On PostgreSQL (from migration 0002) ``readings`` is range-partitioned on ``ts_s`` [s]:
one partition per UTC calendar month, ``readings_pYYYYMM``, plus ``readings_default``
as a safety net for rows whose month has no partition. The writer
(`db.bulk.insert_readings`) calls `ensure_partitions` first, so a new month's partition
exists before its first row arrives; months already seen are cached per database, so
the steady state costs no query. Partitions are made with CREATE TABLE + ATTACH
PARTITION (the weaker lock), moving any rows the default partition already holds for
that month, under one advisory lock so concurrent writers do not race.

A month created inside the caller's transaction is cached only once a later call finds
it committed in the catalog: a rolled-back write cannot leave a stale cache entry.

Retention drops whole months on PostgreSQL (cheap, no bloat: data is kept at least
``keep_days`` and goes when its whole month is older) and deletes rows on SQLite.

DDL cannot take bound parameters; every identifier and bound here is built from
integers (year, month, epoch seconds), never from input text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

Month = tuple[int, int]  # (year, month 1..12), UTC
IntArray = npt.NDArray[np.int64]

DEFAULT_PARTITION = "readings_default"
_LOCK_KEY = 0x636F6F6C  # advisory lock id for partition DDL ("cool")
_NAME = re.compile(r"^readings_p(\d{4})(\d{2})$")

_known: dict[str, set[Month]] = {}
_known_lock = threading.Lock()


@dataclass(frozen=True)
class Partition:
    """One partition of ``readings``: [lo_s, hi_s) epoch seconds, None bounds for the default."""

    name: str
    lo_s: int | None
    hi_s: int | None


@dataclass(frozen=True)
class RetentionReport:
    """What `apply_retention` removed; ``cutoff`` is now - keep_days (UTC)."""

    cutoff: datetime
    partitions_dropped: tuple[str, ...]
    rows_deleted: int


def month_bounds(month: Month) -> tuple[int, int]:
    """[start, end) of a UTC month in epoch seconds."""
    year, mon = month
    lo = datetime(year, mon, 1, tzinfo=UTC)
    hi = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    return int(lo.timestamp()), int(hi.timestamp())


def partition_name(month: Month) -> str:
    return f"readings_p{month[0]:04d}{month[1]:02d}"


def months_of(ts_s: IntArray) -> list[Month]:
    """The distinct UTC months that epoch-second timestamps fall in, sorted."""
    if len(ts_s) == 0:
        return []
    lo, hi = int(ts_s.min()), int(ts_s.max())
    if _month(lo) == _month(hi):
        return [_month(lo)]
    codes = np.unique(np.asarray(ts_s, dtype="datetime64[s]").astype("datetime64[M]").astype(np.int64))
    return [(1970 + int(c) // 12, int(c) % 12 + 1) for c in codes]


def months_between(start: datetime, end: datetime) -> list[Month]:
    """Every UTC month from the one holding ``start`` to the one holding ``end``."""
    out: list[Month] = []
    year, mon = start.astimezone(UTC).year, start.astimezone(UTC).month
    last = (end.astimezone(UTC).year, end.astimezone(UTC).month)
    while (year, mon) <= last:
        out.append((year, mon))
        year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return out


def _month(ts_s: int) -> Month:
    when = datetime.fromtimestamp(ts_s, UTC)
    return when.year, when.month


def is_partition_name(name: str | None) -> bool:
    """Whether a table name is one of readings' partitions (not part of ``db.schema``)."""
    return name == DEFAULT_PARTITION or (name is not None and _NAME.match(name) is not None)


def alembic_include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic ``include_name`` hook: autogenerate compares ``readings``, not its partitions."""
    return not (type_ == "table" and is_partition_name(name))


def _db_key(conn: sa.Connection) -> str:
    url = conn.engine.url
    return f"{url.host}:{url.port}/{url.database}"


def is_partitioned(conn: sa.Connection) -> bool:
    """Whether ``readings`` is a partitioned table (PostgreSQL at revision 0002 or later)."""
    if conn.dialect.name != "postgresql":
        return False
    sql = "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('readings'))"
    return bool(conn.exec_driver_sql(sql).scalar())


def list_partitions(conn: sa.Connection) -> list[Partition]:
    """The partitions of ``readings`` with their bounds, oldest first, the default last."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('readings')"
    ).all()
    out: list[Partition] = []
    for name, bound in rows:
        match = re.search(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)", str(bound))
        out.append(Partition(str(name), int(match.group(1)), int(match.group(2))) if match
                   else Partition(str(name), None, None))
    return sorted(out, key=lambda p: (p.lo_s is None, p.lo_s or 0))


def _existing_months(conn: sa.Connection) -> set[Month]:
    found = set()
    for part in list_partitions(conn):
        match = _NAME.match(part.name)
        if match:
            found.add((int(match.group(1)), int(match.group(2))))
    return found


def create_month(conn: sa.Connection, month: Month) -> str:
    """Create and attach one month's partition, moving its rows out of the default one."""
    name = partition_name(month)
    lo, hi = month_bounds(month)
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS)")
    if conn.exec_driver_sql(f"SELECT to_regclass('{DEFAULT_PARTITION}') IS NOT NULL").scalar():
        conn.exec_driver_sql(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE ts_s >= %(lo)s AND ts_s < %(hi)s "
            f"RETURNING point_id, ts_s, value) INSERT INTO {name} SELECT point_id, ts_s, value FROM moved",
            {"lo": lo, "hi": hi},
        )
    conn.exec_driver_sql(f"ALTER TABLE readings ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
    return name


def ensure_months(conn: sa.Connection, months: Iterable[Month]) -> list[str]:
    """Make sure each month has its partition (PostgreSQL, partitioned); returns those created.

    A no-op on SQLite and on an unpartitioned table; cached months cost nothing.
    """
    if conn.dialect.name != "postgresql":
        return []
    key = _db_key(conn)
    with _known_lock:
        known = set(_known.get(key, ()))
    missing = sorted(set(months) - known)
    if not missing or not is_partitioned(conn):
        return []
    existing = _existing_months(conn)
    _remember(key, existing)
    if set(missing) <= existing:
        return []
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": _LOCK_KEY})
    existing = _existing_months(conn)  # another writer may have made them while we waited
    return [create_month(conn, m) for m in missing if m not in existing]


def ensure_partitions(conn: sa.Connection, ts_s: IntArray) -> list[str]:
    """`ensure_months` for the months that these timestamps [s] fall in."""
    if conn.dialect.name != "postgresql" or len(ts_s) == 0:
        return []
    return ensure_months(conn, months_of(ts_s))


def _remember(key: str, months: Iterable[Month]) -> None:
    with _known_lock:
        _known.setdefault(key, set()).update(months)


def forget(conn: sa.Connection) -> None:
    """Drop this database's cached months (after partitions were dropped)."""
    with _known_lock:
        _known.pop(_db_key(conn), None)


def apply_retention(conn: sa.Connection, keep_days: int, now: datetime) -> RetentionReport:
    """Remove readings older than ``keep_days`` before ``now``: whole months on partitioned
    PostgreSQL (plus old rows in the default partition), old rows elsewhere."""
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 1:
        raise ValueError(f"keep_days must be a whole number of days >= 1, got {keep_days!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cutoff = now.astimezone(UTC) - timedelta(days=keep_days)
    cutoff_s = int(cutoff.timestamp())
    if not is_partitioned(conn):
        result = conn.execute(sa.text("DELETE FROM readings WHERE ts_s < :cutoff"), {"cutoff": cutoff_s})
        return RetentionReport(cutoff, (), max(result.rowcount, 0))
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": _LOCK_KEY})
    dropped = []
    for part in list_partitions(conn):
        if part.hi_s is not None and part.hi_s <= cutoff_s and _NAME.match(part.name):
            conn.exec_driver_sql(f"DROP TABLE {part.name}")
            dropped.append(part.name)
    result = conn.execute(sa.text(f"DELETE FROM {DEFAULT_PARTITION} WHERE ts_s < :cutoff"), {"cutoff": cutoff_s})
    forget(conn)
    return RetentionReport(cutoff, tuple(dropped), max(result.rowcount, 0))
