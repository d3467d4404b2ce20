"""The daemon's daily retention job, called directly with a fake clock, on SQLite and PostgreSQL.

History spans January to March 2034; "now" is 1 April 2034, so 45 days' retention cuts
at 15 February: PostgreSQL drops January's partition (February is partly kept),
SQLite deletes every row before the cutoff.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.service.config_watch import ConfigHolder
from controller.service.daemon import Daemon, DaemonParts, PacedTrigger
from controller.service.metrics import CoolpilotMetrics
from controller.service.recorder import DecisionRecorder
from controller.service.retention import RETENTION_CRON, schedule_retention
from controller.service.scheduler import TRAINING_EXECUTOR, make_scheduler
from coolpilot.wiring import build_parts
from db.historian import InternalSource
from db.ingest import write_wide
from db.partitions import list_partitions
from tests._fault_rig import SITE, dead_engine, write_config

NOW = datetime(2034, 4, 1, tzinfo=UTC)
CUTOFF_S = int(datetime(2034, 2, 15, tzinfo=UTC).timestamp())
WALL_S = 2_000_000_000.0


def _history(engine: sa.Engine) -> None:
    index = pd.date_range("2034-01-01", periods=24 * 90, freq="1h", tz="UTC")  # Jan .. Mar 2034
    frame = pd.DataFrame({"it_power_kw": np.arange(len(index), dtype=float), "chw_supply_c": 7.0}, index=index)
    write_wide(engine, frame, site=SITE)


def _count(engine: sa.Engine, where: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM readings {where}").scalar_one())


def _daemon(engine: sa.Engine, db: sa.Engine | None, tmp_path: Path, extra: str) -> tuple[Daemon, CollectorRegistry]:
    registry = CollectorRegistry()
    holder = ConfigHolder(write_config(tmp_path / "coolpilot.toml", "rules", extra))
    parts = DaemonParts(
        holder=holder, source=InternalSource(engine, SITE), forecaster=None, actuator=None,
        recorder=DecisionRecorder(engine, SITE), metrics=CoolpilotMetrics(registry), clock=lambda: NOW,
        wall_clock=lambda: WALL_S, engine=db,
    )
    return Daemon(parts, PacedTrigger(cycles_per_s=0, max_cycles=1)), registry


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"no sample {name}{labels}"
    return value


def test_the_job_applies_retention_days_and_counts_what_it_removed(engine: sa.Engine, tmp_path: Path) -> None:
    _history(engine)
    kept = _count(engine, f"WHERE ts_s >= {CUTOFF_S}")
    daemon, registry = _daemon(engine, engine, tmp_path, "[database]\nretention_days = 45\n")

    daemon.run_retention()

    assert _count(engine, f"WHERE ts_s >= {CUTOFF_S}") == kept > 0
    partitions = _value(registry, "coolpilot_retention_dropped_partitions_total")
    rows = _value(registry, "coolpilot_retention_deleted_rows_total")
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            left = list_partitions(conn)
        # January (and older, empty months other tests left) went; February is partly inside the 45 days
        assert partitions >= 1.0 and rows == 0.0
        assert "readings_p203401" not in {p.name for p in left} and "readings_p203402" in {p.name for p in left}
        assert not [p for p in left if p.hi_s is not None and p.hi_s <= CUTOFF_S]
        assert _count(engine) == kept + 14 * 24 * 2  # 1..14 February stay with their month
    else:
        assert partitions == 0.0 and rows == (31 + 14) * 24 * 2
        assert _count(engine) == kept
    assert _value(registry, "coolpilot_retention_last_success_timestamp_seconds") == WALL_S
    assert math.isfinite(_value(registry, "coolpilot_job_last_duration_seconds", job="retention"))

    daemon.run_retention()  # the next day's run finds nothing more to remove
    assert _value(registry, "coolpilot_retention_dropped_partitions_total") == partitions
    assert _value(registry, "coolpilot_retention_deleted_rows_total") == rows


def test_without_retention_days_the_job_removes_nothing(engine: sa.Engine, tmp_path: Path) -> None:
    _history(engine)
    total = _count(engine)
    daemon, registry = _daemon(engine, engine, tmp_path, "")
    daemon.run_retention()
    assert _count(engine) == total
    assert _value(registry, "coolpilot_retention_deleted_rows_total") == 0.0
    assert math.isnan(_value(registry, "coolpilot_retention_last_success_timestamp_seconds"))


def test_a_database_failure_is_counted_and_does_not_raise(engine: sa.Engine, tmp_path: Path) -> None:
    daemon, registry = _daemon(engine, dead_engine(engine, tmp_path), tmp_path, "[database]\nretention_days = 45\n")
    daemon.run_retention()
    assert _value(registry, "coolpilot_db_errors_total") == 1.0
    assert math.isnan(_value(registry, "coolpilot_retention_last_success_timestamp_seconds"))


def test_no_engine_means_no_job(sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    daemon, registry = _daemon(sqlite_engine, None, tmp_path, "[database]\nretention_days = 45\n")
    assert daemon.retention is None
    daemon.run_retention()
    assert math.isnan(_value(registry, "coolpilot_job_last_duration_seconds", job="retention"))


def test_the_job_is_scheduled_daily_on_the_training_executor() -> None:
    scheduler = make_scheduler()
    schedule_retention(scheduler, lambda: None, TRAINING_EXECUTOR)
    job = scheduler.get_job("retention")
    assert job is not None and job.executor == TRAINING_EXECUTOR
    fields = {f.name: str(f) for f in job.trigger.fields}
    minute, hour = RETENTION_CRON.split()[:2]
    assert (fields["minute"], fields["hour"], fields["day"]) == (minute, hour, "*")
    assert str(job.trigger.timezone) == "UTC"


def test_a_bad_crontab_is_refused() -> None:
    with pytest.raises(ValueError):
        schedule_retention(make_scheduler(), lambda: None, TRAINING_EXECUTOR, cron="61 * * * *")


def test_the_daemons_parts_carry_the_database_for_the_job(sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    config = write_config(tmp_path / "coolpilot.toml", "rules", "[database]\nretention_days = 45\n")
    with build_parts(config, engine=sqlite_engine, registry=CollectorRegistry(), clock=lambda: NOW,
                     environ={}) as parts:
        assert parts.engine is sqlite_engine
        assert Daemon(parts, PacedTrigger(cycles_per_s=0, max_cycles=1)).retention is not None
