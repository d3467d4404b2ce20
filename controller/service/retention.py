"""The daemon's daily retention job: ``[database] retention_days`` applied without a cron entry.

Why a job of the daemon's: an operator who sets ``retention_days`` expects old
readings to go; a separate crontab line is one more thing to forget on each hall.
The job reads ``retention_days`` from the live config at each run (a reload applies
at the next run), does nothing when it is unset, and removes data through
`db.partitions.apply_retention` (whole months on partitioned PostgreSQL, rows on
SQLite). Retention applies to the whole ``readings`` table, every site in it: on a
shared fleet database the hall with the smallest ``retention_days`` sets the limit.
It runs on the training executor, so a slow delete never takes the cycle's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from controller.service.metrics import CoolpilotMetrics
from db.engine import DatabaseError, translate_errors
from db.partitions import RetentionReport, apply_retention

log = logging.getLogger(__name__)

#: When the job runs (crontab, UTC): daily, after the default retraining at 02:30.
RETENTION_CRON = "15 4 * * *"


@translate_errors
def remove_old_readings(engine: sa.Engine, keep_days: int, now: datetime) -> RetentionReport:
    """`apply_retention` in one transaction; database failures raise `DatabaseError`."""
    with engine.begin() as conn:
        return apply_retention(conn, keep_days, now)


@dataclass
class RetentionJob:
    """One retention run per call: ``keep_days()`` None does nothing.

    ``clock``: now, aware UTC (the cutoff is now - keep_days); ``wall_clock``: for the
    metric timestamp [s since epoch].
    """

    engine: sa.Engine
    keep_days: Callable[[], int | None]
    clock: Callable[[], datetime]
    metrics: CoolpilotMetrics
    wall_clock: Callable[[], float]

    def run(self) -> RetentionReport | None:
        """Apply retention once; returns what was removed, None when unset or on a database error."""
        keep = self.keep_days()
        if keep is None:
            return None
        try:
            report = remove_old_readings(self.engine, keep, self.clock())
        except DatabaseError as exc:
            self.metrics.db_error()
            log.warning("retention (keep %d days) failed, next try tomorrow: %s", keep, exc)
            return None
        self.metrics.observe_retention(len(report.partitions_dropped), report.rows_deleted, self.wall_clock())
        log.info("retention (keep %d days): readings before %s removed; partitions dropped: %s; rows deleted: %d",
                 keep, report.cutoff.isoformat(), ", ".join(report.partitions_dropped) or "none",
                 report.rows_deleted)
        return report


def schedule_retention(scheduler: Any, job: Callable[[], None], executor: str, cron: str = RETENTION_CRON) -> None:
    """Add the daily retention run to an APScheduler 3 scheduler (UTC crontab)."""
    from apscheduler.triggers.cron import CronTrigger

    scheduler.add_job(job, CronTrigger.from_crontab(cron, timezone="UTC"), id="retention", name="retention",
                      executor=executor, misfire_grace_time=3600)
