"""The daemon's APScheduler 3 set-up and the bookkeeping of its jobs' health.

Why a module of its own: the rules that keep the control cycle on time live here,
in one place. The scheduler uses the in-memory job store and UTC, coalesces missed
runs into one, never runs two instances of a job at once, and has an explicit misfire
grace time. Training runs on its own one-thread executor, so a long training run can
never take the thread the control cycle needs.

`JobMonitor` times every job run against its budget (for the cycle: its interval),
reports overruns and skipped runs in the log and as metrics, and tells the main loop
how long the cycle has been running, so that a hung cycle stops the systemd watchdog
pings (systemd then restarts the daemon) instead of hiding behind a live main loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

#: The daemon's jobs; also the bounded label set of the job metrics.
JOBS: tuple[str, ...] = ("cycle", "training", "quality", "retention")
#: Data-quality checks (``controller.quality``), the label set of the issue gauge.
QUALITY_CHECKS: tuple[str, ...] = ("freshness", "completeness", "range", "stuck", "spike", "missing")

TRAINING_EXECUTOR = "training"
#: A run that starts later than this after its due time is skipped (and counted) [s].
DEFAULT_MISFIRE_GRACE_S = 60


def make_scheduler(misfire_grace_s: int = DEFAULT_MISFIRE_GRACE_S) -> BackgroundScheduler:
    """A BackgroundScheduler: memory job store, UTC, coalesce, one instance per job.

    Executors: ``default`` (two threads: the cycle and the data-quality check) and
    ``training`` (one thread, so training never competes for the cycle's thread).
    """
    return BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(2), TRAINING_EXECUTOR: ThreadPoolExecutor(1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire_grace_s},
        timezone=UTC,
    )


class JobMetrics:
    """Job-health series the daemon adds to the registry of ``controller.service.metrics``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.overruns = Counter(
            "coolpilot_job_overruns", "Job runs that took longer than their time budget, by job [runs]",
            labelnames=("job",), registry=registry,
        )
        self.skipped = Counter(
            "coolpilot_job_skipped_runs",
            "Job runs skipped because the previous run was still going or the run was too late, by job [runs]",
            labelnames=("job",), registry=registry,
        )
        self.last_duration = Gauge(
            "coolpilot_job_last_duration_seconds", "Wall time of the last run of each job [s]",
            labelnames=("job",), registry=registry,
        )
        self.quality_issues = Gauge(
            "coolpilot_data_quality_issues", "Roles failing each data-quality check in the last check [roles]",
            labelnames=("check",), registry=registry,
        )
        for job in JOBS:
            self.overruns.labels(job=job)
            self.skipped.labels(job=job)
            self.last_duration.labels(job=job).set(float("nan"))
        for check in QUALITY_CHECKS:
            self.quality_issues.labels(check=check).set(0)


class JobMonitor:
    """Times job runs against budgets, counts overruns and skipped runs, knows what is running.

    ``budgets_s``: time budget per job [s] (None: no budget). ``monotonic`` is
    injectable for tests.
    """

    def __init__(
        self,
        metrics: JobMetrics,
        budgets_s: dict[str, float | None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.budgets_s = dict(budgets_s)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}
        self.overruns: dict[str, int] = dict.fromkeys(JOBS, 0)
        self.skipped: dict[str, int] = dict.fromkeys(JOBS, 0)

    @contextmanager
    def track(self, job: str) -> Iterator[None]:
        """Time one run of ``job``; an overrun is logged and counted when it ends."""
        started = self._monotonic()
        with self._lock:
            self._running[job] = started
        try:
            yield
        finally:
            duration = self._monotonic() - started
            with self._lock:
                self._running.pop(job, None)
            self.metrics.last_duration.labels(job=job).set(duration)
            budget = self.budgets_s.get(job)
            if budget is not None and duration > budget:
                self.overruns[job] = self.overruns.get(job, 0) + 1
                self.metrics.overruns.labels(job=job).inc()
                log.warning("%s job overran its budget: %.1f s > %.1f s; the next run starts when it is due",
                            job, duration, budget)

    def running_for_s(self, job: str) -> float | None:
        """How long the current run of ``job`` has been going [s], None when idle."""
        with self._lock:
            started = self._running.get(job)
        return None if started is None else self._monotonic() - started

    def skip(self, job: str, why: str) -> None:
        """Count a run that did not happen."""
        self.skipped[job] = self.skipped.get(job, 0) + 1
        if job in JOBS:
            self.metrics.skipped.labels(job=job).inc()
        log.warning("%s job run skipped: %s", job, why)

    def listener(self, event: Any) -> None:
        """APScheduler listener for missed, refused (still running) and failed runs."""
        job = str(getattr(event, "job_id", "")).split(":", 1)[0]
        if event.code == EVENT_JOB_MAX_INSTANCES:
            self.skip(job, "the previous run is still going")
        elif event.code == EVENT_JOB_MISSED:
            self.skip(job, "it started too late (missed its misfire grace time)")
        elif event.code == EVENT_JOB_ERROR and isinstance(event, JobExecutionEvent):
            log.error("%s job failed: %r", job, event.exception)

    def attach(self, scheduler: BackgroundScheduler) -> None:
        scheduler.add_listener(self.listener, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
