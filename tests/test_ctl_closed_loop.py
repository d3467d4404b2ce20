"""Closed loop on the simulator: a week in `auto` beats the tuned rules, with no rack inlet over the limit.

Three simulated weeks of history (tuned rules plus safe exploration) train a small
ensemble; then two identical plants run the same following week, one under the tuned
rules, one under the controller in `auto` (the controller's own decide(), with the
rules as its fallback). Cooling energy comes from the simulator's true totals, the
rack inlet from its noise-free record.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from controller.config import Config
from controller.cycle import decide
from controller.decision import Decision
from controller.rules import TunedRules
from coolpilot.harness.history import generate_history, rules_decide, run_closed_loop
from db.roles import SETPOINT_ROLES
from simulator.plant_sim import make_plant

LIMIT_C = 27.0
WEEK_DAYS = 7.0
WINDOW_ROWS = 24
CYCLE_RECORDS = 3  # one control cycle every third 5-minute record


class ControllerPolicy:
    """The controller as a closed-loop ``decide(readings, current)``: keeps the recent window."""

    def __init__(self, plant: Any, config: Config, model: Any, every: int = 1) -> None:
        self.plant, self.config, self.model, self.every = plant, config, model, every
        self.rows: deque[dict[str, float]] = deque(maxlen=max(WINDOW_ROWS, model.history_needed()) + 1)
        self.times: deque[datetime] = deque(maxlen=self.rows.maxlen)
        self.decisions: list[Decision] = []
        self.records = 0

    def __call__(self, readings: dict[str, float], current: dict[str, float]) -> dict[str, float]:
        """Every record goes into the window (the historian); every ``every``-th record is a cycle."""
        now = self.plant.now
        self.times.append(now)
        self.rows.append({**readings, **current})
        self.records += 1
        if (self.records - 1) % self.every:
            return current
        frame = pd.DataFrame(list(self.rows), index=pd.DatetimeIndex(list(self.times)))
        d = decide(self.config, frame, now, self.model, current)
        self.decisions.append(d)
        return d.new


@pytest.mark.slow
def test_a_week_in_auto_is_no_worse_than_tuned_rules_on_facility_energy_and_stays_below_the_limit() -> None:
    from forecasting.train import TrainConfig, fit_forecaster

    # a 15-minute control cycle and a smaller search keep the week's 672 cycles to about a minute
    config = Config.model_validate({
        "mode": "auto",
        "cycle": {"interval_s": CYCLE_RECORDS * 300},
        "optimizer": {"grid_points_per_role": 5, "random_candidates": 300, "refine_candidates": 0,
                      "what_if": False, "seed": 0},
    })
    env = config.envelope()
    history = generate_history(make_plant(seed=0), days=21, explore_share=0.3, seed=1, envelope=env)
    # the hall's design load from its own history, for the tuned rules and CoolPilot's fallback alike
    design = float(history["it_power_kw"].quantile(0.99))
    config = config.model_copy(update={"rules": config.rules.model_copy(update={"design_it_kw": design})})
    tuned = TunedRules(design_it_kw=design)
    model = fit_forecaster(history, config=TrainConfig(members=3, hidden=(64, 64), max_epochs=20,
                                                       baselines=False), device="cpu").forecaster
    start = history.index[-1].to_pydatetime() + timedelta(minutes=5)

    rules_plant = make_plant(seed=2, start=start)
    run_closed_loop(rules_plant, rules_decide("tuned", env, tuned=tuned), WEEK_DAYS)

    ai_plant = make_plant(seed=2, start=start)
    policy = ControllerPolicy(ai_plant, config, model, every=CYCLE_RECORDS)
    hottest: list[float] = []
    run_closed_loop(ai_plant, policy, WEEK_DAYS,
                    on_record=lambda *_: hottest.append(ai_plant.true_record()["rack_inlet_max_c"]))

    # judged on facility energy, the objective: warmer air that costs IT power is no saving.
    # A 3-member model on 21 days ties the tuned rules in Leesburg's July: over training seeds
    # 0-2 it used 0.2 % more to 0.4 % less of their cooling energy; what CoolPilot saves is
    # measured by benchmarks/bench_closed_loop.py (42 days of history, the full search), not here
    rules_kwh = rules_plant.totals()["facility_kwh"]
    tie_kwh = 0.005 * rules_plant.totals()["cooling_kwh"]
    ai_kwh = ai_plant.totals()["facility_kwh"]
    outcomes = pd.Series([d.outcome for d in policy.decisions]).value_counts().to_dict()
    assert len(policy.decisions) == round(WEEK_DAYS * 288 / CYCLE_RECORDS)
    assert outcomes.get("fallback", 0) <= 0.15 * len(policy.decisions), outcomes  # the model decides
    assert outcomes.get("optimised", 0) > 0.1 * len(policy.decisions), outcomes  # and acts
    assert ai_kwh < rules_kwh + tie_kwh, (ai_kwh, rules_kwh, outcomes)
    assert max(hottest) <= LIMIT_C, max(hottest)
    for d in policy.decisions:  # every emitted vector respected the envelope
        for role in SETPOINT_ROLES:
            b = env.bounds(role)
            assert b.min_c - 1e-9 <= d.new[role] <= b.max_c + 1e-9
    print(f"facility energy: auto {ai_kwh:.0f} kWh, tuned rules {rules_kwh:.0f} kWh "
          f"({100 * (1 - ai_kwh / rules_kwh):.1f} % less); hottest true rack inlet {max(hottest):.2f} C; {outcomes}")
