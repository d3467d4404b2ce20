"""The daemon's periodic data-quality check: the recent window against `controller.quality`.

Why apart from the cycle: the cycle judges its own window every cycle; this job
publishes how many issues each check finds (a gauge per check, for dashboards and
alerts) and logs only when the set of failing checks changes, so a flat sensor does
not write a warning every few minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from controller.quality import check_window
from controller.seams import ReadingSource
from controller.service.config_watch import ConfigHolder
from controller.service.scheduler import QUALITY_CHECKS
from db.engine import DatabaseError
from db.grid import GRID, floor_to_grid
from db.roles import REQUIRED_MEASUREMENT_ROLES, SETPOINT_ROLES

log = logging.getLogger(__name__)


class QualityJob:
    """``run()`` checks the configured window once; ``issues``: the gauge labelled by check."""

    def __init__(self, holder: ConfigHolder, clock: Callable[[], datetime], source: ReadingSource,
                 issues: Any, db_error: Callable[[], None]) -> None:
        self.holder, self.clock, self.source = holder, clock, source
        self.issues, self.db_error = issues, db_error
        self._summary: str | None = None  # the failing checks last logged

    def run(self) -> None:
        config = self.holder.config
        now = self.clock()
        end = floor_to_grid(now) + GRID
        roles = (*REQUIRED_MEASUREMENT_ROLES, *SETPOINT_ROLES)
        try:
            frame = self.source.read_wide(roles, end - config.quality.window_rows * GRID, end).frame
        except DatabaseError as exc:
            self.db_error()
            log.warning("data-quality check cannot read history: %s", exc)
            return
        report = check_window(frame, roles, now, config.cycle.interval_s, config.quality)
        counts = dict.fromkeys(QUALITY_CHECKS, 0)
        for issue in report.issues:
            counts[issue.check] = counts.get(issue.check, 0) + 1
        for check in QUALITY_CHECKS:
            self.issues.labels(check=check).set(counts[check])
        failing = ", ".join(sorted({f"{i.role} {i.check}" for i in report.issues}))
        if failing != self._summary:  # log changes, not every check
            if failing:
                log.warning("data quality: %s", report.summary())
            elif self._summary:
                log.info("data quality: all checks pass again")
            self._summary = failing
