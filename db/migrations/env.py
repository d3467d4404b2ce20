"""Alembic environment: migrations run on a connection handed in by `db.migrate`.

Programmatic use (``coolpilot db init``) passes the connection in
``config.attributes["connection"]``. For developers writing a new revision with the
``alembic`` tool (``alembic -c db/migrations/alembic.ini revision --autogenerate -m ...``)
an engine is made from $COOLPILOT_DATABASE_URL (default: ./coolpilot.db).
"""

from __future__ import annotations

from alembic import context

from db.engine import make_engine, resolve_url
from db.partitions import alembic_include_name
from db.schema import metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables
        compare_type=True,
        include_name=alembic_include_name,  # readings' monthly partitions are not in db.schema
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(resolve_url(None))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; use `coolpilot db init`")
run_migrations_online()
