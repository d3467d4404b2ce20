"""The figures of a closed-loop evaluation: pure functions on per-record frames.

Why apart from the runner (``coolpilot.evaluation.run``): the headline numbers
(cooling energy, PUE, savings, the share of the oracle's saving, thermal violations,
inlet rate of change, setpoint moves, fallbacks) must be computed the same way for
every controller and be checkable on small hand-built frames. A run frame has one row
per record interval (UTC index): measurement roles (noise-free where the plant offers
them), the setpoint roles in force after that record's decision, and optionally the
energy booked over the interval (``it_kwh``, ``cooling_kwh``, ``facility_kwh``).
Temperatures in C, powers in kW, energies in kWh.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from db.roles import SETPOINT_ROLES

CONTROLLERS: tuple[str, ...] = ("legacy", "tuned", "coolpilot", "oracle")
BASELINES: tuple[str, ...] = ("legacy", "tuned")
ENERGY_COLUMNS: tuple[str, ...] = ("it_kwh", "cooling_kwh", "facility_kwh")
ALLOWABLE_INLET_C = 32.0  # ASHRAE class A1 allowable upper inlet temperature [C]
INLET_CHANGE_LIMIT_C_PER_H = 20.0  # ASHRAE limit on inlet temperature change within any hour [C/h]
MOVE_TOLERANCE_K = 0.01  # setpoint changes smaller than this are not counted as moves [K]
# Targets of the published figures (CoolPilot against the baselines and the oracle).
TARGET_SAVINGS_VS_LEGACY_PCT = 30.0
TARGET_SAVINGS_VS_TUNED_PCT = 10.0
TARGET_ORACLE_SHARE_PCT = 85.0


def energy_kwh(frame: pd.DataFrame, interval_s: float) -> dict[str, float]:
    """IT, cooling and facility energy over the frame [kWh].

    Uses the per-interval energy columns (``it_kwh`` ...) where present, else power x
    record interval, with missing readings filled by the mean power (a gap is not zero
    power); facility defaults to IT + cooling when there is no meter.
    """
    hours = interval_s / 3600.0

    def integral(power: pd.Series) -> float:
        return float(power.mean() * len(frame) * hours) if power.notna().any() else math.nan

    out: dict[str, float] = {}
    for key, power in (("it_kwh", "it_power_kw"), ("cooling_kwh", "cooling_power_kw")):
        out[key] = float(frame[key].sum()) if key in frame else integral(frame[power])
    if "facility_kwh" in frame:
        out["facility_kwh"] = float(frame["facility_kwh"].sum())
    elif "facility_power_kw" in frame and frame["facility_power_kw"].notna().any():
        out["facility_kwh"] = integral(frame["facility_power_kw"])
    else:
        out["facility_kwh"] = out["it_kwh"] + out["cooling_kwh"]
    return out


def pue_figures(frame: pd.DataFrame, interval_s: float) -> dict[str, float]:
    """PUE over the window (facility / IT energy) and the mean of the per-record PUE [-]."""
    energy = energy_kwh(frame, interval_s)
    it = frame["it_power_kw"].where(frame["it_power_kw"] > 0)
    facility = frame["facility_power_kw"] if "facility_power_kw" in frame else frame["it_power_kw"] + frame[
        "cooling_power_kw"]
    per_record = (facility / it).dropna()
    return {
        "pue": energy["facility_kwh"] / energy["it_kwh"] if energy["it_kwh"] > 0 else math.nan,
        "pue_mean": float(per_record.mean()) if len(per_record) else math.nan,
    }


def inlet_figures(rack_inlet_max_c: pd.Series, interval_s: float, limit_c: float,
                  allowable_c: float = ALLOWABLE_INLET_C) -> dict[str, float]:
    """Hottest rack inlet: minutes above the limit and the allowable limit, maximum, changes.

    ``change_max_c_per_h`` is the largest rise or fall within any 60-minute window (how
    ASHRAE states its 20 C/h limit: a change within an hour, not an instantaneous slope);
    ``rate_max_c_per_h`` is the steepest change between consecutive records, per hour.
    """
    rack = rack_inlet_max_c.astype(float)
    minutes = interval_s / 60.0
    valid = rack.dropna()
    if valid.empty:
        return {"minutes_above_limit": math.nan, "minutes_above_allowable": math.nan,
                "rack_inlet_max_c": math.nan, "change_max_c_per_h": math.nan, "rate_max_c_per_h": math.nan}
    window = valid.rolling("60min", closed="both")
    spread = (window.max() - window.min()).max()
    steps = valid.diff().abs() / (valid.index.to_series().diff().dt.total_seconds() / 3600.0)
    return {
        "minutes_above_limit": float((valid > limit_c).sum() * minutes),
        "minutes_above_allowable": float((valid > allowable_c).sum() * minutes),
        "rack_inlet_max_c": float(valid.max()),
        "change_max_c_per_h": float(spread) if np.isfinite(spread) else 0.0,
        "rate_max_c_per_h": float(steps.max()) if steps.notna().any() else 0.0,
    }


def excess_minutes_above(rack_c: pd.Series, baseline_rack_c: pd.Series, limit_c: float, interval_s: float) -> float:
    """Minutes when ``rack_c`` is above the limit while the baseline, at the same time, is not."""
    base = baseline_rack_c.reindex(rack_c.index)
    excess = (rack_c > limit_c) & ~(base > limit_c)
    return float(excess.sum() * interval_s / 60.0)


def setpoint_moves(setpoints: pd.DataFrame, initial: Mapping[str, float] | None = None,
                   tolerance_k: float = MOVE_TOLERANCE_K) -> dict[str, Any]:
    """How often and how far setpoints moved [K].

    ``setpoints``: the setpoints in force after each record's decision, one column per
    role; ``initial``: those in force before the first record (else the first row is
    not counted as a move). ``moves`` counts records with any role moving; per role:
    count, mean and largest move size, and total travel.
    """
    roles = [r for r in SETPOINT_ROLES if r in setpoints]
    values = setpoints[roles].to_numpy(dtype=np.float64)
    if initial is not None:
        values = np.vstack([[initial.get(r, math.nan) for r in roles], values])
    steps = np.abs(np.diff(values, axis=0))
    moved = np.nan_to_num(steps, nan=0.0) > tolerance_k
    per_role: dict[str, dict[str, float]] = {}
    for j, role in enumerate(roles):
        sizes = steps[moved[:, j], j]
        per_role[role] = {
            "moves": len(sizes),
            "mean_k": float(sizes.mean()) if len(sizes) else 0.0,
            "max_k": float(sizes.max()) if len(sizes) else 0.0,
            "travel_k": float(sizes.sum()),
        }
    return {"moves": int(moved.any(axis=1).sum()), "roles": per_role}


def daily_energy_kwh(frame: pd.DataFrame, interval_s: float, column: str = "cooling_kwh") -> dict[str, float]:
    """Energy per UTC day [kWh] (``column`` or, without it, cooling power x interval)."""
    per_record = frame[column] if column in frame else frame["cooling_power_kw"] * interval_s / 3600.0
    days = pd.DatetimeIndex(per_record.index).floor("D")
    daily = per_record.groupby(days).sum()
    return {day.date().isoformat(): float(v) for day, v in zip(pd.DatetimeIndex(daily.index), daily.to_numpy(), strict=True)}


def decision_figures(decisions: pd.DataFrame) -> dict[str, Any]:
    """Outcome counts, share of cycles in fallback [%] and fallback reasons, from a decisions frame.

    ``decisions`` has columns ``outcome`` and ``reason_code`` (one row per cycle).
    """
    n = len(decisions)
    outcomes = Counter(str(o) for o in decisions["outcome"])
    fallback = decisions[decisions["outcome"] == "fallback"]
    reasons = Counter(str(r) if isinstance(r, str) else "other" for r in fallback["reason_code"])
    return {
        "cycles": n,
        "outcomes": dict(sorted(outcomes.items())),
        "fallback_share_pct": 100.0 * len(fallback) / n if n else math.nan,
        "fallback_reasons": dict(reasons.most_common()),
    }


def prediction_pairs(predicted_kw: pd.Series, cooling_power_kw: pd.Series, horizon_rows: int) -> pd.DataFrame:
    """Predicted against realised mean cooling power over the horizon [kW], one row per decision.

    The forecast at record t is the mean over records t+1 .. t+horizon (the model's own
    target); decisions too close to the end of the run have no realised value and drop out.
    """
    if horizon_rows < 1:
        raise ValueError(f"horizon_rows must be >= 1, got {horizon_rows}")
    actual = cooling_power_kw.astype(float).rolling(horizon_rows).mean().shift(-horizon_rows)
    pairs = pd.DataFrame({"predicted_kw": predicted_kw.astype(float), "actual_kw": actual.reindex(predicted_kw.index)})
    return pairs.dropna()


def prediction_figures(pairs: pd.DataFrame) -> dict[str, float]:
    """Mean absolute error, bias (predicted - actual) [kW] and MAPE [%] of predicted cooling power."""
    if pairs.empty:
        return {"n": 0, "mae_kw": math.nan, "bias_kw": math.nan, "mape_pct": math.nan}
    err = pairs["predicted_kw"] - pairs["actual_kw"]
    actual = pairs["actual_kw"].where(pairs["actual_kw"].abs() > 1e-9)
    return {
        "n": len(pairs),
        "mae_kw": float(err.abs().mean()),
        "bias_kw": float(err.mean()),
        "mape_pct": float((err.abs() / actual).mean() * 100.0),
    }


def savings_pct(baseline_kwh: float, kwh: float) -> float:
    """Energy saved against a baseline, as a share of the baseline [%]."""
    return 100.0 * (baseline_kwh - kwh) / baseline_kwh if baseline_kwh > 0 else math.nan


def oracle_share_pct(baseline_kwh: float, kwh: float, oracle_kwh: float) -> float:
    """Share of the oracle's saving against a baseline that a controller achieved [%].

    NaN when the oracle saves nothing against that baseline (no saving to share).
    """
    possible = baseline_kwh - oracle_kwh
    return 100.0 * (baseline_kwh - kwh) / possible if possible > 0 else math.nan


def run_figures(frame: pd.DataFrame, interval_s: float, limit_c: float,
                initial: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Every per-controller figure of one run (energy, PUE, inlet, setpoint moves, daily energy)."""
    return {
        **energy_kwh(frame, interval_s),
        **pue_figures(frame, interval_s),
        **inlet_figures(frame["rack_inlet_max_c"], interval_s, limit_c),
        "setpoint_moves": setpoint_moves(frame[[r for r in SETPOINT_ROLES if r in frame]], initial),
        "daily_cooling_kwh": daily_energy_kwh(frame, interval_s),
    }


def compare(figures: Mapping[str, Mapping[str, Any]], frames: Mapping[str, pd.DataFrame], interval_s: float,
            limit_c: float) -> dict[str, dict[str, float]]:
    """Cross-controller figures per controller: savings against each baseline [%],
    share of the oracle's saving [%], minutes above the limit that tuned did not have."""
    out: dict[str, dict[str, float]] = {}
    oracle = figures.get("oracle")
    for name, figs in figures.items():
        row: dict[str, float] = {}
        for base in BASELINES:
            if base in figures:
                row[f"savings_vs_{base}_pct"] = savings_pct(figures[base]["cooling_kwh"], figs["cooling_kwh"])
                if oracle is not None and name != "oracle":
                    row[f"oracle_share_vs_{base}_pct"] = oracle_share_pct(
                        figures[base]["cooling_kwh"], figs["cooling_kwh"], oracle["cooling_kwh"])
        if "tuned" in frames:
            row["excess_minutes_above_limit_vs_tuned"] = excess_minutes_above(
                frames[name]["rack_inlet_max_c"], frames["tuned"]["rack_inlet_max_c"], limit_c, interval_s)
        out[name] = row
    return out


@dataclass(frozen=True)
class Target:
    """One published target: its value, the threshold, whether it was met and the shortfall."""

    name: str
    value: float
    threshold: float
    unit: str
    higher_is_better: bool

    @property
    def met(self) -> bool:
        if not math.isfinite(self.value):
            return False
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    @property
    def shortfall(self) -> float:
        """How far the value misses the threshold (0 when met, NaN when unknown)."""
        if not math.isfinite(self.value):
            return math.nan
        gap = self.threshold - self.value if self.higher_is_better else self.value - self.threshold
        return max(gap, 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold, "unit": self.unit,
                "higher_is_better": self.higher_is_better, "met": self.met, "shortfall": self.shortfall}


def targets(coolpilot: Mapping[str, Any], allowable_c: float = ALLOWABLE_INLET_C) -> list[Target]:
    """The issue's targets for CoolPilot's run (figures merged with its comparison row)."""
    return [
        Target("savings_vs_legacy_pct", coolpilot.get("savings_vs_legacy_pct", math.nan),
               TARGET_SAVINGS_VS_LEGACY_PCT, "%", True),
        Target("savings_vs_tuned_pct", coolpilot.get("savings_vs_tuned_pct", math.nan),
               TARGET_SAVINGS_VS_TUNED_PCT, "%", True),
        Target("oracle_share_vs_tuned_pct", coolpilot.get("oracle_share_vs_tuned_pct", math.nan),
               TARGET_ORACLE_SHARE_PCT, "%", True),
        Target("excess_minutes_above_limit_vs_tuned", coolpilot.get("excess_minutes_above_limit_vs_tuned", math.nan),
               0.0, "min", False),
        Target("rack_inlet_max_c", coolpilot.get("rack_inlet_max_c", math.nan), allowable_c, "C", False),
    ]


def consistency_problems(controllers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Checks that the figures hang together; an empty list means consistent.

    Energies positive and finite; savings equal to those recomputed from the energies;
    the oracle no worse than the tuned rules.
    """
    problems: list[str] = []
    for name, figs in controllers.items():
        for key in ENERGY_COLUMNS:
            value = figs.get(key, math.nan)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name}: {key} = {value} is not a positive energy")
        for base in BASELINES:
            key = f"savings_vs_{base}_pct"
            if key in figs and base in controllers:
                expected = savings_pct(controllers[base]["cooling_kwh"], figs["cooling_kwh"])
                if not math.isclose(figs[key], expected, rel_tol=1e-9, abs_tol=1e-9):
                    problems.append(f"{name}: {key} {figs[key]} differs from the energies' {expected}")
    if "oracle" in controllers and "tuned" in controllers:
        oracle_kwh, tuned_kwh = controllers["oracle"]["cooling_kwh"], controllers["tuned"]["cooling_kwh"]
        if oracle_kwh > tuned_kwh:
            problems.append(f"oracle used more cooling energy ({oracle_kwh:.1f} kWh) than tuned ({tuned_kwh:.1f} kWh)")
    return problems

