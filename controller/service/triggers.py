"""When the daemon's jobs run: on the wall clock (production) or back to back (accelerated time).

Why apart from the daemon: the two triggers are the one difference between
``coolpilot run`` at a site and the demo, the soak and ``run --plant``; everything
else (the cycle, hooks, metrics, reloads, signals) is the same code. Here is all
that differs:

* `WallClockTrigger`: APScheduler runs the cycle every ``interval_s`` (the first at
  once), the data-quality check every ``quality_interval_s`` and retraining by a UTC
  crontab (`schedule_jobs`).
* `PacedTrigger`: a `Pacer` thread runs cycles back to back at ``cycles_per_s`` on
  the plant's clock, submitting a quality check and a training run every so many
  cycles.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.service.scheduler import TRAINING_EXECUTOR


@dataclass(frozen=True)
class WallClockTrigger:
    """Production: a cycle every ``interval_s`` [s] (the first at once); retraining by crontab (UTC)."""

    interval_s: float
    retrain_cron: str | None = None
    quality_interval_s: float = 900.0
    train_at_start: bool = False


@dataclass(frozen=True)
class PacedTrigger:
    """Accelerated time: ``cycles_per_s`` cycles per wall-clock second (0: as fast as possible).

    ``period_s``: plant time per cycle [s] (for energy counters); ``max_cycles``: stop
    after that many (None: until told to stop).
    """

    cycles_per_s: float
    period_s: float = 300.0
    max_cycles: int | None = None
    retrain_every_cycles: int | None = None
    quality_every_cycles: int = 3


CycleTrigger = WallClockTrigger | PacedTrigger


def cycle_interval_s(trigger: CycleTrigger) -> float | None:
    """Wall time between cycle starts [s]; None: as fast as possible."""
    if isinstance(trigger, WallClockTrigger):
        return trigger.interval_s
    return 1.0 / trigger.cycles_per_s if trigger.cycles_per_s > 0 else None


def plant_period_s(trigger: CycleTrigger) -> float:
    """Plant time per cycle [s]."""
    return trigger.interval_s if isinstance(trigger, WallClockTrigger) else trigger.period_s


def describe(trigger: CycleTrigger, can_train: bool) -> str:
    """One phrase for the start-up log line."""
    if isinstance(trigger, WallClockTrigger):
        retrain = f", retraining at cron {trigger.retrain_cron!r} UTC" if trigger.retrain_cron and can_train else ""
        return f"a cycle every {trigger.interval_s:g} s{retrain}"
    speed = "as fast as possible" if trigger.cycles_per_s <= 0 else f"{trigger.cycles_per_s:g} cycles per second"
    return f"accelerated time, {speed}" + (f", {trigger.max_cycles} cycles" if trigger.max_cycles else "")


@dataclass(frozen=True)
class Jobs:
    """The daemon's jobs, as the triggers start them."""

    cycle: Callable[[], None]
    quality: Callable[[], None]
    training: Callable[[], None] | None  # None: no retraining configured
    submit_quality: Callable[[], None]  # one quality check on the scheduler, now
    submit_training: Callable[[], None]  # one training run on the training executor, now


def schedule_jobs(scheduler: Any, trigger: WallClockTrigger, jobs: Jobs) -> None:
    """Production: add the cycle, quality and (with a crontab) training jobs to ``scheduler``."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    now = datetime.now(tz=scheduler.timezone)
    scheduler.add_job(jobs.cycle, IntervalTrigger(seconds=trigger.interval_s), id="cycle", name="cycle",
                      next_run_time=now, misfire_grace_time=max(int(trigger.interval_s // 2), 1))
    scheduler.add_job(jobs.quality, IntervalTrigger(seconds=trigger.quality_interval_s), id="quality",
                      name="quality", next_run_time=now + timedelta(seconds=min(trigger.quality_interval_s, 30)))
    if jobs.training is not None and trigger.retrain_cron:
        scheduler.add_job(jobs.training, CronTrigger.from_crontab(trigger.retrain_cron, timezone="UTC"),
                          id="training", name="training", executor=TRAINING_EXECUTOR, misfire_grace_time=3600)


class Pacer:
    """Accelerated time: runs cycles back to back on a thread, as a `PacedTrigger` says.

    ``stopping`` tells it the daemon was told to stop; ``on_done`` is called (on the
    pacer's thread) once it has run its last cycle, whatever the reason.
    """

    def __init__(self, trigger: PacedTrigger, jobs: Jobs, *, stopping: Callable[[], bool],
                 on_done: Callable[[], None]) -> None:
        self.trigger, self.jobs = trigger, jobs
        self._stopping, self._on_done = stopping, on_done
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="coolpilot-pacer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the running cycle and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        trig = self.trigger
        period = 1.0 / trig.cycles_per_s if trig.cycles_per_s > 0 else 0.0
        due = time.monotonic()
        n = 0
        try:
            while not self._stopping() and (trig.max_cycles is None or n < trig.max_cycles):
                self.jobs.cycle()
                n += 1
                if trig.retrain_every_cycles and n % trig.retrain_every_cycles == 0:
                    self.jobs.submit_training()
                if trig.quality_every_cycles and n % trig.quality_every_cycles == 0:
                    self.jobs.submit_quality()
                if period > 0:
                    due += period
                    delay = due - time.monotonic()
                    if delay < 0:  # behind: never burst to catch up (as APScheduler's coalesce)
                        due = time.monotonic()
                    elif self._stop.wait(delay):
                        break
        finally:
            self.done = True
            self._on_done()
