"""IT load that does not repeat: a seeded perturbation of the utilisation trace.

Why: the shipped Alibaba 2017 trace is one 168-hour pattern repeated 53 times, so a
forecaster could memorise an evaluation week from its training weeks, which no real
hall allows. The plant therefore drives its servers with the trace times a level
factor, plus noise (``simulator.config.LoadVariation`` holds every size):

* day-to-day level: one log-normal AR(1) factor per day (a busier or quieter day);
* deployments and decommissions: Poisson events, each a step of either sign that
  persists for a uniform number of days, then ends (a cluster moved in, then out);
* hourly noise: additive AR(1) utilisation noise.

The combined level factor is clipped to 1 +/- ``max_level_change`` and utilisation to
[0, 1]. The same seed gives the same series.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from simulator.config import LoadVariation

FloatArray = npt.NDArray[np.float64]
HOURS_PER_DAY = 24
HOURS_PER_WEEK = 168


def _ar1(rng: np.random.Generator, n: int, sd: float, phi: float) -> FloatArray:
    """A stationary AR(1) series of length ``n`` with standard deviation ``sd``."""
    out = np.zeros(n, dtype=np.float64)
    if n == 0 or sd == 0.0:
        return out
    shocks = rng.normal(0.0, sd * np.sqrt(1.0 - phi * phi), n)
    out[0] = rng.normal(0.0, sd)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + shocks[i]
    return out


def daily_level(rng: np.random.Generator, hours: int, v: LoadVariation) -> FloatArray:
    """The day-to-day level factor, one value a day held for its 24 hours [-]."""
    days = -(-hours // HOURS_PER_DAY)
    per_day = np.exp(_ar1(rng, days, v.daily_level_sd, v.daily_level_correlation))
    return np.repeat(per_day, HOURS_PER_DAY)[:hours]


def deployment_steps(rng: np.random.Generator, hours: int, v: LoadVariation) -> FloatArray:
    """Sum of the deployment / decommission steps in force each hour (share of utilisation) [-]."""
    steps = np.zeros(hours, dtype=np.float64)
    events = rng.poisson(v.deployments_per_week * hours / HOURS_PER_WEEK)
    for _ in range(int(events)):
        start = int(rng.integers(0, hours))
        length_h = round(rng.uniform(v.deployment_days_min, v.deployment_days_max) * HOURS_PER_DAY)
        size = rng.uniform(v.deployment_step_min, v.deployment_step_max) * rng.choice((-1.0, 1.0))
        steps[start:start + length_h] += size
    return steps


def perturb_utilisation(utilisation: npt.ArrayLike, seed: int | np.random.SeedSequence,
                        variation: LoadVariation) -> FloatArray:
    """The trace under ``variation`` with this seed; the trace itself when it is disabled.

    Utilisation in [0, 1] per hour; the result has the same length and stays in [0, 1].
    """
    u = np.asarray(utilisation, dtype=np.float64)
    if u.ndim != 1:
        raise ValueError(f"utilisation must be a 1-D hourly series, got shape {u.shape}")
    if not variation.enabled:
        return u.copy()
    rng = np.random.default_rng(seed)
    n = len(u)
    level = daily_level(rng, n, variation) * (1.0 + deployment_steps(rng, n, variation))
    bound = variation.max_level_change
    level = np.clip(level, 1.0 - bound, 1.0 + bound)
    noise = _ar1(rng, n, variation.hourly_noise_sd, variation.hourly_noise_correlation)
    return np.asarray(np.clip(u * level + noise, 0.0, 1.0), dtype=np.float64)
