"""Explanations and the decision's other readers (metrics), from a decision alone."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client import CollectorRegistry

from controller.cycle import decide
from controller.decision import Decision
from controller.explain import explanation, render
from controller.service.metrics import CoolpilotMetrics
from db.jsonable import jsonable
from db.roles import SETPOINT_ROLES
from tests._ctl_support import NOW, START_SETPOINTS, PhysicsForecaster, config, later, window


def optimised(**top: str) -> Decision:
    return decide(config(mode="auto", **top), window(), NOW, PhysicsForecaster(), START_SETPOINTS)


def test_explanation_names_the_binding_constraint_runner_ups_and_what_if() -> None:
    d = optimised()
    text = render(d)
    assert "what bound the choice:" in text
    assert any(b in text for b in d.binding)
    assert "runner-up candidates:" in text
    table = text.split("what if (")[1].splitlines()[2:]
    what_if_lines = [ln for ln in table if ln.strip().startswith(SETPOINT_ROLES)]
    assert len(what_if_lines) == 2 * len(SETPOINT_ROLES)
    data = explanation(d)
    assert data["binding"] == list(d.binding) and len(data["runner_ups"]) == 5 and len(data["what_if"]) == 6
    written = json.loads(json.dumps(jsonable(data)))  # what `coolpilot explain --json` prints
    assert d.chosen is not None and written["chosen"]["cooling_power_kw"] == pytest.approx(d.chosen.cooling_power_kw)
    assert written["hold"]["rack_inlet_max_c"] == pytest.approx(d.hold.rack_inlet_max_c if d.hold else math.nan)


def test_what_if_moves_are_consistent_with_the_chosen_optimum() -> None:
    d = optimised()
    assert d.chosen is not None
    chosen_power = d.chosen.cooling_power_kw
    feasible = [r for r in d.what_if if r["rack_inlet_max_c"] + 2 * r["rack_inlet_std_c"] < 27.0
                and all(abs(r["setpoints"][k] - d.previous[k]) <= 0.5 + (0.5 if k == "cw_supply_sp_c" else 0) + 1e-9
                        for k in SETPOINT_ROLES)]
    # no reachable, safe one-step move is predicted to beat the chosen vector by more than the search noise
    assert all(r["cooling_power_kw"] >= chosen_power - 0.01 * chosen_power for r in feasible)


def test_skipping_what_if_reuses_the_search_predictions() -> None:
    with_table = optimised()
    without = decide(config("[optimizer]\nwhat_if = false\n", mode="auto"), window(), NOW, PhysicsForecaster(),
                     START_SETPOINTS)
    assert without.what_if == () and without.new == with_table.new
    assert without.chosen == with_table.chosen and without.hold == with_table.hold


def test_fallback_explanation_says_why_without_a_table() -> None:
    d = decide(config(mode="auto"), window(), later(30), PhysicsForecaster(), START_SETPOINTS)
    text = render(d)
    assert "outcome fallback (bad_data)" in text and "freshness" in text
    assert "no what-if table" in text


@pytest.mark.parametrize("mode", ["auto", "advisory", "rules", "manual"])
def test_metrics_accept_every_decision(mode: str) -> None:
    text = "[setpoints.chw_supply_sp_c]\npin_c = 10.0\n" if mode == "manual" else ""
    d = decide(config(text, mode=mode), window(), NOW, PhysicsForecaster(), START_SETPOINTS)
    registry = CollectorRegistry()
    metrics = CoolpilotMetrics(registry)
    metrics.observe_decision(**d.metrics_fields())
    expected_mode = mode
    assert registry.get_sample_value("coolpilot_mode", {"mode": expected_mode}) == 1.0
    fallback = registry.get_sample_value("coolpilot_fallback_active")
    assert fallback == (1.0 if d.outcome == "fallback" else 0.0)
