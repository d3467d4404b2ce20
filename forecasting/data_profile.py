"""What a site's own sensor data normally looks like, learned from its history.

Why: whether a reading is suspect depends on the plant and its historian. On one site a
chilled-water supply held exactly at its setpoint for hours is normal (a good loop, or a
historian that stores a value only when it changes); on another an unchanged reading
for half an hour is a frozen transmitter. A chiller staging on moves cooling power by
tens of kW in one record and a weather file steps once an hour. Fixed thresholds cannot
serve both, so the data-quality checks (``controller.quality``) compare the live window
with this profile of the site's history (a wide frame on the 5-minute grid, NaN gaps):

* ``longest_flat_rows``: the longest run of exactly equal readings the history showed
  (in grid rows, gaps inside the run included); a flat line is suspect only well beyond it.
* ``step_p999`` and ``step_max``: how large one-record steps ``|x[t] - x[t-1]|`` get (both
  readings present); a jump is suspect only well beyond the 99.9th percentile.
* ``step_median``, ``step_p99`` and ``partners``: a role *moves* in a record when its
  step is as rare as its 1 % largest and beyond ``MOVE_FACTOR`` times its median step
  (noise never moves a noisy meter); for a role that seldom changes (a chiller count, a
  setpoint) that is any change. Its partners are the roles that moved within one record
  of its own moves much more often than by chance, either way round (staging: chiller
  count and cooling power; hourly weather: dry-bulb, humidity and wet-bulb). A jump that
  a partner corroborates is a plant event, not a glitch.

Pure numpy/pandas; ``to_dict`` / ``from_dict`` give a JSON-able form (plain ints, floats,
strings) so that the profile can travel with a model artifact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

PROFILE_VERSION = 1
#: A move is at least this many median steps (and at least the 99th-percentile step).
MOVE_FACTOR = 5.0
#: One-record steps a role needs in the history to be profiled (one day of 5-minute rows).
MIN_STEPS = 288
#: Moves a role needs before its partners can be told apart from chance.
MIN_MOVES = 5
#: A partner moves within one record of at least this share of the role's moves ...
PARTNER_SHARE = 0.25
#: ... and at least this many times as often as near an arbitrary record (its chance rate).
PARTNER_LIFT = 3.0


class ProfileError(ValueError):
    """A profile that cannot be read (``from_dict``) or learned (``learn_profile``)."""


@dataclass(frozen=True)
class RoleProfile:
    """One role's normal behaviour; steps in the role's unit, runs in 5-minute rows.

    ``partners``: roles that move with this one, sorted; ``()`` when the history showed
    none; None when the role moved too seldom (fewer than ``MIN_MOVES``) to tell.
    """

    longest_flat_rows: int
    step_median: float
    step_p99: float
    step_p999: float
    step_max: float
    partners: tuple[str, ...] | None
    level_p99: float = float("nan")  # 99th percentile of the readings themselves [role unit]

    @property
    def move_step(self) -> float:
        """A non-zero step at least this large is a move of this role (``moved``)."""
        return move_step(self.step_median, self.step_p99)


@dataclass(frozen=True)
class DataProfile:
    """Per-role profiles (``roles``, read-only) learned from ``rows`` rows of history."""

    roles: Mapping[str, RoleProfile]
    rows: int
    version: int = PROFILE_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))

    def role(self, name: str) -> RoleProfile | None:
        return self.roles.get(name)

    @property
    def design_it_kw(self) -> float | None:
        """The hall's design IT load for the tuned rules [kW]: the 99th percentile of its IT power history."""
        it = self.roles.get("it_power_kw")
        level = float("nan") if it is None else it.level_p99
        return level if np.isfinite(level) and level > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form; ``from_dict`` reads it back."""
        return {"version": int(self.version), "rows": int(self.rows), "roles": {
            str(name): {"longest_flat_rows": int(p.longest_flat_rows), "step_median": float(p.step_median),
                        "step_p99": float(p.step_p99), "step_p999": float(p.step_p999), "step_max": float(p.step_max),
                        "partners": None if p.partners is None else list(p.partners),
                        "level_p99": float(p.level_p99) if np.isfinite(p.level_p99) else None}
            for name, p in self.roles.items()}}

    @classmethod
    def from_dict(cls, data: object) -> DataProfile:
        """The profile ``to_dict`` wrote; unknown keys are ignored, wrong types are a ``ProfileError``."""
        doc = _mapping(data, "profile")
        roles = _mapping(doc.get("roles"), "profile.roles")
        return cls(roles={str(name): _role_from_dict(entry, f"profile.roles.{name}") for name, entry in roles.items()},
                   rows=_int(doc.get("rows"), "profile.rows"),
                   version=_int(doc.get("version", PROFILE_VERSION), "profile.version"))


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProfileError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProfileError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < float("inf"):
        raise ProfileError(f"{where} must be a finite non-negative number, got {value!r}")
    return float(value)


def _partners(value: object, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{where} must be a list of role names or null, got {value!r}")
    return tuple(value)


def _level(value: object, where: str) -> float:
    """A reading level: any finite number, or None/absent (unknown, NaN)."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ProfileError(f"{where} must be a finite number or null, got {value!r}")
    return float(value)


def _role_from_dict(entry: object, where: str) -> RoleProfile:
    doc = _mapping(entry, where)
    return RoleProfile(
        longest_flat_rows=_int(doc.get("longest_flat_rows"), f"{where}.longest_flat_rows"),
        step_median=_float(doc.get("step_median"), f"{where}.step_median"),
        step_p99=_float(doc.get("step_p99"), f"{where}.step_p99"),
        step_p999=_float(doc.get("step_p999"), f"{where}.step_p999"),
        step_max=_float(doc.get("step_max"), f"{where}.step_max"),
        partners=_partners(doc.get("partners"), f"{where}.partners"),
        level_p99=_level(doc.get("level_p99"), f"{where}.level_p99"),
    )


def as_floats(values: object) -> FloatArray:
    """Readings as float64, anything unreadable as NaN."""
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)


def one_record_steps(values: FloatArray) -> FloatArray:
    """``|x[t] - x[t-1]|`` where both readings are finite, else NaN; element 0 is NaN."""
    steps = np.full(len(values), np.nan)
    if len(values) > 1:
        with np.errstate(invalid="ignore"):
            steps[1:] = np.abs(np.diff(values))
        steps[~np.isfinite(steps)] = np.nan
    return steps


def move_step(step_median: float, step_p99: float = 0.0) -> float:
    """The smallest step that is a move: ``MOVE_FACTOR`` median steps, and the 99th-percentile step."""
    return max(MOVE_FACTOR * step_median, step_p99)


def moved(steps: FloatArray, threshold: float) -> BoolArray:
    """Where a step is a move: non-zero and at least ``threshold`` (NaN steps never are)."""
    with np.errstate(invalid="ignore"):
        return (steps > 0.0) & (steps >= threshold)


def flat_runs(values: FloatArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(first row, last row) of each run of exactly equal finite readings, in order; gaps do not end a run."""
    pos = np.flatnonzero(np.isfinite(values))
    if not len(pos):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    v = values[pos]
    new = np.r_[True, v[1:] != v[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, len(pos) - 1]
    return pos[starts].astype(np.int64), pos[ends].astype(np.int64)


def _partner_sets(moves: BoolArray, valid: BoolArray, names: list[str]) -> list[tuple[str, ...] | None]:
    """For each column: the columns that move with it (see the module doc); None when it cannot tell.

    The relation is made symmetric: when a chiller count's moves come with cooling-power
    moves, a cooling-power jump with a count move is a staging, although cooling power
    also moves on its own (with the weather) far more often than the count does.
    """
    near = moves.copy()
    near[1:] |= moves[:-1]
    near[:-1] |= moves[1:]
    m, n, v = moves.astype(np.float64), near.astype(np.float64), valid.astype(np.float64)
    counts = m.sum(axis=0)
    share = (m.T @ n) / np.maximum(counts, 1.0)[:, None]  # [a, b]: share of a's moves with b moving near
    by_chance = (v.T @ n) / np.maximum(v.sum(axis=0), 1.0)[:, None]  # [a, b]: share of a's rows with b moving near
    known = counts >= MIN_MOVES
    keep = known[:, None] & (share >= PARTNER_SHARE) & (share >= PARTNER_LIFT * by_chance)
    keep = (keep | keep.T) & ~np.eye(len(names), dtype=np.bool_)
    return [tuple(sorted(b for b, k in zip(names, keep[a], strict=True) if k)) if known[a] or keep[a].any() else None
            for a in range(len(names))]


def learn_profile(frame: pd.DataFrame) -> DataProfile:
    """The profile of a site's history: a wide frame on the 5-minute grid (role columns, NaN gaps).

    Rows must be in time order, one per grid step. A role with fewer than ``MIN_STEPS``
    one-record steps is left out (the checks then use their defaults for it).
    """
    if not isinstance(frame, pd.DataFrame):
        raise ProfileError(f"history must be a DataFrame, got {type(frame).__name__}")
    if isinstance(frame.index, pd.DatetimeIndex) and not frame.index.is_monotonic_increasing:
        raise ProfileError("history rows must be in time order")
    if frame.columns.has_duplicates:
        raise ProfileError(f"history columns repeated: {sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})}")
    names, stats, moves, valid = [], [], [], []
    for col in frame.columns:
        values = as_floats(frame[col])
        steps = one_record_steps(values)
        ok = steps[np.isfinite(steps)]
        if len(ok) < MIN_STEPS:
            continue
        starts, ends = flat_runs(values)
        median, p99, p999 = (float(q) for q in np.quantile(ok, (0.5, 0.99, 0.999)))
        names.append(str(col))
        stats.append((int((ends - starts).max()) + 1, median, p99, p999, float(ok.max()),
                      float(np.nanquantile(values, 0.99))))
        moves.append(moved(steps, move_step(median, p99)))
        valid.append(np.isfinite(steps))
    if not names:
        return DataProfile(roles={}, rows=len(frame))
    partners = _partner_sets(np.column_stack(moves), np.column_stack(valid), names)
    roles = {name: RoleProfile(*stat[:5], partners=partners[i], level_p99=stat[5])
             for i, (name, stat) in enumerate(zip(names, stats, strict=True))}
    return DataProfile(roles=roles, rows=len(frame))
