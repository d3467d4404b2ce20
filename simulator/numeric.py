"""Elementwise helpers that accept either Python floats or numpy arrays.

Why: the plant physics is written once and runs two ways. The time-stepping plant
calls it on Python floats (numpy on scalars costs about a microsecond per call, and a
simulated year is 525,600 steps), while the oracle calls it on arrays of thousands of
candidate setpoints at once. Arithmetic operators already work on both; these
helpers cover the few operations that differ (max, min, exp, conditionals).

``Num`` is a constrained type variable: a function typed with it is checked once for
floats and once for arrays, so a physics function never mixes the two by accident.
"""

from __future__ import annotations

import math
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Num = TypeVar("Num", float, FloatArray)


def vmax(a: Num, b: Num | float) -> Num:
    """Elementwise maximum."""
    if isinstance(a, float):
        return a if a >= b else b
    return np.maximum(a, b)


def vmin(a: Num, b: Num | float) -> Num:
    """Elementwise minimum."""
    if isinstance(a, float):
        return a if a <= b else b
    return np.minimum(a, b)


def vclip(a: Num, lo: float, hi: float) -> Num:
    """Clip into [lo, hi]."""
    if isinstance(a, float):
        return lo if a < lo else hi if a > hi else a
    return np.clip(a, lo, hi)


def vpos(a: Num) -> Num:
    """Positive part, max(a, 0)."""
    if isinstance(a, float):
        return a if a > 0.0 else 0.0
    return np.maximum(a, 0.0)


def vexp(a: Num) -> Num:
    """Elementwise exponential."""
    if isinstance(a, float):
        return math.exp(a)
    return np.exp(a)


def vsqrt(a: Num) -> Num:
    """Elementwise square root of the positive part (a negative argument gives 0)."""
    if isinstance(a, float):
        return math.sqrt(a) if a > 0.0 else 0.0
    return np.sqrt(np.maximum(a, 0.0))


def vpow(a: Num, exponent: float) -> Num:
    """Elementwise power of a positive base."""
    if isinstance(a, float):
        return math.pow(a, exponent)
    return np.power(a, exponent)


def vceil(a: Num) -> Num:
    """Elementwise ceiling, as float."""
    if isinstance(a, float):
        return float(math.ceil(a))
    return np.ceil(a)


def vwhere(cond: bool | BoolArray, a: Num, b: Num) -> Num:
    """``a`` where ``cond`` holds, else ``b``."""
    if isinstance(cond, bool | np.bool_):
        return a if cond else b
    return cast(Num, np.where(cond, a, b))


def vstep(a: Num) -> Num:
    """1.0 where a > 0, else 0.0 (an on/off indicator that stays a number)."""
    if isinstance(a, float):
        return 1.0 if a > 0.0 else 0.0
    return (a > 0.0).astype(np.float64)
