"""Candidate setpoint vectors for one cycle: a grid, random samples, then refinement.

Why sampling instead of a solver: the model is a black-box ensemble that scores
thousands of candidates in one batch cheaply, and the reachable set per cycle is a
small box (bounds intersected with rate limits), so a dense grid plus random points
covers it, and a cross-entropy step refines around the best ones.

Arrays are (N, 3) in ``db.roles.SETPOINT_ROLES`` order [C]. Every candidate lies in
the box and keeps the coil approach; row 0 is always the hold vector.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from db.roles import SETPOINT_ROLES

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

CHW_INDEX = SETPOINT_ROLES.index("chw_supply_sp_c")
SUPPLY_AIR_INDEX = SETPOINT_ROLES.index("supply_air_sp_c")


def box_arrays(box: Mapping[str, tuple[float, float]]) -> tuple[FloatArray, FloatArray]:
    """Lower and upper corners (3,) [C] of a per-role box."""
    lo = np.array([box[r][0] for r in SETPOINT_ROLES], dtype=np.float64)
    hi = np.array([box[r][1] for r in SETPOINT_ROLES], dtype=np.float64)
    return lo, hi


def to_vector(setpoints: Mapping[str, float]) -> FloatArray:
    return np.array([setpoints[r] for r in SETPOINT_ROLES], dtype=np.float64)


def to_mapping(vector: FloatArray) -> dict[str, float]:
    return {r: float(v) for r, v in zip(SETPOINT_ROLES, vector, strict=True)}


def coupling_ok(candidates: FloatArray, min_coil_approach_k: float) -> BoolArray:
    """Rows whose supply air is at least the coil approach above chilled water."""
    gap = candidates[:, SUPPLY_AIR_INDEX] - candidates[:, CHW_INDEX]
    return np.asarray(gap >= min_coil_approach_k - 1e-9)


def initial_candidates(
    hold: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    min_coil_approach_k: float,
    grid_points_per_role: int,
    random_candidates: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Hold vector, full grid and uniform random points in [lo, hi], coupling-filtered."""
    axes = [np.unique(np.linspace(a, b, grid_points_per_role)) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(SETPOINT_ROLES))
    rand = lo + (hi - lo) * rng.random((random_candidates, len(SETPOINT_ROLES)))
    pool = np.vstack([grid, rand])
    pool = pool[coupling_ok(pool, min_coil_approach_k)]
    return np.vstack([hold[None, :], pool])


def refine_candidates(
    elites: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    min_coil_approach_k: float,
    n: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Cross-entropy step: sample a normal fitted to the elites, clipped to the box."""
    if n == 0 or len(elites) == 0:
        return np.empty((0, len(SETPOINT_ROLES)))
    mean = elites.mean(axis=0)
    floor = 0.05 * (hi - lo)
    std = np.maximum(elites.std(axis=0), floor)
    samples = np.clip(rng.normal(mean, std, size=(n, len(SETPOINT_ROLES))), lo, hi)
    return samples[coupling_ok(samples, min_coil_approach_k)]


def neighbours(center: FloatArray, steps_k: FloatArray, lo: FloatArray, hi: FloatArray) -> tuple[FloatArray, list[tuple[int, float]]]:
    """The what-if set: ``center`` with each role moved by -step and +step, clipped to [lo, hi].

    Returns the (6, 3) array and, per row, (role index, signed step [K]).
    """
    rows: list[FloatArray] = []
    labels: list[tuple[int, float]] = []
    for i, step in enumerate(steps_k):
        for sign in (-1.0, 1.0):
            row = center.copy()
            row[i] = np.clip(row[i] + sign * step, lo[i], hi[i])
            rows.append(row)
            labels.append((i, sign * float(step)))
    return np.vstack(rows), labels
