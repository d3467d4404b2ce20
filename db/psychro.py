"""Psychrometric helpers shared by feature building (and anyone else who needs them).

Wet-bulb temperature drives cooling-tower and economiser performance, so the
forecaster wants it even where the site has no wet-bulb sensor; it follows from
dry-bulb, relative humidity and pressure (psychrolib, ASHRAE Handbook formulas).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import psychrolib

FloatArray = npt.NDArray[np.float64]

SEA_LEVEL_PRESSURE_PA = 101_325.0


def wetbulb_c(drybulb_c: npt.ArrayLike, rh_pct: npt.ArrayLike,
              pressure_pa: float = SEA_LEVEL_PRESSURE_PA) -> FloatArray:
    """Thermodynamic wet-bulb temperature [C] from dry-bulb [C] and relative humidity [%].

    Vectorised over arrays; NaN in either input gives NaN (a gap stays a gap). psychrolib
    solves each point iteratively, so each distinct (dry-bulb, RH) pair is solved once.
    """
    dry = np.asarray(drybulb_c, dtype=np.float64)
    rh = np.asarray(rh_pct, dtype=np.float64)
    dry, rh = np.broadcast_arrays(dry, rh)
    out = np.full(dry.shape, np.nan)
    ok = np.isfinite(dry) & np.isfinite(rh)
    if not ok.any():
        return out
    pairs = np.stack([dry[ok], np.clip(rh[ok], 0.0, 100.0) / 100.0], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    psychrolib.SetUnitSystem(psychrolib.SI)  # idempotent; psychrolib keeps the unit system globally
    solved = np.array([
        psychrolib.GetTWetBulbFromRelHum(float(t), float(r), pressure_pa) for t, r in unique
    ])
    out[ok] = solved[np.asarray(inverse).reshape(-1)]
    return out
