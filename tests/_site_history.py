"""Site histories shaped like the EnergyPlus plant that broke the fixed quality thresholds.

Why: that plant's data is flat in exactly the ways real plants and historians are. Its
weather comes from an hourly file (each value held for twelve 5-minute rows, often the
same two hours running), chilled water sits exactly at its setpoint, a loop's return
temperature freezes while its chiller is off, cooling power is constant with no chiller
running and steps by tens of kW when one stages on. ``plant_like`` builds such a wide
frame from the packaged Chicago weather (real EPW values, storm fronts included), with
no random numbers: the same call gives the same frame.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

WEATHER = Path(__file__).resolve().parents[1] / "simulator" / "data" / "weather_chicago_il.csv.gz"
ROWS_PER_HOUR = 12
YEAR_START = datetime(2023, 1, 1, tzinfo=UTC)
#: The hour of the year of the sharpest front in the file: dry-bulb 30.0 -> 21.7 C in one hour.
STORM_HOUR = 4888


def _grid(start_hour: int, hours: int) -> pd.DatetimeIndex:
    start = YEAR_START + timedelta(hours=start_hour)
    return pd.date_range(start, periods=hours * ROWS_PER_HOUR, freq="5min", tz="UTC")


def hourly_weather(start_hour: int, hours: int) -> pd.DataFrame:
    """Outdoor roles on the 5-minute grid, each hourly EPW value held for its hour."""
    raw = pd.read_csv(WEATHER, comment="#").iloc[start_hour:start_hour + hours]
    held = {role: np.repeat(raw[col].to_numpy(dtype=np.float64), ROWS_PER_HOUR)
            for role, col in (("outdoor_drybulb_c", "drybulb_c"), ("outdoor_rh_pct", "rh_pct"),
                              ("outdoor_wetbulb_c", "wetbulb_c"))}
    return pd.DataFrame(held, index=_grid(start_hour, hours))


def _chillers(wetbulb: np.ndarray) -> np.ndarray:
    """Chillers running: one more above 8 / 18 C wet-bulb, one fewer below 7 / 17 C."""
    up, down = (8.0, 18.0), (7.0, 17.0)
    n = np.zeros(len(wetbulb))
    running = 0
    for i, wb in enumerate(wetbulb):
        if running < 2 and wb > up[running]:
            running += 1
        elif running > 0 and wb < down[running - 1]:
            running -= 1
        n[i] = running
    return n


def _frozen_while_off(values: np.ndarray, on: np.ndarray) -> np.ndarray:
    """``values`` where the loop runs; the last running value while it is off."""
    out = values.copy()
    for i in range(1, len(out)):
        if not on[i]:
            out[i] = out[i - 1]
    return out


def plant_like(start_hour: int, days: int) -> pd.DataFrame:
    """A wide frame of ``days`` days from ``start_hour`` of the year: weather, staging, flat loops."""
    frame = hourly_weather(start_hour, days * 24)
    dry, wb = frame["outdoor_drybulb_c"].to_numpy(), frame["outdoor_wetbulb_c"].to_numpy()
    hour = np.arange(len(frame)) // ROWS_PER_HOUR
    it_kw = np.round(40.0 + 6.0 * np.sin(2 * np.pi * hour / 24.0), 1)
    n = _chillers(wb)
    frame["it_power_kw"] = it_kw
    frame["chillers_running"] = n
    frame["cooling_power_kw"] = np.where(n > 0, np.round(3.0 + 11.0 * n + 0.4 * (dry - 15.0) + 0.1 * it_kw, 2), 3.0)
    frame["chw_supply_sp_c"] = 7.0
    frame["chw_supply_c"] = 7.0  # held exactly at its setpoint
    frame["chw_return_c"] = _frozen_while_off(np.round(7.0 + 0.12 * it_kw, 2), n > 0)
    frame["supply_air_c"] = 18.0
    frame["rack_inlet_max_c"] = np.round(21.0 + 0.05 * (it_kw - 40.0), 2)
    return frame


def staging_history(days: int = 30, seed: int = 0) -> pd.DataFrame:
    """A small plant whose one chiller stages three times in ``days`` days (noisy meters otherwise).

    With the chiller off, cooling power is exactly 3.0 kW (pumps) and the chilled-water
    return freezes; on, cooling power is about 23 kW with meter noise. Staging is rare
    (six steps), so its 20 kW steps are far beyond the 99.9th-percentile step: only the
    chiller count moving with them tells a staging from a glitch.
    """
    rng = np.random.default_rng(seed)
    rows = days * 288
    index = pd.date_range(YEAR_START, periods=rows, freq="5min", tz="UTC")
    on = np.zeros(rows, dtype=bool)
    for start in (3, 12, 21):
        on[start * 288:(start + 4) * 288] = True
    noise = rng.standard_normal((rows, 4))
    return pd.DataFrame({
        "chillers_running": on.astype(np.float64),
        "cooling_power_kw": np.where(on, 23.0 + 0.3 * noise[:, 0], 3.0),
        "chw_return_c": _frozen_while_off(12.0 + 0.1 * noise[:, 1], on),
        "it_power_kw": 40.0 + 0.2 * noise[:, 2],
        "rack_inlet_max_c": 22.0 + 0.1 * noise[:, 3],
    }, index=index)
