"""Alembic migrations: create, idempotent upgrade, and agreement with db.schema."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db.engine import make_engine
from db.migrate import current_revision, head_revision, require_schema, upgrade
from db.partitions import alembic_include_name
from db.schema import metadata


def test_upgrade_creates_schema_then_is_a_no_op(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    try:
        assert current_revision(engine) is None
        revision = upgrade(engine)
        assert revision == head_revision() == current_revision(engine)
        tables = set(sa.inspect(engine).get_table_names())
        assert {"sites", "points", "readings", "setpoint_commands", "decisions", "models"} <= tables
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO sites (name, created_at) VALUES ('keep-me', CURRENT_TIMESTAMP)")
        assert upgrade(engine) == revision  # second run changes nothing
        assert require_schema(engine) == revision
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM sites").scalars().all() == ["keep-me"]
    finally:
        engine.dispose()


def test_migrations_match_the_schema_module(engine: sa.Engine) -> None:
    """The migrated database and db.schema describe the same tables, columns and indexes."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": alembic_include_name}
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_readings_primary_key_makes_reinsert_impossible(engine: sa.Engine) -> None:
    pk = sa.inspect(engine).get_pk_constraint("readings")
    assert pk["constrained_columns"] == ["point_id", "ts_s"]
