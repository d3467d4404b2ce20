"""Choosing among scored candidates: keep only sure, safe, worthwhile ones; take the cheapest.

Why these filters: the model's mean alone would happily trade a hot aisle for a few
kW. A candidate is *sure* when its rack-inlet prediction plus k standard deviations
stays below the limit, both uncertainties are small and the state is not out of the
training distribution. It is *worthwhile* when it saves at least a minimum over
holding the current setpoints. When holding itself is unsure, the cheapest sure
candidate wins (recovery), so that a plant run near the edge of the training data
does not flip between optimised and rules cycles. The result also says which
constraint stopped the optimiser from going further (for ``coolpilot explain``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from controller.config import SafetySettings, ThresholdSettings
from forecasting.protocol import Forecast

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Rejection reasons in the order they are reported.
REASONS: tuple[str, ...] = ("non_finite", "rack_inlet", "inlet_uncertainty", "power_uncertainty", "ood", "saving")

#: What the search minimises: predicted cooling + IT power, or cooling power alone.
Objective = Literal["facility", "cooling"]


def resolve_objective(setting: str, forecast: Forecast | None) -> Objective:
    """``auto`` is ``facility`` where the model forecasts IT power, else ``cooling``."""
    if setting == "cooling":
        return "cooling"
    has_it = forecast is not None and forecast.it_power_kw is not None
    if setting == "facility" and not has_it:
        return "cooling"  # no IT forecast: the IT term is unknown, not zero; the decision says so
    return "facility" if has_it else "cooling"


def objective_kw(forecast: Forecast, objective: Objective, hold_index: int = 0,
                 thresholds: ThresholdSettings | None = None) -> tuple[FloatArray, FloatArray]:
    """Predicted power [kW] the candidates are ranked by, and its std [kW].

    Facility: cooling + IT, stds combined as independent. Other loads (lighting, UPS
    losses) do not depend on the setpoints and cancel in every comparison. The IT term
    is, given ``thresholds``, holding's IT power plus each candidate's ``it_change_kw``
    (only physical, resolved IT changes count); without them, the mean prediction.
    """
    cool = np.asarray(forecast.cooling_power_kw, dtype=np.float64)
    cool_std = np.asarray(forecast.cooling_power_std_kw, dtype=np.float64)
    if objective == "facility" and forecast.it_power_kw is not None and forecast.it_power_std_kw is not None:
        it = np.asarray(forecast.it_power_kw, dtype=np.float64)
        it_std = np.asarray(forecast.it_power_std_kw, dtype=np.float64)
        if thresholds is not None:
            it = it[hold_index] + it_change_kw(forecast, hold_index, thresholds.it_saving_sigma)
        return cool + it, np.sqrt(cool_std ** 2 + it_std ** 2)
    return cool, cool_std


def it_change_kw(forecast: Forecast, hold_index: int, sigma: float) -> FloatArray:
    """Per candidate, the IT power [kW] it adds against holding, where the model can know it; else 0.

    Why: servers draw power as a function of their inlet temperature (fans, leakage),
    so the setpoints can change IT power only through the inlet: up with a warmer inlet,
    down with a cooler one. An IT model still predicts differences between candidates
    that the plant does not have (on the twin, whose IT power is flat below a 25 C inlet
    knee: +-1-3 kW for a 1 K step of condenser water that leaves the inlet unchanged,
    savings for warmer air), and the optimiser picks exactly the candidates whose error
    looks like a saving. So a predicted IT change counts only where it has the sign of
    the predicted change of the hottest inlet and is at least ``sigma`` times the ensemble
    members' standard deviation of it; elsewhere IT power is taken as holding's. Without
    members, the sign rule alone.
    """
    it = np.asarray(forecast.it_power_kw, dtype=np.float64)
    change = it - it[hold_index]
    inlet_change = np.asarray(forecast.rack_inlet_max_c, dtype=np.float64) - forecast.rack_inlet_max_c[hold_index]
    known = np.sign(change) == np.sign(inlet_change)
    members = forecast.it_power_members_kw
    if sigma > 0.0 and members is not None:
        m = np.asarray(members, dtype=np.float64)
        known &= np.abs(change) >= sigma * (m - m[:, hold_index:hold_index + 1]).std(axis=0)
    return np.asarray(np.where(known, change, 0.0), dtype=np.float64)


def warming_costs_it(forecast: Forecast, column_c: FloatArray, hold_index: int, sigma: float) -> bool:
    """Whether the model resolves that a warmer setpoint costs IT power: the median counted IT
    change (`it_change_kw`) of the candidates warmer than holding in ``column_c`` [C] is positive.

    Why: a fallback that warms the hall on such a site pays for the cooling it saves in
    server power; on a site whose IT power does not respond (the twin below its inlet
    knee) the IT changes are not resolved and the median is 0.
    """
    if forecast.it_power_kw is None:
        return False
    warmer = column_c > column_c[hold_index] + 1e-9
    if not warmer.any():
        return False
    return bool(np.median(it_change_kw(forecast, hold_index, sigma)[warmer]) > 0.0)


@dataclass(frozen=True)
class Selection:
    """Which candidate (index) wins, or None, and why."""

    index: int | None
    outcome: str  # optimised | hold | none
    reason: str
    rejected: dict[str, int]  # candidates removed per reason (first failing reason)
    binding: tuple[str, ...]  # what stopped the optimiser going cheaper
    runner_ups: tuple[int, ...]  # next-cheapest sure and worthwhile candidates
    sure: BoolArray
    rack_inlet_upper_c: FloatArray  # prediction + k sigma [C]
    hold_failures: tuple[str, ...] = ()  # REASONS that holding the current setpoints fails


#: The power-uncertainty floor [kW] when neither the config nor the model's scale gives one.
DEFAULT_POWER_STD_FLOOR_KW = 2.0
#: Share of the plant's cooling-power scale (p99 of its training history) used as the floor.
POWER_STD_FLOOR_SHARE = 0.05


def power_std_floor_kw(thresholds: ThresholdSettings, cooling_scale_kw: float | None = None) -> float:
    """The absolute floor [kW] under the relative cooling-power uncertainty limit."""
    if thresholds.max_power_std_floor_kw is not None:
        return thresholds.max_power_std_floor_kw
    if cooling_scale_kw is not None and math.isfinite(cooling_scale_kw) and cooling_scale_kw > 0:
        return POWER_STD_FLOOR_SHARE * cooling_scale_kw
    return DEFAULT_POWER_STD_FLOOR_KW


def _describe(reason: str, safety: SafetySettings, thresholds: ThresholdSettings) -> str:
    floor = power_std_floor_kw(thresholds)
    return {
        "non_finite": "the model returned a non-finite prediction",
        "rack_inlet": (f"predicted rack inlet + {safety.k_sigma} sigma (or its calibrated interval) reaches the "
                       f"{safety.rack_inlet_limit_c} C limit"),
        "inlet_uncertainty": f"rack-inlet std above {thresholds.max_rack_inlet_std_k} K",
        "power_uncertainty": (f"cooling-power std{' against holding' if thresholds.power_uncertainty == 'paired' else ''}"
                              f" above {thresholds.max_cooling_power_std_frac:.0%} of the prediction and above "
                              f"{floor:g} kW"),
        "ood": f"out-of-distribution score above {thresholds.max_ood_score}",
        "saving": f"saves less than {_saving_need(thresholds)}",
    }[reason]


def _saving_need(thresholds: ThresholdSettings) -> str:
    """What a candidate must save over holding to be worth a move, in words."""
    if thresholds.min_saving_sigma is not None:
        return f"{thresholds.min_saving_sigma:g} sigma (members) and {thresholds.min_saving_kw} kW over holding"
    return f"{thresholds.min_saving_pct}% and {thresholds.min_saving_kw} kW over holding"


def risk_adjusted_kw(forecast: Forecast, thresholds: ThresholdSettings,
                     objective: Objective = "cooling", hold_index: int = 0) -> FloatArray:
    """Power the candidates are ranked by [kW]: the objective's mean + ``power_risk_k`` * std.

    Why: out of thousands of candidates the cheapest-looking one tends to be one whose
    power the model underestimates (the optimiser's curse); charging each candidate for
    its uncertainty prefers well-known ones. Off by default (k = 0): in the Leesburg
    July ablation (``docs/results.md``) k = 1 held more and saved less.
    """
    return _power_and_cost(forecast, thresholds, objective, hold_index)[1]


def _power_and_cost(forecast: Forecast, thresholds: ThresholdSettings, objective: Objective,
                    hold_index: int) -> tuple[FloatArray, FloatArray]:
    """The objective's mean power [kW] and the risk-adjusted power [kW] candidates are ranked by."""
    mean, std = objective_kw(forecast, objective, hold_index, thresholds)
    k = thresholds.power_risk_k
    return mean, (mean if k == 0.0 else np.asarray(mean + k * std, dtype=np.float64))


def rack_inlet_upper_c(forecast: Forecast, safety: SafetySettings) -> FloatArray:
    """Where the hottest rack inlet may reach [C]: the higher of mean + k * sigma (the model's
    spread) and the interval's upper end (calibrated online against what the plant did)."""
    k_sigma = forecast.rack_inlet_max_c + safety.k_sigma * forecast.rack_inlet_std_c
    return np.asarray(np.fmax(k_sigma, forecast.rack_inlet_hi_c), dtype=np.float64)


def paired_std_kw(forecast: Forecast, hold_index: int, objective: Objective = "cooling") -> FloatArray | None:
    """Per candidate, the members' spread [kW] of its objective power minus holding's; None without members.

    Why: the total std holds the noise that every candidate shares (holding too), so
    it says how well the next hour can be predicted, not whether a move is a good bet.
    The members' disagreement about the *difference* is the model's doubt about the move.
    """
    cool = forecast.cooling_power_members_kw
    if cool is None:
        return None
    power = np.asarray(cool, dtype=np.float64)
    if objective == "facility" and forecast.it_power_members_kw is not None:
        power = power + np.asarray(forecast.it_power_members_kw, dtype=np.float64)
    diff = power - power[:, hold_index:hold_index + 1]
    return np.asarray(diff.std(axis=0), dtype=np.float64)


def failure_masks(
    forecast: Forecast, hold_index: int, safety: SafetySettings, thresholds: ThresholdSettings,
    objective: Objective = "cooling", ranked: tuple[FloatArray, FloatArray] | None = None,
) -> dict[str, BoolArray]:
    """Per reason, the candidates that fail it (a candidate may fail several).

    The saving is judged on the objective's power; the cooling-power uncertainty against
    the larger of a share of predicted cooling power and an absolute floor. ``ranked``:
    the objective's mean and risk-adjusted power when the caller has them already.
    """
    power, cost = ranked if ranked is not None else _power_and_cost(forecast, thresholds, objective, hold_index)
    cooling = np.asarray(forecast.cooling_power_kw, dtype=np.float64)
    # the IT forecast's spread is mostly the state's (common to every candidate, it cancels
    # in the comparison): the absolute gate judges the cooling forecast's spread; the
    # paired gate the members' doubt about the objective's difference to holding
    wants_paired = thresholds.power_uncertainty == "paired" or thresholds.min_saving_sigma is not None
    paired = paired_std_kw(forecast, hold_index, objective) if wants_paired else None
    power_std = (paired if paired is not None and thresholds.power_uncertainty == "paired"
                 else np.asarray(forecast.cooling_power_std_kw, dtype=np.float64))
    finite = np.ones(len(power), dtype=bool)
    for arr in (power, power_std, forecast.rack_inlet_max_c, forecast.rack_inlet_std_c, forecast.ood_score):
        finite &= np.isfinite(arr)
    with np.errstate(invalid="ignore"):
        upper = rack_inlet_upper_c(forecast, safety)
        hold_power = float(power[hold_index])
        saving = hold_power - cost  # a move must beat holding with confidence, not on its mean alone
        # the relative threshold is a share of the cooling power (what the saving is reported against)
        hold_cooling = float(cooling[hold_index]) if math.isfinite(float(cooling[hold_index])) else hold_power
        need: float | FloatArray = max(thresholds.min_saving_kw, thresholds.min_saving_pct / 100.0 * abs(hold_cooling))
        if thresholds.min_saving_sigma is not None and paired is not None:
            need = np.maximum(thresholds.min_saving_kw, thresholds.min_saving_sigma * paired)
        power_limit = np.maximum(thresholds.max_cooling_power_std_frac * np.abs(cooling),
                                 power_std_floor_kw(thresholds))
        # a move must save something: with zero thresholds an equal-cost move is still not one
        worthless = (finite & ~((saving >= need) & (saving > 0.0)) if np.isfinite(hold_power)
                     else np.ones(len(power), dtype=bool))
        worthless[hold_index] = True  # holding is not a move: it is chosen as a hold, never as a saving
        return {
            "non_finite": ~finite,
            "rack_inlet": finite & ~(upper < safety.rack_inlet_limit_c),
            "inlet_uncertainty": finite & ~(forecast.rack_inlet_std_c <= thresholds.max_rack_inlet_std_k),
            "power_uncertainty": finite & ~(power_std <= power_limit),
            "ood": finite & ~(forecast.ood_score <= thresholds.max_ood_score),
            "saving": worthless,
        }


def select(
    forecast: Forecast,
    hold_index: int,
    safety: SafetySettings,
    thresholds: ThresholdSettings,
    *,
    edge_notes: tuple[str, ...] = (),
    runner_ups: int = 5,
    objective: Objective = "cooling",
) -> Selection:
    """Pick the cheapest sure and worthwhile candidate; else hold if holding is sure; else none.

    If holding is unsure but other candidates are sure (``recover_to_sure``), the
    cheapest sure one wins: its saving over an untrusted hold prediction means nothing.
    A model that returns non-finite numbers for holding is never trusted to recover.

    ``edge_notes``: bound or rate-limit notes for the chosen vector, computed by the
    caller (which knows the box), appended to ``binding``.
    """
    ranked = _power_and_cost(forecast, thresholds, objective, hold_index)
    masks = failure_masks(forecast, hold_index, safety, thresholds, objective, ranked)
    unsure = np.zeros(len(forecast.cooling_power_kw), dtype=bool)
    for reason in REASONS[:-1]:
        unsure |= masks[reason]
    sure = ~unsure
    good = sure & ~masks["saving"]
    first_fail = np.full(len(sure), "", dtype=object)
    for reason in reversed(REASONS):
        first_fail[masks[reason]] = reason
    rejected = {r: int((first_fail == r).sum()) for r in REASONS if (first_fail == r).any()}
    with np.errstate(invalid="ignore", over="ignore"):
        upper = rack_inlet_upper_c(forecast, safety)
    power = np.where(np.isfinite(ranked[1]), ranked[1], np.inf)
    if good.any():
        order = np.flatnonzero(good)[np.argsort(power[good], kind="stable")]
        best = int(order[0])
        cheaper = (power < power[best]) & ~good
        counts = {r: int((first_fail[cheaper] == r).sum()) for r in REASONS}
        binding = [
            f"{_describe(r, safety, thresholds)} ({n} of {int(cheaper.sum())} cheaper candidates)"
            for r, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n
        ]
        return Selection(
            index=best, outcome="optimised",
            reason=f"lowest predicted {objective} power of {int(good.sum())} sure candidates that save energy",
            rejected=rejected, binding=tuple(binding) + edge_notes,
            runner_ups=tuple(int(i) for i in order[1:1 + runner_ups]), sure=sure, rack_inlet_upper_c=upper,
        )
    if sure[hold_index]:
        return Selection(
            index=hold_index, outcome="hold",
            reason=f"holding: no sure candidate saves at least {_saving_need(thresholds)}",
            rejected=rejected, binding=(_describe("saving", safety, thresholds),), runner_ups=(),
            sure=sure, rack_inlet_upper_c=upper,
        )
    hold_fail = [r for r in REASONS[:-1] if masks[r][hold_index]]
    if thresholds.recover_to_sure and sure.any() and "non_finite" not in hold_fail:
        order = np.flatnonzero(sure)[np.argsort(power[sure], kind="stable")]
        return Selection(
            index=int(order[0]), outcome="optimised",
            reason=(f"holding is unsure ({', '.join(_describe(r, safety, thresholds) for r in hold_fail)}): "
                    f"cheapest of {int(sure.sum())} sure candidates"),
            rejected=rejected, binding=tuple(_describe(r, safety, thresholds) for r in hold_fail) + edge_notes,
            runner_ups=tuple(int(i) for i in order[1:1 + runner_ups]), sure=sure, rack_inlet_upper_c=upper,
            hold_failures=tuple(hold_fail),
        )
    parts = ", ".join(f"{n} {_describe(r, safety, thresholds)}" for r, n in rejected.items())
    return Selection(
        index=None, outcome="none",
        reason=f"no sure candidate (holding fails: {', '.join(_describe(r, safety, thresholds) for r in hold_fail)}; "
               f"rejected: {parts})",
        rejected=rejected, binding=tuple(_describe(r, safety, thresholds) for r in hold_fail), runner_ups=(),
        sure=sure, rack_inlet_upper_c=upper, hold_failures=tuple(hold_fail),
    )
