"""PostgreSQL: readings range-partitioned by month on ts_s; SQLite: nothing changes.

The primary key (point_id, ts_s) stays: it holds the partition key, so ingest's
ON CONFLICT and the per-point window read (point_id = ? AND ts_s in a range, after the
(site_id, role) lookup in points) use it in each partition. Existing rows move into
monthly partitions; the current and next month are made up front, and a DEFAULT
partition catches rows for any month without one (see db/partitions.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from alembic import op

from db.partitions import DEFAULT_PARTITION, create_month, months_between

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMMENTS = {
    "point_id": "points.id (not a declared FK)",
    "ts_s": "epoch seconds UTC [s]",
    "value": "in the unit of the point",
}


def _create_readings(partitioned: bool) -> None:
    op.execute(
        "CREATE TABLE readings (point_id integer NOT NULL, ts_s bigint NOT NULL, value double precision NOT NULL, "
        "CONSTRAINT pk_readings PRIMARY KEY (point_id, ts_s))" + (" PARTITION BY RANGE (ts_s)" if partitioned else "")
    )
    for column, text in _COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN readings.{column} IS '{text}'")


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE readings RENAME TO readings_0001")
    op.execute("ALTER TABLE readings_0001 RENAME CONSTRAINT pk_readings TO pk_readings_0001")
    _create_readings(partitioned=True)
    op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF readings DEFAULT")
    span = conn.exec_driver_sql("SELECT min(ts_s), max(ts_s) FROM readings_0001").one()
    now = datetime.now(UTC)
    months = set(months_between(now, now + timedelta(days=31)))
    if span[0] is not None:
        months |= set(months_between(datetime.fromtimestamp(span[0], UTC), datetime.fromtimestamp(span[1], UTC)))
    for month in sorted(months):
        create_month(conn, month)
    op.execute("INSERT INTO readings (point_id, ts_s, value) SELECT point_id, ts_s, value FROM readings_0001")
    op.execute("DROP TABLE readings_0001")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE readings RENAME TO readings_0002")
    op.execute("ALTER TABLE readings_0002 RENAME CONSTRAINT pk_readings TO pk_readings_0002")
    _create_readings(partitioned=False)
    op.execute("INSERT INTO readings (point_id, ts_s, value) SELECT point_id, ts_s, value FROM readings_0002")
    op.execute("DROP TABLE readings_0002")  # drops every partition with it
