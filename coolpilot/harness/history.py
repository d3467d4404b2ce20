"""Closed-loop runs on any Plant, and training-history generation with safe exploration.

``run_closed_loop`` is the one loop everything uses (history, demo, evaluation): every
record interval it reads the plant, asks ``decide`` for setpoints, applies them and
advances. ``generate_history`` runs the tuned rules and, for a configurable share of
the time, random setpoint steps inside the envelope's bounds and rate limits, as in
the identification experiments of Lazic et al. (2018), so that a learned model sees how
setpoints move energy and temperatures. Every command passes through the controller's
own safety gate (bounds, rate limits, coil approach, hot-rack guard).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd

from controller.bounds import SetpointEnvelope
from controller.rules import Preset, rule_setpoints
from controller.safety import gate, hot_guard_active
from db.roles import MEASUREMENT_ROLES, SETPOINT_ROLES
from simulator.plant import Plant

Decide = Callable[[dict[str, float], dict[str, float]], dict[str, float]]
OnRecord = Callable[[datetime, dict[str, float], dict[str, float]], None]

RACK_INLET_LIMIT_C = 27.0  # ASHRAE recommended upper inlet temperature [C]
HOT_GUARD_MARGIN_K = 1.0  # exploration stops raising setpoints this close to the limit [K]


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
    roles the plant reports, then the setpoint roles; index: UTC timestamps.
    """
    if not days > 0:
        raise ValueError(f"days must be positive, got {days!r}")
    interval = plant.record_interval_s
    records = round(days * 86400.0 / interval)
    first = plant.read()
    roles = [r for r in MEASUREMENT_ROLES if r in first]
    times: list[datetime] = []
    rows: list[list[float]] = []
    for _ in range(records):
        readings = plant.read()
        plant.apply(decide(readings, plant.setpoints()))
        in_force = plant.setpoints()
        now = plant.now
        times.append(now)
        rows.append([readings.get(r, np.nan) for r in roles] + [in_force[r] for r in SETPOINT_ROLES])
        if on_record is not None:
            on_record(now, readings, in_force)
        plant.advance(interval)
    index = pd.DatetimeIndex(pd.to_datetime(times, utc=True), name="time")
    return pd.DataFrame(rows, index=index, columns=[*roles, *SETPOINT_ROLES], dtype=np.float64)


class ExploringRules:
    """Rules plus random exploration episodes; a ``Decide`` callable.

    Episodes switch as a two-state Markov chain whose long-run exploring share is
    ``explore_share``; an episode lasts ``mean_episode_records`` on average. While
    exploring, each setpoint holds a random target inside its bounds and picks a new
    one with probability 1 / ``mean_hold_records`` per record; the safety gate moves
    towards it at the rate limit. Near the rack-inlet limit nothing may rise.
    """

    def __init__(
        self,
        explore_share: float,
        rng: np.random.Generator,
        preset: Preset = "tuned",
        envelope: SetpointEnvelope | None = None,
        *,
        mean_episode_records: float = 24.0,
        mean_hold_records: float = 6.0,
        rack_inlet_limit_c: float = RACK_INLET_LIMIT_C,
    ) -> None:
        if not 0.0 <= explore_share <= 1.0:
            raise ValueError(f"explore_share must be in [0, 1], got {explore_share!r}")
        self.envelope = envelope or SetpointEnvelope()
        self.preset: Preset = preset
        self.rack_inlet_limit_c = rack_inlet_limit_c
        self._rng = rng
        self._p_out = 1.0 / mean_episode_records
        self._p_in = 1.0 if explore_share >= 1.0 else self._p_out * explore_share / (1.0 - explore_share)
        self._p_new = 1.0 / mean_hold_records
        self.exploring = bool(rng.random() < explore_share)
        self._targets: dict[str, float] = {}
        self.explored_records = 0
        self.records = 0

    def _random_target(self, role: str) -> float:
        b = self.envelope.bounds(role)
        return float(self._rng.uniform(b.min_c, b.max_c))

    def __call__(self, readings: dict[str, float], current: dict[str, float]) -> dict[str, float]:
        switch = self._rng.random()
        self.exploring = switch >= self._p_out if self.exploring else switch < self._p_in
        hot = hot_guard_active(readings.get("rack_inlet_max_c"), self.rack_inlet_limit_c, HOT_GUARD_MARGIN_K)
        self.records += 1
        if self.exploring:
            self.explored_records += 1
            draws = self._rng.random(len(SETPOINT_ROLES))
            for role, u in zip(SETPOINT_ROLES, draws, strict=True):
                if role not in self._targets or u < self._p_new:
                    self._targets[role] = self._random_target(role)
            proposal = dict(self._targets)
        else:
            self._targets.clear()
            proposal = rule_setpoints(self.preset, readings, self.envelope)
        return gate(proposal, current, self.envelope, hot_guard=hot).setpoints


def generate_history(
    plant: Plant,
    days: float,
    explore_share: float,
    seed: int,
    preset: Preset = "tuned",
    envelope: SetpointEnvelope | None = None,
    *,
    on_record: OnRecord | None = None,
) -> pd.DataFrame:
    """History for training: rules with ``explore_share`` of the time in random exploration."""
    policy = ExploringRules(explore_share, np.random.default_rng(seed), preset, envelope)
    return run_closed_loop(plant, policy, days, on_record=on_record)


def rules_decide(preset: Preset, envelope: SetpointEnvelope | None = None) -> Decide:
    """The plain rule preset behind the safety gate, as a ``Decide`` callable."""
    env = envelope or SetpointEnvelope()

    def decide(readings: dict[str, float], current: dict[str, float]) -> dict[str, float]:
        hot = hot_guard_active(readings.get("rack_inlet_max_c"), RACK_INLET_LIMIT_C, HOT_GUARD_MARGIN_K)
        return gate(rule_setpoints(preset, readings, env), current, env, hot_guard=hot).setpoints

    return decide
