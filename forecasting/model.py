"""The trained forecaster: ensemble + scaling + conformal factors + OOD scorer.

`EnsembleForecaster` implements `forecasting.protocol.Forecaster`. It converts to and
from plain parts (a dict of numpy arrays for safetensors and a JSON-able sidecar), so
that the registry can store it without pickle. Inference runs on the CPU in float32.

Masked role groups (gaps in a maskable input, see `forecasting.spec`) arrive as NaN
feature columns with their indicator on; they are imputed by the training mean (0 in
standardised units), as in training.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from forecasting.calibration import interval
from forecasting.ensemble import BatchedEnsemble, EnsembleConfig, flush_denormals, mixture
from forecasting.features import (
    IT_TARGET,
    FeatureSpec,
    Scaler,
    candidate_block,
    maskable_columns,
    masked_roles,
    state_vector,
)
from forecasting.ood import KnnOod
from forecasting.protocol import Forecast

if TYPE_CHECKING:
    from forecasting.data_profile import DataProfile

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

FORMAT = "coolpilot-ensemble/1"
CHUNK_ROWS = 16_384
PROFILE_KEY = "data_profile"
"""Sidecar key of the site's data profile (`forecasting.data_profile`), when one was learned."""


@dataclass(frozen=True)
class RowPrediction:
    """Predictions for full feature rows, physical units, columns in ``spec.targets`` order."""

    mean: FloatArray  # (n, k) [kW, C, kW]
    std: FloatArray  # (n, k) [kW, K, kW]
    lo: FloatArray  # (n, k)
    hi: FloatArray  # (n, k)
    ood_score: FloatArray  # (n,) [-]


class EnsembleForecaster:
    """A deep-ensemble forecaster of mean cooling power, max rack inlet (and mean IT power) over the horizon."""

    def __init__(self, *, version: str, spec: FeatureSpec, module: BatchedEnsemble, x_scaler: Scaler,
                 y_scaler: Scaler, conformal_factors: tuple[float, ...], interval_level: float,
                 ood: KnnOod, meta: Mapping[str, Any], residual_of: tuple[str | None, ...] | None = None) -> None:
        self._version = version
        self.spec = spec
        self.module = module.to("cpu").float().eval()
        self.x_scaler = x_scaler
        self.y_scaler = y_scaler
        self.conformal_factors = conformal_factors
        self.interval_level = interval_level
        self.ood = ood
        self.meta = dict(meta)
        self.n_state = len(spec.state_names())
        self._now_cols = [spec.state_names().index(f"{sp}@now") for sp in spec.setpoint_roles]  # in force at t
        self._maskable = maskable_columns(spec)
        self.residual_of = residual_of or (None,) * len(spec.targets)
        self._base_cols = residual_columns(spec, self.residual_of)
        # One control cycle scores several candidate batches against the same state;
        # the state features are computed once per distinct state (content-keyed).
        self._state_cache: tuple[bytes, FloatArray] | None = None
        self._profile: tuple[DataProfile | None] | None = None

    # --- Forecaster protocol -------------------------------------------------------
    @property
    def version(self) -> str:
        return self._version

    @property
    def horizon_min(self) -> int:
        return self.spec.horizon_min

    def required_roles(self) -> tuple[str, ...]:
        return self.spec.required_roles()

    def history_needed(self) -> int:
        return self.spec.history_needed()

    def setpoint_roles(self) -> tuple[str, ...]:
        return tuple(self.spec.setpoint_roles)

    def essential_roles(self) -> tuple[str, ...]:
        """Roles whose gap stops inference; every other required role is masked when missing."""
        return self.spec.essential_roles()

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.spec.targets)

    def predict(self, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
        """Score N candidate setpoint vectors (N, len(setpoint_roles())) [C] against the latest state."""
        cand = np.asarray(candidates, dtype=np.float64)
        sps = self.spec.setpoint_roles
        if cand.ndim != 2 or cand.shape[1] != len(sps):
            raise ValueError(f"candidates must be (N, {len(sps)}) in {sps} order, got {cand.shape}")
        if not np.isfinite(cand).all():
            raise ValueError("candidates hold NaN or infinite setpoints")
        x_state = self._state_features(state)
        z_state = self._standardise(x_state, slice(0, self.n_state))
        x_cand = candidate_block(x_state[self._now_cols], cand)
        z_cand = self._standardise(x_cand, slice(self.n_state, None))
        with torch.inference_mode(), flush_denormals():
            raw = self.module.forward_broadcast(torch.from_numpy(z_state).float(), torch.from_numpy(z_cand).float())
        raw_np = raw.numpy()
        mean_z, var_z = mixture(raw_np, self.module.config.n_outputs)
        mean, std = self._to_physical(mean_z, var_z, x_state[np.newaxis, :])
        lo, hi = self._intervals(mean, std)
        ood = self.ood.score_broadcast(z_state, z_cand)
        members = self._member_means(raw_np, mean, mean_z)
        it: dict[str, FloatArray] = {}
        if IT_TARGET in self.spec.targets:
            j = self.spec.targets.index(IT_TARGET)
            it = {"it_power_kw": mean[:, j], "it_power_std_kw": std[:, j],
                  "it_power_lo_kw": lo[:, j], "it_power_hi_kw": hi[:, j], "it_power_members_kw": members[:, :, j]}
        return Forecast(
            cooling_power_kw=mean[:, 0], cooling_power_std_kw=std[:, 0],
            cooling_power_lo_kw=lo[:, 0], cooling_power_hi_kw=hi[:, 0],
            rack_inlet_max_c=mean[:, 1], rack_inlet_std_c=std[:, 1],
            rack_inlet_lo_c=lo[:, 1], rack_inlet_hi_c=hi[:, 1],
            ood_score=ood, interval_level=self.interval_level, **it,
            masked_roles=masked_roles(x_state, self.spec), cooling_power_members_kw=members[:, :, 0],
        )

    def _member_means(self, raw: npt.NDArray[np.float32], mean: FloatArray, mean_z: FloatArray) -> FloatArray:
        """Each member's physical mean (M, N, outputs): the mixture mean moved by the member's own offset."""
        offset_z = raw[..., : self.module.config.n_outputs].astype(np.float64) - mean_z[np.newaxis]
        return np.asarray(mean[np.newaxis] + offset_z * self.y_scaler.std, dtype=np.float64)

    def _standardise(self, x: FloatArray, cols: slice) -> FloatArray:
        """Standardise feature columns ``cols``; masked (NaN) entries become the training mean (0)."""
        z = (x - self.x_scaler.mean[cols]) / self.x_scaler.std[cols]
        return np.where(np.isnan(z), 0.0, z)

    def _state_features(self, state: pd.DataFrame) -> FloatArray:
        """``state_vector`` of ``state``, reused while the same state content is scored again."""
        index = pd.DatetimeIndex(state.index).asi8 if isinstance(state.index, pd.DatetimeIndex) else np.empty(0)
        try:
            values = np.ascontiguousarray(state.to_numpy(dtype=np.float64, na_value=np.nan)).tobytes()
        except (TypeError, ValueError):  # non-numeric columns: no cache, state_vector reports the problem
            return state_vector(state, self.spec)
        key = b"|".join(("\x1f".join(map(str, state.columns)).encode(), np.ascontiguousarray(index).tobytes(), values))
        if self._state_cache is not None and self._state_cache[0] == key:
            return self._state_cache[1].copy()
        x_state = state_vector(state, self.spec)
        self._state_cache = (key, x_state.copy())
        return x_state

    # --- batch scoring of full feature rows (evaluation, champion/challenger) -------
    def predict_rows(self, x: FloatArray, with_ood: bool = True) -> RowPrediction:
        """Predict for full feature rows x (n, d) in the order of ``spec.feature_names()``."""
        x = np.asarray(x, dtype=np.float64)
        gaps = np.isnan(x).any(axis=0) & ~self._maskable
        if gaps.any():
            names = [n for n, g in zip(self.spec.feature_names(), gaps, strict=True) if g]
            raise ValueError(f"feature rows hold NaN in columns that cannot be masked: {', '.join(names[:8])}")
        z = self.x_scaler.standardise(x)
        means, variances = [], []
        with torch.inference_mode(), flush_denormals():
            for start in range(0, len(z), CHUNK_ROWS):
                chunk = torch.from_numpy(z[start: start + CHUNK_ROWS]).float()
                m, v = mixture(self.module(chunk).numpy(), self.module.config.n_outputs)
                means.append(m)
                variances.append(v)
        k = len(self.spec.targets)
        mean_z = np.concatenate(means) if means else np.empty((0, k))
        var_z = np.concatenate(variances) if variances else np.empty((0, k))
        mean, std = self._to_physical(mean_z, var_z, x)
        lo, hi = self._intervals(mean, std)
        ood = self.ood.score(z) if with_ood and len(z) else np.zeros(len(z))
        return RowPrediction(mean=mean, std=std, lo=lo, hi=hi, ood_score=ood)

    def _to_physical(self, mean_z: FloatArray, var_z: FloatArray, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Standardised outputs -> physical mean and std; residual targets get their current value back."""
        return self.y_scaler.inverse(mean_z) + residual_base(x, self._base_cols, mean_z.shape[1]), np.sqrt(var_z) * self.y_scaler.std

    def _intervals(self, mean: FloatArray, std: FloatArray) -> tuple[FloatArray, FloatArray]:
        lo = np.empty_like(mean)
        hi = np.empty_like(mean)
        for j, f in enumerate(self.conformal_factors):
            lo[:, j], hi[:, j] = interval(mean[:, j], std[:, j], f)
        return lo, hi

    # --- plain parts for the registry ------------------------------------------------
    def tensors(self) -> dict[str, npt.NDArray[np.float32]]:
        out: dict[str, npt.NDArray[np.float32]] = {}
        for i, (w, b) in enumerate(zip(self.module.weights, self.module.biases, strict=True)):
            out[f"layer{i}.weight"] = w.detach().cpu().numpy().astype(np.float32)
            out[f"layer{i}.bias"] = b.detach().cpu().numpy().astype(np.float32)
        if self.module.skip_w is not None and self.module.skip_b is not None:
            out["skip.weight"] = self.module.skip_w.detach().cpu().numpy().astype(np.float32)
            out["skip.bias"] = self.module.skip_b.detach().cpu().numpy().astype(np.float32)
        out["ood.reference"] = self.ood.reference.astype(np.float32)
        if self.ood.low is not None and self.ood.high is not None:
            out["ood.low"] = self.ood.low.astype(np.float32)
            out["ood.high"] = self.ood.high.astype(np.float32)
        return out

    def sidecar(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self._version,
            "targets": list(self.spec.targets),
            "horizon_min": self.horizon_min,
            "feature_spec": self.spec.to_json(),
            "feature_names": self.spec.feature_names(),
            "n_state_features": self.n_state,
            "ensemble": self.module.config.to_json(),
            "x_scaler": self.x_scaler.to_json(),
            "y_scaler": self.y_scaler.to_json(),
            "conformal": {"level": self.interval_level, "factors": list(self.conformal_factors)},
            "residual_of": list(self.residual_of),
            "ood": {"k": self.ood.k, "scale": self.ood.scale, "columns": [int(c) for c in self.ood.columns],
                    "n_state": self.ood.n_state},
            **self.meta,
        }

    @classmethod
    def from_parts(cls, tensors: Mapping[str, npt.NDArray[Any]], sidecar: Mapping[str, Any]) -> EnsembleForecaster:
        """Rebuild from stored parts; raises ValueError saying what does not match.

        Models saved before setpoint subsets, the IT target and masking load with the
        spec's defaults (three setpoints, two targets, no masking).
        """
        if sidecar.get("format") != FORMAT:
            raise ValueError(f"unsupported model format {sidecar.get('format')!r}, expected {FORMAT!r}")
        try:
            spec = FeatureSpec.from_json(sidecar["feature_spec"])
            config = EnsembleConfig.from_json(sidecar["ensemble"])
            x_scaler = Scaler.from_json(sidecar["x_scaler"])
            y_scaler = Scaler.from_json(sidecar["y_scaler"])
            conf = sidecar["conformal"]
            ood_meta = sidecar["ood"]
            version = str(sidecar["version"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"sidecar lacks or garbles field {exc}") from None
        names = spec.feature_names()
        if list(sidecar.get("feature_names", [])) != names:
            raise ValueError("sidecar feature_names do not match its feature_spec")
        if config.n_inputs != len(names) or x_scaler.mean.shape != (len(names),):
            raise ValueError(f"model expects {config.n_inputs} inputs, scaler has {x_scaler.mean.size}, "
                             f"feature spec gives {len(names)}")
        k = len(spec.targets)
        if list(sidecar.get("targets", spec.targets)) != list(spec.targets):
            raise ValueError(f"sidecar targets {sidecar.get('targets')} differ from its feature_spec's {spec.targets}")
        if y_scaler.mean.shape != (k,) or config.n_outputs != k:
            raise ValueError(f"model must predict {k} targets {spec.targets}")
        module = _module_from(tensors, config)
        ood = _ood_from(tensors, ood_meta)
        factors = tuple(float(f) for f in conf["factors"])
        if len(factors) != k:
            raise ValueError("conformal factors must be one per target")
        residual_of = tuple(None if r is None else str(r) for r in sidecar.get("residual_of", [None] * k))
        if len(residual_of) != k:
            raise ValueError(f"sidecar residual_of must name one base feature (or null) per target, got {residual_of}")
        reserved = {"format", "version", "targets", "horizon_min", "feature_spec", "feature_names",
                    "n_state_features", "ensemble", "x_scaler", "y_scaler", "conformal", "ood", "residual_of"}
        meta = {key: v for key, v in sidecar.items() if key not in reserved}
        return cls(version=version, spec=spec, module=module, x_scaler=x_scaler, y_scaler=y_scaler,
                   conformal_factors=factors, interval_level=float(conf["level"]), ood=ood, meta=meta,
                   residual_of=residual_of)

    # --- the site's data profile (learned with the model; None for older models) -------
    @property
    def data_profile(self) -> DataProfile | None:
        """``forecasting.data_profile.DataProfile`` stored with the model, or None (none stored, or no module)."""
        if self._profile is None:
            self._profile = (_load_profile(self.meta.get(PROFILE_KEY), self._version),)
        return self._profile[0]


def residual_targets(spec: FeatureSpec) -> tuple[str | None, ...]:
    """Per target, the state feature whose current value the model predicts a change from, or None.

    Why: over one hour the plant mostly stays where it is; learning the change from the
    current reading (cooling power, hottest inlet) spends the network on what moves.
    Only features that are never masked qualify (a masked base would have no value to add back).
    """
    names = spec.state_names()
    maskable = dict(zip(spec.feature_names(), maskable_columns(spec), strict=True))
    return tuple(t if t in names and not maskable[t] and t != IT_TARGET else None for t in spec.targets)


def residual_columns(spec: FeatureSpec, residual_of: tuple[str | None, ...]) -> list[tuple[int, int]]:
    """(target index, feature column) pairs of the residual targets; raises naming an unknown feature."""
    names = spec.feature_names()
    out = []
    for j, base in enumerate(residual_of):
        if base is None:
            continue
        if base not in names:
            raise ValueError(f"residual target {spec.targets[j]!r}: base feature {base!r} is not among the features")
        out.append((j, names.index(base)))
    return out


def residual_base(x: FloatArray, cols: list[tuple[int, int]], k: int) -> FloatArray | float:
    """What to add to the model's outputs [target units]: the base features' values, 0 elsewhere.

    ``x``: feature rows (n, d) or one state row (1, n_state) (base columns are state columns); ``k`` targets.
    """
    if not cols:
        return 0.0
    base = np.zeros((x.shape[0], k), dtype=np.float64)
    for j, c in cols:
        base[:, j] = x[:, c]
    return base


def _load_profile(raw: Any, version: str) -> DataProfile | None:
    if not isinstance(raw, Mapping):
        return None
    try:
        module = importlib.import_module("forecasting.data_profile")
    except ModuleNotFoundError:
        log.warning("model %s stores a data profile but forecasting.data_profile is not installed", version)
        return None
    try:
        profile: DataProfile = module.DataProfile.from_dict(dict(raw))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("model %s: stored data profile cannot be read (%s); using none", version, exc)
        return None
    return profile


def _module_from(tensors: Mapping[str, npt.NDArray[Any]], config: EnsembleConfig) -> BatchedEnsemble:
    module = BatchedEnsemble(config)
    state: dict[str, torch.Tensor] = {}
    for i in range(len(module.weights)):
        for kind, store in (("weight", "weights"), ("bias", "biases")):
            key = f"layer{i}.{kind}"
            if key not in tensors:
                raise ValueError(f"weights lack tensor {key!r}")
            expected = tuple(getattr(module, store)[i].shape)
            if tuple(tensors[key].shape) != expected:
                raise ValueError(f"tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {expected}")
            state[f"{store}.{i}"] = torch.from_numpy(np.asarray(tensors[key], dtype=np.float32))
    for key, param in (("skip.weight", module.skip_w), ("skip.bias", module.skip_b)):
        if param is None:
            continue
        if key not in tensors or tuple(tensors[key].shape) != tuple(param.shape):
            raise ValueError(f"weights lack tensor {key!r} of shape {tuple(param.shape)}")
        state["skip_w" if key == "skip.weight" else "skip_b"] = torch.from_numpy(np.asarray(tensors[key],
                                                                                           dtype=np.float32))
    module.load_state_dict(state)
    return module


def _ood_from(tensors: Mapping[str, npt.NDArray[Any]], ood_meta: Mapping[str, Any]) -> KnnOod:
    if "ood.reference" not in tensors:
        raise ValueError("weights lack tensor 'ood.reference'")
    columns = np.asarray(ood_meta["columns"], dtype=np.int64)
    reference = np.asarray(tensors["ood.reference"], dtype=np.float64)
    if reference.ndim != 2 or reference.shape[1] != len(columns):
        raise ValueError(f"ood.reference has shape {reference.shape}, expected (*, {len(columns)})")
    bounds = []
    for key in ("ood.low", "ood.high"):  # absent in models saved before the range score
        arr = np.asarray(tensors[key], dtype=np.float64) if key in tensors else None
        if arr is not None and arr.shape != (len(columns),):
            raise ValueError(f"{key} has shape {arr.shape}, expected ({len(columns)},)")
        bounds.append(arr)
    return KnnOod(reference=reference, columns=columns, n_state=int(ood_meta["n_state"]),
                  k=int(ood_meta["k"]), scale=float(ood_meta["scale"]), low=bounds[0], high=bounds[1])
