"""Shared fixtures: migrated databases on SQLite and on the real PostgreSQL server.

* ``sqlite_url`` / ``sqlite_engine``: a fresh, migrated SQLite file per test (copied
  from a template migrated once per session).
* ``pg_url`` / ``pg_engine``: a database created for this test session
  (``coolpilot_test_<random>``, via the ``postgres`` maintenance database, dropped at
  the end); every table is emptied before each test, so tests are independent.
* ``engine`` and ``db_url``: run a test once per backend (ids ``sqlite``, ``postgres``).
* ``blank_db_url``: a database with no schema at all (migration tests), per backend.

PostgreSQL must be reachable (CI has it): if it is not, tests that need it fail with a
clear message. Set COOLPILOT_SKIP_PG=1 to skip them instead. The server is taken from
$COOLPILOT_TEST_PG_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/postgres);
no other database on it is ever touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from db.engine import make_engine, redact_url
from db.migrate import upgrade
from db.schema import metadata

PG_ADMIN_URL = os.environ.get("COOLPILOT_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SKIP_PG = os.environ.get("COOLPILOT_SKIP_PG") == "1"
TEST_DATA = Path(__file__).resolve().parent / "data"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class _PgServer:
    """Creates and drops throw-away databases on the test server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
        self.prefix = f"coolpilot_test_{secrets.token_hex(4)}"
        self.created: list[str] = []

    def create(self, suffix: str = "") -> str:
        name = f"{self.prefix}{suffix}"
        quoted = self.admin.dialect.identifier_preparer.quote(name)
        try:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        except sa.exc.DBAPIError as err:
            pytest.fail(
                f"PostgreSQL at {redact_url(self.admin_url)} is not usable ({str(err.orig).strip().splitlines()[0]}). "
                "Start it (scripts/bootstrap.sh does) or set COOLPILOT_SKIP_PG=1 to skip PostgreSQL tests.",
                pytrace=False,
            )
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        assert name is not None and name.startswith(self.prefix), "refusing to drop a database we did not create"
        quoted = self.admin.dialect.identifier_preparer.quote(name)
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            self.drop(make_url(self.admin_url).set(database=name).render_as_string(hide_password=False))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[_PgServer]:
    if SKIP_PG:
        pytest.skip("COOLPILOT_SKIP_PG=1: PostgreSQL tests skipped")
    server = _PgServer(PG_ADMIN_URL)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def _pg_session_url(pg_server: _PgServer) -> str:
    url = pg_server.create()
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


def _reset_database(url: str) -> None:
    """Empty CoolPilot's tables and drop any table or view a previous test created."""
    ours = {t.name for t in metadata.sorted_tables} | {"alembic_version"}
    engine = make_engine(url)
    quote = engine.dialect.identifier_preparer.quote
    try:
        with engine.begin() as conn:
            others = conn.exec_driver_sql(
                "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_name NOT IN (SELECT relname FROM pg_class WHERE relispartition)"  # readings' months
            ).all()
            for name, kind in sorted(others, key=lambda row: row[1] != "VIEW"):  # views first
                if name not in ours:
                    conn.exec_driver_sql(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} IF EXISTS {quote(name)} CASCADE")
            names = ", ".join(quote(t.name) for t in metadata.sorted_tables)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


@pytest.fixture
def pg_url(_pg_session_url: str) -> str:
    """URL of the session's migrated PostgreSQL database, reset for this test."""
    _reset_database(_pg_session_url)
    return _pg_session_url


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return path


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a fresh, migrated SQLite file for this test."""
    path = tmp_path / "coolpilot.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """A migrated, empty database engine; the test runs once per backend."""
    engine: sa.Engine = request.getfixturevalue(f"{'pg' if request.param == 'postgres' else 'sqlite'}_engine")
    return engine


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of a migrated, empty database; the test runs once per backend."""
    url: str = request.getfixturevalue(f"{'pg' if request.param == 'postgres' else 'sqlite'}_url")
    return url


@pytest.fixture(params=BACKENDS)
def blank_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a database without any schema; the test runs once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    server: _PgServer = request.getfixturevalue("pg_server")
    url = server.create(f"_blank_{secrets.token_hex(2)}")
    try:
        yield url
    finally:
        server.drop(url)
