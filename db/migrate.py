"""Run the Alembic migrations that ship inside the package (``db/migrations``).

`upgrade` is what ``coolpilot db init`` does: it creates the schema on an empty
database and brings an older one to the current revision; on a current one it is a
no-op. `require_schema` is the guard that commands reading or writing data use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from db.engine import DatabaseError, db_errors, redact_url, sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


@contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Alembic logs plugin setup and context details at INFO on every use; show them
    only when the application logs at DEBUG (``coolpilot -v``). Imports of alembic
    happen inside this context for the same reason."""
    logger = logging.getLogger("alembic")
    previous = logger.level
    if previous == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest revision shipped with this code."""
    with _alembic_quiet():
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - packaging error
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The database's revision, or None when it has never been initialised."""
    with _alembic_quiet(), db_errors(engine), engine.connect() as conn:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> str:
    """Create or upgrade the schema to the newest revision, in one transaction; returns it."""
    path = sqlite_path(engine)
    if path is not None and not path.parent.is_dir():
        raise DatabaseError(f"cannot create SQLite database {path}: directory {path.parent} does not exist")
    with _alembic_quiet(), db_errors(engine), engine.begin() as conn:
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        config = _config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None:  # pragma: no cover - alembic contract
        raise DatabaseError(f"migrations ran on {redact_url(engine.url)} but left no revision")
    return revision


def require_schema(engine: sa.Engine) -> str:
    """The revision, after checking that the database exists and is at head.

    Raises `DatabaseError` telling the operator to run ``coolpilot db init`` otherwise.
    Does not create a missing SQLite file.
    """
    path = sqlite_path(engine)
    if path is not None and not path.exists():
        raise DatabaseError(f"SQLite database {path} does not exist: run `coolpilot db init` first")
    revision = current_revision(engine)
    head = head_revision()
    if revision is None:
        raise DatabaseError(
            f"database {redact_url(engine.url)} has no CoolPilot schema: run `coolpilot db init`"
        )
    if revision != head:
        raise DatabaseError(
            f"database {redact_url(engine.url)} is at schema revision {revision}, this CoolPilot "
            f"needs {head}: run `coolpilot db init` to upgrade"
        )
    return revision
