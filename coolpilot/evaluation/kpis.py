"""The figures of a closed-loop evaluation: pure functions on per-record frames.

Why apart from the runner (``coolpilot.evaluation.run``): the headline numbers
(facility, cooling and IT energy, PUE, net savings, the share of the oracle's saving,
thermal violations, inlet rate of change, setpoint moves, fallbacks, forecast error)
must be computed the same way for every controller and be checkable on small
hand-built frames. A run frame has one row per record interval (UTC index):
measurement roles (noise-free where the plant offers them), the setpoint roles the
plant has, in force after that record's decision, and optionally the energy booked
over the interval (``it_kwh``, ``cooling_kwh``, ``facility_kwh``, ``other_kwh``).
Temperatures in C, powers in kW, energies in kWh.

Why facility energy comes first: where server power depends on inlet temperature (the
EnergyPlus models' servers draw several % more per K), a controller can save cooling
energy while the facility uses more. The headline is therefore the **net saving**
against a baseline: (baseline facility kWh - facility kWh) / baseline cooling kWh, the
facility energy saved as a share of what the baseline spent on cooling. Where IT
power does not depend on the setpoints it equals the cooling saving.
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

CONTROLLERS: tuple[str, ...] = ("legacy", "tuned", "own_controls", "coolpilot", "oracle")
#: What CoolPilot is judged against: the rule presets and, on EnergyPlus, the model's own controls.
#: The oracle is a yardstick (the best setpoints on the plant's own model), not a baseline.
BASELINES: tuple[str, ...] = ("legacy", "tuned", "own_controls")
ENERGY_COLUMNS: tuple[str, ...] = ("it_kwh", "cooling_kwh", "facility_kwh")
OTHER_ENERGY = "other_kwh"  # facility energy that is neither IT nor cooling (UPS losses ...), where metered
PLANT_FAMILIES: tuple[str, ...] = ("twin", "energyplus")
ALLOWABLE_INLET_C = 32.0  # ASHRAE class A1 allowable upper inlet temperature [C]
INLET_CHANGE_LIMIT_C_PER_H = 20.0  # ASHRAE limit on inlet temperature change within any hour [C/h]
MOVE_TOLERANCE_K = 0.01  # setpoint changes smaller than this are not counted as moves [K]
# Targets of the issue (CoolPilot against the baselines), per plant family.
TARGET_FALLBACK_PCT = {"twin": 15.0, "energyplus": 20.0}  # share of cycles in fallback, at most [%]
TARGET_NET_SAVING_VS_TUNED_PCT = 10.0  # twin: on average over the runs [%] (and never negative)
#: A share of the oracle's saving is reported only where the oracle saves at least this
#: share of the baseline's cooling energy; below it the ratio is noise over noise [%].
ORACLE_SHARE_MIN_SAVING_PCT = 2.0
#: No controller should use less cooling energy than the oracle by more than this share
#: of the oracle's [%]: its grid (box corners and hold) and finite horizon leave a little slack.
ORACLE_BOUND_TOLERANCE_PCT = 2.0


def energy_kwh(frame: pd.DataFrame, interval_s: float) -> dict[str, float]:
    """Facility, cooling and IT energy over the frame [kWh] (and ``other_kwh`` where booked).

    Uses the per-interval energy columns (``facility_kwh`` ...: the plant's exact totals,
    differenced per record) where present, else power x record interval, with missing
    readings filled by the mean power (a gap is not zero power); facility defaults to
    IT + cooling when there is no meter.
    """
    hours = interval_s / 3600.0

    def integral(power: pd.Series) -> float:
        return float(power.mean() * len(frame) * hours) if power.notna().any() else math.nan

    parts: dict[str, float] = {}
    for key, power in (("cooling_kwh", "cooling_power_kw"), ("it_kwh", "it_power_kw")):
        parts[key] = float(frame[key].sum()) if key in frame else integral(frame[power])
    if "facility_kwh" in frame:
        facility = float(frame["facility_kwh"].sum())
    elif "facility_power_kw" in frame and frame["facility_power_kw"].notna().any():
        facility = integral(frame["facility_power_kw"])
    else:
        facility = parts["it_kwh"] + parts["cooling_kwh"]
    out = {"facility_kwh": facility, **parts}
    if OTHER_ENERGY in frame:
        out[OTHER_ENERGY] = float(frame[OTHER_ENERGY].sum())
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

    ``decisions`` has columns ``outcome`` and ``reason_code`` (one row per cycle), and
    optionally ``objective`` (what the search minimised: counted per objective).
    """
    n = len(decisions)
    outcomes = Counter(str(o) for o in decisions["outcome"])
    fallback = decisions[decisions["outcome"] == "fallback"]
    reasons = Counter(str(r) if isinstance(r, str) else "other" for r in fallback["reason_code"])
    out: dict[str, Any] = {
        "cycles": n,
        "outcomes": dict(sorted(outcomes.items())),
        "fallback_share_pct": 100.0 * len(fallback) / n if n else math.nan,
        "fallback_reasons": dict(reasons.most_common()),
    }
    if "objective" in decisions:
        objectives = Counter(str(o) for o in decisions["objective"] if isinstance(o, str))
        out["objectives"] = dict(sorted(objectives.items()))
    coverage = interval_coverage(decisions)
    if coverage:
        out["interval_coverage"] = coverage
    return out


def interval_coverage(decisions: pd.DataFrame) -> dict[str, float]:
    """Per forecast target, the online calibration's rolling coverage at the end of the run [-].

    Columns ``interval_coverage_<target>`` (one value per cycle: the share of the last
    week's matured forecasts inside the interval they were issued with).
    """
    out: dict[str, float] = {}
    for column in decisions.columns:
        if str(column).startswith("interval_coverage_"):
            values = pd.to_numeric(decisions[column], errors="coerce").dropna()
            if len(values):
                out[str(column).removeprefix("interval_coverage_")] = float(values.iloc[-1])
    return out


def prediction_pairs(predicted_kw: pd.Series, cooling_power_kw: pd.Series, horizon_rows: int, *,
                     lo_kw: pd.Series | None = None, hi_kw: pd.Series | None = None) -> pd.DataFrame:
    """Predicted against realised mean power over the horizon [kW], one row per decision.

    ``cooling_power_kw``: the realised power series (cooling, or IT for the IT forecast).
    The forecast at record t is the mean over records t+1 .. t+horizon (the model's own
    target); decisions too close to the end of the run have no realised value and drop
    out. With ``lo_kw`` and ``hi_kw`` (the predictive interval) the pairs keep them,
    for the coverage.
    """
    if horizon_rows < 1:
        raise ValueError(f"horizon_rows must be >= 1, got {horizon_rows}")
    actual = cooling_power_kw.astype(float).rolling(horizon_rows).mean().shift(-horizon_rows)
    columns = {"predicted_kw": predicted_kw.astype(float), "actual_kw": actual.reindex(predicted_kw.index)}
    pairs = pd.DataFrame(columns)
    if lo_kw is not None and hi_kw is not None:
        pairs["lo_kw"] = lo_kw.astype(float).reindex(predicted_kw.index)
        pairs["hi_kw"] = hi_kw.astype(float).reindex(predicted_kw.index)
    return pairs.dropna(subset=["predicted_kw", "actual_kw"])


def prediction_figures(pairs: pd.DataFrame) -> dict[str, float]:
    """Mean absolute error, bias (predicted - actual) [kW], MAPE [%] and, where the pairs
    carry the predictive interval, its coverage: the share of realised values inside [%]."""
    if pairs.empty:
        return {"n": 0, "mae_kw": math.nan, "bias_kw": math.nan, "mape_pct": math.nan,
                "coverage_pct": math.nan}
    err = pairs["predicted_kw"] - pairs["actual_kw"]
    actual = pairs["actual_kw"].where(pairs["actual_kw"].abs() > 1e-9)
    coverage = math.nan
    if "lo_kw" in pairs and "hi_kw" in pairs:
        bounded = pairs.dropna(subset=["lo_kw", "hi_kw"])
        if len(bounded):
            inside = (bounded["actual_kw"] >= bounded["lo_kw"]) & (bounded["actual_kw"] <= bounded["hi_kw"])
            coverage = float(inside.mean() * 100.0)
    return {
        "n": len(pairs),
        "mae_kw": float(err.abs().mean()),
        "bias_kw": float(err.mean()),
        "mape_pct": float((err.abs() / actual).mean() * 100.0),
        "coverage_pct": coverage,
    }


def savings_pct(baseline_kwh: float, kwh: float) -> float:
    """Energy saved against a baseline, as a share of the baseline [%]."""
    return 100.0 * (baseline_kwh - kwh) / baseline_kwh if baseline_kwh > 0 else math.nan


def net_saving_pct(baseline_facility_kwh: float, facility_kwh: float, baseline_cooling_kwh: float) -> float:
    """Net saving against a baseline [%]: facility energy saved, as a share of the baseline's cooling energy.

    (baseline facility - facility) / baseline cooling. It charges the cooling saving
    with whatever IT (and other) energy the setpoints added; NaN without cooling energy.
    """
    if not (math.isfinite(baseline_cooling_kwh) and baseline_cooling_kwh > 0):
        return math.nan
    return 100.0 * (baseline_facility_kwh - facility_kwh) / baseline_cooling_kwh


def best_baseline(figures: Mapping[str, Mapping[str, Any]], baselines: tuple[str, ...] = BASELINES) -> str | None:
    """The baseline with the lowest facility energy (None when no baseline ran)."""
    ran = [(float(figures[b]["facility_kwh"]), b) for b in baselines
           if b in figures and math.isfinite(float(figures[b].get("facility_kwh", math.nan)))]
    return min(ran)[1] if ran else None


def oracle_share_pct(baseline_kwh: float, kwh: float, oracle_kwh: float,
                     min_saving_pct: float = ORACLE_SHARE_MIN_SAVING_PCT) -> float:
    """Share of the oracle's saving against a baseline that a controller achieved [%].

    NaN unless the oracle saves clearly against that baseline (at least ``min_saving_pct``
    of its energy): a share of a saving within noise of zero means nothing.
    """
    possible = baseline_kwh - oracle_kwh
    clear = possible > 0 and possible >= min_saving_pct / 100.0 * baseline_kwh
    return 100.0 * (baseline_kwh - kwh) / possible if clear else math.nan


def below_oracle_pct(kwh: float, oracle_kwh: float) -> float:
    """How much less cooling energy than the oracle a controller used, as a share of the oracle's [%]."""
    return 100.0 * (oracle_kwh - kwh) / oracle_kwh if oracle_kwh > 0 else math.nan


def oracle_bound(controllers: Mapping[str, Mapping[str, Any]],
                 tolerance_pct: float = ORACLE_BOUND_TOLERANCE_PCT) -> dict[str, Any] | None:
    """Whether the oracle held as a bound: no controller below its cooling energy beyond the tolerance.

    ``beaten_by``: controller -> ``below_oracle_pct`` for those beyond it; None without an oracle.
    """
    oracle = controllers.get("oracle")
    if oracle is None:
        return None
    below = {n: below_oracle_pct(float(f["cooling_kwh"]), float(oracle["cooling_kwh"]))
             for n, f in controllers.items() if n != "oracle"}
    beaten = {n: v for n, v in below.items() if math.isfinite(v) and v > tolerance_pct}
    return {"ok": not beaten, "tolerance_pct": tolerance_pct, "beaten_by": beaten,
            "coolpilot_below_oracle_pct": below.get("coolpilot", math.nan)}


def run_figures(frame: pd.DataFrame, interval_s: float, limit_c: float,
                initial: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Every per-controller figure of one run (energy, PUE, inlet, setpoint moves, daily energy)."""
    return {
        **energy_kwh(frame, interval_s),
        **pue_figures(frame, interval_s),
        **inlet_figures(frame["rack_inlet_max_c"], interval_s, limit_c),
        "setpoint_moves": setpoint_moves(frame[[r for r in SETPOINT_ROLES if r in frame]], initial),
        "setpoint_mean_c": {r: float(frame[r].mean()) for r in SETPOINT_ROLES if r in frame},
        "daily_facility_kwh": daily_energy_kwh(frame, interval_s, "facility_kwh")
        if "facility_kwh" in frame else {},
        "daily_cooling_kwh": daily_energy_kwh(frame, interval_s),
    }


def compare(figures: Mapping[str, Mapping[str, Any]], frames: Mapping[str, pd.DataFrame], interval_s: float,
            limit_c: float) -> dict[str, dict[str, float]]:
    """Cross-controller figures per controller, against each baseline that ran: net saving
    (``net_saving_vs_<base>_pct``), facility saving (``facility_saving_vs_<base>_pct``) and
    cooling saving (``savings_vs_<base>_pct``) [%]; against the best (lowest-facility)
    baseline: ``net_saving_vs_best_pct`` and ``facility_kwh_below_best`` [kWh]; the share of
    the oracle's cooling saving against legacy and tuned [%]; minutes above the limit that
    tuned did not have."""
    out: dict[str, dict[str, float]] = {}
    oracle = figures.get("oracle")
    best = best_baseline(figures)
    for name, figs in figures.items():
        row: dict[str, float] = {}
        for base in BASELINES:
            if base in figures:
                b = figures[base]
                row[f"net_saving_vs_{base}_pct"] = net_saving_pct(b["facility_kwh"], figs["facility_kwh"],
                                                                  b["cooling_kwh"])
                row[f"facility_saving_vs_{base}_pct"] = savings_pct(b["facility_kwh"], figs["facility_kwh"])
                row[f"savings_vs_{base}_pct"] = savings_pct(b["cooling_kwh"], figs["cooling_kwh"])
                if oracle is not None and name != "oracle" and base != "own_controls":
                    row[f"oracle_share_vs_{base}_pct"] = oracle_share_pct(
                        b["cooling_kwh"], figs["cooling_kwh"], oracle["cooling_kwh"])
        if best is not None:
            b = figures[best]
            row["net_saving_vs_best_pct"] = net_saving_pct(b["facility_kwh"], figs["facility_kwh"], b["cooling_kwh"])
            row["facility_kwh_below_best"] = float(b["facility_kwh"] - figs["facility_kwh"])
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
    strict: bool = False  # the value must beat the threshold, not merely reach it
    what: str = ""  # the target in words

    @property
    def met(self) -> bool:
        if not math.isfinite(self.value):
            return False
        if self.strict:
            return self.value > self.threshold if self.higher_is_better else self.value < self.threshold
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
                "higher_is_better": self.higher_is_better, "strict": self.strict, "what": self.what,
                "met": self.met, "shortfall": self.shortfall}


def targets(coolpilot: Mapping[str, Any], family: str = "twin") -> list[Target]:
    """The issue's targets for CoolPilot's run (its figures merged with its comparison row).

    ``twin`` (the digital twin, or any plant given by ``--plant``): fallback at most 15 %
    of cycles; net saving against tuned at least 10 % (on average over runs; the
    benchmark averages) and never negative; no minute above the limit that tuned did
    not also have. ``energyplus``: fallback at most 20 %; facility energy below the best
    of the baselines that ran (own controls, legacy, tuned); no minute above the limit.
    """
    if family not in PLANT_FAMILIES:
        raise ValueError(f"unknown plant family {family!r}; choose one of {', '.join(PLANT_FAMILIES)}")

    def value(key: str) -> float:
        v = coolpilot.get(key, math.nan)
        return float(v) if isinstance(v, int | float) else math.nan

    fallback = Target("fallback_share_pct", value("fallback_share_pct"), TARGET_FALLBACK_PCT[family], "%", False,
                      what=f"CoolPilot falls back to the rules in at most {TARGET_FALLBACK_PCT[family]:g} % of cycles")
    if family == "twin":
        return [
            fallback,
            Target("net_saving_vs_tuned_pct", value("net_saving_vs_tuned_pct"), TARGET_NET_SAVING_VS_TUNED_PCT,
                   "%", True, what="net saving against the tuned rules of at least 10 % (on average over runs)"),
            Target("net_saving_vs_tuned_never_negative", value("net_saving_vs_tuned_pct"), 0.0, "%", True,
                   what="net saving against the tuned rules never negative"),
            Target("excess_minutes_above_limit_vs_tuned", value("excess_minutes_above_limit_vs_tuned"), 0.0, "min",
                   False, what="no minute above the rack-inlet limit that the tuned rules did not also have"),
        ]
    return [
        fallback,
        Target("net_saving_vs_best_pct", value("net_saving_vs_best_pct"), 0.0, "%", True, strict=True,
               what="facility energy below the best of own controls, legacy and tuned"),
        Target("minutes_above_limit", value("minutes_above_limit"), 0.0, "min", False,
               what="no minute above the rack-inlet limit"),
    ]


def consistency_problems(controllers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Checks that the figures hang together; an empty list means consistent.

    Energies positive and finite; savings equal to those recomputed from the energies;
    facility energy no less than IT + cooling; the oracle no worse than the tuned rules.
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
            key = f"net_saving_vs_{base}_pct"
            if key in figs and base in controllers:
                b = controllers[base]
                expected = net_saving_pct(b["facility_kwh"], figs["facility_kwh"], b["cooling_kwh"])
                if not math.isclose(figs[key], expected, rel_tol=1e-9, abs_tol=1e-9):
                    problems.append(f"{name}: {key} {figs[key]} differs from the energies' {expected}")
        fac, it, cool = (figs.get(k, math.nan) for k in ("facility_kwh", "it_kwh", "cooling_kwh"))
        if all(math.isfinite(v) for v in (fac, it, cool)) and fac < (it + cool) * (1.0 - 1e-6):
            problems.append(f"{name}: facility energy {fac:.1f} kWh is less than IT + cooling {it + cool:.1f} kWh")
    if "oracle" in controllers and "tuned" in controllers:
        oracle_kwh, tuned_kwh = controllers["oracle"]["cooling_kwh"], controllers["tuned"]["cooling_kwh"]
        if oracle_kwh > tuned_kwh:
            problems.append(f"oracle used more cooling energy ({oracle_kwh:.1f} kWh) than tuned ({tuned_kwh:.1f} kWh)")
    return problems

