"""The oracle: the best setpoints the plant's own true model allows, step by step.

At each control step it evaluates a grid of candidates inside the same box any
controller gets (envelope bounds intersected with rate limits, coil approach kept)
and picks the lowest cooling energy whose hottest rack inlet stays within the limit.
Where the plant offers its full dynamic model (``simulator.plant.RolloutPlant``, as
the twin does) each candidate is held for ``horizon_s`` on a copy of that model (lags,
staging delays, economiser hysteresis, the weather and load to come), so the oracle
scores exactly what the plant will do; the grid (lowest, held and highest value of
each setpoint) spans the corners of the box a controller can reach in one step.
Otherwise it searches the plant's quasi-steady model (``steady_state`` of a
``simulator.plant.SteadyStatePlant``). Its assumptions: perfect knowledge of the
plant and its drivers, setpoints held over the horizon, the same box as everyone.
Within them a learned controller, which must estimate the plant from noisy history,
should not do better beyond noise; the evaluation checks that (``oracle_bound_ok``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from controller.bounds import SetpointEnvelope
from controller.candidates import box_arrays, coupling_ok, initial_candidates, to_mapping, to_vector
from controller.safety import allowed_box, clamped_reference
from coolpilot.harness.history import RACK_INLET_LIMIT_C, Decide
from db.roles import SETPOINT_ROLES
from simulator.plant import RolloutPlant, SteadyStatePlant

GRID_POINTS_PER_ROLE = 5
#: On the dynamic model: the lowest, held and highest value of each setpoint (27 candidates).
ROLLOUT_GRID_POINTS_PER_ROLE = 3
#: How long each candidate is held on the dynamic model [s]: a few chilled-water time
#: constants and staging delays, so that lags settle and staging moves are seen.
HORIZON_S = 1800.0
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
    grid_points_per_role: int | None = None,
    horizon_s: float | None = HORIZON_S,
) -> dict[str, float]:
    """Lowest-cooling-energy setpoints reachable this step with the rack inlet within the limit [C].

    ``reference``: the setpoints in force (default: the plant's). If no candidate keeps
    the rack inlet within the limit, the one with the coolest hottest rack wins. Only
    the envelope's setpoints that the plant has are searched (and returned); the
    others hold the plant's current values in the model. ``horizon_s``: how long each
    candidate is held on a `RolloutPlant`'s dynamic model (None: the quasi-steady search
    even there). ``grid_points_per_role``: default 3 on the dynamic model, 5 otherwise.
    """
    env = envelope or SetpointEnvelope()
    in_force = plant.setpoints()
    roles = tuple(r for r in env.setpoint_roles if r in in_force)
    if not roles:
        raise ValueError("the oracle has no setpoint to search: the plant has none of the envelope's setpoints")
    ref = clamped_reference(reference if reference is not None else in_force, env)
    lo, hi = box_arrays(allowed_box(ref, env), roles)
    hold = np.clip(to_vector({r: ref.get(r, lo[i]) for i, r in enumerate(roles)}, roles), lo, hi)
    dynamic = horizon_s is not None and isinstance(plant, RolloutPlant)
    if grid_points_per_role is None:
        grid_points_per_role = ROLLOUT_GRID_POINTS_PER_ROLE if dynamic else GRID_POINTS_PER_ROLE
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
    moved_k = np.abs(candidates - hold).sum(axis=1)
    if dynamic:
        assert horizon_s is not None and isinstance(plant, RolloutPlant)
        played = plant.rollout(full, horizon_s)
        rack = played["rack_inlet_max_c"]
        if not (rack <= rack_inlet_limit_c).any():  # too hot already: recover fastest
            return to_mapping(candidates[int(np.argmin(played.get("rack_inlet_end_c", rack)))], roles)
        # Mean cooling power over the horizon [kW], so the tie-breaker keeps its unit.
        score = played["cooling_kwh"] * 3600.0 / horizon_s + MOVE_PENALTY_KW_PER_K * moved_k
    else:
        result = plant.steady_state(full)
        rack = result["rack_inlet_max_c"]
        unmet_k = sum(
            np.abs(result[ACHIEVED[role]] - candidates[:, i]) for i, role in enumerate(roles)
        )
        score = result["cooling_power_kw"] + UNMET_SETPOINT_PENALTY_KW_PER_K * unmet_k + MOVE_PENALTY_KW_PER_K * moved_k
    feasible = rack <= rack_inlet_limit_c
    best = int(np.argmin(np.where(feasible, score, np.inf))) if feasible.any() else int(np.argmin(rack))
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
