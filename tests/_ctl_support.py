"""Shared pieces of the controller tests: a physics-shaped forecaster and sensor windows.

``PhysicsForecaster`` is a small deterministic model written for the tests, not a mock
of the project's ensemble: cooling power falls as chilled water and supply air rise
(chiller lift), rises as condenser water falls (tower fans), and the hottest rack inlet
follows supply air plus recirculation. Its uncertainty and OOD score are settable so
that each fallback path can be driven.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from controller.config import Config, parse_config
from db.roles import REQUIRED_MEASUREMENT_ROLES, SETPOINT_ROLES
from forecasting.protocol import FloatArray, Forecast

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
START_SETPOINTS = {"chw_supply_sp_c": 9.0, "supply_air_sp_c": 20.0, "cw_supply_sp_c": 26.0}


@dataclass
class PhysicsForecaster:
    """Deterministic cooling-power and rack-inlet model of the candidates [kW, C]."""

    inlet_std_c: float = 0.2
    power_std_frac: float = 0.02
    ood: float = 0.3
    version_name: str = "physics-test-1"
    inlet_offset_k: float = 1.5
    it_per_k_chw_kw: float | None = None  # set: an IT forecast that moves with chilled water alone [kW/K]
    it_per_k_inlet_kw: float | None = None  # set: an IT forecast that rises with the hottest inlet [kW/K]
    calls: int = 0

    @property
    def version(self) -> str:
        return self.version_name

    @property
    def horizon_min(self) -> int:
        return 60

    def setpoint_roles(self) -> tuple[str, ...]:
        return SETPOINT_ROLES

    def required_roles(self) -> tuple[str, ...]:
        return ("it_power_kw", "outdoor_drybulb_c", "rack_inlet_max_c")

    def history_needed(self) -> int:
        return 6

    def predict(self, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
        self.calls += 1
        it_kw = float(state["it_power_kw"].dropna().iloc[-1]) if "it_power_kw" in state else 1000.0
        chw, sa, cw = candidates[:, 0], candidates[:, 1], candidates[:, 2]
        chiller = 0.22 * it_kw * (1 - 0.03 * (chw - 7.0)) * (1 + 0.015 * (cw - 25.0))
        tower = 0.02 * it_kw * np.clip((34.0 - cw) / 8.0, 0.2, None) ** 3
        fans = 0.04 * it_kw * (1 + 0.08 * (sa - 18.0))
        power = chiller + tower + fans
        inlet = sa + self.inlet_offset_k + 0.08 * np.maximum(sa - 20.0, 0.0) ** 2
        n = len(candidates)
        p_std = self.power_std_frac * power
        i_std = np.full(n, self.inlet_std_c)
        it_mean = it_std = it_lo = it_hi = None
        if self.it_per_k_chw_kw is not None or self.it_per_k_inlet_kw is not None:
            it_mean = (it_kw + (self.it_per_k_chw_kw or 0.0) * (chw - START_SETPOINTS["chw_supply_sp_c"])
                       + (self.it_per_k_inlet_kw or 0.0) * (inlet - inlet.min()))  # chilled water alone: an error
            it_std = np.full(n, 0.01 * it_kw)
            it_lo, it_hi = it_mean - 1.645 * it_std, it_mean + 1.645 * it_std
        return Forecast(
            cooling_power_kw=power, cooling_power_std_kw=p_std,
            cooling_power_lo_kw=power - 1.645 * p_std, cooling_power_hi_kw=power + 1.645 * p_std,
            rack_inlet_max_c=inlet, rack_inlet_std_c=i_std,
            rack_inlet_lo_c=inlet - 1.645 * i_std, rack_inlet_hi_c=inlet + 1.645 * i_std,
            ood_score=np.full(n, self.ood), interval_level=0.9, it_power_kw=it_mean, it_power_std_kw=it_std,
            it_power_lo_kw=it_lo, it_power_hi_kw=it_hi,
        )


def window(
    now: datetime = NOW,
    rows: int = 24,
    *,
    setpoints: dict[str, float] | None = None,
    rack_inlet_c: float = 22.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A healthy wide window (5-minute rows ending at ``now``) with small sensor noise."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(end=now, periods=rows, freq="5min", tz="UTC")
    base = {
        "it_power_kw": 1000.0, "cooling_power_kw": 300.0, "outdoor_drybulb_c": 25.0, "outdoor_rh_pct": 50.0,
        "chw_supply_c": 9.0, "chw_return_c": 15.0, "cw_supply_c": 26.0, "supply_air_c": 20.0,
        "rack_inlet_max_c": rack_inlet_c, "rack_inlet_mean_c": rack_inlet_c - 2.0, "chillers_running": 2.0,
        "economizer_active": 0.0,
    }
    data: dict[str, object] = {}
    for role in REQUIRED_MEASUREMENT_ROLES:
        value = base[role]
        noise = 0.0 if role in ("chillers_running", "economizer_active") else 0.003 * max(abs(value), 1.0)
        data[role] = value + noise * rng.standard_normal(rows)
    for role in SETPOINT_ROLES:
        data[role] = np.full(rows, (setpoints or START_SETPOINTS)[role])
    return pd.DataFrame(data, index=index)


def config(text: str = "", **top: str) -> Config:
    """A Config from TOML text, with ``mode`` and other top-level keys given as keywords."""
    head = "".join(f'{k} = "{v}"\n' for k, v in top.items())
    return parse_config(head + text)


def later(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)
