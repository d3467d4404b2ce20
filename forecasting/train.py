"""Training: time-ordered split, batched-ensemble fit with early stopping, calibration.

The split is in time order, never shuffled across blocks: train (oldest) | validation
(early stopping) | calibration (conformal factors) | test (reported metrics, champion
versus challenger) | train again (what the controller did since it began to control
the plant, ``recent_from``; at most the newest 30 %, less the held-out ``recent_test``
chunks), with one horizon of samples left out at each border so that no target window
straddles two blocks (`forecasting.split`). On CUDA the forward
pass runs under bfloat16 autocast; on the CPU everything is float32 and seeded runs
repeat bit for bit.

Without a spec, the spec is learned from the history (`FeatureSpec.for_history`): the
roles the site has, its setpoints, IT power as a target where metered, and role
masking (`forecasting.masking`), so that a missing input degrades the forecast instead
of stopping it. Where ``forecasting.data_profile`` exists, the site's data profile is
learned from the same history and stored with the model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import sklearn
import torch
from threadpoolctl import threadpool_limits

from forecasting.baselines import FittedBaseline, fit_baselines
from forecasting.calibration import conformal_factor
from forecasting.device import describe, select_device
from forecasting.ensemble import BatchedEnsemble, EnsembleConfig, flush_denormals, gaussian_nll
from forecasting.evaluate import (
    PROMOTION_BASELINES,
    compare_with_baselines,
    ensemble_metrics,
    point_metrics,
    score,
)
from forecasting.features import (
    FeatureSet,
    FeatureSpec,
    Scaler,
    build_samples,
    require_enough,
)
from forecasting.masking import RoleMasker, TorchMasker
from forecasting.model import (
    PROFILE_KEY,
    EnsembleForecaster,
    residual_base,
    residual_columns,
    residual_targets,
)
from forecasting.ood import fit_ood
from forecasting.split import BLOCKS, chunk_spans, split_blocks

FloatArray = npt.NDArray[np.float64]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; shares are fractions of the samples (see `split_blocks` for their layout)."""

    members: int = 5
    # 128 wide: on the quick start's 9 days, (64, 64) left the rack-inlet MAE at 0.28 K against the
    # trees' 0.195 K (a loss beyond noise); (128, 128) reached 0.23-0.25 K
    hidden: tuple[int, ...] = (128, 128)
    max_epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    patience: int = 8
    seed: int = 0
    val_share: float = 0.1
    cal_share: float = 0.05
    test_share: float = 0.05
    max_recent_share: float = 0.3  # at most this share of the newest samples trained on after the held-out blocks
    # "interleaved": val and cal are chunks spread over the history, so training sees every condition it
    # holds, the newest included; "newest": val and cal are the newest blocks before test (see split_blocks)
    holdout: Literal["interleaved", "newest"] = "interleaved"
    holdout_chunk_h: float = 24.0  # length of one interleaved val or cal chunk, at most [h]
    # held out of the period the controller ran, for champion versus challenger (see split._recent_test)
    recent_test_share: float = 0.1  # 0: off (every controlled sample trained on)
    recent_test_chunk_h: float = 4.0  # [h]
    interval_level: float = 0.9
    min_samples: int = 2016  # one week of 5-minute samples
    max_gap_share: float = 0.5
    ood_k: int = 10
    ood_reference: int = 4000
    baselines: bool = True
    cpu_threads: int | None = 1  # CPU threads while fitting (see `cpu_threads`); None = torch's default
    mask_prob: float = 0.02  # chance per role group and training sample of masking it (masking specs only)
    # beta-NLL weight exponent (0: plain Gaussian NLL; see ensemble.gaussian_nll). 1: the means fit as
    # under squared error; on the quick start's 9 days (linear skip on) the rack-inlet MAE fell from 0.318 to 0.257 K
    # (HistGradientBoosting 0.195 K, ridge 0.360 K) and the ensemble stopped losing to its baselines.
    nll_beta: float = 1.0
    residual: bool = False  # learn each target's change from its current reading where one is never masked
    linear_skip: bool = True  # means = MLP + a linear path started at a ridge fit (see ensemble.BatchedEnsemble)
    skip_ridge_alpha: float = 1.0  # ridge penalty of that start, in standardised units [-]

    def __post_init__(self) -> None:
        shares = (self.val_share, self.cal_share, self.test_share)
        if min(shares) <= 0 or sum(shares) >= 0.9:
            raise ValueError(f"val/cal/test shares must be positive and leave most data for training: {shares}")
        if not 0.0 <= self.max_recent_share <= 0.5:
            raise ValueError(f"max_recent_share must lie in [0, 0.5]: most data keeps the time-ordered split, "
                             f"got {self.max_recent_share}")
        if self.holdout not in ("interleaved", "newest") or not self.holdout_chunk_h > 0:
            raise ValueError(f"holdout must be 'interleaved' or 'newest' with a positive chunk length, got "
                             f"{self.holdout!r} and {self.holdout_chunk_h} h")
        if not 0.0 <= self.recent_test_share <= 0.5 or not self.recent_test_chunk_h > 0:
            raise ValueError(f"recent_test_share must lie in [0, 0.5] with a positive chunk length, got "
                             f"{self.recent_test_share} and {self.recent_test_chunk_h} h")
        if not 0.0 <= self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must lie in [0, 1), got {self.mask_prob}")


@dataclass(frozen=True)
class EpochReport:
    """Progress of one epoch, for a progress bar.

    ``train_loss``: mean Gaussian NLL [-]; ``val_loss``/``best_val_loss``: validation MSE of
    the member means [standardised units^2], which early stopping watches.
    """

    epoch: int
    max_epochs: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    elapsed_s: float


@dataclass
class TrainResult:
    """The calibrated forecaster, a JSON-able report, and the fitted baselines."""

    forecaster: EnsembleForecaster
    report: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, FittedBaseline] = field(default_factory=dict)


def data_hash(fs: FeatureSet) -> str:
    """sha256 over the sample times, features and targets: identifies the training data."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(fs.index.asi8).tobytes())
    h.update(np.ascontiguousarray(fs.x).tobytes())
    h.update(np.ascontiguousarray(fs.y).tobytes())
    return h.hexdigest()


def _val_loss(module: BatchedEnsemble, x: torch.Tensor, y: torch.Tensor, amp: bool) -> float:
    """Validation MSE of the member means [standardised units^2]: what early stopping watches.

    Not the Gaussian NLL the members train on: a few outlying validation points make
    the first, wide-variance epoch the best by NLL, and such a model is unsure
    everywhere (EnergyPlus crac: kept at epoch 1). Intervals are set afterwards by
    conformal calibration, so stopping needs only the means to be right.
    """
    total, n = 0.0, len(x)
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        for s in range(0, n, 8192):
            mean, _ = module.split(module(x[s: s + 8192]))
            total += float(((mean.float() - y[s: s + 8192].unsqueeze(0)) ** 2).mean()) * len(x[s: s + 8192])
    return total / max(n, 1)


def train_ensemble(x_train: FloatArray, y_train: FloatArray, x_val: FloatArray, y_val: FloatArray,
                   config: TrainConfig, device: torch.device,
                   on_epoch: Callable[[EpochReport], None] | None = None,
                   clock: Callable[[], float] = time.perf_counter,
                   masker: RoleMasker | None = None) -> tuple[BatchedEnsemble, dict[str, Any]]:
    """Fit the batched ensemble on standardised arrays; keep the weights of the best epoch.

    Each member draws its own minibatch order each epoch (the ensemble's diversity
    comes from initialisation and data order, as in deep ensembles). With a ``masker``,
    every training batch has random role groups masked (validation is left as it is).
    """
    with flush_denormals(), cpu_threads(config.cpu_threads):
        return _train_ensemble(x_train, y_train, x_val, y_val, config, device, on_epoch, clock, masker)


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Limit torch's and the BLAS/OpenMP pools' CPU threads to ``n`` while inside (None: leave them).

    The ensemble's matrices are small (members x batch x 64): splitting them over
    threads gains little, and on a shared machine spinning threads made one training
    run 20 times slower (30 s instead of 1.3 s). Restored on exit.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def ridge_start(x: FloatArray, y: FloatArray, alpha: float,
                masker: RoleMasker | None = None) -> tuple[FloatArray, FloatArray]:
    """Closed-form ridge fit y ~ x W + b on standardised rows (gaps as the mean, 0): W (in, out), b (out,).

    With a ``masker`` the rows are augmented as training masks them (every G-th row with
    role group g masked, for each group), so the linear path, like the MLP, learns to do
    without an input the cycle drops as suspect instead of swinging when it is gone.
    """
    xs = np.nan_to_num(np.asarray(x, dtype=np.float64))
    if masker is not None:
        groups = masker.group_matrix
        masked = [xs[g::len(groups)] * (1.0 - m) + masker.fill * m for g, m in enumerate(groups)]
        xs = np.concatenate([xs, *masked])
        y = np.concatenate([y, *(y[g::len(groups)] for g in range(len(groups)))])
    mu_x, mu_y = xs.mean(axis=0), y.mean(axis=0)
    xc, yc = xs - mu_x, y - mu_y
    weight = np.linalg.solve(xc.T @ xc + alpha * np.eye(xs.shape[1]), xc.T @ yc)
    return weight, mu_y - mu_x @ weight


def _train_ensemble(x_train: FloatArray, y_train: FloatArray, x_val: FloatArray, y_val: FloatArray,
                    config: TrainConfig, device: torch.device, on_epoch: Callable[[EpochReport], None] | None,
                    clock: Callable[[], float], masker: RoleMasker | None) -> tuple[BatchedEnsemble, dict[str, Any]]:
    t0 = clock()
    gen = torch.Generator().manual_seed(config.seed)
    module = BatchedEnsemble(EnsembleConfig(x_train.shape[1], y_train.shape[1], config.members, config.hidden,
                                            config.linear_skip), generator=gen)
    if config.linear_skip:
        weight, bias = ridge_start(x_train, y_train, config.skip_ridge_alpha, masker)
        module.init_skip(torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32))
    module = module.to(device)
    mask: TorchMasker | None = masker.on(device) if masker is not None else None
    opt = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.max_epochs)
    amp = device.type == "cuda"
    xt = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y_train, dtype=torch.float32, device=device)
    xv = torch.as_tensor(x_val, dtype=torch.float32, device=device)
    yv = torch.as_tensor(y_val, dtype=torch.float32, device=device)
    n, bs = len(xt), min(config.batch_size, len(xt))
    best, best_epoch, best_state, stale, epoch = float("inf"), 0, copy.deepcopy(module.state_dict()), 0, 0
    for epoch in range(1, config.max_epochs + 1):
        module.train()
        order = torch.argsort(torch.rand(config.members, n, generator=gen), dim=1).to(device)
        running, batches = 0.0, 0
        for s in range(0, n - bs + 1, bs):  # drop the ragged tail; it is reshuffled next epoch
            idx = order[:, s: s + bs]
            xb = xt[idx] if mask is None else mask(xt[idx], gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                mean, var = module.split(module(xb))
            loss = gaussian_nll(mean, var, yt[idx], config.nll_beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            running += float(loss.detach())
            batches += 1
        sched.step()
        module.eval()
        val = _val_loss(module, xv, yv, amp)
        if val < best - 1e-4:
            best, best_epoch, stale = val, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(EpochReport(epoch, config.max_epochs, running / max(batches, 1), val, best, clock() - t0))
        if stale >= config.patience:
            break
    module.load_state_dict(best_state)
    module = module.to("cpu").eval()
    info = {"epochs_run": epoch, "best_epoch": best_epoch, "best_val_mse": best, "seconds": clock() - t0,
            "device": describe(device)}
    return module, info


def _ood_columns(spec: FeatureSpec) -> tuple[npt.NDArray[np.int64], int]:
    names = spec.feature_names()
    state = list(spec.state_roles) + [f"{sp}@now" for sp in spec.setpoint_roles]
    cand = [f"{sp}@horizon" for sp in spec.setpoint_roles]
    return np.array([names.index(c) for c in state + cand], dtype=np.int64), len(state)


def _library_versions() -> dict[str, str]:
    return {"torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__}


def fit_forecaster(frame: pd.DataFrame, spec: FeatureSpec | None = None, config: TrainConfig | None = None,
                   device: str = "auto", on_epoch: Callable[[EpochReport], None] | None = None,
                   now: Callable[[], datetime] = lambda: datetime.now(UTC),
                   clock: Callable[[], float] = time.perf_counter,
                   recent_from: datetime | None = None, suspect: pd.DataFrame | None = None) -> TrainResult:
    """Build samples from a wide history frame, train, calibrate, and measure against baselines.

    ``recent_from``: when the controller began to control the plant (its first applied
    decision); the samples since are trained on, not held out (see `split_blocks`).
    ``suspect``: readings the caller's live checks call bad (True; e.g. the runs the
    controller's stuck check flags, ``controller.quality.stuck_readings``), same index and
    columns as ``frame`` where given: they are gaps to the samples and to the data
    profile, so a fault is learned neither as the plant nor as its normal behaviour.

    ``spec`` None: ``FeatureSpec.for_history(frame)`` (the roles and setpoints the site
    has). Raises `forecasting.features.FeatureError` for history that is too short,
    lacks a role or is mostly gaps.
    """
    frame, suspect_removed = without_suspect(frame, suspect)
    spec = spec or FeatureSpec.for_history(frame)
    config = config or TrainConfig()
    dev = select_device(device)
    fs = build_samples(frame, spec)
    require_enough(fs, config.min_samples, config.max_gap_share)
    masks = split_blocks(fs.index, config, pd.Timedelta(minutes=spec.horizon_min),
                         None if recent_from is None else pd.Timestamp(recent_from))
    xs = {b: fs.x[m] for b, m in masks.items()}
    ys = {b: fs.y[m] for b, m in masks.items()}
    k = len(spec.targets)
    residual_of = residual_targets(spec) if config.residual else (None,) * k
    base_cols = residual_columns(spec, residual_of)
    fit_ys = {b: ys[b] - residual_base(xs[b], base_cols, k) for b in ("train", "val")}  # what the network learns
    x_scaler, y_scaler = Scaler.fit(xs["train"]), Scaler.fit(fit_ys["train"])
    z = {b: x_scaler.standardise(xs[b]) for b in BLOCKS}
    module, info = train_ensemble(z["train"], y_scaler.transform(fit_ys["train"]), z["val"],
                                  y_scaler.transform(fit_ys["val"]), config, dev, on_epoch, clock,
                                  masker=RoleMasker.for_spec(spec, x_scaler, config.mask_prob))

    columns, n_state_cols = _ood_columns(spec)
    ood = fit_ood(z["train"], columns, n_state_cols, config.ood_k, config.ood_reference, config.seed,
                  z_held_out=np.concatenate([z["val"], z["cal"]]))
    created = now()
    digest = data_hash(fs)
    # the suffix names the data and the training config: two runs on the same data with another
    # seed or setting in the same second are two versions, never one overwriting the other
    split_from = None if recent_from is None else pd.Timestamp(recent_from).isoformat()
    run_id = hashlib.sha256((digest + json.dumps(_config_json(config), sort_keys=True)
                             + str(split_from)).encode()).hexdigest()
    version = f"{created:%Y%m%dT%H%M%SZ}-{run_id[:8]}"
    draft = EnsembleForecaster(version=version, spec=spec, module=module, x_scaler=x_scaler, y_scaler=y_scaler,
                               conformal_factors=(1.0,) * k, interval_level=config.interval_level, ood=ood, meta={},
                               residual_of=residual_of)
    cal = draft.predict_rows(xs["cal"], with_ood=False)
    factors = tuple(conformal_factor(ys["cal"][:, j], cal.mean[:, j], cal.std[:, j], config.interval_level)
                    for j in range(k))
    window = {b: [fs.index[m][0].isoformat(), fs.index[m][-1].isoformat()] if m.any() else None
              for b, m in masks.items()}
    recent_spans = [[a.isoformat(), b.isoformat()]
                    for a, b in chunk_spans(fs.index, masks["recent_test"], pd.Timedelta(minutes=spec.horizon_min))]
    training: dict[str, Any] = {"window": window, "samples": {b: int(m.sum()) for b, m in masks.items()},
                                "recent_from": split_from, "recent_test_spans": recent_spans,
                                "gaps": fs.gaps.as_dict(), "suspect_removed": suspect_removed,
                                "data_hash": digest, "config": _config_json(config),
                                **info}
    meta = {"created_at": created.isoformat(), "training": training, "libraries": _library_versions(),
            **_learn_profile(frame)}
    forecaster = EnsembleForecaster(version=version, spec=spec, module=module, x_scaler=x_scaler,
                                    y_scaler=y_scaler, conformal_factors=factors,
                                    interval_level=config.interval_level, ood=ood, meta=meta,
                                    residual_of=residual_of)
    metrics: dict[str, Any] = {"ensemble": {**ensemble_metrics(forecaster, xs["test"], ys["test"]),
                                            "train_seconds": info["seconds"], "device": info["device"]}}
    if masks["recent_test"].any():  # the controlled regime, held out: what champion versus challenger also weighs
        metrics["recent_test"] = ensemble_metrics(forecaster, xs["recent_test"], ys["recent_test"])
    baselines = _fit_baselines(fs, xs, ys, x_scaler, config, clock, metrics) if config.baselines else {}
    if baselines:
        metrics["promotion"] = _promotion_comparison(forecaster, baselines, xs, ys, x_scaler)
    forecaster.meta["metrics"] = metrics
    forecaster.meta["conformal_calibration_samples"] = int(masks["cal"].sum())
    report = {"version": version, "metrics": metrics, "gaps": fs.gaps.as_dict(), "suspect_removed": suspect_removed,
              "window": window, "samples": training["samples"], "epochs_run": info["epochs_run"],
              "best_epoch": info["best_epoch"], "device": info["device"], "train_seconds": info["seconds"],
              "conformal_factors": list(factors), "data_hash": digest, "targets": list(spec.targets),
              "setpoint_roles": list(spec.setpoint_roles), "masked_roles": list(spec.mask_roles),
              "recent_test_spans": recent_spans}
    return TrainResult(forecaster=forecaster, report=report, baselines=baselines)


def _fit_baselines(fs: FeatureSet, xs: dict[str, FloatArray], ys: dict[str, FloatArray], x_scaler: Scaler,
                   config: TrainConfig, clock: Callable[[], float],
                   metrics: dict[str, Any]) -> dict[str, FittedBaseline]:
    """Fit the baselines on the training block (masked entries imputed) and add their test metrics."""
    with cpu_threads(config.cpu_threads):
        baselines = fit_baselines(x_scaler.impute(xs["train"]), ys["train"], fs.names, config.seed, clock)
    for name, fitted in baselines.items():
        pm = point_metrics(ys["test"], fitted.model.predict(x_scaler.impute(xs["test"])))
        metrics[name] = {**pm, "score": score(pm), "train_seconds": fitted.train_seconds, "device": "cpu"}
    return baselines


def _promotion_comparison(forecaster: EnsembleForecaster, baselines: dict[str, FittedBaseline],
                          xs: dict[str, FloatArray], ys: dict[str, FloatArray], x_scaler: Scaler) -> dict[str, Any]:
    """The ensemble against each baseline on the calibration and test blocks together: both are
    untouched by the point fit and by early stopping, and two blocks halve the noise of one."""
    x = np.concatenate([xs["cal"], xs["test"]])
    y = np.concatenate([ys["cal"], ys["test"]])
    ens = forecaster.predict_rows(x, with_ood=False).mean
    preds = {name: np.asarray(f.model.predict(x_scaler.impute(x)), dtype=np.float64)
             for name, f in baselines.items() if name in PROMOTION_BASELINES}
    return compare_with_baselines(y, ens, preds)


def without_suspect(frame: pd.DataFrame, suspect: pd.DataFrame | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` with the ``suspect`` readings set to NaN, and how many per role (only roles with any)."""
    if suspect is None:
        return frame, {}
    flags = suspect.reindex(index=frame.index, columns=frame.columns).fillna(False).astype(bool)
    counts = {str(c): int(n) for c, n in flags.sum().items() if n}
    return (frame.mask(flags) if counts else frame), counts


def _learn_profile(frame: pd.DataFrame) -> dict[str, Any]:
    """``{PROFILE_KEY: profile}`` learned by ``forecasting.data_profile`` where that module exists, else {}.

    A profile that fails to learn is logged and recorded (``data_profile_error``); the model is still trained.
    """
    try:
        from forecasting.data_profile import learn_profile  # lazy: the module is optional
    except ModuleNotFoundError as exc:
        if exc.name != "forecasting.data_profile":
            raise
        return {}
    try:
        profile: dict[str, Any] = learn_profile(frame).to_dict()
    except Exception as exc:  # a profile is an add-on: never lose the model over it
        log.warning("learning the data profile failed: %s: %s", type(exc).__name__, exc)
        return {"data_profile_error": f"{type(exc).__name__}: {exc}"}
    return {PROFILE_KEY: profile}


def _config_json(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["hidden"] = list(config.hidden)
    return d
