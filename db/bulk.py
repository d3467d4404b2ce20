"""Bulk, idempotent insertion of readings: COPY on PostgreSQL, executemany on SQLite.

Rows whose (point_id, ts_s) is already stored are skipped, never updated: the first
write wins, so re-ingesting a file changes nothing. The caller owns the transaction.

PostgreSQL: the rows are encoded with numpy into COPY's binary format (no per-row
Python). When none of the incoming keys can collide with stored rows (checked with
one indexed EXISTS query) they are copied straight into ``readings``; otherwise they
go through a temporary table and ``INSERT ... ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy import exc

from db.partitions import ensure_partitions
from db.schema import readings

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

SQLITE_CHUNK_ROWS = 50_000
COPY_CHUNK_BYTES = 4 << 20

_PG_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + np.array([0, 0], dtype=">i4").tobytes()
_PG_BINARY_TRAILER = np.array([-1], dtype=">i2").tobytes()
_PG_ROW = np.dtype(
    [("nfields", ">i2"), ("len_id", ">i4"), ("point_id", ">i4"), ("len_ts", ">i4"), ("ts_s", ">i8"),
     ("len_value", ">i4"), ("value", ">f8")]
)
_TEMP_TABLE = "coolpilot_readings_in"


def insert_readings(conn: sa.Connection, point_id: IntArray, ts_s: IntArray, value: FloatArray) -> int:
    """Insert readings whose (point_id, ts_s) is not stored yet; returns how many were inserted.

    Keys must be unique within the arrays; values must be finite.
    """
    n = len(point_id)
    if not n == len(ts_s) == len(value):
        raise ValueError("point_id, ts_s and value must have the same length")
    if n == 0:
        return 0
    order = np.lexsort((ts_s, point_id))  # primary-key order: sequential B-tree appends
    pid = np.ascontiguousarray(point_id[order], dtype=np.int64)
    ts = np.ascontiguousarray(ts_s[order], dtype=np.int64)
    val = np.ascontiguousarray(value[order], dtype=np.float64)
    if conn.dialect.name == "postgresql":
        return _insert_postgresql(conn, pid, ts, val)
    return _insert_sqlite(conn, pid, ts, val)


def _insert_sqlite(conn: sa.Connection, pid: IntArray, ts: IntArray, val: FloatArray) -> int:
    sql = "INSERT OR IGNORE INTO readings (point_id, ts_s, value) VALUES (?, ?, ?)"
    inserted = 0
    for lo in range(0, len(pid), SQLITE_CHUNK_ROWS):
        hi = lo + SQLITE_CHUNK_ROWS
        rows = list(zip(pid[lo:hi].tolist(), ts[lo:hi].tolist(), val[lo:hi].tolist(), strict=True))
        result = conn.exec_driver_sql(sql, rows)
        inserted += max(result.rowcount, 0)
    return inserted


def pg_copy_payload(pid: IntArray, ts: IntArray, val: FloatArray) -> bytes:
    """(point_id, ts_s, value) rows in PostgreSQL's binary COPY format (int4, int8, float8)."""
    if len(pid) and (pid.min() < 0 or pid.max() > np.iinfo(np.int32).max):
        raise ValueError("point_id out of int4 range")
    rows = np.empty(len(pid), dtype=_PG_ROW)
    rows["nfields"] = 3
    rows["len_id"] = 4
    rows["point_id"] = pid
    rows["len_ts"] = 8
    rows["ts_s"] = ts
    rows["len_value"] = 8
    rows["value"] = val
    return _PG_BINARY_HEADER + rows.tobytes() + _PG_BINARY_TRAILER


def _copy(conn: sa.Connection, table: str, payload: bytes) -> None:
    driver: Any = conn.connection.driver_connection
    statement = f"COPY {table} (point_id, ts_s, value) FROM STDIN (FORMAT BINARY)"  # fixed names only
    view = memoryview(payload)
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for lo in range(0, len(view), COPY_CHUNK_BYTES):
            copy.write(view[lo : lo + COPY_CHUNK_BYTES])


def _may_collide(conn: sa.Connection, pid: IntArray, ts: IntArray) -> bool:
    ids = np.unique(pid).tolist()
    query = sa.select(
        sa.exists().where(readings.c.point_id.in_(ids), readings.c.ts_s.between(int(ts.min()), int(ts.max())))
    )
    return bool(conn.execute(query).scalar())


def _insert_postgresql(conn: sa.Connection, pid: IntArray, ts: IntArray, val: FloatArray) -> int:
    import psycopg  # the 'postgres' extra; only needed on this path

    ensure_partitions(conn, ts)  # a new month's partition exists before its rows (db.partitions)
    payload = pg_copy_payload(pid, ts, val)
    try:
        if not _may_collide(conn, pid, ts):
            savepoint = conn.begin_nested()
            try:
                _copy(conn, "readings", payload)
            except psycopg.errors.UniqueViolation:
                savepoint.rollback()  # a concurrent writer got there first: merge instead
            else:
                savepoint.commit()
                return len(pid)
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {_TEMP_TABLE} "
            "(point_id integer, ts_s bigint, value double precision) ON COMMIT DROP"
        )
        conn.exec_driver_sql(f"TRUNCATE {_TEMP_TABLE}")
        _copy(conn, _TEMP_TABLE, payload)
        result = conn.exec_driver_sql(
            f"INSERT INTO readings (point_id, ts_s, value) SELECT point_id, ts_s, value FROM {_TEMP_TABLE} "
            "ON CONFLICT (point_id, ts_s) DO NOTHING"
        )
        conn.exec_driver_sql(f"DROP TABLE {_TEMP_TABLE}")
        return max(result.rowcount, 0)
    except psycopg.Error as err:  # raw driver calls: wrap so callers see one error family
        raise exc.DBAPIError("COPY readings", None, err) from err
