"""Engines from URLs, and database failures as one clear, password-free line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.engine import DEFAULT_URL, DatabaseError, check_connection, make_engine, redact_url, resolve_url
from db.migrate import require_schema
from db.query import read_wide, site_stats

SECRET = "s3cr3t-Pa55"


def test_resolve_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COOLPILOT_DATABASE_URL", raising=False)
    assert resolve_url(None) == DEFAULT_URL == "sqlite:///coolpilot.db"
    monkeypatch.setenv("COOLPILOT_DATABASE_URL", "postgresql://env@host/db")
    assert resolve_url(None) == "postgresql://env@host/db"
    assert resolve_url("sqlite:///cli.db") == "sqlite:///cli.db"


def test_redact_url_hides_the_password() -> None:
    assert redact_url(f"postgresql://user:{SECRET}@db.example:5432/cp") == "postgresql://user:***@db.example:5432/cp"
    assert SECRET not in redact_url(f"weird:://user:{SECRET}@host/x y")
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


def test_postgresql_urls_use_psycopg3() -> None:
    engine = make_engine("postgresql://user@localhost/db")
    assert engine.dialect.driver == "psycopg"
    assert make_engine("postgres://user@localhost/db").dialect.driver == "psycopg"


def test_sqlite_gets_wal_and_foreign_keys(sqlite_engine: sa.Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL"),
        (f"mysql://root:{SECRET}@localhost/x", "unsupported database URL scheme 'mysql'"),
    ],
)
def test_bad_urls_are_one_clear_line(url: str, message: str) -> None:
    with pytest.raises(DatabaseError, match=message) as info:
        make_engine(url)
    assert SECRET not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.postgres
def test_unreachable_server_is_one_line_without_password() -> None:
    engine = make_engine(f"postgresql://postgres:{SECRET}@127.0.0.1:1/coolpilot?connect_timeout=3")
    with pytest.raises(DatabaseError, match=r"cannot use database postgresql\+psycopg://postgres:\*\*\*@127\.0\.0\.1:1") \
            as info:
        check_connection(engine)
    assert SECRET not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DatabaseError):  # library functions translate too
        read_wide(engine, ["chw_supply_c"], *_window())


@pytest.mark.postgres
def test_missing_database_names_it(pg_url: str) -> None:
    url = sa.engine.make_url(pg_url).set(database="coolpilot_no_such_db").render_as_string(hide_password=False)
    with pytest.raises(DatabaseError, match='database "coolpilot_no_such_db" does not exist'):
        check_connection(make_engine(url))


def test_missing_schema_says_run_db_init(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    try:
        with pytest.raises(DatabaseError, match="run `coolpilot db init`"):
            require_schema(engine)
        if engine.dialect.name == "postgresql":
            with pytest.raises(DatabaseError, match="run `coolpilot db init`"):
                site_stats(engine)
    finally:
        engine.dispose()


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(DatabaseError, match="does not exist: run `coolpilot db init`"):
        require_schema(make_engine(f"sqlite:///{path}"))
    assert not path.exists()


def test_sqlite_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="does not exist"):
        check_connection(make_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db"))


def _window() -> tuple[datetime, datetime]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return start, start + timedelta(hours=1)
