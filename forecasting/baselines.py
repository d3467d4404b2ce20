"""Baselines trained on the same split as the ensemble, so that its skill is measured.

Persistence (the next hour looks like now), ridge regression on the same standardised
features, and scikit-learn's HistGradientBoostingRegressor (one per target): the
ensemble must beat the best of them to be worth its complexity. The targets are the
columns of y: the first ``y.shape[1]`` of ``ALL_TARGETS`` (cooling power, rack inlet,
IT power). Features must be finite (masked entries imputed by the caller).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from forecasting.features import ALL_TARGETS

FloatArray = npt.NDArray[np.float64]


class Baseline(Protocol):
    name: str

    def fit(self, x: FloatArray, y: FloatArray) -> None: ...

    def predict(self, x: FloatArray) -> FloatArray:
        """(n, k) predictions, columns in the order of the y it was fitted on."""
        ...


class Persistence:
    """Predicts each target's current value for the whole horizon."""

    name = "persistence"

    def __init__(self, feature_names: Sequence[str]) -> None:
        self._names = list(feature_names)
        self._cols = [self._names.index(t) for t in ALL_TARGETS[:2]]

    def fit(self, x: FloatArray, y: FloatArray) -> None:
        """Nothing to learn but which targets: the first y.shape[1] of ALL_TARGETS."""
        self._cols = [self._names.index(t) for t in ALL_TARGETS[: y.shape[1]]]

    def predict(self, x: FloatArray) -> FloatArray:
        return np.asarray(x[:, self._cols], dtype=np.float64)


class RidgeBaseline:
    """Linear least squares with an L2 penalty on standardised features."""

    name = "ridge"

    def __init__(self, alpha: float = 1.0) -> None:
        self._model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))

    def fit(self, x: FloatArray, y: FloatArray) -> None:
        self._model.fit(x, y)

    def predict(self, x: FloatArray) -> FloatArray:
        return np.asarray(self._model.predict(x), dtype=np.float64)


class HistGBBaseline:
    """Gradient-boosted trees, one model per target (scikit-learn defaults, seeded)."""

    name = "hist_gradient_boosting"

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._models: list[HistGradientBoostingRegressor] = []

    def fit(self, x: FloatArray, y: FloatArray) -> None:
        self._models = [HistGradientBoostingRegressor(random_state=self._seed) for _ in range(y.shape[1])]
        for j, m in enumerate(self._models):
            m.fit(x, y[:, j])

    def predict(self, x: FloatArray) -> FloatArray:
        return np.stack([m.predict(x) for m in self._models], axis=1).astype(np.float64)


@dataclass(frozen=True)
class FittedBaseline:
    model: Baseline
    train_seconds: float


def fit_baselines(x: FloatArray, y: FloatArray, feature_names: Sequence[str], seed: int = 0,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, FittedBaseline]:
    """Fit every baseline on the training rows; returns them by name with their fit time [s]."""
    now = clock
    out: dict[str, FittedBaseline] = {}
    models: list[Baseline] = [Persistence(feature_names), RidgeBaseline(), HistGBBaseline(seed)]
    for m in models:
        t0 = now()
        m.fit(x, y)
        out[m.name] = FittedBaseline(m, now() - t0)
    return out
