"""Out-of-distribution score: how far an input lies from the data the model learned from.

Score = distance to the k-th nearest training point, in standardised feature space,
divided by the 99th percentile of that distance over held-apart training points; so
~99 % of training-like inputs score below 1 and the controller can refuse inputs that
score above a threshold (Gao 2014 saw errors grow where training data was sparse).

Only the physically meaningful columns take part (the state itself, the setpoints now
and over the horizon), not the lags, so distance means "a condition never seen".
For many candidates against one state, `score_broadcast` first keeps the reference
points nearest in state, then ranks them by full distance: the result is never below
the exact score (it can only err on the side of calling an input unfamiliar).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.neighbors import NearestNeighbors

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

QUANTILE = 0.99


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
    scale: float  # 99th-percentile k-NN distance of training data [standardised units]

    def _nn(self) -> NearestNeighbors:
        return NearestNeighbors(n_neighbors=self.k).fit(self.reference)

    def score(self, z: FloatArray) -> FloatArray:
        """Exact scores (N,) for full standardised feature rows z (N, d)."""
        dist, _ = self._nn().kneighbors(z[:, self.columns])
        return np.asarray(dist[:, -1] / self.scale, dtype=np.float64)

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
        return np.asarray(np.sqrt(np.maximum(kth, 0.0)) / self.scale, dtype=np.float64)


def fit_ood(z_train: FloatArray, columns: IntArray, n_state: int, k: int = 10,
            n_reference: int = 4000, seed: int = 0) -> KnnOod:
    """Fit on standardised training rows: a reference subsample plus a disjoint calibration one."""
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
    return KnnOod(reference=reference, columns=np.asarray(columns, dtype=np.int64), n_state=n_state,
                  k=k, scale=max(scale, 1e-9))
