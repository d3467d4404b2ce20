"""Readings partitioned by month on PostgreSQL (migration 0002), partitions on demand, retention.

Every test runs on SQLite and the real PostgreSQL: SQLite keeps one plain table (the
migration does nothing there) and retention deletes rows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from coolpilot.cli import main
from db.bulk import insert_readings
from db.engine import make_engine
from db.ingest import write_wide
from db.migrate import MIGRATIONS_DIR, current_revision, head_revision
from db.partitions import (
    DEFAULT_PARTITION,
    apply_retention,
    ensure_months,
    forget,
    is_partitioned,
    list_partitions,
    month_bounds,
    months_between,
    months_of,
    partition_name,
)


def _alembic(engine: sa.Engine, action: str, revision: str) -> None:
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def _count(engine: sa.Engine, where: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM readings {where}").scalar_one())


def _frame(start: str, periods: int, freq: str = "5min") -> pd.DataFrame:
    index = pd.date_range(start, periods=periods, freq=freq, tz="UTC")
    return pd.DataFrame({"it_power_kw": np.arange(periods, dtype=float), "chw_supply_c": 7.0}, index=index)


def test_month_arithmetic() -> None:
    assert month_bounds((2026, 12)) == (
        int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()), int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())
    )
    lo, hi = month_bounds((2024, 2))
    ts = np.array([lo, hi - 1, hi, hi + 40 * 86400], dtype=np.int64)
    assert months_of(ts) == [(2024, 2), (2024, 3), (2024, 4)]
    assert months_of(np.array([lo], dtype=np.int64)) == [(2024, 2)]
    assert months_between(datetime(2025, 11, 30, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)) == [
        (2025, 11), (2025, 12), (2026, 1), (2026, 2)
    ]
    assert partition_name((2026, 3)) == "readings_p202603"


def test_migration_moves_rows_into_months_and_downgrade_restores_them(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    try:
        _alembic(engine, "upgrade", "0001")
        write_start = datetime(2025, 1, 31, 12, tzinfo=UTC).timestamp()
        ts = (write_start + 3600 * np.arange(60)).astype(np.int64)  # 31 Jan .. 2 Feb, hourly
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO sites (id, name, created_at) VALUES (1, 's', CURRENT_TIMESTAMP)")
            conn.exec_driver_sql(
                "INSERT INTO points (id, site_id, tag, role, unit, created_at) "
                "VALUES (1, 1, 'it_power_kw', 'it_power_kw', 'kW', CURRENT_TIMESTAMP)"
            )
            assert insert_readings(conn, np.ones(60, dtype=np.int64), ts, np.arange(60.0)) == 60
        _alembic(engine, "upgrade", "head")
        assert current_revision(engine) == head_revision()
        postgres = engine.dialect.name == "postgresql"
        with engine.connect() as conn:
            assert is_partitioned(conn) is postgres
            names = [p.name for p in list_partitions(conn)] if postgres else []
        if postgres:
            assert {"readings_p202501", "readings_p202502", DEFAULT_PARTITION} <= set(names)
            with engine.connect() as conn:
                in_jan = conn.exec_driver_sql("SELECT count(*) FROM readings_p202501").scalar_one()
            assert in_jan == 12  # 12:00 .. 23:00 on 31 January
        assert sa.inspect(engine).get_pk_constraint("readings")["constrained_columns"] == ["point_id", "ts_s"]
        assert _count(engine) == 60
        _alembic(engine, "downgrade", "0001")
        with engine.connect() as conn:
            assert not is_partitioned(conn)
            assert conn.exec_driver_sql("SELECT sum(value) FROM readings").scalar_one() == sum(range(60))
        _alembic(engine, "upgrade", "head")
        assert _count(engine) == 60
    finally:
        engine.dispose()


def test_a_new_month_gets_its_partition_before_its_rows(engine: sa.Engine) -> None:
    write_wide(engine, _frame("2031-05-31T23:00", 24), site="hall-a")  # crosses into June 2031
    assert _count(engine) == 48
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        parts = {p.name for p in list_partitions(conn)}
        default_rows = conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT_PARTITION}").scalar_one()
        in_june = conn.exec_driver_sql("SELECT count(*) FROM readings_p203106").scalar_one()
    assert {"readings_p203105", "readings_p203106"} <= parts
    assert default_rows == 0
    assert in_june == 2 * 12  # two roles, 00:00 .. 00:55 on 1 June
    with engine.begin() as conn:
        assert ensure_months(conn, [(2031, 5), (2031, 6)]) == []  # known now: nothing to do


def test_rows_in_the_default_partition_move_when_their_month_is_made(pg_engine: sa.Engine) -> None:
    write_wide(pg_engine, _frame("2032-03-01", 3), site="hall-a")  # makes readings_p203203
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS readings_p203304")
        forget(conn)  # this process's cache must not remember the month we just dropped
        shift = month_bounds((2033, 4))[0] - month_bounds((2032, 3))[0]
        conn.exec_driver_sql(f"INSERT INTO readings SELECT point_id, ts_s + {shift}, value FROM readings")
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT_PARTITION}").scalar_one() == 6
    with pg_engine.begin() as conn:
        assert ensure_months(conn, [(2033, 4)]) == ["readings_p203304"]
    with pg_engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT_PARTITION}").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM readings_p203304").scalar_one() == 6
    assert _count(pg_engine) == 12


def test_retention_drops_old_months_and_keeps_recent_rows(engine: sa.Engine) -> None:
    write_wide(engine, _frame("2034-01-01", 24 * 90, freq="1h"), site="hall-a")  # Jan .. Mar 2034
    total = _count(engine)
    cutoff_s = int(datetime(2034, 2, 15, tzinfo=UTC).timestamp())
    kept = _count(engine, f"WHERE ts_s >= {cutoff_s}")
    with engine.begin() as conn:
        report = apply_retention(conn, keep_days=45, now=datetime(2034, 4, 1, tzinfo=UTC))
    assert report.cutoff == datetime(2034, 2, 15, tzinfo=UTC)
    assert _count(engine, f"WHERE ts_s >= {cutoff_s}") == kept > 0
    if engine.dialect.name == "postgresql":
        assert "readings_p203401" in report.partitions_dropped
        assert "readings_p203402" not in report.partitions_dropped  # partly within the kept 45 days
        assert _count(engine) == total - 31 * 24 * 2
    else:
        assert report.rows_deleted == (31 + 14) * 24 * 2
        assert _count(engine, f"WHERE ts_s < {cutoff_s}") == 0
    # writing January again after retention still works (new partition or default)
    write_wide(engine, _frame("2034-01-10", 2), site="hall-a")
    assert _count(engine, f"WHERE ts_s < {cutoff_s}") >= 4


def test_retention_refuses_nonsense(engine: sa.Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="keep_days"):
        apply_retention(conn, keep_days=0, now=datetime(2034, 4, 1, tzinfo=UTC))


def test_db_retention_command_on_both_backends(db_url: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(db_url)
    try:
        write_wide(engine, _frame("2020-03-01", 4), site="hall-a")  # years old
        recent = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - pd.Timedelta(hours=2)
        write_wide(engine, _frame(recent.isoformat(), 4), site="hall-a")
        assert main(["db", "retention", "--db", db_url]) == 2
        assert "give --keep-days N" in capsys.readouterr().err
        config = tmp_path / "hall-a.toml"
        config.write_text(f'site_id = "hall-a"\n[database]\nurl = "{db_url}"\nretention_days = 30\n')
        config.chmod(0o600)
        assert main(["db", "retention", "--config", str(config), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["keep_days"] == 30
        if engine.dialect.name == "postgresql":
            assert "readings_p202003" in report["partitions_dropped"]
        else:
            assert report["rows_deleted"] == 8
        assert _count(engine) == 8  # the recent rows stay
        assert _count(engine, f"WHERE ts_s < {int(datetime(2021, 1, 1, tzinfo=UTC).timestamp())}") == 0
    finally:
        engine.dispose()
