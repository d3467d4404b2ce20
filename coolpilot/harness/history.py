"""Closed-loop runs on any Plant, and training-history generation with safe exploration.

``run_closed_loop`` is the one loop everything uses (history, demo, evaluation): every
record interval it reads the plant, asks ``decide`` for setpoints, applies them and
advances. ``generate_history`` runs the tuned rules and, for a configurable share of
the time, exploration episodes inside the envelope's bounds and rate limits, as in
the identification experiments of Lazic et al. (2018), so that a learned model sees how
setpoints move energy and temperatures. Every command passes through the controller's
own safety gate (bounds, rate limits, coil approach, hot-rack guard).

Any setpoint subset: only the setpoints the plant has (``plant.setpoints()`` keys) and
the envelope controls are explored or commanded; a plant with only a supply-air
setpoint (an EnergyPlus model, many real sites) gets exactly that one.

Why exploration targets the whole envelope: a learned controller that minimises
energy drives its setpoints to the edges of the envelope, and a model that has only
seen the neighbourhood of the rules calls those states out of distribution (the
controller then falls back). So targets are drawn over the whole box, and redrawn
often (every ``mean_hold_records`` records on average) so that the model sees the
short-term effect of each setpoint. ``corner_share`` (targets at the box's corners)
and ``dwell_records`` (holds once settled) are off by default: on the twin's Leesburg
week (tests/test_ctl_closed_loop.py's set-up, one seed) corners half the time with 3-24
record dwells left CoolPilot 0.6 % above tuned rules, uniform targets redrawn every 6
records 0.8 % below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime

import numpy as np
import pandas as pd

from controller.bounds import SetpointEnvelope
from controller.rules import Preset, TunedRules, rule_setpoints
from controller.safety import gate, hot_guard_active
from db.roles import MEASUREMENT_ROLES, SETPOINT_ROLES
from simulator.plant import Plant

Decide = Callable[[dict[str, float], dict[str, float]], dict[str, float]]
OnRecord = Callable[[datetime, dict[str, float], dict[str, float]], None]

RACK_INLET_LIMIT_C = 27.0  # ASHRAE recommended upper inlet temperature [C]
HOT_GUARD_MARGIN_K = 1.0  # exploration stops raising setpoints this close to the limit [K]
SETTLED_K = 1e-6  # a setpoint that the gate no longer moves has settled [K]


def plant_envelope(envelope: SetpointEnvelope, present: Mapping[str, float] | tuple[str, ...]) -> SetpointEnvelope:
    """``envelope`` restricted to the setpoints the plant has (the keys of ``present``).

    Raises ValueError when the plant has none of the envelope's setpoints.
    """
    roles = {r: b for r, b in envelope.roles.items() if r in present}
    if not roles:
        raise ValueError(f"the plant has none of the setpoints {', '.join(envelope.setpoint_roles)} "
                         f"(it has {', '.join(present) or 'none'})")
    if len(roles) == len(envelope.roles):
        return envelope
    return SetpointEnvelope(roles=roles, min_coil_approach_k=envelope.min_coil_approach_k)


class _EnvelopeCache:
    """The envelope restricted to a plant's setpoints, computed once per set of roles."""

    def __init__(self, envelope: SetpointEnvelope) -> None:
        self.full = envelope
        self._cache: dict[frozenset[str], SetpointEnvelope] = {}

    def __call__(self, current: Mapping[str, float]) -> SetpointEnvelope:
        key = frozenset(r for r in SETPOINT_ROLES if r in current)
        if key not in self._cache:
            self._cache[key] = plant_envelope(self.full, tuple(key))
        return self._cache[key]


def run_closed_loop(
    plant: Plant,
    decide: Decide,
    days: float,
    *,
    on_record: OnRecord | None = None,
) -> pd.DataFrame:
    """Run ``days`` of closed loop; one row per record interval.

    Row t holds the readings sampled at t (before the decision) and the setpoints
    commanded at t, which are in force until the next row. Columns: the measurement
    roles the plant reports, then the setpoint roles it has; index: UTC timestamps.
    """
    if not days > 0:
        raise ValueError(f"days must be positive, got {days!r}")
    interval = plant.record_interval_s
    records = round(days * 86400.0 / interval)
    first = plant.read()
    roles = [r for r in MEASUREMENT_ROLES if r in first]
    first_setpoints = plant.setpoints()
    setpoint_roles = [r for r in SETPOINT_ROLES if r in first_setpoints]
    times: list[datetime] = []
    rows: list[list[float]] = []
    for _ in range(records):
        readings = plant.read()
        plant.apply(decide(readings, plant.setpoints()))
        in_force = plant.setpoints()
        now = plant.now
        times.append(now)
        rows.append([readings.get(r, math.nan) for r in roles] + [in_force.get(r, math.nan) for r in setpoint_roles])
        if on_record is not None:
            on_record(now, readings, in_force)
        plant.advance(interval)
    index = pd.DatetimeIndex(pd.to_datetime(times, utc=True), name="time")
    return pd.DataFrame(rows, index=index, columns=[*roles, *setpoint_roles], dtype=np.float64)


class ExploringRules:
    """Rules plus exploration episodes over the whole envelope; a ``Decide`` callable.

    Episodes switch as a two-state Markov chain whose long-run exploring share is
    ``explore_share``; an episode lasts ``mean_episode_records`` on average. While
    exploring, the setpoints head for a target vector drawn over the envelope's box
    (with probability ``corner_share`` one of its corners, else uniformly), at the rate
    limit through the safety gate; once they have settled (reached it, or been stopped by
    the hot guard or the coil approach) they hold it for a random dwell of
    ``dwell_records`` (inclusive range) and a new target is drawn; besides, a new target
    is drawn with probability 1 / ``mean_hold_records`` every record, so that setpoints
    also step often and the model sees their short-term effect. Near the rack-inlet
    limit nothing may rise. Only the setpoints the plant has (the keys of ``current``)
    are explored and returned.
    """

    def __init__(
        self,
        explore_share: float,
        rng: np.random.Generator,
        preset: Preset = "tuned",
        envelope: SetpointEnvelope | None = None,
        *,
        tuned: TunedRules | None = None,
        mean_episode_records: float = 24.0,
        mean_hold_records: float = 6.0,
        dwell_records: tuple[int, int] = (0, 0),
        corner_share: float = 0.0,
        rack_inlet_limit_c: float = RACK_INLET_LIMIT_C,
    ) -> None:
        if not 0.0 <= explore_share <= 1.0:
            raise ValueError(f"explore_share must be in [0, 1], got {explore_share!r}")
        if not 0.0 <= corner_share <= 1.0:
            raise ValueError(f"corner_share must be in [0, 1], got {corner_share!r}")
        if not 0 <= dwell_records[0] <= dwell_records[1]:
            raise ValueError(f"dwell_records must be an ordered pair of non-negative counts, got {dwell_records!r}")
        if not mean_hold_records >= 1.0:
            raise ValueError(f"mean_hold_records must be at least 1, got {mean_hold_records!r}")
        self.mean_hold_records = mean_hold_records
        self.envelope = envelope or SetpointEnvelope()
        self._envelopes = _EnvelopeCache(self.envelope)
        self.preset: Preset = preset
        self.tuned = tuned
        self.rack_inlet_limit_c = rack_inlet_limit_c
        self.corner_share = corner_share
        self.dwell_records = dwell_records
        self._rng = rng
        always = explore_share >= 1.0
        self._p_out = 0.0 if always else 1.0 / mean_episode_records
        self._p_in = 1.0 if always else self._p_out * explore_share / (1.0 - explore_share)
        self.exploring = bool(rng.random() < explore_share)
        self._target: dict[str, float] = {}
        self._dwell_left: int | None = None  # None: still heading for the target
        self.explored_records = 0
        self.records = 0
        self.targets_drawn = 0
        self.corner_targets = 0

    def _draw_target(self, env: SetpointEnvelope) -> dict[str, float]:
        """A target vector over the box: a corner with probability ``corner_share``, else uniform."""
        self.targets_drawn += 1
        corner = bool(self._rng.random() < self.corner_share)
        self.corner_targets += corner
        target: dict[str, float] = {}
        for role in env.setpoint_roles:
            b = env.bounds(role)
            u = float(self._rng.random())
            target[role] = (b.max_c if u >= 0.5 else b.min_c) if corner else b.min_c + u * (b.max_c - b.min_c)
        return target

    def _explore(self, env: SetpointEnvelope, current: Mapping[str, float], hot: bool) -> dict[str, float]:
        redraw = self._rng.random() < 1.0 / self.mean_hold_records  # frequent steps excite the dynamics
        if redraw or not self._target or set(self._target) != set(env.setpoint_roles):
            self._target, self._dwell_left = self._draw_target(env), None
        out = gate(self._target, current, env, hot_guard=hot).setpoints
        settled = all(abs(out[r] - current.get(r, math.nan)) <= SETTLED_K for r in out)
        if self._dwell_left is None and settled:
            lo, hi = self.dwell_records
            self._dwell_left = int(self._rng.integers(lo, hi + 1))
        if self._dwell_left is not None:
            if self._dwell_left <= 0:
                self._target, self._dwell_left = self._draw_target(env), None
                out = gate(self._target, current, env, hot_guard=hot).setpoints
            else:
                self._dwell_left -= 1
        return out

    def __call__(self, readings: dict[str, float], current: dict[str, float]) -> dict[str, float]:
        switch = self._rng.random()
        self.exploring = switch >= self._p_out if self.exploring else switch < self._p_in
        hot = hot_guard_active(readings.get("rack_inlet_max_c"), self.rack_inlet_limit_c, HOT_GUARD_MARGIN_K)
        env = self._envelopes(current)
        self.records += 1
        if self.exploring:
            self.explored_records += 1
            return self._explore(env, current, hot)
        self._target, self._dwell_left = {}, None
        proposal = rule_setpoints(self.preset, readings, env, tuned=self.tuned)
        return gate(proposal, current, env, hot_guard=hot).setpoints


def generate_history(
    plant: Plant,
    days: float,
    explore_share: float,
    seed: int,
    preset: Preset = "tuned",
    envelope: SetpointEnvelope | None = None,
    *,
    tuned: TunedRules | None = None,
    rack_inlet_limit_c: float = RACK_INLET_LIMIT_C,
    on_record: OnRecord | None = None,
) -> pd.DataFrame:
    """History for training: rules with ``explore_share`` of the time in exploration episodes."""
    policy = ExploringRules(explore_share, np.random.default_rng(seed), preset, envelope, tuned=tuned,
                            rack_inlet_limit_c=rack_inlet_limit_c)
    return run_closed_loop(plant, policy, days, on_record=on_record)


def rules_decide(preset: Preset, envelope: SetpointEnvelope | None = None, *,
                 tuned: TunedRules | None = None, rack_inlet_limit_c: float = RACK_INLET_LIMIT_C) -> Decide:
    """The plain rule preset behind the safety gate (hot guard included), as a ``Decide`` callable.

    Only the setpoints the plant has (the keys of ``current``) are decided.
    """
    envelopes = _EnvelopeCache(envelope or SetpointEnvelope())

    def decide(readings: dict[str, float], current: dict[str, float]) -> dict[str, float]:
        env = envelopes(current)
        hot = hot_guard_active(readings.get("rack_inlet_max_c"), rack_inlet_limit_c, HOT_GUARD_MARGIN_K)
        return gate(rule_setpoints(preset, readings, env, tuned=tuned), current, env, hot_guard=hot).setpoints

    return decide
