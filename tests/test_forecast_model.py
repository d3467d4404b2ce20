"""Batched ensemble, calibration, OOD score, baselines and training on a small synthetic plant."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from db.roles import SETPOINT_ROLES
from forecasting.baselines import fit_baselines
from forecasting.calibration import conformal_factor, coverage, interval, mape_pct
from forecasting.device import select_device
from forecasting.ensemble import BatchedEnsemble, EnsembleConfig, mixture
from forecasting.features import FeatureSpec, build_samples
from forecasting.ood import fit_ood
from forecasting.protocol import Forecast, Forecaster
from forecasting.train import (
    TrainConfig,
    TrainResult,
    cpu_threads,
    fit_forecaster,
    split_blocks,
    train_ensemble,
)
from tests._forecast_synth import synthetic_history

SMALL = TrainConfig(members=3, hidden=(64, 64), max_epochs=25, batch_size=256, min_samples=1000, patience=5)


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return synthetic_history(days=30, seed=3)


@pytest.fixture(scope="module")
def trained(history: pd.DataFrame) -> TrainResult:
    return fit_forecaster(history, config=SMALL, device="cpu")


def test_batched_ensemble_equals_members_run_one_by_one() -> None:
    cfg = EnsembleConfig(n_inputs=7, members=4, hidden=(16, 8))
    net = BatchedEnsemble(cfg, generator=torch.Generator().manual_seed(1))
    x = torch.randn(50, 7)
    out = net(x)
    assert out.shape == (4, 50, 4)
    for m in range(4):
        h = x
        for i in range(3):
            h = h @ net.weights[i][m] + net.biases[i][m]
            if i < 2:
                h = torch.nn.functional.silu(h)
        assert torch.allclose(out[m], h, atol=1e-5)
    # members differ (independent initialisation)
    assert not torch.allclose(out[0], out[1])


def test_broadcast_path_matches_full_rows() -> None:
    cfg = EnsembleConfig(n_inputs=9, members=3, hidden=(16, 16))
    net = BatchedEnsemble(cfg, generator=torch.Generator().manual_seed(2))
    state, cand = torch.randn(6), torch.randn(40, 3)
    full = torch.cat([state.expand(40, 6), cand], dim=1)
    with torch.inference_mode():
        assert torch.allclose(net.forward_broadcast(state, cand), net(full), atol=1e-5)


def test_mixture_variance_is_noise_plus_spread() -> None:
    net = BatchedEnsemble(EnsembleConfig(n_inputs=3, n_outputs=1, members=2, hidden=(4,)))
    raw = torch.tensor([[[1.0, 0.2]], [[3.0, -1.0]]])
    mean, var = net.split(raw)  # the training path (torch) and the inference path (numpy) agree
    mu, total = mixture(raw.numpy(), 1)
    assert mu[0, 0] == pytest.approx(2.0)
    assert total[0, 0] == pytest.approx(float(var.mean()) + 1.0, rel=1e-6)
    assert float(mean.mean()) == pytest.approx(2.0)


def test_conformal_factor_gives_nominal_coverage_on_new_data() -> None:
    rng = np.random.default_rng(0)
    sigma_model = np.full(4000, 1.0)  # the model thinks sigma=1; the truth has sigma=2
    y = rng.normal(0.0, 2.0, 4000)
    f = conformal_factor(y[:2000], np.zeros(2000), sigma_model[:2000], 0.9)
    assert f == pytest.approx(2.0 * 1.645, rel=0.08)
    lo, hi = interval(np.zeros(2000), sigma_model[2000:], f)
    assert 0.87 <= coverage(y[2000:], lo, hi) <= 0.93
    with pytest.raises(ValueError, match="too few"):
        conformal_factor(y[:5], np.zeros(5), np.ones(5), 0.9)


def test_ood_scores_training_data_below_one_and_far_points_above() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6000, 6))
    ood = fit_ood(z, np.arange(6, dtype=np.int64), n_state=4, k=10, n_reference=2000)
    inside = ood.score(rng.normal(size=(2000, 6)))
    assert 0.97 <= float(np.mean(inside < 1.0)) <= 1.0
    far = np.full((5, 6), 6.0)
    assert (ood.score(far) > 2.0).all()
    # the broadcast path is never below the exact score and equals it when nothing is pruned
    state = rng.normal(size=4)
    cand = rng.normal(size=(300, 2)) * 2.0
    rows = np.concatenate([np.broadcast_to(state, (300, 4)), cand], axis=1)
    exact = ood.score(rows)
    assert (ood.score_broadcast(state, cand, prefilter=64) >= exact - 1e-4).all()
    assert np.allclose(ood.score_broadcast(state, cand, prefilter=10_000), exact, atol=1e-4)


def test_ood_scale_comes_from_held_out_days_not_near_twins_of_training_rows() -> None:
    """Rows of one day are near-twins: scaled by training rows, an unseen day looks unfamiliar."""
    rng = np.random.default_rng(1)
    days = rng.normal(size=(40, 6))  # each day's condition
    rows = np.repeat(days, 150, axis=0) + 0.05 * rng.normal(size=(6000, 6))
    train, held = rows[:4500], rows[4500:]  # ten days never trained on
    cols = np.arange(6, dtype=np.int64)
    by_training = fit_ood(train, cols, n_state=4, k=10, n_reference=2000)
    by_held_out = fit_ood(train, cols, n_state=4, k=10, n_reference=2000, z_held_out=held[:750])
    unseen = held[750:]  # five more unseen days, from the same climate
    assert float(np.mean(by_training.score(unseen) > 1.0)) > 0.5
    assert float(np.mean(by_held_out.score(unseen) > 1.0)) < 0.25
    assert by_held_out.scale >= by_training.scale
    assert (by_held_out.score(np.full((5, 6), 8.0)) > 1.0).all()  # far away stays unfamiliar


def test_one_input_far_beyond_its_training_range_is_out_of_distribution() -> None:
    """A heat wave: one state column 8 units past anything seen while the rest stay typical."""
    rng = np.random.default_rng(1)
    z = rng.uniform(-1.0, 1.0, size=(6000, 12))
    ood = fit_ood(z, np.arange(12, dtype=np.int64), n_state=10, k=10, n_reference=2000)
    typical = rng.uniform(-0.9, 0.9, size=(200, 12))
    assert (ood.score(typical) < 1.0).mean() > 0.95
    hot = typical.copy()
    hot[:, 0] = 1.0 + 0.2 * 2.0  # 20 % of the range beyond the maximum: range score 2
    assert (ood.score(hot) >= 2.0 - 1e-6).all()
    assert (ood.score_broadcast(hot[0, :10], hot[:, 10:]) >= 2.0 - 1e-6).all()
    slightly = typical.copy()
    slightly[:, 0] = 1.0 + 0.05 * 2.0  # 5 % beyond: half the tolerance, not by itself unfamiliar
    knn_only = replace(ood, low=None, high=None)
    assert np.allclose(ood.score(slightly), np.maximum(knn_only.score(slightly), 0.5), atol=1e-2)


def test_newest_split_is_time_ordered_with_an_embargo(history: pd.DataFrame) -> None:
    fs = build_samples(history, FeatureSpec())
    masks = split_blocks(fs.index, replace(SMALL, holdout="newest"), pd.Timedelta(minutes=60))
    order = ["train", "val", "cal", "test"]
    for a, b in itertools.pairwise(order):
        assert fs.index[masks[a]].max() + pd.Timedelta(minutes=60) < fs.index[masks[b]].min()
    total = sum(int(m.sum()) for m in masks.values())
    assert total <= len(fs.index) and total > 0.95 * len(fs.index)


def test_interleaved_split_trains_on_every_part_of_the_history(history: pd.DataFrame) -> None:
    fs = build_samples(history, FeatureSpec())
    embargo = pd.Timedelta(minutes=60)
    masks = split_blocks(fs.index, SMALL, embargo)
    t = {b: fs.index[m] for b, m in masks.items()}
    assert all(len(t[b]) for b in ("val", "cal", "test"))
    assert t["test"].min() > max(t[b].max() for b in ("train", "val", "cal")) + embargo  # test stays newest
    train_ns = t["train"].as_unit("ns").asi8
    held_ns = np.sort(np.concatenate([t["val"].as_unit("ns").asi8, t["cal"].as_unit("ns").asi8]))
    at = np.clip(np.searchsorted(held_ns, train_ns), 1, len(held_ns) - 1)
    gap_ns = np.minimum(np.abs(held_ns[at] - train_ns), np.abs(held_ns[at - 1] - train_ns)).min()
    assert gap_ns > embargo.value  # no training sample within an embargo of a held-out one
    first, last = fs.index[0], t["test"].min()
    quarter = (last - first) / 4
    for b in ("train", "val"):  # spread over the history, not bunched at its end
        assert t[b].min() < first + quarter and t[b].max() > last - quarter
    held = len(t["val"]) + len(t["cal"])
    assert abs(held / len(fs.index) - (SMALL.val_share + SMALL.cal_share)) < 0.05
    assert not (masks["val"] & masks["cal"]).any() and not (masks["train"] & masks["val"]).any()


def test_a_history_too_short_for_day_long_chunks_keeps_the_newest_layout() -> None:
    embargo = pd.Timedelta(minutes=60)
    short = pd.date_range("2023-07-01", periods=9 * 288, freq="5min", tz="UTC")  # the quick start's 9 days
    masks = split_blocks(short, SMALL, embargo)
    assert all((masks[b] == m).all() for b, m in split_blocks(short, replace(SMALL, holdout="newest"), embargo).items())
    longer = pd.date_range("2023-07-01", periods=15 * 288, freq="5min", tz="UTC")
    val = longer[split_blocks(longer, SMALL, embargo)["val"]]
    assert val.max() - val.min() > pd.Timedelta(days=5)  # spread, not one block


def test_what_the_controller_did_is_trained_on_not_held_out(history: pd.DataFrame) -> None:
    fs = build_samples(history, FeatureSpec())
    since = fs.index[int(0.9 * len(fs.index))]  # CoolPilot took control for the newest tenth
    masks = split_blocks(fs.index, replace(SMALL, recent_test_share=0.0), pd.Timedelta(minutes=60),
                         recent_from=since)
    train = fs.index[masks["train"]]
    assert (fs.index[fs.index >= since].isin(train)).all()  # every sample since is trained on
    assert not masks["recent_test"].any()
    held = [fs.index[masks[b]] for b in ("val", "cal", "test")]
    for block in (train[train < since], *held[:2]):
        assert block.max() + pd.Timedelta(minutes=60) < held[2].min()
    assert held[-1].max() + pd.Timedelta(minutes=60) < since  # the held-out blocks end an embargo before
    # a controller in charge for most of the history: only the newest max_recent_share is trained on first
    masks = split_blocks(fs.index, SMALL, pd.Timedelta(minutes=60), recent_from=fs.index[10])
    assert all(masks[b].any() for b in ("val", "cal", "test"))
    assert fs.index[masks["test"]].max() < fs.index[int((1 - SMALL.max_recent_share) * len(fs.index))]


def test_held_out_controlled_chunks_lie_on_a_grid_every_model_of_the_deployment_shares() -> None:
    """The recent-test chunks: complete chunks only (the newest hours are always trained on),
    every 1/share-th chunk from when control began, an embargo from training, and the same
    chunks for a model trained a day later, so that no later model trains on them."""
    embargo = pd.Timedelta(minutes=30)
    config = replace(SMALL, recent_test_share=0.2, recent_test_chunk_h=4.0)
    since = pd.Timestamp("2023-07-15T00:00", tz="UTC")
    today = pd.date_range("2023-07-01", "2023-07-18T07:55", freq="5min", tz="UTC")
    masks = split_blocks(today, config, embargo, recent_from=since)
    held = today[masks["recent_test"]]
    hours = (held - since) / pd.Timedelta(hours=1)
    assert set(np.floor(hours / 4.0).astype(int)) == {4, 9, 14}  # 16-20 h, 36-40 h, 56-60 h after control began
    assert held.max() <= since + pd.Timedelta(hours=60)  # chunk 19 (76-80 h) is not complete yet: trained on
    assert today[-1] in today[masks["train"]]
    trained = today[masks["train"] | masks["val"] | masks["cal"] | masks["test"]]
    gaps = np.abs(trained.as_unit("ns").asi8[:, None] - held.as_unit("ns").asi8[None, :]).min()
    assert gaps > embargo.value
    controlled = today[today >= since]
    assert abs(len(held) / len(controlled) - 0.2) < 0.06
    later = pd.date_range("2023-07-01", "2023-07-19T07:55", freq="5min", tz="UTC")
    held_later = later[split_blocks(later, config, embargo, recent_from=since)["recent_test"]]
    assert held.isin(held_later).all() and len(held_later) > len(held)
    assert not split_blocks(today, config, embargo)["recent_test"].any()  # never before control


def test_training_beats_persistence_and_reports_every_baseline(trained: TrainResult) -> None:
    m = trained.report["metrics"]
    assert set(m) == {"ensemble", "persistence", "ridge", "hist_gradient_boosting", "promotion"}
    assert set(m["promotion"]["cooling_power_kw"]["baselines"]) == {"ridge", "hist_gradient_boosting"}
    for target in ("cooling_power_kw", "rack_inlet_max_c"):
        assert m["ensemble"][target]["mae"] < m["persistence"][target]["mae"]
        assert 0.0 <= m["ensemble"][target]["coverage"] <= 1.0
    assert m["ensemble"]["device"].startswith("cpu")
    assert trained.report["samples"]["train"] > trained.report["samples"]["test"] > 0
    assert trained.report["conformal_factors"][0] > 0


def test_forecaster_protocol_and_candidate_response(trained: TrainResult, history: pd.DataFrame) -> None:
    model = trained.forecaster
    assert isinstance(model, Forecaster)
    assert model.horizon_min == 60 and model.history_needed() == 13
    assert set(SETPOINT_ROLES) <= set(model.required_roles())
    state = history.iloc[-model.history_needed():]
    cands = np.array([[8.0, 19.0, 22.0], [14.0, 23.0, 28.0], [60.0, 90.0, 90.0]])
    fc = model.predict(state, cands)
    assert isinstance(fc, Forecast) and fc.interval_level == 0.9
    for arr in (fc.cooling_power_kw, fc.rack_inlet_max_c, fc.ood_score, fc.cooling_power_std_kw):
        assert arr.shape == (3,) and np.isfinite(arr).all()
    assert (fc.cooling_power_lo_kw < fc.cooling_power_kw).all() and (fc.cooling_power_kw < fc.cooling_power_hi_kw).all()
    assert (fc.rack_inlet_lo_c < fc.rack_inlet_hi_c).all()
    # the absurd candidate lies far outside the training data
    assert fc.ood_score[2] > 1.0 and fc.ood_score[2] > 3 * fc.ood_score[:2].max()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        model.predict(state, np.zeros((4, 2)))
    # each member's mean: they average to the mixture mean, and their spread is the model's doubt
    members = fc.cooling_power_members_kw
    assert members is not None and members.shape == (model.module.config.members, 3)
    np.testing.assert_allclose(members.mean(axis=0), fc.cooling_power_kw, rtol=1e-9, atol=1e-9)
    assert (members.std(axis=0) <= fc.cooling_power_std_kw + 1e-9).all()  # total std = noise + spread
    assert members[:, 2].std() > members[:, 0].std()  # members disagree most far from the data


def test_broadcast_predict_equals_row_prediction(trained: TrainResult, history: pd.DataFrame) -> None:
    model = trained.forecaster
    fs = build_samples(history, model.spec)
    t = fs.index[-1]
    state = history.loc[:t].iloc[-model.history_needed():]
    hor_cols = [fs.names.index(f"{sp}@horizon") for sp in SETPOINT_ROLES]
    end_cols = [fs.names.index(f"{sp}@end") for sp in SETPOINT_ROLES]
    row = fs.x[-1:].copy()
    row[:, end_cols] = row[:, hor_cols]  # a candidate is held over the horizon: it ends where it is
    fc = model.predict(state, row[:, hor_cols])
    rows = model.predict_rows(row)
    assert fc.cooling_power_kw[0] == pytest.approx(rows.mean[0, 0], rel=1e-4)
    assert fc.rack_inlet_hi_c[0] == pytest.approx(rows.hi[0, 1], rel=1e-4)
    assert fc.ood_score[0] >= rows.ood_score[0] - 1e-4  # the broadcast OOD path never under-reports


def test_state_features_are_reused_only_for_the_same_state(trained: TrainResult, history: pd.DataFrame) -> None:
    model = trained.forecaster
    state = history.iloc[-model.history_needed():]
    cands = np.array([[10.0, 21.0, 24.0], [12.0, 22.0, 26.0]])
    first = model.predict(state, cands)
    again = model.predict(state.copy(), cands)  # same content, another object: cached features
    assert np.array_equal(first.cooling_power_kw, again.cooling_power_kw)
    hotter = state.copy()
    hotter["it_power_kw"] = hotter["it_power_kw"] * 1.3  # new content must not reuse the cache
    changed = model.predict(hotter, cands)
    assert not np.array_equal(first.cooling_power_kw, changed.cooling_power_kw)
    fresh = type(model).from_parts(model.tensors(), model.sidecar())  # no cache: the reference answer
    assert np.allclose(fresh.predict(hotter, cands).cooling_power_kw, changed.cooling_power_kw)


def test_seeded_cpu_training_is_reproducible(history: pd.DataFrame) -> None:
    cfg = TrainConfig(members=2, hidden=(16,), max_epochs=2, batch_size=256, min_samples=1000, baselines=False)
    a = fit_forecaster(history, config=cfg, device="cpu").forecaster
    b = fit_forecaster(history, config=cfg, device="cpu").forecaster
    c = fit_forecaster(history, config=TrainConfig(**{**cfg.__dict__, "seed": 1}), device="cpu").forecaster
    ta, tb, tc = a.tensors(), b.tensors(), c.tensors()
    assert all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert not np.array_equal(ta["layer0.weight"], tc["layer0.weight"])


def test_baselines_fit_on_the_same_rows(history: pd.DataFrame) -> None:
    fs = build_samples(history, FeatureSpec())
    with cpu_threads(1):  # as fit_forecaster does: OpenMP threads spin badly on a shared machine
        fitted = fit_baselines(fs.x[:2000], fs.y[:2000], fs.names)
    pers = fitted["persistence"].model.predict(fs.x[2000:2100])
    assert np.array_equal(pers[:, 0], fs.x[2000:2100, fs.names.index("cooling_power_kw")])
    ridge = fitted["ridge"].model.predict(fs.x[2000:2100])
    assert mape_pct(fs.y[2000:2100, 0], ridge[:, 0]) < mape_pct(fs.y[2000:2100, 0], pers[:, 0])


def _nonlinear(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.stack([np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2], np.tanh(x[:, 3]) + 0.5 * x[:, 0] ** 2], 1)
    return x, (y + rng.normal(scale=0.05, size=y.shape)).astype(np.float32)


def test_a_few_outlying_validation_rows_do_not_stop_training_at_the_start() -> None:
    """Early stopping watches the means (MSE), not the NLL: under NLL, six rows 40 units off made
    an early wide-variance epoch the best, and the model kept was six times worse on the rest."""
    rng = np.random.default_rng(0)
    (xt, yt), (xv, yv) = _nonlinear(rng, 3000), _nonlinear(rng, 600)
    spoilt = yv.copy()
    spoilt[:6] += 40.0
    cfg = TrainConfig(members=2, hidden=(32, 32), max_epochs=30, patience=5, linear_skip=False)

    def clean_mse(y_val: np.ndarray) -> float:
        module, _ = train_ensemble(xt, yt, xv, y_val, cfg, torch.device("cpu"))
        with torch.inference_mode():
            mean, _ = module.split(module(torch.as_tensor(xv[6:])))
        return float(((mean.mean(0).numpy() - yv[6:]) ** 2).mean())

    assert clean_mse(spoilt) < 1.5 * clean_mse(yv)


def test_cpu_thread_limit_is_scoped() -> None:
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_device_choice() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="one of"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            select_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_uses_the_same_path(history: pd.DataFrame) -> None:
    result = fit_forecaster(history, config=SMALL, device="cuda")
    assert result.report["device"].startswith("cuda")
    assert result.report["metrics"]["ensemble"]["cooling_power_kw"]["mae"] < \
        result.report["metrics"]["persistence"]["cooling_power_kw"]["mae"]
