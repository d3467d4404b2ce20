"""The always-on controller: one main loop, scheduled jobs, signals, systemd, metrics.

Why this shape: a cooling controller must keep deciding every cycle whatever else
happens (a reload, a slow training run, a database outage), and must stop only
between cycles. So:

* Signal handlers only set flags (and the interpreter's wake-up fd pokes the loop).
  One main loop acts on them: SIGHUP reloads the config through the holder (an invalid
  file keeps the last good one), SIGTERM/SIGINT stop after the running cycle, the
  systemd watchdog is pinged from the loop, and the config file is polled for edits.
* The control cycle runs as a job: every ``interval_s`` on the wall clock through
  APScheduler (`WallClockTrigger`, production), or back to back at N cycles per
  second on a plant clock (`PacedTrigger`, demo and soak); both are
  `controller.service.triggers`. Everything else is the same code. Retraining runs
  on its own executor and never blocks the cycle; so does the daily retention job
  (`controller.service.retention`, on the wall clock only).
* A restart resumes from the database: the caller passes the last applied setpoints
  (``db.records.last_applied_setpoints``) as the rate-limit reference, so a crash
  never causes a jump.
* A model that cannot be loaded, or whose matured forecasts have drifted past
  ``thresholds.max_forecast_error_frac`` (``controller.service.forecast_check.DriftCheck``), is
  withheld from the cycle (the rules decide, reason ``model_error``) and one training
  run is requested per problem; a new model version starts with a clean record.

What each cycle publishes is `controller.service.cycle_metrics`; job timing and the scheduler
set-up are `controller.service.scheduler`. Everything with side effects (clock, database,
actuator, metrics registry, plant hooks, notifier) is injected through `DaemonParts`;
`coolpilot.wiring.build_parts` builds them for every entry point.
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any, Protocol

import sqlalchemy as sa

from controller.cycle import ForecasterSource, ModelWithdrawn, run_cycle
from controller.decision import Decision
from controller.seams import Actuator, ReadingSource, Recorder, Releasable
from controller.service.config_watch import ConfigHolder
from controller.service.cycle_metrics import CyclePublisher, RecordingSource
from controller.service.metrics import CoolpilotMetrics
from controller.service.quality_job import QualityJob
from controller.service.retention import RetentionJob, schedule_retention
from controller.service.retraining import TrainingOutcome
from controller.service.scheduler import (
    TRAINING_EXECUTOR,
    JobMetrics,
    JobMonitor,
    make_scheduler,
)
from controller.service.sdnotify import SystemdNotifier
from controller.service.triggers import (
    CycleTrigger,
    Jobs,
    PacedTrigger,
    Pacer,
    WallClockTrigger,
    cycle_interval_s,
    describe,
    plant_period_s,
    schedule_jobs,
)
from controller.service.unfamiliar import UnfamiliarWatch, held_unfamiliar
from db.engine import DatabaseError
from forecasting.protocol import Forecaster

__all__ = ["CycleHook", "CycleReport", "CycleTrigger", "Daemon", "DaemonParts", "PacedTrigger", "WallClockTrigger"]

log = logging.getLogger(__name__)

#: The main loop wakes at least this often [s] (watchdog, config polling, flags).
TICK_S = 1.0


class CycleHook(Protocol):
    """Work around each cycle (the simulated plant's historian writes and time steps)."""

    def before_cycle(self) -> None: ...

    def after_cycle(self, decision: Decision | None) -> None: ...


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did, for live views and summaries."""

    n: int  # cycles run so far, this one included
    decision: Decision | None  # None when the cycle failed
    duration_s: float  # wall time of the whole cycle job, hooks included [s]
    savings_vs_rules_kw: float | None  # predicted rules power minus chosen power [kW]
    error: str | None = None


@dataclass
class DaemonParts:
    """The daemon's edges, all injected (tests pass fresh ones)."""

    holder: ConfigHolder
    source: ReadingSource
    forecaster: ForecasterSource
    actuator: Actuator | None
    recorder: Recorder
    metrics: CoolpilotMetrics
    clock: Callable[[], datetime]  # cycle time, aware UTC
    notifier: SystemdNotifier = field(default_factory=lambda: SystemdNotifier(None))
    last_applied: dict[str, float] = field(default_factory=dict)  # [C], from the database at start
    retrain: Callable[[threading.Event], TrainingOutcome] | None = None
    hooks: Sequence[CycleHook] = ()
    on_cycle: Sequence[Callable[[CycleReport], None]] = ()
    watchdog_interval_s: float | None = None  # ping at least this often [s]; None: no watchdog
    releaser: Releasable | None = None  # hands the plant back (BACnet: relinquish) on stop, fault, mode
    wall_clock: Callable[[], float] = time.time  # [s since epoch], for metric timestamps
    engine: sa.Engine | None = None  # CoolPilot's database, for the daily retention job; None: no job


class Daemon:
    """Runs control cycles on a trigger until told to stop; see the module docstring."""

    def __init__(self, parts: DaemonParts, trigger: CycleTrigger, *, tick_s: float = TICK_S,
                 stall_after_s: float | None = None) -> None:
        self.parts = parts
        self.trigger = trigger
        self.last_applied: dict[str, float] = dict(parts.last_applied)
        self.tick_s = min(tick_s, parts.watchdog_interval_s or tick_s)
        interval = cycle_interval_s(trigger)
        self.period_s = plant_period_s(trigger)
        self.stall_after_s = stall_after_s if stall_after_s is not None else max(3 * (interval or 0.0), 600.0)
        self.job_metrics = JobMetrics(parts.metrics.registry)
        self.quality = QualityJob(parts.holder, parts.clock, parts.source, self.job_metrics.quality_issues,
                                  parts.metrics.db_error)
        quality_budget = trigger.quality_interval_s if isinstance(trigger, WallClockTrigger) else None
        self.monitor = JobMonitor(self.job_metrics, {"cycle": interval, "training": None, "quality": quality_budget,
                                                     "retention": None})
        self.retention = None if parts.engine is None else RetentionJob(
            parts.engine, lambda: parts.holder.config.database.retention_days, parts.clock, parts.metrics,
            parts.wall_clock)
        self.cycles = 0
        self.cycle_errors = 0
        self.last_decision: Decision | None = None
        self.trainings: list[TrainingOutcome] = []
        self._source = RecordingSource(parts.source)
        self.publisher = CyclePublisher(parts.metrics, self._source, parts.forecaster, parts.recorder, self.period_s,
                                        wall_clock=parts.wall_clock)
        self._model: Forecaster | None = None
        self._retraining_asked: set[tuple[str, str]] = set()
        self.unfamiliar = UnfamiliarWatch()
        self._cycle_lock = threading.Lock()
        self._train_lock = threading.Lock()
        self._cancel_training = threading.Event()
        self._pacer: Pacer | None = None
        self._stop_flag = False
        self._reload_flag = False
        self._stalled = False
        self._scheduler: Any = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # -- flags (safe from signal handlers and other threads) -------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stop_flag

    def request_stop(self) -> None:
        self._stop_flag = True
        self._poke()

    def request_reload(self) -> None:
        self._reload_flag = True
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # buffer full or closed: the loop wakes on its tick anyway
            self._wake_w.send(b"\0")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload_flag = True
        else:
            self._stop_flag = True

    # -- lifecycle ---------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Start, loop until stopped (signal, `request_stop` or the paced cycles are done), stop."""
        restore = self._install_signals() if install_signals else None
        try:
            try:
                self.start()
                self._loop()
            finally:
                self.shutdown()
        finally:
            if restore is not None:
                restore()
            self._wake_r.close()
            self._wake_w.close()
        return 0

    def _install_signals(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: signal handlers not installed")
            return None
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        old_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def start(self) -> None:
        p = self.parts
        config = p.holder.config
        p.metrics.set_envelope(config.envelope())
        p.metrics.reload_ts.set(p.wall_clock())
        scheduler = make_scheduler()
        self.monitor.attach(scheduler)
        trig = self.trigger
        jobs = Jobs(cycle=self._cycle_job, quality=self._quality_job,
                    training=None if p.retrain is None else self._training_job,
                    submit_quality=lambda: self._submit(self._quality_job, "quality"),
                    submit_training=self.submit_training)
        if isinstance(trig, WallClockTrigger):
            schedule_jobs(scheduler, trig, jobs)
            if self.retention is not None:
                schedule_retention(scheduler, self.run_retention, TRAINING_EXECUTOR)
        scheduler.start()
        self._scheduler = scheduler
        if isinstance(trig, WallClockTrigger) and trig.train_at_start and p.retrain is not None:
            log.info("no champion model yet: training now (rules decide until it is ready)")
            self.submit_training()
        if isinstance(trig, PacedTrigger):
            self._pacer = Pacer(trig, jobs, stopping=lambda: self._stop_flag, on_done=self._poke)
            self._pacer.start()
        p.notifier.ready(f"running: mode {config.mode}, site {config.site_id}")
        log.info("daemon running: mode %s, site %s, %s", config.mode, config.site_id,
                 describe(trig, p.retrain is not None))

    def _loop(self) -> None:
        last_ping = -math.inf
        while not self._stop_flag:
            self._wait(self.tick_s)
            if self._stop_flag:
                break
            if self._reload_flag:
                self._reload_flag = False
                self._reload(requested=True)
            else:
                self._reload(requested=False)
            interval = self.parts.watchdog_interval_s
            due = interval is not None and time.monotonic() - last_ping >= min(interval, self.tick_s)
            if due and self._healthy():
                self.parts.notifier.watchdog()
                last_ping = time.monotonic()
            if self._pacer is not None and self._pacer.done:
                log.info("accelerated run finished after %d cycles", self.cycles)
                break

    def _wait(self, timeout_s: float) -> None:
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout_s)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            return
        if ready:
            try:
                while self._wake_r.recv(256):
                    pass
            except BlockingIOError:
                pass

    def _healthy(self) -> bool:
        """False while the cycle is stuck: withholding the watchdog ping lets systemd restart us."""
        running = self.monitor.running_for_s("cycle")
        stalled = running is not None and running > self.stall_after_s
        if stalled and not self._stalled:
            log.error("the control cycle has been running for %.0f s (limit %.0f s): withholding the systemd "
                      "watchdog ping so that the daemon is restarted", running, self.stall_after_s)
        self._stalled = stalled
        return not stalled

    def _reload(self, requested: bool) -> None:
        p = self.parts
        if requested:
            p.notifier.reloading("reloading configuration")
            p.holder.request_reload()
        result = p.holder.poll()
        if result is None:
            return
        p.metrics.observe_reload(result.reload_ok, p.wall_clock())
        if result.reload_ok:
            p.metrics.set_envelope(p.holder.config.envelope())
        status = f"mode {p.holder.config.mode}: {result.message()}".replace("\n", " ")[:200]
        if requested:
            p.notifier.ready(status)
        else:
            log.info("config file changed on disk")
            p.notifier.status(status)

    def shutdown(self) -> None:
        """Stop taking new work, let the running cycle finish, cancel training, stop the scheduler."""
        self._stop_flag = True
        self.parts.notifier.stopping("stopping: finishing the running cycle")
        log.info("stopping: finishing the running cycle")
        self._cancel_training.set()
        if self._pacer is not None:
            self._pacer.stop()
        if self._scheduler is not None:
            # Jobs first, under the scheduler's lock: APScheduler 3 flips to "stopped" before it
            # takes that lock, and a one-shot job it is removing at that moment kills its thread
            # with a JobLookupError traceback. Running jobs still finish (shutdown waits for them).
            self._scheduler.remove_all_jobs()
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self._release("shutdown")
        log.info("stopped after %d cycles", self.cycles)

    # -- one-off jobs ------------------------------------------------------------------
    def _submit(self, func: Callable[[], None], job: str, executor: str = "default") -> None:
        if self._scheduler is None or self._stop_flag:
            return
        self._scheduler.add_job(func, id=f"{job}:once", name=job, executor=executor, replace_existing=True)

    def submit_training(self) -> None:
        """Start a training run on the training executor (skipped if one is running)."""
        self._submit(self._training_job, "training", TRAINING_EXECUTOR)

    # -- the jobs ----------------------------------------------------------------------
    def _cycle_job(self) -> None:
        with self._cycle_lock:
            if self._stop_flag and isinstance(self.trigger, WallClockTrigger):
                return  # told to stop before this run began: do not start a new cycle
            with self.monitor.track("cycle"):
                report = self.run_one_cycle()
        for callback in self.parts.on_cycle:
            try:
                callback(report)
            except Exception:
                log.exception("cycle callback failed")

    def run_one_cycle(self) -> CycleReport:
        """Hooks, read, decide, record, actuate, publish: one cycle. Never raises."""
        p = self.parts
        config = p.holder.config
        started = time.perf_counter()
        decision: Decision | None = None
        error: str | None = None
        self._model = None
        try:
            self._hooks("before_cycle")
            try:
                decision = run_cycle(config, self._source, self._resolve_model, p.actuator, p.recorder, p.clock,
                                     dict(self.last_applied))
            except Exception as exc:  # a bug, not plant trouble (run_cycle handles that): report, keep going
                error = f"{type(exc).__name__}: {exc}"
                log.exception("control cycle failed")
            if decision is not None:
                self.last_applied.update(decision.sent)
            self._hand_back(config.mode, error)
        finally:
            self._hooks("after_cycle", decision)
        self.cycles += 1
        savings = None
        if decision is None:
            self.cycle_errors += 1
            p.metrics.decisions.labels(outcome="error").inc()
        else:
            self.last_decision = decision
            unfamiliar = self.unfamiliar.observe(decision.model_version, held_unfamiliar(decision),
                                                 config.retraining.unfamiliar_after,
                                                 config.retraining.unfamiliar_retry_after)
            if unfamiliar is not None and p.retrain is not None:  # without retraining, nothing to ask
                self._request_retraining("unfamiliar", f"{decision.model_version}#{self.unfamiliar.requests}",
                                         unfamiliar, logging.WARNING)
            try:
                savings = self.publisher.publish(config, decision, self._model)
            except Exception:  # metrics must never stop the control loop
                log.exception("publishing the cycle's metrics failed")
        return CycleReport(self.cycles, decision, time.perf_counter() - started, savings, error)

    def _hand_back(self, mode: str, error: str | None) -> None:
        """Release the plant to its own logic after a failed cycle or in a hand-back mode."""
        releaser = self.parts.releaser
        if releaser is None:
            return
        if error is not None:
            self._release(f"control cycle failed: {error}")
        elif releaser.hands_back(mode):
            self._release(f"mode {mode}")

    def _release(self, reason: str) -> None:
        releaser = self.parts.releaser
        if releaser is None:
            return
        try:
            result = releaser.release(reason)
        except Exception:  # the BMS's heartbeat logic is the backstop
            log.exception("handing the plant back failed (%s)", reason)
            return
        if not result.ok:
            log.error("handing the plant back failed (%s): %s", reason, result.status)

    def _hooks(self, name: str, *args: Any) -> None:
        for hook in self.parts.hooks:
            try:
                getattr(hook, name)(*args)
            except DatabaseError as exc:
                self.parts.metrics.db_error()
                log.warning("%s.%s: %s", type(hook).__name__, name, exc)
            except Exception:
                log.exception("%s.%s failed", type(hook).__name__, name)

    def _resolve_model(self) -> Forecaster | None:
        """The cycle's model; withheld (and retraining requested) when it cannot load or has drifted."""
        src = self.parts.forecaster
        try:
            model = src if src is None or isinstance(src, Forecaster) else src()
        except Exception as exc:  # the cycle falls back with model_error; a new model may cure it
            why = f"{type(exc).__name__}: {exc}"
            self._request_retraining("model_error", why, why)
            raise
        if model is not None:
            drift = self.publisher.model_drift(self.parts.holder.config, model)
            if drift is not None:
                self._request_retraining("drift", str(model.version), f"model {model.version}: {drift}")
                raise ModelWithdrawn(drift)
        self._model = model
        return model

    def _request_retraining(self, reason: str, problem: str, why: str, level: int = logging.ERROR) -> None:
        """Log the model problem and ask for one training run per ``(reason, problem)``.

        ``problem`` names the case stably (the model version for drift, the error for a
        model that cannot load), so that a message whose figures change every cycle
        does not ask again.
        """
        if (reason, problem) in self._retraining_asked:
            return
        self._retraining_asked.add((reason, problem))
        if self.parts.retrain is None:
            log.error("%s; the rules decide (no retraining configured: replace the model)", why)
            return
        log.log(level, "%s; the rules decide and retraining is requested", why)
        self.parts.metrics.retraining_requested(reason)
        self.submit_training()

    def _quality_job(self) -> None:
        with self.monitor.track("quality"):
            self.quality.run()

    def _training_job(self) -> None:
        retrain = self.parts.retrain
        if retrain is None:
            return
        if not self._train_lock.acquire(blocking=False):
            self.monitor.skip("training", "a training run is still going")
            return
        try:
            with self.monitor.track("training"):
                outcome = retrain(self._cancel_training)
            if outcome.error == "cancelled":
                return
            self.record_training(outcome)
            invalidate = getattr(self.parts.forecaster, "invalidate", None)
            if invalidate is not None:
                invalidate()
        finally:
            self._train_lock.release()

    def run_retention(self) -> None:
        """The daily retention job (`controller.service.retention`); nothing without an engine."""
        if self.retention is not None:
            with self.monitor.track("retention"):
                self.retention.run()

    def record_training(self, outcome: TrainingOutcome) -> None:
        """Count a finished training run (the daemon's own, or one done before it started)."""
        self.trainings.append(outcome)
        self.parts.metrics.observe_training(outcome.ok, outcome.finished_ts_s, outcome.duration_s,
                                            val_cooling_power_mae_kw=outcome.cooling_power_mae_kw,
                                            val_rack_inlet_mae_c=outcome.rack_inlet_mae_c)

    def status(self) -> Mapping[str, Any]:
        """A snapshot for status lines and summaries."""
        return {"cycles": self.cycles, "cycle_errors": self.cycle_errors, "trainings": len(self.trainings),
                "overruns": dict(self.monitor.overruns), "skipped": dict(self.monitor.skipped),
                "last_applied": dict(self.last_applied)}
