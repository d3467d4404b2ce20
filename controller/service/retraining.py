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

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from controller.config import QualitySettings
from controller.cycle import NoChampion
from db.engine import DatabaseError
from forecasting.protocol import Forecaster

if TYPE_CHECKING:  # forecasting.train imports torch: only when a model is trained
    from forecasting.train import TrainResult

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


CALIBRATION_FILE = "online_calibration.json"
"""Beside a model's artifact: its online calibration (`forecasting.online_calibration`), kept across restarts."""


def calibrated(model: Forecaster, path: Path, previous: Any = None) -> Forecaster:
    """``model`` wrapped in its online calibration: the state saved at ``path``, else the
    ``previous`` champion's carried over (`OnlineCalibration.carried_to`), else a fresh one.

    A state that cannot be read (or belongs to another version) is logged and not used.
    """
    from forecasting.online_calibration import CalibratedForecaster, OnlineCalibration

    cal = None
    if path.is_file():
        try:
            cal = OnlineCalibration.from_json(json.loads(path.read_text(encoding="utf-8")))
            if cal.version != model.version:
                raise ValueError(f"it belongs to model {cal.version}")
        except (OSError, ValueError) as exc:
            log.warning("online calibration %s not used (%s): starting from the training factors", path, exc)
            cal = None
    if cal is None and isinstance(previous, OnlineCalibration):
        cal = previous.carried_to(model)
    wrapped: Forecaster = CalibratedForecaster(model, cal or OnlineCalibration.for_model(model))
    return wrapped


def save_calibration(model: Forecaster | None, artifact_dir: Path) -> None:
    """Write ``model``'s online calibration beside its artifact (atomically); no-op for other models."""
    cal = getattr(model, "calibration", None)
    if cal is None:
        return
    path = artifact_dir / CALIBRATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cal.to_json()), encoding="utf-8")
    tmp.replace(path)


class ChampionProvider:
    """A callable returning the site's champion forecaster (None when there is none).

    The champion comes wrapped in its online calibration (`calibrated`): its intervals
    and sigmas follow its matured forecasts; `save_calibration` keeps that across restarts.

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
        self._artifact_dir: Path | None = None

    @property
    def info(self) -> ModelInUse | None:
        """The model currently in use, if any."""
        return self._info

    def _why_no_champion(self) -> str | None:
        """Why the site has no champion, where its newest model was rejected for losing to a baseline.

        Stable wording (no version, no figures), so that the daemon asks for retraining once, not every cycle.
        """
        from forecasting.registry import BASELINES_KEY, list_entries

        try:
            entries = list_entries(self.engine, self.site)
        except DatabaseError:
            return None
        newest = max(entries, key=lambda e: e.created_at, default=None)
        verdicts = newest.meta.get(BASELINES_KEY) if newest is not None and newest.status == "rejected" else None
        if not isinstance(verdicts, list) or all(v.get("ok", True) for v in verdicts if isinstance(v, dict)):
            return None
        return ("the newest trained model forecasts worse than a simpler baseline and was not promoted; "
                "running on the rules (see `coolpilot models show` for the comparison)")

    @property
    def current(self) -> Forecaster | None:
        """The model the last call returned (calibration wrapper included), without asking the registry."""
        return self._model

    def save_calibration(self) -> None:
        """Persist the champion's online calibration beside its artifact (errors are logged, not raised)."""
        model, info = self._model, self._artifact_dir
        if model is None or info is None:
            return
        try:
            save_calibration(model, info)
        except OSError as exc:
            log.warning("cannot save the online calibration of model %s: %s", model.version, exc)

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
                why = self._why_no_champion()
                if why is not None:
                    raise NoChampion(why)
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
            self._artifact_dir = Path(entry.artifact_path)
            wrapped = calibrated(model, self._artifact_dir / CALIBRATION_FILE,
                                 previous=getattr(self._model, "calibration", None))
            self._model = wrapped
            created = entry.created_at
            self._info = ModelInUse(version=entry.version, kind="ensemble",
                                    trained_ts_s=created.timestamp() if isinstance(created, datetime) else None,
                                    horizon_min=int(model.horizon_min))
            log.info("using champion model %s", entry.version)
            return wrapped


def stuck_in_history(engine: sa.Engine, site: str, frame: pd.DataFrame, settings: QualitySettings) -> pd.DataFrame:
    """The safety readings of ``frame`` (a wide history frame) that the stuck check in force flags.

    In force: the champion's data profile with ``settings``, or the defaults where the
    site has no champion or it cannot be loaded, over the rows a cycle reads with that
    champion (``controller.quality.stuck_readings``). Only the roles whose stuck reading
    forces the rules (``SAFETY_ROLES``: rack inlet, IT power) are judged: learning a
    fault there would blind the guard, while a long flat run of any other role (seven
    hours of one hourly dry-bulb value) is learned, so that it costs a masked input once.
    """
    from controller.cycle import window_rows
    from controller.cycle_state import SAFETY_ROLES
    from controller.quality import stuck_readings
    from forecasting.registry import load_champion

    try:
        champion = load_champion(engine, site)
    except Exception as exc:  # a champion that cannot be read: judge by the defaults, as the cycle would
        log.warning("stuck check for training: champion not readable (%s: %s); using the defaults",
                    type(exc).__name__, exc)
        champion = None
    return stuck_readings(frame, settings, getattr(champion, "data_profile", None), window_rows(settings, champion),
                          roles=SAFETY_ROLES)


def fit_without_stuck(engine: sa.Engine, site: str, frame: pd.DataFrame, settings: QualitySettings,
                      **fit: Any) -> tuple[TrainResult, pd.DataFrame]:
    """``forecasting.train.fit_forecaster`` on ``frame`` less its stuck readings: (result, cleaned frame).

    Why: a stuck sensor learned as the site's normal raises the profile's flat-run limit
    (a 55-row stuck rack inlet would let the next one under 83 rows pass unseen), and its
    readings are wrong targets. The cleaned frame is what the registry should judge on.
    The daemon's `Retrainer` and ``coolpilot train`` both train through here.
    """
    from forecasting.train import fit_forecaster, without_suspect

    suspect = stuck_in_history(engine, site, frame, settings)
    result = fit_forecaster(frame, suspect=suspect, **fit)
    if result.report["suspect_removed"]:
        log.warning("left out of training as stuck sensors (readings per role): %s", result.report["suspect_removed"])
    return result, without_suspect(frame, suspect)[0]


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

    ``train_config`` is a ``forecasting.train.TrainConfig`` (None: its defaults, baselines
    included: a model that loses to its best baseline is not promoted). ``quality``: the
    data-quality settings the cycle runs with (None: the defaults); readings their stuck
    check flags are not trained on (`stuck_in_history`).
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
        quality: QualitySettings | None = None,
        on_epoch: Callable[[Any], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine, self.site = engine, site
        self.models_dir = models_dir
        self.history_days = history_days
        self.train_config = train_config
        self.device = device
        self.quality = quality if quality is not None else QualitySettings()
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
        from db.records import controlled_since
        from forecasting.features import TARGETS, FeatureSpec
        from forecasting.history import load_history
        from forecasting.registry import register_trained
        from forecasting.train import TrainConfig

        config = self.train_config if self.train_config is not None else TrainConfig()  # baselines decide promotion

        def epoch(report: Any) -> None:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled()
            if self.on_epoch is not None:
                self.on_epoch(report)

        # the site's own roles and varying setpoints decide the features (masking on)
        frame = load_history(self.engine, self.site, self.history_days)
        spec = FeatureSpec.for_history(frame)
        log.info("training on %d rows of site %r (%s .. %s)", len(frame), self.site, frame.index[0], frame.index[-1])
        # what CoolPilot did since it took control is trained on, not held out (learn from own operation)
        since = controlled_since(self.engine, self.site)
        result, cleaned = fit_without_stuck(self.engine, self.site, frame, self.quality, spec=spec, config=config,
                                            device=self.device, on_epoch=epoch, recent_from=since,
                                            now=lambda: datetime.fromtimestamp(self._wall_clock(), UTC))
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled()
        decision = register_trained(self.engine, result, cleaned, self.models_dir, site=self.site)
        metrics = result.report["metrics"]["ensemble"]
        log.info("trained model %s in %.1f s: %s", decision.version, self._timer() - started, decision.reason)
        return TrainingOutcome(
            ok=True, duration_s=self._timer() - started, finished_ts_s=self._wall_clock(),
            version=decision.version, promoted=decision.promoted, reason=decision.reason,
            cooling_power_mae_kw=float(metrics[TARGETS[0]]["mae"]), rack_inlet_mae_c=float(metrics[TARGETS[1]]["mae"]),
        )
