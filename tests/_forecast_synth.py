"""A small synthetic plant history for the forecasting unit tests (no simulator needed).

First-order responses of temperatures to setpoints, cooling power that falls with
warmer chilled water and rises with wet-bulb and load, and random setpoint
exploration held for one to six hours: enough structure for a model to learn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from db.roles import SETPOINT_ROLES


def synthetic_history(days: float = 14.0, seed: int = 0, start: str = "2024-03-01") -> pd.DataFrame:
    """Wide frame on the 5-minute UTC grid with every required role and the setpoints."""
    rng = np.random.default_rng(seed)
    n = int(days * 288)
    idx = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    t_day = np.arange(n) / 288.0
    tod = 2 * np.pi * (t_day % 1.0)
    dry = 14 + 6 * np.sin(2 * np.pi * t_day / 9.0) + 5 * np.sin(tod - 2.0) + rng.normal(0, 0.2, n)
    rh = np.clip(60 - 15 * np.sin(tod - 2.0) + rng.normal(0, 2, n), 15, 98)
    wet = dry - (100 - rh) / 5.0 * 0.6
    load = 0.55 + 0.2 * np.sin(tod - 1.0) + 0.05 * np.sin(2 * np.pi * t_day / 3.5)
    it = 1000 * (0.5 + 0.5 * load) + rng.normal(0, 5, n)

    sp = np.empty((n, 3))
    cur = np.array([10.0, 20.0, 24.0])
    i = 0
    while i < n:
        hold = int(rng.integers(12, 72))
        cur = np.array([rng.uniform(7, 15), 0.0, rng.uniform(18, 30)])
        cur[1] = rng.uniform(cur[0] + 4, 24)
        sp[i: i + hold] = cur
        i += hold

    chw = np.empty(n)
    sa = np.empty(n)
    cw = np.empty(n)
    rack = np.empty(n)
    chw[0], sa[0], cw[0], rack[0] = sp[0, 0], sp[0, 1], sp[0, 2], sp[0, 1] + 2
    a_water, a_air = 1 - np.exp(-5 / 15), 1 - np.exp(-5 / 10)
    for k in range(1, n):
        chw[k] = chw[k - 1] + a_water * (sp[k, 0] - chw[k - 1])
        cw[k] = cw[k - 1] + a_water * (max(sp[k, 2], wet[k] + 3) - cw[k - 1])
        sa[k] = sa[k - 1] + a_air * (max(sp[k, 1], chw[k] + 3) - sa[k - 1])
        rack[k] = rack[k - 1] + a_air * (sa[k] + 1.5 + 2.0 * load[k] - rack[k - 1])
    lift = np.maximum(cw - chw, 2.0)
    cooling = it * (0.08 + 0.006 * lift + 0.002 * np.maximum(wet, 0)) + 20 * (24 - sa) + rng.normal(0, 1.5, n)
    econ = np.clip((chw - wet - 5) / 4, 0, 1)
    frame = pd.DataFrame({
        "it_power_kw": it,
        "cooling_power_kw": cooling * (1 - 0.3 * econ),
        "outdoor_drybulb_c": dry,
        "outdoor_rh_pct": rh,
        "chw_supply_c": chw + rng.normal(0, 0.05, n),
        "chw_return_c": chw + 5 * load + rng.normal(0, 0.05, n),
        "cw_supply_c": cw + rng.normal(0, 0.05, n),
        "supply_air_c": sa + rng.normal(0, 0.05, n),
        "rack_inlet_max_c": rack + rng.normal(0, 0.08, n),
        "rack_inlet_mean_c": rack - 1.0 + rng.normal(0, 0.05, n),
        "chillers_running": np.where(econ > 0.9, 0.0, np.where(it > 900, 2.0, 1.0)),
        "economizer_active": econ,
    }, index=idx)
    for j, role in enumerate(SETPOINT_ROLES):
        frame[role] = sp[:, j]
    return frame


def single_setpoint_history(days: float = 14.0, seed: int = 0, fan_kw_per_k: float = 8.0,
                            start: str = "2024-07-01") -> pd.DataFrame:
    """An air-side plant like the EnergyPlus models: one setpoint (supply air), no water loops.

    Warmer supply air saves cooling power, but above 20 C rack inlet the servers' fans
    draw ``fan_kw_per_k`` more IT power per kelvin. ``economizer_active`` and
    ``chillers_running`` are constant (they carry nothing) and ``chw_return_c`` is
    logged only 30 % of the time (too sparse to learn from).
    """
    rng = np.random.default_rng(seed)
    n = int(days * 288)
    idx = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    t_day = np.arange(n) / 288.0
    tod = 2 * np.pi * (t_day % 1.0)
    dry = 22 + 5 * np.sin(2 * np.pi * t_day / 7.0) + 6 * np.sin(tod - 2.0) + rng.normal(0, 0.2, n)
    rh = np.clip(55 - 15 * np.sin(tod - 2.0) + rng.normal(0, 2, n), 15, 98)
    wet = dry - (100 - rh) / 5.0 * 0.6
    load = 0.55 + 0.2 * np.sin(tod - 1.0) + 0.05 * np.sin(2 * np.pi * t_day / 3.5)
    sp = np.empty(n)
    i = 0
    while i < n:
        hold = int(rng.integers(12, 72))
        sp[i: i + hold] = rng.uniform(14.0, 26.0)
        i += hold
    sa, rack = np.empty(n), np.empty(n)
    sa[0], rack[0] = sp[0], sp[0] + 2.6
    a_air = 1 - np.exp(-5 / 10)
    for k in range(1, n):
        sa[k] = sa[k - 1] + a_air * (sp[k] - sa[k - 1])
        rack[k] = rack[k - 1] + a_air * (sa[k] + 1.5 + 2.0 * load[k] - rack[k - 1])
    it = 1000 * (0.5 + 0.5 * load) + fan_kw_per_k * np.maximum(rack - 20.0, 0.0) + rng.normal(0, 3, n)
    cooling = it * (0.3 - 0.008 * (sa - 14.0)) + 4.0 * np.maximum(wet, 0.0) + rng.normal(0, 1.5, n)
    chw_return = np.where(rng.uniform(size=n) < 0.3, 12.0 + rng.normal(0, 0.3, n), np.nan)
    return pd.DataFrame({
        "it_power_kw": it,
        "cooling_power_kw": cooling,
        "outdoor_drybulb_c": dry,
        "outdoor_rh_pct": rh,
        "supply_air_c": sa + rng.normal(0, 0.05, n),
        "rack_inlet_max_c": rack + rng.normal(0, 0.08, n),
        "rack_inlet_mean_c": rack - 1.0 + rng.normal(0, 0.05, n),
        "chillers_running": np.full(n, 1.0),
        "economizer_active": np.zeros(n),
        "chw_return_c": chw_return,
        "supply_air_sp_c": sp,
    }, index=idx)
