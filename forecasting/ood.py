"""Out-of-distribution score: how far an input lies from the data the model learned from.

Score = distance to the k-th nearest training point, in standardised feature space,
divided by the 99th percentile of that distance over held-out days (the validation and
calibration chunks, spread over the history); so ~99 % of the days the model was
measured on but never trained on score below 1, and the controller can refuse inputs
that score above a threshold (Gao 2014 saw errors grow where training data was sparse).
Why held-out days and not held-apart training rows: 5-minute rows have near-twins in
the same hour, so their distances are tiny; on the crac EnergyPlus model that scale
called 45 % of an ordinary unseen day "unfamiliar". The scale is never below the
training rows' one.

Only the physically meaningful columns take part (the state itself, the setpoints now
and over the horizon), not the lags, so distance means "a condition never seen".
For many candidates against one state, `score_broadcast` first keeps the reference
points nearest in state, then ranks them by full distance: the result is never below
the exact score (it can only err on the side of calling an input unfamiliar).

The k-NN distance reacts weakly when one input of many leaves the training range (a
heat wave 8 K above anything seen moves the distance by a fraction), so the score is
the larger of it and a range score: how far any column lies beyond its training
[min, max], over ``range_tolerance`` of that range (1 at 10 % beyond, by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.neighbors import NearestNeighbors

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

QUANTILE = 0.99
#: Beyond the training range by this share of the range scores 1 [-].
RANGE_TOLERANCE = 0.1


@dataclass(frozen=True)
class KnnOod:
    """k-NN distance scorer over a subsample of standardised training rows.

    ``columns``: indices into the model's feature vector; the first ``n_state`` of them
    are state columns, the rest candidate (setpoint-dependent) columns.
    """

    reference: FloatArray  # (M, len(columns)) standardised training rows
    columns: IntArray
    n_state: int
    k: int
    scale: float  # 99th-percentile k-NN distance of held-out (or training) rows [standardised units]
    low: FloatArray | None = None  # (len(columns),) training minimum per column [standardised]
    high: FloatArray | None = None  # (len(columns),) training maximum per column [standardised]
    range_tolerance: float = RANGE_TOLERANCE

    def _nn(self) -> NearestNeighbors:
        return NearestNeighbors(n_neighbors=self.k).fit(self.reference)

    def _beyond(self, zc: FloatArray, cols: slice) -> FloatArray:
        """Range score (N,) of rows zc over the columns ``cols`` of ``columns``; 0 inside the range."""
        if self.low is None or self.high is None:
            return np.zeros(len(zc))
        low, high = self.low[cols], self.high[cols]
        tol = self.range_tolerance * np.maximum(high - low, 1e-9)
        excess = np.maximum(np.maximum(zc - high, low - zc), 0.0) / tol
        return np.asarray(excess.max(axis=1) if excess.shape[1] else np.zeros(len(zc)), dtype=np.float64)

    def score(self, z: FloatArray) -> FloatArray:
        """Exact scores (N,) for full standardised feature rows z (N, d)."""
        zc = z[:, self.columns]
        dist, _ = self._nn().kneighbors(zc)
        return np.maximum(np.asarray(dist[:, -1] / self.scale, dtype=np.float64), self._beyond(zc, slice(None)))

    def score_broadcast(self, z_state: FloatArray, z_cand: FloatArray, prefilter: int = 128) -> FloatArray:
        """Scores (N,) for one standardised state row (n_state_full,) and N candidate rows.

        Keeps the ``prefilter`` reference points nearest in state, then ranks those by
        full distance (float32; a few thousand candidates in a few milliseconds).
        """
        n_full_state = z_state.shape[0]
        s_cols = self.columns[: self.n_state]
        c_cols = self.columns[self.n_state:] - n_full_state
        ds2 = np.sum((self.reference[:, : self.n_state] - z_state[s_cols]) ** 2, axis=1)
        p = min(max(prefilter, self.k), len(ds2))
        near = np.argpartition(ds2, p - 1)[:p] if p < len(ds2) else np.arange(len(ds2))
        zc = np.ascontiguousarray(z_cand[:, c_cols], dtype=np.float32)
        rc = self.reference[near][:, self.n_state:].astype(np.float32)
        d2 = zc @ (-2.0 * rc.T)
        d2 += (ds2[near] + np.sum(rc.astype(np.float64) ** 2, axis=1)).astype(np.float32)[None, :]
        d2 += np.sum(zc * zc, axis=1)[:, None]
        kth = np.partition(d2, self.k - 1, axis=1)[:, self.k - 1].astype(np.float64)
        knn = np.sqrt(np.maximum(kth, 0.0)) / self.scale
        state_beyond = float(self._beyond(z_state[s_cols][None, :], slice(0, self.n_state))[0])
        cand_beyond = self._beyond(np.asarray(z_cand[:, c_cols], dtype=np.float64), slice(self.n_state, None))
        return np.asarray(np.maximum(knn, np.maximum(cand_beyond, state_beyond)), dtype=np.float64)


def fit_ood(z_train: FloatArray, columns: IntArray, n_state: int, k: int = 10,
            n_reference: int = 4000, seed: int = 0, z_held_out: FloatArray | None = None) -> KnnOod:
    """Fit on standardised training rows: a reference subsample, scaled by held-out rows.

    ``z_held_out``: standardised rows of days never trained on (see module docstring);
    without them, or with too few, a disjoint subsample of the training rows scales it.
    """
    n = len(z_train)
    if n < 2 * k + 2:
        raise ValueError(f"OOD scorer needs at least {2 * k + 2} training rows, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_ref = min(n_reference, n // 2)
    ref_idx, cal_idx = order[:n_ref], order[n_ref: n_ref + max(n_reference // 2, 1)]
    k = min(k, n_ref)
    reference = np.ascontiguousarray(z_train[np.sort(ref_idx)][:, columns], dtype=np.float64)
    dist, _ = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(z_train[cal_idx][:, columns])
    scale = float(np.quantile(dist[:, -1], QUANTILE))
    if z_held_out is not None and len(z_held_out) >= 2 * k + 2:
        held, _ = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(z_held_out[:, columns])
        scale = max(scale, float(np.quantile(held[:, -1], QUANTILE)))
    seen = z_train[:, columns]
    return KnnOod(reference=reference, columns=np.asarray(columns, dtype=np.int64), n_state=n_state,
                  k=k, scale=max(scale, 1e-9), low=seen.min(axis=0), high=seen.max(axis=0))
