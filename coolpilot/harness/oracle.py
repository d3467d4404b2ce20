"""The oracle: the best setpoints the plant's own true model allows, step by step.

At each control step it evaluates a grid of candidates inside the same box any
controller gets (envelope bounds intersected with rate limits, coil approach kept)
on the plant's own noise-free quasi-steady model (``steady_state`` of a
``simulator.plant.SteadyStatePlant``, such as the simulator), and picks the lowest
cooling power whose hottest rack inlet stays within the limit. No learned controller,
which must estimate that model from noisy history, can do better with the same
constraints: it is the yardstick of the evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from controller.bounds import SetpointEnvelope
from controller.candidates import box_arrays, coupling_ok, initial_candidates, to_mapping, to_vector
from controller.safety import allowed_box, clamped_reference
from coolpilot.harness.history import RACK_INLET_LIMIT_C, Decide
from db.roles import SETPOINT_ROLES
from simulator.plant import SteadyStatePlant

GRID_POINTS_PER_ROLE = 5
# Tie-breaker [kW per K]: where a setpoint cannot be met (towers below wet-bulb plus
# their approach), every lower value gives the same true cooling power; this tiny cost
# on the unmet part steers the search out of such plateaus towards setpoints that the
# local loops can hold, without moving the optimum anywhere the cost is not flat.
UNMET_SETPOINT_PENALTY_KW_PER_K = 0.05
# Second tie-breaker [kW per K of move]: among equal costs, stay where we are.
MOVE_PENALTY_KW_PER_K = 0.001
#: The temperature each setpoint asks for, as ``steady_state`` reports it reached.
ACHIEVED = {"chw_supply_sp_c": "chw_supply_c", "supply_air_sp_c": "supply_air_c", "cw_supply_sp_c": "cw_supply_c"}


def oracle_setpoints(
    plant: SteadyStatePlant,
    envelope: SetpointEnvelope | None = None,
    rack_inlet_limit_c: float = RACK_INLET_LIMIT_C,
    *,
    reference: Mapping[str, float] | None = None,
    grid_points_per_role: int = GRID_POINTS_PER_ROLE,
) -> dict[str, float]:
    """Lowest-cooling-power setpoints reachable this step with the rack inlet within the limit [C].

    ``reference``: the setpoints in force (default: the plant's). If no candidate keeps
    the rack inlet within the limit, the one with the coolest hottest rack wins. Only
    the envelope's setpoints that the plant has are searched (and returned); the
    others hold the plant's current values in the model.
    """
    env = envelope or SetpointEnvelope()
    in_force = plant.setpoints()
    roles = tuple(r for r in env.setpoint_roles if r in in_force)
    if not roles:
        raise ValueError("the oracle has no setpoint to search: the plant has none of the envelope's setpoints")
    ref = clamped_reference(reference if reference is not None else in_force, env)
    lo, hi = box_arrays(allowed_box(ref, env), roles)
    hold = np.clip(to_vector({r: ref.get(r, lo[i]) for i, r in enumerate(roles)}, roles), lo, hi)
    candidates = initial_candidates(
        hold, lo, hi,
        min_coil_approach_k=env.min_coil_approach_k,
        grid_points_per_role=grid_points_per_role,
        random_candidates=0,
        rng=np.random.default_rng(0),
        roles=roles,
    )
    coupled = coupling_ok(candidates, env.min_coil_approach_k, roles)
    if coupled.any():
        candidates = candidates[coupled]
    # The plant's model takes all three setpoints: the ones not searched hold their value.
    full = np.repeat(np.array([[in_force.get(r, np.nan) for r in SETPOINT_ROLES]], dtype=np.float64),
                     len(candidates), axis=0)
    columns = [SETPOINT_ROLES.index(r) for r in roles]
    full[:, columns] = candidates
    result = plant.steady_state(full)
    rack = result["rack_inlet_max_c"]
    feasible = rack <= rack_inlet_limit_c
    if feasible.any():
        unmet_k = sum(
            np.abs(result[ACHIEVED[role]] - candidates[:, i]) for i, role in enumerate(roles)
        )
        moved_k = np.abs(candidates - hold).sum(axis=1)
        score = result["cooling_power_kw"] + UNMET_SETPOINT_PENALTY_KW_PER_K * unmet_k + MOVE_PENALTY_KW_PER_K * moved_k
        cost = np.where(feasible, score, np.inf)
        best = int(np.argmin(cost))
    else:
        best = int(np.argmin(rack))
    return to_mapping(candidates[best], roles)


def oracle_decide(
    plant: SteadyStatePlant,
    envelope: SetpointEnvelope | None = None,
    rack_inlet_limit_c: float = RACK_INLET_LIMIT_C,
) -> Decide:
    """The oracle as a ``Decide`` callable for ``run_closed_loop`` on the same plant."""

    def decide(readings: dict[str, float], current: dict[str, float]) -> dict[str, float]:
        return oracle_setpoints(plant, envelope, rack_inlet_limit_c, reference=current)

    return decide
