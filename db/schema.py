"""The historian schema (SQLAlchemy Core), identical on SQLite and PostgreSQL.

Design choices:

* ``readings`` is a long historian table keyed by (point_id, ts_s). ``ts_s`` is the
  timestamp as BIGINT epoch seconds UTC [s]: integer keys are compact, compare fast on
  both backends, and make re-ingest idempotent by primary key. Conversion to and from
  tz-aware datetimes happens only at the edges (ingest and query). On SQLite the table
  is WITHOUT ROWID, so the primary key *is* the storage order.
* ``readings.point_id`` refers to ``points.id`` but is deliberately not a declared
  foreign key: PostgreSQL checks a foreign key with a trigger per row, which made bulk
  COPY 3-4x slower (measured: 520k rows in 0.6-0.8 s without, 2.7-3.7 s with). The
  only writer (`db.bulk.insert_readings`, fed by `db.catalog` ids) never writes an
  unknown point, and `db.catalog.delete_site` removes a site's readings with it.
* Points are per site and tag; each carries its canonical role and unit (``db.roles``).
  Several tags may share a role over time (a renamed BMS tag); queries average them.
* Every other timestamp column is a `UtcDateTime`: timezone-aware UTC in Python on both
  backends (TIMESTAMPTZ on PostgreSQL, ISO text on SQLite).
* JSON payloads are TEXT holding JSON (portable; the controller and forecasting
  packages own their content).

Migrations in ``db/migrations`` create exactly this; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

SETPOINT_COMMAND_STATUSES: tuple[str, ...] = ("pending", "sent", "failed")
MODEL_STATUSES: tuple[str, ...] = ("candidate", "champion", "retired", "rejected")

naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=naming_convention)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every backend.

    Naive datetimes are refused on the way in (their zone is unknowable), so nothing
    is stored in local time by accident.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; pass a timezone-aware datetime")
        utc = value.astimezone(UTC)
        # SQLite stores text: keep one canonical (UTC, offset-free) form so text order is time order
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", UtcDateTime(), nullable=False, default=lambda: datetime.now(UTC))


sites = sa.Table(
    "sites",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    _created_at(),
)

points = sa.Table(
    "points",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tag", sa.String(200), nullable=False, comment="the site's own historian tag name"),
    sa.Column("role", sa.String(64), nullable=False, comment="canonical role, db.roles"),
    sa.Column("unit", sa.String(16), nullable=False, comment="unit of the role (never converted)"),
    _created_at(),
    sa.UniqueConstraint("site_id", "tag", name="uq_points_site_tag"),
    sa.Index("ix_points_site_role", "site_id", "role"),
)

readings = sa.Table(
    "readings",
    metadata,
    sa.Column("point_id", sa.Integer, primary_key=True, autoincrement=False, comment="points.id (not a declared FK)"),
    sa.Column("ts_s", sa.BigInteger, primary_key=True, autoincrement=False, comment="epoch seconds UTC [s]"),
    sa.Column("value", sa.Double, nullable=False, comment="in the unit of the point"),
    sqlite_with_rowid=False,
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    sa.Column("ts", UtcDateTime(), nullable=False, comment="control-cycle time"),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("model_version", sa.String(64), nullable=True),
    sa.Column("previous_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("new_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("details_json", sa.Text, nullable=False, server_default="{}"),
    _created_at(),
    sa.Index("ix_decisions_site_ts", "site_id", "ts"),
)

setpoint_commands = sa.Table(
    "setpoint_commands",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    sa.Column("ts", UtcDateTime(), nullable=False, comment="when the command was issued"),
    sa.Column("role", sa.String(64), nullable=False, comment="setpoint role, db.roles.SETPOINT_ROLES"),
    sa.Column("value_c", sa.Double, nullable=False, comment="[C]"),
    sa.Column("source", sa.String(32), nullable=False, comment="controller, operator, rules, simulator, ..."),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id", ondelete="SET NULL"), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    _created_at(),
    sa.Column("updated_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint(
        "status IN ('pending', 'sent', 'failed')", name="status_known"
    ),
    sa.Index("ix_setpoint_commands_site_role_ts", "site_id", "role", "ts"),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.String(64), nullable=False, unique=True),
    _created_at(),
    sa.Column("artifact_path", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="candidate"),
    sa.Column("pinned", sa.Boolean(create_constraint=False), nullable=False, server_default=sa.false()),
    sa.Column("metrics_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("meta_json", sa.Text, nullable=False, server_default="{}"),
    sa.CheckConstraint(
        "status IN ('candidate', 'champion', 'retired', 'rejected')", name="status_known"
    ),
    # at most one champion per site, enforced by the database
    sa.Index(
        "uq_models_one_champion",
        "site_id",
        unique=True,
        sqlite_where=sa.text("status = 'champion'"),
        postgresql_where=sa.text("status = 'champion'"),
    ),
)
