"""Candidate generation, batch scoring and selection against a physics-shaped forecaster."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from controller.candidates import box_arrays, coupling_ok, initial_candidates, refine_candidates, to_vector
from controller.config import SafetySettings, ThresholdSettings
from controller.optimizer import ModelError, optimise, score, what_if_rows
from controller.safety import allowed_box
from controller.selection import it_change_kw, objective_kw, select, warming_costs_it
from db.roles import SETPOINT_ROLES
from forecasting.protocol import Forecast
from tests._ctl_support import START_SETPOINTS, PhysicsForecaster, config, window

CFG = config()
ENV = CFG.envelope()
HOLD = to_vector(START_SETPOINTS)


def test_candidates_stay_in_the_box_keep_the_approach_and_number_thousands() -> None:
    box = allowed_box(START_SETPOINTS, ENV)
    lo, hi = box_arrays(box)
    cands = initial_candidates(HOLD, lo, hi, min_coil_approach_k=3.0, grid_points_per_role=9,
                               random_candidates=3000, rng=np.random.default_rng(1))
    assert len(cands) > 3000
    assert np.array_equal(cands[0], HOLD)
    assert np.all(cands >= lo - 1e-12) and np.all(cands <= hi + 1e-12)
    assert coupling_ok(cands, 3.0).all()
    refined = refine_candidates(cands[:50], lo, hi, min_coil_approach_k=3.0, n=500, rng=np.random.default_rng(2))
    assert len(refined) > 0 and np.all(refined >= lo) and np.all(refined <= hi) and coupling_ok(refined, 3.0).all()


def fake_forecast(power: list[float], inlet: list[float], inlet_std: float = 0.2,
                  ood: float | list[float] = 0.2) -> Forecast:
    p = np.asarray(power, dtype=float)
    t = np.asarray(inlet, dtype=float)
    n = len(p)
    return Forecast(cooling_power_kw=p, cooling_power_std_kw=0.01 * p, cooling_power_lo_kw=p * 0.98,
                    cooling_power_hi_kw=p * 1.02, rack_inlet_max_c=t, rack_inlet_std_c=np.full(n, inlet_std),
                    rack_inlet_lo_c=t - 0.3, rack_inlet_hi_c=t + 0.3,
                    ood_score=np.broadcast_to(np.asarray(ood, dtype=float), (n,)).copy(), interval_level=0.9)


def test_selection_takes_the_cheapest_sure_candidate_and_names_the_binding_constraint() -> None:
    # hold 100 kW; candidate 3 is cheapest but its inlet + 2 sigma (26.8 + 0.4) crosses 27 C
    fc = fake_forecast([100, 95, 90, 80], [22, 24, 25, 26.8])
    sel = select(fc, 0, SafetySettings(), ThresholdSettings())
    assert (sel.index, sel.outcome) == (2, "optimised")
    assert sel.runner_ups == (1,)
    assert sel.rejected == {"rack_inlet": 1, "saving": 1}
    assert "27.0 C limit (1 of 1 cheaper candidates)" in sel.binding[0]


def test_paired_gate_ignores_the_noise_every_candidate_shares_but_not_doubt_about_the_move() -> None:
    # hold 100 kW, candidates 90 and 85: the next hour is hard to predict (total std 30 kW,
    # above the 15 % limit for all three), but the five members agree that candidate 1
    # saves 10 kW (+-0.5) and disagree by +-20 kW about candidate 2
    fc = replace(fake_forecast([100, 90, 85], [22, 22, 22]), cooling_power_std_kw=np.full(3, 30.0))
    shared = np.array([-40.0, -20.0, 0.0, 20.0, 40.0])  # what the members think the load does next
    members = np.stack([100 + shared, 90 + shared + np.array([0.5, -0.5, 0.0, 0.5, -0.5]),
                        85 + shared + np.array([20.0, -20.0, 0.0, 20.0, -20.0])], axis=1)
    fc = replace(fc, cooling_power_members_kw=members)
    absolute = select(fc, 0, SafetySettings(), ThresholdSettings(max_power_std_floor_kw=2.0))
    assert absolute.outcome == "none" and absolute.hold_failures == ("power_uncertainty",)
    paired = select(fc, 0, SafetySettings(), ThresholdSettings(max_power_std_floor_kw=2.0, power_uncertainty="paired"))
    assert (paired.index, paired.outcome) == (1, "optimised")
    assert paired.rejected == {"power_uncertainty": 1, "saving": 1}  # candidate 2 is a guess; holding saves nothing
    # without members (a model that is not an ensemble) the paired setting judges the total std
    plain = select(replace(fc, cooling_power_members_kw=None), 0, SafetySettings(),
                   ThresholdSettings(max_power_std_floor_kw=2.0, power_uncertainty="paired"))
    assert plain.outcome == "none"


def test_a_move_is_worth_making_when_it_saves_more_than_the_members_doubt_about_it() -> None:
    # hold 100 kW; candidate 1 saves 0.8 kW and every member agrees (+-0.1); candidate 2
    # saves 3 kW on average but the members disagree by +-2 kW
    fc = fake_forecast([100.0, 99.2, 97.0], [22, 22, 22])
    members = np.stack([np.full(4, 100.0), 99.2 + np.array([0.1, -0.1, 0.1, -0.1]),
                        97.0 + np.array([2.0, -2.0, 2.0, -2.0])], axis=1)
    fc = replace(fc, cooling_power_members_kw=members)
    pct = select(fc, 0, SafetySettings(), ThresholdSettings(min_saving_pct=5.0))
    assert pct.outcome == "hold"  # a fixed 5 % turns both down
    sigma = select(fc, 0, SafetySettings(), ThresholdSettings(min_saving_pct=5.0, min_saving_sigma=2.0))
    assert (sigma.index, sigma.outcome) == (1, "optimised")  # 0.8 >= 2 x 0.1; 3.0 < 2 x 2.0
    strict = select(fc, 0, SafetySettings(), ThresholdSettings(min_saving_sigma=10.0))
    assert strict.outcome == "hold" and "saves at least 10 sigma (members)" in strict.reason
    # an identical candidate (zero doubt, zero saving) is never a move
    same = replace(fake_forecast([100.0, 100.0], [22, 22]), cooling_power_members_kw=np.full((4, 2), 100.0))
    assert select(same, 0, SafetySettings(), ThresholdSettings(min_saving_sigma=2.0)).outcome == "hold"


def test_selection_holds_when_nothing_saves_enough_and_fails_when_holding_is_unsure() -> None:
    sel = select(fake_forecast([100, 99.5], [22, 22]), 0, SafetySettings(), ThresholdSettings(min_saving_pct=1.0))
    assert (sel.index, sel.outcome) == (0, "hold")
    sel = select(fake_forecast([100, 90], [22, 22], ood=3.0), 0, SafetySettings(), ThresholdSettings())
    assert sel.index is None and sel.hold_failures == ("ood",)
    assert "out-of-distribution" in sel.reason
    sel = select(fake_forecast([100, 90], [22, 22], inlet_std=2.0), 0, SafetySettings(), ThresholdSettings())
    assert sel.index is None and "inlet_uncertainty" in sel.hold_failures


def test_an_unsure_hold_recovers_to_the_cheapest_sure_candidate_unless_disabled() -> None:
    # holding is out of distribution; candidate 1 is sure but costs more than the (untrusted) hold
    fc = fake_forecast([100, 104, 101, 90], [22, 22, 22, 22], ood=[1.2, 0.5, 0.9, 1.5])
    sel = select(fc, 0, SafetySettings(), ThresholdSettings())
    assert (sel.index, sel.outcome) == (2, "optimised")
    assert sel.hold_failures == ("ood",) and sel.runner_ups == (1,)
    assert "holding is unsure" in sel.reason
    strict = select(fc, 0, SafetySettings(), ThresholdSettings(recover_to_sure=False))
    assert strict.index is None and strict.hold_failures == ("ood",)
    broken = fake_forecast([float("nan"), 104, 101], [22, 22, 22])
    assert select(broken, 0, SafetySettings(), ThresholdSettings()).index is None


def test_power_risk_ranks_candidates_by_mean_plus_k_std() -> None:
    fc = fake_forecast([100, 90, 92], [22, 22, 22])
    fc = replace(fc, cooling_power_std_kw=np.array([1.0, 8.0, 1.0]))  # candidate 1 is cheap on a guess
    assert select(fc, 0, SafetySettings(), ThresholdSettings()).index == 1
    careful = select(fc, 0, SafetySettings(), ThresholdSettings(power_risk_k=1.0))
    assert careful.index == 2 and careful.runner_ups == (1,)
    # a move must beat holding with confidence: 100 - (95 + 2 * 2.5) = 0 saves nothing
    doubtful = replace(fake_forecast([100, 95], [22, 22]), cooling_power_std_kw=np.array([1.0, 2.5]))
    assert select(doubtful, 0, SafetySettings(), ThresholdSettings(power_risk_k=2.0)).outcome == "hold"


def test_non_finite_predictions_are_rejected_not_chosen() -> None:
    fc = fake_forecast([100, float("nan"), 90], [22, 22, 22])
    sel = select(fc, 0, SafetySettings(), ThresholdSettings())
    assert sel.index == 2 and sel.rejected.get("non_finite") == 1


def test_optimise_finds_warmer_water_and_respects_the_limit() -> None:
    model = PhysicsForecaster()
    box = allowed_box(START_SETPOINTS, ENV)
    result = optimise(model, window(), HOLD, box, CFG, np.random.default_rng(0))
    sel = result.selection
    assert sel.outcome == "optimised" and sel.index is not None
    best = result.candidates[sel.index]
    lo, hi = box_arrays(box)
    assert np.all(best >= lo) and np.all(best <= hi)
    assert best[0] > HOLD[0]  # warmer chilled water saves chiller power in this model
    assert len(result.candidates) >= 4000
    assert model.calls == 1 + CFG.optimizer.refine_iterations
    upper = result.forecast.rack_inlet_max_c[sel.index] + 2 * result.forecast.rack_inlet_std_c[sel.index]
    assert upper < 27.0


class BrokenModel(PhysicsForecaster):
    def predict(self, state, candidates):  # type: ignore[no-untyped-def]
        full = super().predict(state, candidates)
        return Forecast(**{**full.__dict__, "ood_score": full.ood_score[:-1]})


def test_score_rejects_wrong_shapes_and_wraps_exceptions() -> None:
    with pytest.raises(ModelError, match="ood_score has shape"):
        score(BrokenModel(), window(), HOLD[None, :].repeat(3, axis=0))

    class Raising(PhysicsForecaster):
        def predict(self, state, candidates):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(ModelError, match="RuntimeError: CUDA out of memory"):
        score(Raising(), window(), HOLD[None, :])


def test_what_if_moves_each_role_one_step_each_way() -> None:
    rows = what_if_rows(PhysicsForecaster(), window(), HOLD, HOLD, ENV)
    assert len(rows) == 2 + 2 * len(SETPOINT_ROLES)
    for row in rows[2:]:
        role = row["role"]
        moved = row["setpoints"][role] - START_SETPOINTS[role]
        assert moved == pytest.approx(row["step_k"])
        assert abs(moved) == pytest.approx(ENV.bounds(role).max_step_k)
    chw_up = next(r for r in rows if r["role"] == "chw_supply_sp_c" and r["step_k"] > 0)
    assert chw_up["cooling_power_kw"] < rows[0]["cooling_power_kw"]


def _with_it(fc: Forecast, it: list[float], members: list[list[float]]) -> Forecast:
    """``fc`` with an IT forecast: means ``it`` [kW] and per-member rows ``members`` (M, N) [kW]."""
    arr = np.asarray(it, dtype=float)
    return replace(fc, it_power_kw=arr, it_power_std_kw=np.full(len(arr), 5.0),
                   it_power_lo_kw=arr - 8.0, it_power_hi_kw=arr + 8.0,
                   it_power_members_kw=np.asarray(members, dtype=float))


def test_only_a_physical_resolved_it_change_decides_a_move() -> None:
    # hold: 100 kW cooling + 500 kW IT at a 22 C inlet. Candidate 1 (0.2 kW more cooling)
    # "saves" 1 kW of IT power at a warmer inlet: servers never draw less at warmer air.
    # Candidate 2 saves 3 kW of cooling but the members agree it costs 2.5 kW of IT power.
    fc = fake_forecast([100.0, 100.2, 97.0], [22.0, 22.5, 22.4])
    fc = _with_it(fc, [500.0, 499.0, 502.5], [[500, 499.0, 502.5], [500, 499.0, 502.5]])
    naive = select(fc, 0, SafetySettings(), ThresholdSettings(min_saving_pct=0.6), objective="facility")
    assert naive.outcome == "hold"  # candidate 1's IT saving is not physical; candidate 2 nets 0.5 kW
    costs = select(fc, 0, SafetySettings(), ThresholdSettings(min_saving_pct=0.4), objective="facility")
    assert (costs.index, costs.outcome) == (2, "optimised")  # its IT cost counted, it still nets 0.5 kW
    # the same IT saving at a cooler inlet, resolved by the members (zero doubt), counts
    cooler = replace(fc, rack_inlet_max_c=np.array([22.0, 21.6, 22.4]))
    assert select(cooler, 0, SafetySettings(), ThresholdSettings(min_saving_pct=0.6),
                  objective="facility").index == 1


def test_it_change_counts_only_with_the_inlets_sign_and_beyond_the_members_doubt() -> None:
    # inlets: hold 22, then cooler, cooler, warmer, warmer, cooler; members' doubts 0, 0.5, 1, 0, 0, 0
    fc = _with_it(fake_forecast([10.0] * 6, [22.0, 21.0, 21.0, 23.0, 23.5, 21.5]),
                  [50.0, 47.0, 47.0, 48.0, 52.0, 52.0],
                  [[50, 46.5, 46, 48, 52, 52], [50, 47.5, 48, 48, 52, 52]])
    # 3 kW >= 5 x 0.5: kept; 3 kW < 5 x 1: dropped; a saving at a warmer inlet: dropped;
    # a cost at a warmer inlet: kept; a cost at a cooler inlet: dropped
    assert it_change_kw(fc, 0, 5.0) == pytest.approx([0.0, -3.0, 0.0, 0.0, 2.0, 0.0])
    assert it_change_kw(fc, 0, 0.0) == pytest.approx([0.0, -3.0, -3.0, 0.0, 2.0, 0.0])  # the sign rule alone
    power, _ = objective_kw(fc, "facility", 0, ThresholdSettings())
    assert power == pytest.approx([60.0, 57.0, 60.0, 60.0, 62.0, 60.0])
    raw, _ = objective_kw(fc, "facility")  # without thresholds: the mean prediction
    assert raw == pytest.approx([60.0, 57.0, 57.0, 58.0, 62.0, 62.0])


def test_warming_costs_it_only_where_most_warmer_candidates_have_a_counted_it_cost() -> None:
    # supply air per candidate: hold 18 C, then 17, 19, 19.5, 20; inlets follow it
    air_c = np.array([18.0, 17.0, 19.0, 19.5, 20.0])
    inlets = [22.0, 21.0, 23.0, 23.5, 24.0]
    agree = [[50, 48, 52, 53, 54], [50, 48, 52, 53, 54]]
    servers = _with_it(fake_forecast([10.0] * 5, inlets), [50.0, 48.0, 52.0, 53.0, 54.0], agree)
    assert warming_costs_it(servers, air_c, 0, 5.0)  # every warmer candidate costs resolved IT power
    unsure = _with_it(fake_forecast([10.0] * 5, inlets), [50.0, 48.0, 52.0, 53.0, 54.0],
                      [[50, 48, 49, 50, 51], [50, 48, 55, 56, 57]])
    assert not warming_costs_it(unsure, air_c, 0, 5.0)  # the members do not resolve it
    unphysical = _with_it(fake_forecast([10.0] * 5, inlets), [50.0, 52.0, 48.0, 47.0, 46.0],
                          [[50, 52, 48, 47, 46]] * 2)
    assert not warming_costs_it(unphysical, air_c, 0, 5.0)  # savings at warmer inlets are not counted
    assert not warming_costs_it(fake_forecast([10.0] * 5, inlets), air_c, 0, 5.0)  # no IT forecast
    assert not warming_costs_it(servers, np.full(5, 18.0), 0, 5.0)  # nothing warmer than holding
