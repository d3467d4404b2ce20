"""Candidate setpoint vectors for one cycle: a grid, random samples, then refinement.

Why sampling instead of a solver: the model is a black-box ensemble that scores
thousands of candidates in one batch cheaply, and the reachable set per cycle is a
small box (bounds intersected with rate limits), so a dense grid plus random points
covers it, and a cross-entropy step refines around the best ones.

Arrays are (N, K) over the K setpoints the site controls (``SetpointEnvelope.setpoint_roles``,
in ``db.roles.SETPOINT_ROLES`` order) [C]. Every candidate lies in the box and keeps the
coil approach where both coil roles are controlled; row 0 is always the hold vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from db.roles import SETPOINT_ROLES

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

CW_SETPOINT = "cw_supply_sp_c"
Roles = Sequence[str]


def box_arrays(box: Mapping[str, tuple[float, float]], roles: Roles = SETPOINT_ROLES) -> tuple[FloatArray, FloatArray]:
    """Lower and upper corners (K,) [C] of a per-role box, in ``roles`` order."""
    lo = np.array([box[r][0] for r in roles], dtype=np.float64)
    hi = np.array([box[r][1] for r in roles], dtype=np.float64)
    return lo, hi


def to_vector(setpoints: Mapping[str, float], roles: Roles = SETPOINT_ROLES) -> FloatArray:
    return np.array([setpoints[r] for r in roles], dtype=np.float64)


def to_mapping(vector: FloatArray, roles: Roles = SETPOINT_ROLES) -> dict[str, float]:
    return {r: float(v) for r, v in zip(roles, vector, strict=True)}


def coupling_ok(candidates: FloatArray, min_coil_approach_k: float, roles: Roles = SETPOINT_ROLES) -> BoolArray:
    """Rows whose supply air is at least the coil approach above chilled water (all rows
    when the site does not control both)."""
    if "supply_air_sp_c" not in roles or "chw_supply_sp_c" not in roles:
        return np.ones(len(candidates), dtype=bool)
    gap = candidates[:, list(roles).index("supply_air_sp_c")] - candidates[:, list(roles).index("chw_supply_sp_c")]
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
    roles: Roles = SETPOINT_ROLES,
) -> FloatArray:
    """Hold vector, full grid and uniform random points in [lo, hi], coupling-filtered."""
    axes = [np.unique(np.linspace(a, b, grid_points_per_role)) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(roles))
    rand = lo + (hi - lo) * rng.random((random_candidates, len(roles)))
    pool = np.vstack([grid, rand])
    pool = pool[coupling_ok(pool, min_coil_approach_k, roles)]
    return np.vstack([hold[None, :], pool])


def refine_candidates(
    elites: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    min_coil_approach_k: float,
    n: int,
    rng: np.random.Generator,
    roles: Roles = SETPOINT_ROLES,
) -> FloatArray:
    """Cross-entropy step: sample a normal fitted to the elites, clipped to the box."""
    if n == 0 or len(elites) == 0:
        return np.empty((0, len(roles)))
    mean = elites.mean(axis=0)
    floor = 0.05 * (hi - lo)
    std = np.maximum(elites.std(axis=0), floor)
    samples = np.clip(rng.normal(mean, std, size=(n, len(roles))), lo, hi)
    return samples[coupling_ok(samples, min_coil_approach_k, roles)]


def neighbours(center: FloatArray, steps_k: FloatArray, lo: FloatArray, hi: FloatArray) -> tuple[FloatArray, list[tuple[int, float]]]:
    """The what-if set: ``center`` with each role moved by -step and +step, clipped to [lo, hi].

    Returns the (2K, K) array and, per row, (role index, signed step [K]).
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


def latest_move_signs(frame: pd.DataFrame, rows: int, eps_k: float = 1e-3) -> dict[str, int]:
    """Per setpoint role: +1 / -1 if its latest change in the last ``rows`` rows went up / down.

    ``frame``: the historian window with the measured setpoint columns [C]; roles that
    did not move (by more than ``eps_k``) in those rows are left out.
    """
    signs: dict[str, int] = {}
    if rows <= 0:
        return signs
    for role in SETPOINT_ROLES:
        if role not in frame.columns:
            continue
        values = pd.to_numeric(frame[role], errors="coerce").to_numpy(dtype=np.float64)[-(rows + 1):]
        steps = np.diff(values[np.isfinite(values)])
        moved = steps[np.abs(steps) > eps_k]
        if len(moved):
            signs[role] = 1 if moved[-1] > 0 else -1
    return signs


def block_reversals(box: Mapping[str, tuple[float, float]], hold: Mapping[str, float],
                    signs: Mapping[str, int]) -> dict[str, tuple[float, float]]:
    """The box narrowed so that no role moves against its latest recent move [C].

    Why: a setpoint that went up and comes straight back down wears valves and
    compressors, keeps the plant in transients the model saw little of, and is how a
    model-driven loop chatters at the edge of what it knows. A role may keep going the
    same way or hold; reversing waits until the move is older than the dwell.
    """
    out = dict(box)
    for role, sign in signs.items():
        if role not in out or role not in hold:
            continue
        lo, hi = out[role]
        h = min(max(hold[role], lo), hi)
        out[role] = (h, hi) if sign > 0 else (lo, h)
    return out


def tower_floor(box: Mapping[str, tuple[float, float]], wetbulb_c: float,
                approach_k: float) -> dict[str, tuple[float, float]]:
    """The box with condenser water raised to at least wet-bulb + approach [C], within its interval.

    Towers cannot cool water below the wet-bulb plus their approach; asking for it only
    runs their fans flat out. Unknown wet-bulb (NaN) or ``approach_k`` 0 leaves the box.
    """
    out = dict(box)
    if approach_k > 0.0 and np.isfinite(wetbulb_c) and CW_SETPOINT in out:
        lo, hi = out[CW_SETPOINT]
        out[CW_SETPOINT] = (min(max(lo, wetbulb_c + approach_k), hi), hi)
    return out
