"""The oracle: the best setpoints the plant's own true model allows, step by step.

At each control step it evaluates a grid of candidates inside the same box any
controller gets (envelope bounds intersected with rate limits, coil approach kept)
on the simulator's noise-free quasi-steady model, and picks the lowest cooling power
whose hottest rack inlet stays within the limit. No learned controller, which must
estimate that model from noisy history, can do better with the same constraints: it
is the yardstick of the evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from controller.bounds import SetpointEnvelope
from controller.candidates import box_arrays, coupling_ok, initial_candidates, to_mapping, to_vector
from controller.safety import allowed_box, clamped_reference
from coolpilot.harness.history import RACK_INLET_LIMIT_C, Decide
from db.roles import SETPOINT_ROLES
from simulator.plant_sim import SimulatedPlant

GRID_POINTS_PER_ROLE = 5
# Tie-breaker [kW per K]: where a setpoint cannot be met (towers below wet-bulb plus
# their approach), every lower value gives the same true cooling power; this tiny cost
# on the unmet part steers the search out of such plateaus towards setpoints that the
# local loops can hold, without moving the optimum anywhere the cost is not flat.
UNMET_SETPOINT_PENALTY_KW_PER_K = 0.05
# Second tie-breaker [kW per K of move]: among equal costs, stay where we are.
MOVE_PENALTY_KW_PER_K = 0.001


def oracle_setpoints(
    plant: SimulatedPlant,
    envelope: SetpointEnvelope | None = None,
    rack_inlet_limit_c: float = RACK_INLET_LIMIT_C,
    *,
    reference: Mapping[str, float] | None = None,
    grid_points_per_role: int = GRID_POINTS_PER_ROLE,
) -> dict[str, float]:
    """Lowest-cooling-power setpoints reachable this step with the rack inlet within the limit [C].

    ``reference``: the setpoints in force (default: the plant's). If no candidate keeps
    the rack inlet within the limit, the one with the coolest hottest rack wins.
    """
    env = envelope or SetpointEnvelope()
    ref = clamped_reference(reference if reference is not None else plant.setpoints(), env)
    lo, hi = box_arrays(allowed_box(ref, env))
    hold = np.clip(to_vector({r: ref.get(r, lo[i]) for i, r in enumerate(SETPOINT_ROLES)}), lo, hi)
    candidates = initial_candidates(
        hold, lo, hi,
        min_coil_approach_k=env.min_coil_approach_k,
        grid_points_per_role=grid_points_per_role,
        random_candidates=0,
        rng=np.random.default_rng(0),
    )
    coupled = coupling_ok(candidates, env.min_coil_approach_k)
    if coupled.any():
        candidates = candidates[coupled]
    result = plant.steady_state(candidates)
    rack = result["rack_inlet_max_c"]
    feasible = rack <= rack_inlet_limit_c
    if feasible.any():
        unmet_k = sum(
            np.abs(result[achieved] - candidates[:, i])
            for i, achieved in enumerate(("chw_supply_c", "supply_air_c", "cw_supply_c"))
        )
        moved_k = np.abs(candidates - hold).sum(axis=1)
        score = result["cooling_power_kw"] + UNMET_SETPOINT_PENALTY_KW_PER_K * unmet_k + MOVE_PENALTY_KW_PER_K * moved_k
        cost = np.where(feasible, score, np.inf)
        best = int(np.argmin(cost))
    else:
        best = int(np.argmin(rack))
    return to_mapping(candidates[best])


def oracle_decide(
    plant: SimulatedPlant,
    envelope: SetpointEnvelope | None = None,
    rack_inlet_limit_c: float = RACK_INLET_LIMIT_C,
) -> Decide:
    """The oracle as a ``Decide`` callable for ``run_closed_loop`` on the same plant."""

    def decide(readings: dict[str, float], current: dict[str, float]) -> dict[str, float]:
        return oracle_setpoints(plant, envelope, rack_inlet_limit_c, reference=current)

    return decide
