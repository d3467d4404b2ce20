"""Model registry: artifacts on disk, records in the ``models`` table, champion and challenger.

A newly trained model (the challenger) becomes champion only if its ensemble is no
worse than its best baseline (HistGradientBoosting, ridge; trained on the same split)
on every target's test-window MAE, its score beats the champion's on the same recent
window of history (the challenger's test window, plus, once CoolPilot has run the
plant, its held-out controlled hours that neither model trained on: `_judge`), or,
having learned newer data than the champion, scores worse there only within noise (a
paired test over hourly blocks), and never while the champion is pinned. A challenger that loses to a baseline is stored as ``rejected`` even where
there is no champion: the controller then runs on its rules and says why. Losing
challengers are stored as ``rejected``; a replaced champion becomes ``retired``.
Rollback rejects the champion and restores the most recently created retired model. Loading always checks the weights' sha256
against the database record, so a changed file is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from db import records
from forecasting.artifact import SIDECAR_FILE, ArtifactError, load_artifact, save_artifact, sha256_file
from forecasting.evaluate import (
    PROMOTION_BASELINES,
    Span,
    WindowSamples,
    common_samples,
    compare_models,
    concat_samples,
    ensemble_metrics,
    samples_in,
)
from forecasting.model import EnsembleForecaster
from forecasting.spec import STEP_MIN
from forecasting.train import TrainResult

#: Key in a model record's meta holding the sha256 of its JSON sidecar (records made
#: before it existed are checked on their weights only).
SIDECAR_SHA256_KEY = "sidecar_sha256"


class RegistryError(ValueError):
    """A registry request that cannot be met (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class ModelEntry:
    """One row of the models table, with its JSON columns parsed."""

    version: str
    status: str
    pinned: bool
    created_at: datetime
    artifact_path: str
    sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """Outcome of champion versus challenger for one newly trained model."""

    version: str
    promoted: bool
    reason: str
    challenger_score: float
    champion_version: str | None = None
    champion_score: float | None = None
    artifact_path: Path | None = None
    baselines: tuple[BaselineVerdict, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baselines"] = [v.as_dict() for v in self.baselines]
        d["artifact_path"] = None if self.artifact_path is None else str(self.artifact_path)
        return d


def decide(challenger_score: float, champion_score: float | None, champion_pinned: bool,
           champion_version: str | None, *, fresher_within_noise: bool = False,
           window: str = "the same window") -> tuple[bool, str]:
    """Pure rule: promote when there is no usable champion, or the challenger scores lower,
    or it has learned newer data than the champion and scores worse only within noise."""
    if champion_version is None:
        return True, "no champion yet: the new model becomes champion"
    if champion_pinned:
        return False, f"champion {champion_version} is pinned: the new model stays a candidate"
    if champion_score is None:
        return True, f"champion {champion_version} could not be scored: the new model replaces it"
    if challenger_score < champion_score:
        return True, (f"new model scores {challenger_score:.3f} < champion {champion_version} "
                      f"{champion_score:.3f} on {window}: promoted")
    if fresher_within_noise:
        return True, (f"new model scores {challenger_score:.3f} >= champion {champion_version} "
                      f"{champion_score:.3f} on {window}, within noise, and has learned newer data: "
                      f"promoted")
    return False, (f"new model scores {challenger_score:.3f} >= champion {champion_version} "
                   f"{champion_score:.3f} on {window}: rejected")


#: Meta key of a model record holding its `BaselineVerdict`s.
BASELINES_KEY = "baseline_verdicts"


@dataclass(frozen=True)
class BaselineVerdict:
    """One target's test-window MAE (target unit): the ensemble against each baseline."""

    target: str
    ensemble_mae: float
    baseline_mae: dict[str, float]
    #: baselines that beat the ensemble beyond noise (`forecasting.evaluate.compare_with_baselines`)
    worse_than: tuple[str, ...] = ()
    samples: int | None = None

    @property
    def best(self) -> str | None:
        """The baseline with the lowest MAE, None when none was trained."""
        return min(self.baseline_mae, key=self.baseline_mae.__getitem__) if self.baseline_mae else None

    @property
    def ok(self) -> bool:
        """The ensemble is not worse than any baseline beyond noise (True when there is none to compare)."""
        return not self.worse_than

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ensemble_mae": self.ensemble_mae, "baseline_mae": dict(self.baseline_mae),
                "best": self.best, "ok": self.ok, "worse_than": list(self.worse_than), "samples": self.samples}


def baseline_verdicts(metrics: Mapping[str, Any]) -> list[BaselineVerdict]:
    """Per target forecast by the ensemble, its MAE against the baselines' on the same held-out rows.

    From training's paired comparison (``metrics["promotion"]``: calibration and test blocks,
    worse only beyond noise) where there is one; else from the test-window MAEs, where any
    lower baseline MAE counts (a record from before that comparison existed).
    """
    paired = metrics.get("promotion")
    if isinstance(paired, Mapping):
        return [BaselineVerdict(target, float(row["ensemble_mae"]),
                                {n: float(b["mae"]) for n, b in row["baselines"].items()},
                                tuple(n for n, b in row["baselines"].items() if b.get("worse")), int(row["samples"]))
                for target, row in paired.items()]
    out = []
    for target, figures in metrics["ensemble"].items():
        if not (isinstance(figures, Mapping) and "mae" in figures):
            continue
        base = {name: float(metrics[name][target]["mae"]) for name in PROMOTION_BASELINES
                if isinstance(metrics.get(name), Mapping) and target in metrics[name]}
        ens = float(figures["mae"])
        out.append(BaselineVerdict(target, ens, base, tuple(n for n, m in base.items() if m < ens)))
    return out


def baseline_problem(verdicts: list[BaselineVerdict]) -> str | None:
    """Why the ensemble must not be promoted (worse than its best baseline on some target), else None."""
    worse = [v for v in verdicts if not v.ok]
    if not worse:
        return None
    return "; ".join(f"{v.target} MAE {v.ensemble_mae:.3g} > {v.best} {v.baseline_mae[v.best or '']:.3g}"
                     + ("" if v.samples is None else f" over {v.samples} held-out samples, beyond noise")
                     for v in worse)


def _field(rec: Any, name: str) -> Any:
    return rec[name] if isinstance(rec, Mapping) else getattr(rec, name)


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    parsed = json.loads(value or "{}")
    return parsed if isinstance(parsed, dict) else {}


def _entry(rec: Any) -> ModelEntry:
    metrics = _field(rec, "metrics") if _has(rec, "metrics") else _json(_field(rec, "metrics_json"))
    meta = _field(rec, "meta") if _has(rec, "meta") else _json(_field(rec, "meta_json"))
    return ModelEntry(version=str(_field(rec, "version")), status=str(_field(rec, "status")),
                      pinned=bool(_field(rec, "pinned")), created_at=_field(rec, "created_at"),
                      artifact_path=str(_field(rec, "artifact_path")), sha256=str(_field(rec, "sha256")),
                      metrics=dict(metrics), meta=dict(meta))


def _has(rec: Any, name: str) -> bool:
    return name in rec if isinstance(rec, Mapping) else hasattr(rec, name)


def champion_entry(engine: sa.Engine, site: str = "default") -> ModelEntry | None:
    rec = records.current_champion(engine, site=site)
    return None if rec is None else _entry(rec)


def list_entries(engine: sa.Engine, site: str = "default") -> list[ModelEntry]:
    return [_entry(r) for r in records.list_models(engine, site=site)]


def get_entry(engine: sa.Engine, version: str | None, site: str = "default") -> ModelEntry:
    """A model by version; None means the champion."""
    if version is None:
        champ = champion_entry(engine, site)
        if champ is None:
            raise RegistryError(f"site {site!r} has no champion model: run `coolpilot train`")
        return champ
    rec = records.get_model(engine, version)
    if rec is None or (_has(rec, "site") and _field(rec, "site") != site):
        raise RegistryError(f"site {site!r} has no model with version {version!r} (see `coolpilot models list`)")
    return _entry(rec)


def load_model(entry: ModelEntry) -> EnsembleForecaster:
    """Load a registered model, verifying its weights (and sidecar, when recorded) against its record."""
    sidecar_sha256 = entry.meta.get(SIDECAR_SHA256_KEY)
    model = load_artifact(Path(entry.artifact_path), expected_sha256=entry.sha256,
                          expected_sidecar_sha256=sidecar_sha256 if isinstance(sidecar_sha256, str) else None)
    if model.version != entry.version:
        raise ArtifactError(f"model artifact {entry.artifact_path}: holds version {model.version}, "
                            f"the database record says {entry.version}")
    return model


def load_champion(engine: sa.Engine, site: str = "default") -> EnsembleForecaster | None:
    """The champion forecaster of a site, or None when there is none."""
    entry = champion_entry(engine, site)
    return None if entry is None else load_model(entry)


def register_trained(engine: sa.Engine, result: TrainResult, frame: pd.DataFrame, models_dir: Path,
                     site: str = "default") -> Decision:
    """Save the artifact, record it, and promote it if it beats the champion on its test window."""
    model = result.forecaster
    path, digest = save_artifact(model, models_dir)
    challenger_score = float(result.report["metrics"]["ensemble"]["score"])
    champ = champion_entry(engine, site)
    champ_score: float | None = None
    note = ""
    fresher = False
    window = "the same window"
    if champ is not None:
        try:
            champ_model = load_model(champ)
            challenger_score, champ_score, fresher, window = _judge(model, champ_model, result.report, champ.meta,
                                                                    frame, challenger_score)
        except (ArtifactError, ValueError) as exc:
            note = f" ({exc})"
    promoted, reason = decide(challenger_score, champ_score, champ.pinned if champ else False,
                              champ.version if champ else None, fresher_within_noise=fresher, window=window)
    verdicts = baseline_verdicts(result.report["metrics"])
    worse = baseline_problem(verdicts)
    if worse is not None:
        promoted, reason = False, f"not promoted: the ensemble forecasts worse than its best baseline ({worse})"
    meta = {k: v for k, v in model.sidecar().items() if k in ("created_at", "training", "libraries", "horizon_min")}
    meta["decision"] = reason + note
    meta[BASELINES_KEY] = [v.as_dict() for v in verdicts]
    meta[SIDECAR_SHA256_KEY] = sha256_file(path / SIDECAR_FILE)
    records.insert_model(engine, site=site, version=model.version, artifact_path=str(path.resolve()),
                         sha256=digest, status="candidate", metrics=model.meta.get("metrics", {}), meta=meta)
    if promoted:
        records.set_model_status(engine, model.version, "champion")
    elif worse is not None or (champ is not None and not champ.pinned):
        records.set_model_status(engine, model.version, "rejected")
    return Decision(version=model.version, promoted=promoted, reason=reason + note,
                    challenger_score=challenger_score, champion_version=champ.version if champ else None,
                    champion_score=champ_score, artifact_path=path, baselines=tuple(verdicts))


#: Fewest held-out controlled samples, unseen by both models, that count in the judgement (2 h of 5-minute samples).
MIN_RECENT_SAMPLES = 24


def _judge(model: EnsembleForecaster, champion: EnsembleForecaster, report: Mapping[str, Any],
           champion_meta: Mapping[str, Any], frame: pd.DataFrame,
           test_score: float) -> tuple[float, float, bool, str]:
    """(challenger score, champion score, fresher within noise, the windows' description).

    Both are scored on the challenger's test window (the newest days before control) and,
    where it holds at least `MIN_RECENT_SAMPLES` that neither model trained on, on its
    held-out controlled chunks after the champion's newest training sample; the score is
    then the mean of the two windows' scores, so that the regime the controller runs in
    weighs as much as the rules' regime. ``test_score``: the challenger's score on its
    test block, from its training report. ValueError where the champion cannot be scored.
    """
    pre: list[Span] = [(pd.Timestamp(report["window"]["test"][0]), pd.Timestamp(report["window"]["test"][1]))]
    recent = _unseen_by(champion_meta, report.get("recent_test_spans") or [])
    b_pre, b_rec = samples_in(champion, frame, [pre, recent])
    a_pre, a_rec = (b_pre, b_rec) if model.spec == champion.spec else samples_in(model, frame, [pre, recent])
    if not len(b_pre.index_ns):
        raise ValueError(f"no complete samples between {pre[0][0].isoformat()} and {pre[0][1].isoformat()}")
    challenger_score, champ_score = test_score, _score(champion, b_pre)
    a_rec, b_rec = common_samples(a_rec, b_rec)
    window = "the same window"
    if len(a_rec.index_ns) >= MIN_RECENT_SAMPLES:
        challenger_score = (challenger_score + _score(model, a_rec)) / 2.0
        champ_score = (champ_score + _score(champion, b_rec)) / 2.0
        a_pre, b_pre = concat_samples(a_pre, a_rec), concat_samples(b_pre, b_rec)
        window = (f"the same windows (test days before control, and {len(a_rec.index_ns) * STEP_MIN / 60:.1f} h "
                  f"of held-out controlled hours)")
    fresher = False
    if champ_score <= challenger_score and _trained_later(report, champion_meta) and len(a_pre.index_ns):
        fresher = not any(p["worse"] for p in compare_models(model, champion, a_pre, b_pre).values())
    return challenger_score, champ_score, fresher, window


def _score(model: EnsembleForecaster, s: WindowSamples) -> float:
    return float(ensemble_metrics(model, s.x, s.y)["score"])


def _unseen_by(champion_meta: Mapping[str, Any], spans: list[list[str]]) -> list[Span]:
    """The parts of the challenger's held-out controlled spans after the champion's newest training sample."""
    try:
        seen_to = pd.Timestamp(str(champion_meta["training"]["window"]["train"][1]))
    except (KeyError, TypeError, IndexError):
        return []
    out = []
    for a, b in spans:
        start, end = max(pd.Timestamp(a), seen_to + pd.Timedelta(seconds=1)), pd.Timestamp(b)
        if start <= end:
            out.append((start, end))
    return out


def _trained_later(report: Mapping[str, Any], champion_meta: Mapping[str, Any]) -> bool:
    """Whether the challenger's training data reaches past the champion's."""
    try:
        mine = str(report["window"]["train"][1])
        theirs = str(champion_meta["training"]["window"]["train"][1])
    except (KeyError, TypeError, IndexError):
        return False
    return pd.Timestamp(mine) > pd.Timestamp(theirs)


def promote(engine: sa.Engine, version: str, pin: bool | None = None, site: str = "default") -> ModelEntry:
    """Make a stored model champion (after checking that its artifact loads); optionally (un)pin it."""
    entry = get_entry(engine, version, site)
    load_model(entry)  # refuse to promote an artifact that would not load
    previous = champion_entry(engine, site)
    records.set_model_status(engine, version, "champion", pinned=entry.pinned if pin is None else pin)
    if previous is not None and previous.version != version and previous.pinned:
        records.set_model_status(engine, previous.version, "retired", pinned=False)  # a pin ends with the reign
    return get_entry(engine, version, site)


def rollback(engine: sa.Engine, site: str = "default") -> tuple[ModelEntry, ModelEntry]:
    """Reject the champion and restore the newest retired model; returns (old, new) champions."""
    champ = champion_entry(engine, site)
    if champ is None:
        raise RegistryError(f"site {site!r} has no champion to roll back")
    retired = [e for e in list_entries(engine, site) if e.status == "retired"]
    if not retired:
        raise RegistryError(f"no earlier champion of site {site!r} to roll back to (no retired models)")
    previous = max(retired, key=lambda e: e.created_at)
    load_model(previous)
    # promote first, so that the site is never left without a champion between the two writes
    records.set_model_status(engine, previous.version, "champion")
    records.set_model_status(engine, champ.version, "rejected", pinned=False)
    return get_entry(engine, champ.version, site), get_entry(engine, previous.version, site)
