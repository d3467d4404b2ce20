"""The daemon's model edges: the champion in use, and retraining with champion-challenger.

Why here and lazy: the controller never imports torch itself (it only knows the
``Forecaster`` protocol), and rules-only daemons must start without loading it. The
forecasting package is imported only when a model is first needed or trained.

`ChampionProvider` is the cycle's forecaster source: it asks the registry for the
site's champion each cycle (one small query) and loads the artifact only when the
champion changes. If the database cannot be asked, the model in use stays in use.
`Retrainer` trains on the last N days, registers the new model and promotes it only
if it beats the champion on the same recent window (``forecasting.registry``). It
can be cancelled between epochs, so a daemon that is told to stop does not wait for
a whole training run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from db.engine import DatabaseError
from forecasting.protocol import Forecaster

log = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Training stopped early because the daemon is shutting down."""


@dataclass(frozen=True)
class ModelInUse:
    """What the metrics publish about the champion: registry version, kind, training time."""

    version: str
    kind: str
    trained_ts_s: float | None
    horizon_min: int


class ChampionProvider:
    """A callable returning the site's champion forecaster (None when there is none).

    Raises when the champion cannot be loaded (checksum mismatch, missing file): the
    cycle turns that into a ``model_error`` fallback. A failing version is not re-read
    every cycle; the error is repeated until the champion changes.
    """

    def __init__(self, engine: sa.Engine, site: str) -> None:
        self.engine, self.site = engine, site
        self._lock = threading.Lock()
        self._model: Forecaster | None = None
        self._info: ModelInUse | None = None
        self._failed: tuple[str, str, Exception] | None = None  # (version, sha256, error)

    @property
    def info(self) -> ModelInUse | None:
        """The model currently in use, if any."""
        return self._info

    def invalidate(self) -> None:
        """Forget the failure cache (after training registered a new model)."""
        with self._lock:
            self._failed = None

    def __call__(self) -> Forecaster | None:
        from forecasting.registry import champion_entry, load_model

        with self._lock:
            try:
                entry = champion_entry(self.engine, self.site)
            except DatabaseError as exc:
                if self._model is not None:
                    log.warning("cannot ask the registry for the champion (%s); keeping model %s",
                                exc, self._model.version)
                return self._model
            if entry is None:
                self._model, self._info = None, None
                return None
            if self._model is not None and self._model.version == entry.version:
                return self._model
            if self._failed is not None and self._failed[:2] == (entry.version, entry.sha256):
                raise self._failed[2]
            try:
                model = load_model(entry)
            except Exception as exc:
                self._failed = (entry.version, entry.sha256, exc)
                log.error("cannot load champion model %s: %s", entry.version, exc)
                raise
            self._failed = None
            self._model = model
            created = entry.created_at
            self._info = ModelInUse(version=entry.version, kind="ensemble",
                                    trained_ts_s=created.timestamp() if isinstance(created, datetime) else None,
                                    horizon_min=int(model.horizon_min))
            log.info("using champion model %s", entry.version)
            return model


@dataclass(frozen=True)
class TrainingOutcome:
    """One training run: whether it worked, the new version and whether it was promoted."""

    ok: bool
    duration_s: float
    finished_ts_s: float
    version: str | None = None
    promoted: bool = False
    reason: str = ""
    cooling_power_mae_kw: float | None = None
    rack_inlet_mae_c: float | None = None
    error: str | None = None


class Retrainer:
    """Trains a challenger from the site's history and lets the registry decide.

    ``train_config`` is a ``forecasting.train.TrainConfig`` (None: its defaults without
    the baseline models, which the champion-challenger rule does not use).
    """

    def __init__(
        self,
        engine: sa.Engine,
        site: str,
        models_dir: Path,
        history_days: int,
        *,
        train_config: Any = None,
        device: str = "auto",
        on_epoch: Callable[[Any], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine, self.site = engine, site
        self.models_dir = models_dir
        self.history_days = history_days
        self.train_config = train_config
        self.device = device
        self.on_epoch = on_epoch
        self._wall_clock, self._timer = wall_clock, timer

    def __call__(self, cancel: threading.Event | None = None) -> TrainingOutcome:
        started = self._timer()
        try:
            return self._train(cancel, started)
        except TrainingCancelled:
            log.info("training cancelled: the daemon is stopping")
            return TrainingOutcome(ok=False, duration_s=self._timer() - started, finished_ts_s=self._wall_clock(),
                                   error="cancelled")
        except Exception as exc:  # expected: too little history, database down; never crash the daemon
            log.error("training failed: %s: %s", type(exc).__name__, exc)
            return TrainingOutcome(ok=False, duration_s=self._timer() - started, finished_ts_s=self._wall_clock(),
                                   error=f"{type(exc).__name__}: {exc}")

    def _train(self, cancel: threading.Event | None, started: float) -> TrainingOutcome:
        from forecasting.features import TARGETS, FeatureSpec
        from forecasting.history import load_history
        from forecasting.registry import register_trained
        from forecasting.train import TrainConfig, fit_forecaster

        config = self.train_config if self.train_config is not None else TrainConfig(baselines=False)

        def epoch(report: Any) -> None:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled()
            if self.on_epoch is not None:
                self.on_epoch(report)

        # the site's own roles and varying setpoints decide the features (masking on)
        frame = load_history(self.engine, self.site, self.history_days)
        spec = FeatureSpec.for_history(frame)
        log.info("training on %d rows of site %r (%s .. %s)", len(frame), self.site, frame.index[0], frame.index[-1])
        result = fit_forecaster(frame, spec=spec, config=config, device=self.device, on_epoch=epoch,
                                now=lambda: datetime.fromtimestamp(self._wall_clock(), UTC))
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled()
        decision = register_trained(self.engine, result, frame, self.models_dir, site=self.site)
        metrics = result.report["metrics"]["ensemble"]
        log.info("trained model %s in %.1f s: %s", decision.version, self._timer() - started, decision.reason)
        return TrainingOutcome(
            ok=True, duration_s=self._timer() - started, finished_ts_s=self._wall_clock(),
            version=decision.version, promoted=decision.promoted, reason=decision.reason,
            cooling_power_mae_kw=float(metrics[TARGETS[0]]["mae"]), rack_inlet_mae_c=float(metrics[TARGETS[1]]["mae"]),
        )
