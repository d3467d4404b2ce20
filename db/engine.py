"""Database engines from URLs, and database failures as one clear, password-free line.

The default is an SQLite file in the working directory, so a first run needs no
server; PostgreSQL (psycopg 3) is for production. Every failure that reaches an
operator goes through `DatabaseError`, whose message never contains a password.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url

ENV_VAR = "COOLPILOT_DATABASE_URL"
DEFAULT_URL = "sqlite:///coolpilot.db"
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_MS = 10_000

P = ParamSpec("P")
T = TypeVar("T")

# Greedy up to the last '@': a password may hold an unencoded '@' (over-redacting is safe).
_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/@\s]*:)(?P<pw>\S*)(?P<tail>@)")
#: Query parameters that libpq accepts as secrets (``?password=...``, a client key's ``sslpassword``).
_SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
_SECRET_IN_QUERY = re.compile(r"(?P<head>[?&](?:ssl)?password=)[^&#\s]*", re.IGNORECASE)
_HIDDEN = "***"


class DatabaseError(Exception):
    """A database problem explained in one line for the operator (no password, no traceback)."""


def resolve_url(cli_value: str | None) -> str:
    """The database URL: the command-line value, else $COOLPILOT_DATABASE_URL, else an SQLite file here."""
    if cli_value:
        return cli_value
    env = os.environ.get(ENV_VAR, "").strip()
    return env or DEFAULT_URL


def redact_url(url: str | URL) -> str:
    """The URL with its password (also one in the query string) replaced by ``***``; safe to log or show."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
        host = parsed.host or ""
        if "@" in host:  # an unencoded '@' in the password: the parser took the password's tail for the host
            parsed = parsed.set(host=host.rsplit("@", 1)[1], password=_HIDDEN)
        secret_keys = [k for k in parsed.query if k.lower() in _SECRET_QUERY_KEYS]
        if secret_keys:
            parsed = parsed.update_query_dict(dict.fromkeys(secret_keys, _HIDDEN))
        return parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=" + _HIDDEN)
    except (exc.ArgumentError, ValueError, TypeError):
        text = _PASSWORD_IN_URL.sub(rf"\g<head>{_HIDDEN}\g<tail>", str(url))
        return _SECRET_IN_QUERY.sub(rf"\g<head>{_HIDDEN}", text)


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError) as err:
        raise DatabaseError(
            f"invalid database URL {redact_url(url)!r}: expected e.g. sqlite:///coolpilot.db "
            "or postgresql://user@host:5432/dbname"
        ) from err
    if "@" in (parsed.host or ""):
        raise DatabaseError(
            f"invalid database URL {redact_url(url)!r}: the password holds an '@'; percent-encode it as %40 "
            "(better: keep the password out of the URL, in a pgpass file)"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"unsupported database URL scheme {parsed.drivername!r} in {redact_url(parsed)!r}: "
            "use sqlite:///FILE or postgresql://user@host/dbname"
        )
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the daemon read while an ingest writes; foreign keys keep rows consistent.

    synchronous=NORMAL is the documented safe setting for WAL (no corruption on power
    loss; the last commit may roll back), and roughly doubles bulk-insert speed.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
    finally:
        cursor.close()


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; ``postgresql://`` uses psycopg 3, SQLite gets WAL and foreign keys.

    Creating the engine does not connect; connection problems surface as `DatabaseError`
    from the functions of this package (or from `check_connection`).
    """
    parsed = _parse_url(url)
    try:
        if parsed.get_backend_name() == "postgresql":
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
            engine = sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
        else:
            engine = sa.create_engine(parsed)
            event.listen(engine, "connect", _sqlite_pragmas)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as err:
        raise DatabaseError(f"cannot use database URL {redact_url(parsed)!r}: {_first_line(err)}") from err
    return engine


def sqlite_path(engine: sa.Engine) -> Path | None:
    """The database file of an SQLite engine (None for PostgreSQL or in-memory SQLite)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _first_line(err: BaseException) -> str:
    """The driver's own message, first meaningful line, without SQLAlchemy's boilerplate."""
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    first = lines[0]
    # psycopg puts the useful part ("Connection refused", "database x does not exist") after a colon
    if len(lines) > 1 and first.endswith(":"):
        first = f"{first} {lines[1]}"
    return first


def _missing_schema(err: BaseException) -> bool:
    orig = getattr(err, "orig", None)
    if getattr(orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    return "no such table" in str(orig if orig is not None else err)


def describe_error(err: BaseException, url: str | URL) -> str:
    """One line describing a database exception, with the password scrubbed."""
    safe_url = redact_url(url)
    if _missing_schema(err):
        message = f"database {safe_url} has no CoolPilot schema (or an old one): run `coolpilot db init`"
    elif isinstance(err, exc.OperationalError | exc.InterfaceError):
        message = f"cannot use database {safe_url}: {_first_line(err)}"
    else:
        message = f"database {safe_url}: {_first_line(err)}"
    for secret in _secrets_of(url):
        message = message.replace(secret, _HIDDEN)
    return message


def _secrets_of(url: str | URL) -> list[str]:
    """Every secret a URL carries (password, query passwords), longest first, for scrubbing messages."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (exc.ArgumentError, ValueError):
        text = str(url)
        found = [m.group("pw") for m in _PASSWORD_IN_URL.finditer(text)]
        found += [m.group(0).split("=", 1)[1] for m in _SECRET_IN_QUERY.finditer(text)]
    else:
        found = [] if parsed.password is None else [str(parsed.password)]
        host = parsed.host or ""
        if "@" in host:
            found.append(host.rsplit("@", 1)[0])
        for key, value in parsed.query.items():
            if key.lower() in _SECRET_QUERY_KEYS:
                found.extend([value] if isinstance(value, str) else list(value))
    return sorted({s for s in found if s and s != _HIDDEN}, key=len, reverse=True)


@contextmanager
def db_errors(engine: sa.Engine) -> Iterator[None]:
    """Turn driver exceptions (connection, SQL, schema) raised inside into `DatabaseError`.

    Programming errors of SQLAlchemy itself are left alone, so bugs stay visible.
    """
    try:
        yield
    except exc.DBAPIError as err:
        raise DatabaseError(describe_error(err, engine.url)) from err


def translate_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Decorator for public functions whose first argument is an engine: see `db_errors`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        engine = args[0] if args else kwargs.get("engine")
        try:
            return func(*args, **kwargs)
        except exc.DBAPIError as err:
            url = engine.url if isinstance(engine, sa.Engine) else "database"
            raise DatabaseError(describe_error(err, url)) from err

    return wrapper


def check_connection(engine: sa.Engine) -> None:
    """Connect once, raising `DatabaseError` with one clear line if the database is unreachable."""
    path = sqlite_path(engine)
    if path is not None and not path.parent.is_dir():
        raise DatabaseError(f"cannot open SQLite database {path}: directory {path.parent} does not exist")
    with db_errors(engine), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
