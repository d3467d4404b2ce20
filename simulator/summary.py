"""One-paragraph summary of a simulated run, from a wide frame of records."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def summarize_run(frame: pd.DataFrame, record_interval_s: float) -> dict[str, Any]:
    """Days, records, PUE (mean and p95), cooling energy [kWh], max rack inlet [C], economiser hours [h].

    Works on true values or on readings (NaN skipped; energy scales the mean power by
    the covered time, so gaps do not count as zero).
    """
    hours_per_record = record_interval_s / 3600.0
    n = len(frame)
    it = frame["it_power_kw"]
    cooling = frame["cooling_power_kw"]
    facility = frame["facility_power_kw"] if "facility_power_kw" in frame else it + cooling
    pue = (facility / it.where(it > 0)).dropna()
    econ = frame["economizer_active"].dropna() if "economizer_active" in frame else pd.Series(dtype=float)
    rack = frame["rack_inlet_max_c"].dropna() if "rack_inlet_max_c" in frame else pd.Series(dtype=float)

    def _mean_energy_kwh(series: pd.Series) -> float:
        s = series.dropna()
        return float(s.mean() * n * hours_per_record) if len(s) else float("nan")

    return {
        "days": n * hours_per_record / 24.0,
        "records": n,
        "pue_mean": float(pue.mean()) if len(pue) else float("nan"),
        "pue_p95": float(np.percentile(pue, 95)) if len(pue) else float("nan"),
        "cooling_energy_kwh": _mean_energy_kwh(cooling),
        "it_energy_kwh": _mean_energy_kwh(it),
        "rack_inlet_max_c": float(rack.max()) if len(rack) else float("nan"),
        "economizer_hours": float((econ > 0).mean() * n * hours_per_record) if len(econ) else 0.0,
    }
