"""Artifacts (safetensors + JSON, verified on load) and champion/challenger in the models table."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import torch

from db.records import list_models
from forecasting.artifact import (
    SIDECAR_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    load_artifact,
    save_artifact,
    sha256_bytes,
    sha256_file,
)
from forecasting.evaluate import evaluate_on_window
from forecasting.model import EnsembleForecaster
from forecasting.registry import (
    RegistryError,
    champion_entry,
    decide,
    get_entry,
    list_entries,
    load_champion,
    load_model,
    promote,
    register_trained,
    rollback,
)
from forecasting.train import TrainConfig, TrainResult, fit_forecaster
from tests._forecast_synth import synthetic_history

SITE = "hall-f"
TINY = TrainConfig(members=2, hidden=(32, 32), max_epochs=8, batch_size=256, min_samples=1000, baselines=False)


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return synthetic_history(days=14, seed=5)


@pytest.fixture(scope="module")
def trained(history: pd.DataFrame) -> TrainResult:
    return fit_forecaster(history, config=TINY, device="cpu")


def variant(result: TrainResult, history: pd.DataFrame, version: str, cooling_bias_kw: float) -> TrainResult:
    """The same model under another version, with its cooling forecast shifted (a worse model)."""
    model = result.forecaster
    sidecar = model.sidecar()
    sidecar["version"] = version
    sidecar["y_scaler"]["mean"][0] += cooling_bias_kw
    other = EnsembleForecaster.from_parts(model.tensors(), sidecar)
    start, end = (pd.Timestamp(t) for t in result.report["window"]["test"])
    metrics = evaluate_on_window(other, history, start, end)
    other.meta["metrics"] = {"ensemble": metrics}
    report = {**result.report, "version": version, "metrics": {"ensemble": metrics}}
    return TrainResult(forecaster=other, report=report)


def test_artifact_round_trip_is_exact_and_pickle_free(trained: TrainResult, history: pd.DataFrame,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, digest = save_artifact(trained.forecaster, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [trained.forecaster.version]  # no temp leftovers
    sidecar = json.loads((path / SIDECAR_FILE).read_text())
    assert sidecar["weights_sha256"] == digest and sidecar["horizon_min"] == 60
    assert sidecar["targets"] == ["cooling_power_kw", "rack_inlet_max_c", "it_power_kw"]  # IT power is metered
    for key in ("x_scaler", "y_scaler", "feature_names", "training", "libraries", "metrics", "conformal"):
        assert key in sidecar
    assert sidecar["training"]["data_hash"] == trained.report["data_hash"]

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    back = load_artifact(path, expected_sha256=digest)
    state = history.iloc[-back.history_needed():]
    cands = np.array([[9.0, 20.0, 24.0], [12.0, 22.0, 27.0]])
    a, b = trained.forecaster.predict(state, cands), back.predict(state, cands)
    assert np.array_equal(a.cooling_power_kw, b.cooling_power_kw)
    assert np.array_equal(a.rack_inlet_hi_c, b.rack_inlet_hi_c) and np.array_equal(a.ood_score, b.ood_score)
    with pytest.raises(ArtifactError, match="already exists"):
        save_artifact(trained.forecaster, tmp_path)


def test_truncated_tampered_and_corrupt_artifacts_are_refused(trained: TrainResult, tmp_path: Path) -> None:
    path, digest = save_artifact(trained.forecaster, tmp_path)
    weights = path / WEIGHTS_FILE
    good = weights.read_bytes()

    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError, match=rf"{WEIGHTS_FILE}.*differs from the database record"):
        load_artifact(path, expected_sha256=digest)
    with pytest.raises(ArtifactError, match="truncated, corrupt or from another model"):
        load_artifact(path)

    tampered = bytearray(good)
    tampered[-5] ^= 0xFF
    weights.write_bytes(bytes(tampered))
    with pytest.raises(ArtifactError, match="refusing to load"):
        load_artifact(path, expected_sha256=digest)

    weights.write_bytes(good)
    sidecar_path = path / SIDECAR_FILE
    text = sidecar_path.read_text()
    sidecar_path.write_text(text[:200])
    with pytest.raises(ArtifactError, match=rf"{SIDECAR_FILE}: not valid JSON \(line"):
        load_artifact(path, expected_sha256=digest)

    sidecar = json.loads(text)
    sidecar["feature_names"] = sidecar["feature_names"][:-1]
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ArtifactError, match="do not match"):
        load_artifact(path, expected_sha256=digest)

    garbage = b"\x00" * 64
    weights.write_bytes(garbage)
    sidecar["feature_names"] = json.loads(text)["feature_names"]
    sidecar["weights_sha256"] = sha256_bytes(garbage)
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="file not found"):
        load_artifact(tmp_path / "nope")


def test_decision_rule() -> None:
    assert decide(1.0, None, False, None)[0]
    assert decide(1.0, 2.0, False, "v1")[0]
    promoted, reason = decide(2.0, 1.0, False, "v1")
    assert not promoted and "rejected" in reason
    promoted, reason = decide(0.1, 5.0, True, "v1")
    assert not promoted and "pinned" in reason
    assert decide(3.0, None, False, "v1")[0]  # a champion that cannot be scored is replaced
    assert decide(2.0, 1.0, False, "v1", fresher_within_noise=True)[0]  # newer data, worse only within noise
    assert not decide(2.0, 1.0, True, "v1", fresher_within_noise=True)[0]  # a pin still holds


def test_a_challenger_that_learned_newer_days_wins_unless_worse_beyond_noise(
        engine: sa.Engine, trained: TrainResult, history: pd.DataFrame, tmp_path: Path) -> None:
    site = "fresh-hall"
    assert register_trained(engine, trained, history, tmp_path, site=site).promoted

    def learned_a_day_more(bias_kw: float, version: str) -> TrainResult:
        """A variant whose training data reaches a day past the champion's (as after a night of control)."""
        v = variant(trained, history, version, cooling_bias_kw=bias_kw)
        first, last = v.report["window"]["train"]
        window = {**v.report["window"], "train": [first, (pd.Timestamp(last) + pd.Timedelta(days=1)).isoformat()]}
        return TrainResult(forecaster=v.forecaster, report={**v.report, "window": window})

    # a hair worse on the older window than a champion that never saw the newest day: promoted
    d = register_trained(engine, learned_a_day_more(0.3, "fresher"), history, tmp_path, site=site)
    assert d.champion_score is not None and d.challenger_score > d.champion_score
    assert d.promoted and "within noise, and has learned newer data" in d.reason
    # far worse: newer data is no excuse
    d = register_trained(engine, learned_a_day_more(40.0, "fresher-but-wrong"), history, tmp_path, site=site)
    assert not d.promoted and "rejected" in d.reason
    # as worse, but without newer data: the plain rule (strictly better) keeps the champion
    d = register_trained(engine, variant(trained, history, "same-days", cooling_bias_kw=0.3), history, tmp_path,
                         site=site)
    assert not d.promoted


def test_once_coolpilot_has_run_the_plant_its_held_out_hours_weigh_as_much_as_the_days_before(
        engine: sa.Engine, tmp_path: Path) -> None:
    """A plant that changed under CoolPilot's control (cooling power 40 % up): the champion, which
    never saw the change, is judged on the held-out controlled hours that neither model trained on
    as much as on the days before control, and loses there; without held-out hours (share 0) only
    the days before control count."""
    history = synthetic_history(days=14, seed=7)
    since = history.index[0] + pd.Timedelta(days=10)
    changed = history.copy()
    changed.loc[changed.index >= since, "cooling_power_kw"] *= 1.4
    before = history[history.index < since]
    champion = fit_forecaster(before, config=TINY, device="cpu")
    champion_scores = {}
    for site, share in (("judged-on-both", 0.2), ("judged-before-only", 0.0)):
        champ = champion if share else variant(champion, before, "the-same-champion", cooling_bias_kw=0.0)
        assert register_trained(engine, champ, changed, tmp_path / site, site=site).promoted
        config = replace(TINY, recent_test_share=share)
        challenger = fit_forecaster(changed, config=config, device="cpu", recent_from=since.to_pydatetime())
        d = register_trained(engine, challenger, changed, tmp_path / site, site=site)
        spans = challenger.report["recent_test_spans"]
        if share:
            assert len(spans) == 4 and all(pd.Timestamp(a) >= since for a, _ in spans)
            assert "held-out controlled hours" in d.reason
            assert d.promoted and d.champion_score is not None and d.challenger_score < d.champion_score
        else:
            assert spans == [] and "on the same window:" in d.reason
        assert d.champion_score is not None
        champion_scores[site] = d.champion_score
    # the same champion on the same days before control; its error on the changed plant doubles its score
    assert champion_scores["judged-on-both"] > 2.0 * champion_scores["judged-before-only"]


def test_champion_challenger_pin_and_rollback(engine: sa.Engine, trained: TrainResult, history: pd.DataFrame,
                                              tmp_path: Path) -> None:
    assert champion_entry(engine, SITE) is None and load_champion(engine, SITE) is None
    first = register_trained(engine, trained, history, tmp_path, site=SITE)
    assert first.promoted and first.champion_version is None
    champ = champion_entry(engine, SITE)
    assert champ is not None and champ.version == trained.forecaster.version
    assert first.artifact_path is not None and champ.sha256 == sha256_file(first.artifact_path / WEIGHTS_FILE)
    loaded = load_champion(engine, SITE)
    assert loaded is not None and loaded.version == champ.version

    worse = variant(trained, history, "worse-model", cooling_bias_kw=40.0)
    d = register_trained(engine, worse, history, tmp_path, site=SITE)
    assert not d.promoted and d.champion_score is not None and d.challenger_score > d.champion_score
    assert get_entry(engine, "worse-model", SITE).status == "rejected"

    better_base = variant(trained, history, "base-again", cooling_bias_kw=0.0)
    assert better_base.report["metrics"]["ensemble"]["score"] == pytest.approx(d.champion_score)
    # a model worse than the champion by construction cannot pass; one equal to it does not either
    assert not register_trained(engine, better_base, history, tmp_path, site=SITE).promoted

    # pin the worse model by hand: training no longer replaces it, even by a better model
    pinned = promote(engine, "worse-model", pin=True, site=SITE)
    assert pinned.status == "champion" and pinned.pinned
    assert get_entry(engine, trained.forecaster.version, SITE).status == "retired"
    best = variant(trained, history, "best-model", cooling_bias_kw=0.0)
    d = register_trained(engine, best, history, tmp_path, site=SITE)
    assert not d.promoted and "pinned" in d.reason
    assert get_entry(engine, "best-model", SITE).status == "candidate"

    old, new = rollback(engine, SITE)
    assert old.version == "worse-model" and old.status == "rejected" and not old.pinned
    assert new.version == trained.forecaster.version and new.status == "champion"
    statuses = {m["version"]: m["status"] for m in list_models(engine, SITE)}
    assert list(statuses.values()).count("champion") == 1
    assert next(e.version for e in list_entries(engine, SITE)) == "best-model"  # newest first

    with pytest.raises(RegistryError, match="no model with version"):
        promote(engine, "nope", site=SITE)
    with pytest.raises(RegistryError, match="no model with version"):
        get_entry(engine, trained.forecaster.version, site="another-site")


def test_a_tampered_champion_is_refused(engine: sa.Engine, trained: TrainResult, history: pd.DataFrame,
                                        tmp_path: Path) -> None:
    d = register_trained(engine, trained, history, tmp_path, site=SITE)
    assert d.artifact_path is not None
    weights = d.artifact_path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    entry = champion_entry(engine, SITE)
    assert entry is not None
    with pytest.raises(ArtifactError, match="database record"):
        load_model(entry)
    with pytest.raises(ArtifactError, match="refusing to load"):
        promote(engine, entry.version, site=SITE)
