"""The decision cycle: modes, each fallback reason, the hot guard and smooth transfers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

import controller.cycle as cycle
from controller.decision import Decision
from controller.optimizer import OptimisationResult
from controller.rules import rule_setpoints
from controller.safety import gate
from controller.seams import ActuationResult
from db.engine import DatabaseError
from db.psychro import wetbulb_c
from db.query import WideFrame
from db.roles import SETPOINT_ROLES
from tests._ctl_support import NOW, START_SETPOINTS, PhysicsForecaster, config, later, window

PINNED = "[setpoints.chw_supply_sp_c]\npin_c = 10.0\n"


def decide(frame: pd.DataFrame | None = None, model: Any = "physics", last: Mapping[str, float] | None = None,
           now: datetime = NOW, text: str = "", mode: str = "auto", **kw: Any) -> Decision:
    forecaster = PhysicsForecaster() if model == "physics" else model
    return cycle.decide(config(text, mode=mode), window() if frame is None else frame, now, forecaster,
                        START_SETPOINTS if last is None else last, **kw)


def assert_safe(d: Decision, text: str = "") -> None:
    env = config(text).envelope()
    for role in SETPOINT_ROLES:
        b = env.bounds(role)
        assert math.isfinite(d.new[role]) and b.min_c <= d.new[role] <= b.max_c
        if role in d.previous:
            assert abs(d.new[role] - d.previous[role]) <= b.max_step_k + 1e-9
    assert d.new["supply_air_sp_c"] - d.new["chw_supply_sp_c"] >= env.min_coil_approach_k - 1e-9


def test_auto_optimises_within_limits_and_explains_itself() -> None:
    d = decide()
    assert d.outcome == "optimised" and d.reason_code is None and d.apply
    assert_safe(d)
    assert d.new["chw_supply_sp_c"] > START_SETPOINTS["chw_supply_sp_c"]
    assert d.chosen is not None and d.hold is not None and d.expected_saving_kw is not None
    assert d.expected_saving_kw == pytest.approx(d.hold.cooling_power_kw - d.chosen.cooling_power_kw)
    assert d.expected_saving_kw > 0.01 * d.hold.cooling_power_kw
    assert d.chosen.rack_inlet_max_c + 2 * d.chosen.rack_inlet_std_c < 27.0
    assert d.verification_ok and d.candidates_scored >= 4000
    assert len(d.what_if) == 6 and len(d.runner_ups) == 5 and d.binding
    assert d.model_version == "physics-test-1"
    assert d.objective == "cooling" and d.it_change_set_aside_kw is None


def test_the_decision_says_how_much_predicted_it_change_the_facility_search_set_aside() -> None:
    # IT power that rises with warmer chilled water while the inlet cools is a model error:
    # the search does not count it, and the recorded saving is the one the search counted.
    d = decide(model=PhysicsForecaster(it_per_k_chw_kw=5.0))
    assert d.outcome == "optimised" and d.objective == "facility"
    assert d.chosen is not None and d.hold is not None and d.expected_saving_kw is not None
    assert d.new["chw_supply_sp_c"] > d.previous["chw_supply_sp_c"]
    assert d.chosen.rack_inlet_max_c < d.hold.rack_inlet_max_c
    raw_it_kw = d.chosen.it_power_kw - d.hold.it_power_kw
    assert raw_it_kw > 1.0  # an IT cost with a cooler inlet: not physical
    assert d.it_change_set_aside_kw == pytest.approx(raw_it_kw)
    assert d.expected_saving_kw == pytest.approx(d.hold.cooling_power_kw - d.chosen.cooling_power_kw)
    assert "IT change not counted" in d.summary()


def test_advisory_decides_the_same_but_applies_nothing() -> None:
    auto, advisory = decide(), decide(mode="advisory")
    assert advisory.new == auto.new and advisory.outcome == "optimised"
    assert not advisory.apply and advisory.actuation == "not sent (advisory)"


def test_advisory_rate_limits_against_the_measured_setpoints() -> None:
    measured = {"chw_supply_sp_c": 8.0, "supply_air_sp_c": 19.0, "cw_supply_sp_c": 25.0}
    d = decide(window(setpoints=measured), mode="advisory", last=START_SETPOINTS)
    assert d.previous == measured


def test_a_setpoint_moved_by_someone_else_becomes_the_reference() -> None:
    moved = {**START_SETPOINTS, "supply_air_sp_c": 18.0}  # an operator lowered supply air at the BMS
    lagging = {**START_SETPOINTS, "chw_supply_sp_c": 9.5}  # the BMS has not yet shown our last command
    d = decide(window(setpoints=moved), last=START_SETPOINTS)
    assert d.previous == moved
    d = decide(window(), last=lagging)
    assert d.previous == lagging


def test_rules_mode_uses_the_tuned_rules_through_the_gate() -> None:
    d = decide(mode="rules")
    assert (d.outcome, d.reason_code) == ("fallback", "mode_rules")
    wetbulb = float(wetbulb_c(d.measured["outdoor_drybulb_c"], d.measured["outdoor_rh_pct"]))
    readings = {**d.measured, **START_SETPOINTS, "outdoor_wetbulb_c": wetbulb}  # derived when not measured
    expected = gate(rule_setpoints("tuned", readings, config().envelope()), START_SETPOINTS,
                    config().envelope()).setpoints
    assert d.new == pytest.approx(expected)
    assert d.model_version is None and d.chosen is None


def test_manual_mode_moves_to_the_pin_at_the_rate_limit_and_holds_the_rest() -> None:
    d = decide(mode="manual", text=PINNED)
    assert d.outcome == "manual"
    assert d.new == {**START_SETPOINTS, "chw_supply_sp_c": 9.5}
    d2 = decide(mode="manual", text=PINNED, last=d.new)
    assert d2.new["chw_supply_sp_c"] == 10.0


def test_pins_win_over_the_optimiser() -> None:
    d = decide(text="[setpoints.cw_supply_sp_c]\npin_c = 26.0\n")
    assert d.outcome == "optimised" and d.new["cw_supply_sp_c"] == 26.0


def test_holds_when_nothing_saves_enough() -> None:
    d = decide(text="[thresholds]\nmin_saving_pct = 60\n")
    assert d.outcome == "hold" and d.new == START_SETPOINTS and d.reason_code is None


class Raising(PhysicsForecaster):
    def predict(self, state, candidates):  # type: ignore[no-untyped-def]
        raise FloatingPointError("weights are NaN")


def cannot_load() -> None:
    raise OSError("artifact /var/lib/coolpilot/models/m1.safetensors: sha256 mismatch")


@pytest.mark.parametrize(
    ("kwargs", "code", "needle"),
    [
        ({"now": later(30)}, "bad_data", "rack_inlet_max_c: freshness"),
        ({"model": None}, "no_model", "no trained model"),
        ({"model": None, "problems": {"model": "cannot load model: sha256 mismatch"}}, "model_error", "sha256"),
        ({"model": Raising()}, "model_error", "FloatingPointError: weights are NaN"),
        ({"model": PhysicsForecaster(inlet_std_c=2.0)}, "uncertain", "rack-inlet std above"),
        ({"model": PhysicsForecaster(ood=4.0)}, "ood", "out-of-distribution"),
        ({"model": PhysicsForecaster(inlet_offset_k=8.0)}, "uncertain", "reaches the 27.0 C limit"),
        ({"frame": None, "problems": {"read": "cannot use database x: Connection refused"}}, "db_error", "Connection refused"),
    ],
)
def test_each_failure_falls_back_to_rules_with_its_reason(kwargs: dict[str, Any], code: str, needle: str) -> None:
    if kwargs.get("frame", "x") is None:
        kwargs["frame"] = pd.DataFrame()
    d = decide(**kwargs)
    assert (d.outcome, d.reason_code) == ("fallback", code), d.reason
    assert needle in d.reason and d.reason.startswith("rules (tuned): ")
    assert_safe(d)


def test_an_unsure_model_with_no_warming_takes_only_the_rules_cooling_moves() -> None:
    # supply air at 20 C, below the tuned rules' 23 C; chilled water at 8 C, below their
    # 10-12.5 C: every candidate is out of distribution, so the rules decide
    here = {"chw_supply_sp_c": 8.0, "supply_air_sp_c": 20.0, "cw_supply_sp_c": 28.0}
    full = decide(window(setpoints=here), model=PhysicsForecaster(ood=4.0), last=here,
                  text="[cycle]\nunsure_fallback = \"rules\"\n")
    assert (full.outcome, full.reason_code) == ("fallback", "ood")
    assert full.new["supply_air_sp_c"] > 20.0 and full.new["chw_supply_sp_c"] > 8.0  # the rules warm both
    text = "[cycle]\nunsure_fallback = \"no_warming\"\n"
    cautious = decide(window(setpoints=here), model=PhysicsForecaster(ood=4.0), last=here, text=text)
    assert (cautious.outcome, cautious.reason_code) == ("fallback", "ood")
    assert cautious.new["supply_air_sp_c"] == 20.0 and cautious.new["chw_supply_sp_c"] == 8.0  # held
    assert "unsure: no warming, held chw_supply_sp_c, supply_air_sp_c" in cautious.reason
    assert_safe(cautious, text)
    # the default, it_aware: supply air is held only where the model resolves that warmer air costs IT power
    servers = PhysicsForecaster(ood=4.0, it_per_k_inlet_kw=5.0)
    air = decide(window(setpoints=here), model=servers, last=here)
    assert air.new["supply_air_sp_c"] == 20.0  # the hall is not warmed
    assert air.new["chw_supply_sp_c"] == full.new["chw_supply_sp_c"]  # the plant side follows the rules
    assert air.reason.endswith("unsure: no warming, held supply_air_sp_c")
    flat = decide(window(setpoints=here), model=PhysicsForecaster(ood=4.0, it_per_k_chw_kw=0.0), last=here)
    assert flat.new == full.new and "no warming" not in flat.reason  # IT power does not respond: the rules
    cooler = {**here, "chw_supply_sp_c": 14.0}  # now the rules cool chilled water: taken
    taken = decide(window(setpoints=cooler), model=PhysicsForecaster(ood=4.0), last=cooler, text=text)
    assert taken.new["chw_supply_sp_c"] < 14.0 and taken.new["supply_air_sp_c"] == 20.0
    # bad data is not doubt: the rules decide in full
    stale = decide(window(setpoints=here), model=PhysicsForecaster(ood=4.0), last=here, text=text, now=later(30))
    assert stale.reason_code == "bad_data" and "no warming" not in stale.reason


def test_unknown_current_setpoints_write_nothing() -> None:
    # a step from unknown setpoints to a bound can trip chillers: hold, say why, send nothing
    frame = window().drop(columns=list(SETPOINT_ROLES))
    d = decide(frame, last={})
    assert d.reason_code == "setpoint_unknown" and "current setpoints unknown" in d.reason
    assert not d.apply and d.new == {} and d.actuation == "not sent (current setpoints unknown)"


def test_verification_veto_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cycle.optimise

    def out_of_bounds(*args: Any, **kwargs: Any) -> OptimisationResult:
        res = real(*args, **kwargs)
        bad = res.candidates.copy()
        assert res.selection.index is not None
        bad[res.selection.index, 0] = 30.0  # a broken optimiser proposing 30 C chilled water
        return replace(res, candidates=bad)

    monkeypatch.setattr(cycle, "optimise", out_of_bounds)
    d = decide()
    assert d.reason_code == "verification_veto" and not d.verification_ok
    assert any("chw_supply_sp_c: 30.000 C outside bounds" in v for v in d.violations)
    assert_safe(d)


def test_hot_rack_inlet_allows_only_cooling_moves_in_every_mode() -> None:
    hot = window(rack_inlet_c=26.8)
    for mode, text in (("auto", ""), ("rules", ""), ("manual", "[setpoints.supply_air_sp_c]\npin_c = 22.0\n")):
        d = decide(hot, mode=mode, text=text)
        assert d.hot_guard
        assert all(d.new[r] <= START_SETPOINTS[r] + 1e-9 for r in SETPOINT_ROLES), (mode, d.new)


def test_transfer_to_rules_is_rate_limited() -> None:
    far = {"chw_supply_sp_c": 14.5, "supply_air_sp_c": 23.5, "cw_supply_sp_c": 31.0}
    d = decide(window(setpoints=far), model=None, last=far)
    assert d.outcome == "fallback"
    assert_safe(d)


# -- run_cycle: the edges ---------------------------------------------------------------


@dataclass
class FrameSource:
    """A ReadingSource over an in-memory frame (the historian's contract, no database)."""

    frame: pd.DataFrame
    error: Exception | None = None

    def read_wide(self, roles: Any, start: datetime, end: datetime, freq: str = "5min") -> WideFrame:
        if self.error is not None:
            raise self.error
        part = self.frame.loc[(self.frame.index >= start) & (self.frame.index < end)].reindex(columns=list(roles))
        return WideFrame(part, {r: int(part[r].isna().sum()) for r in roles})


@dataclass
class ListRecorder:
    rows: list[Decision] = field(default_factory=list)

    def record(self, decision: Decision) -> int | None:
        self.rows.append(decision)
        return len(self.rows)

    def set_actuation(self, decision_id: int | None, decision: Decision) -> None:
        assert decision_id is not None
        self.rows[decision_id - 1] = decision


@dataclass
class ListActuator:
    ok: bool = True
    sent: list[dict[str, float]] = field(default_factory=list)

    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult:
        if not self.ok:
            return ActuationResult(ok=False, status="failed: BMS offline")
        self.sent.append(dict(setpoints))
        return ActuationResult(ok=True, status="sent", sent=dict(setpoints))


def run(mode: str = "auto", source: FrameSource | None = None, actuator: ListActuator | None = None,
        model: Any = None) -> tuple[Decision, ListRecorder, ListActuator]:
    recorder, act = ListRecorder(), actuator or ListActuator()
    ticks = iter(range(100))
    d = cycle.run_cycle(config(mode=mode), source or FrameSource(window(later(5))), model or PhysicsForecaster(),
                        act, recorder, lambda: NOW, START_SETPOINTS, timer=lambda: float(next(ticks)))
    return d, recorder, act


def test_run_cycle_records_sends_and_reports_what_was_sent() -> None:
    d, recorder, act = run()
    assert d.outcome == "optimised" and d.actuation == "sent" and d.sent == d.new
    assert act.sent == [d.new]
    assert recorder.rows == [d] and d.decision_id == 1
    assert d.duration_s is not None and d.duration_s > 0


def test_run_cycle_in_advisory_mode_sends_nothing() -> None:
    d, recorder, act = run(mode="advisory")
    assert act.sent == [] and d.sent == {} and recorder.rows[0].actuation == "not sent (advisory)"


def test_failed_actuation_is_reported_not_claimed() -> None:
    d, recorder, _ = run(actuator=ListActuator(ok=False))
    assert d.actuation == "failed: BMS offline" and d.sent == {}
    assert recorder.rows[0].actuation == "failed: BMS offline"


def test_a_raising_actuator_is_reported_as_failed() -> None:
    class Exploding(ListActuator):
        def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
                 reason: str) -> ActuationResult:
            raise ConnectionResetError("BMS gateway reset the connection")

    d, recorder, _ = run(actuator=Exploding())
    assert d.actuation == "failed: ConnectionResetError: BMS gateway reset the connection" and d.sent == {}
    assert recorder.rows[0].actuation == d.actuation


def test_database_failure_while_reading_falls_back_and_still_acts() -> None:
    source = FrameSource(window(), error=DatabaseError("cannot use database postgresql://u:***@h/db: timeout"))
    d, _, act = run(source=source)
    assert d.reason_code == "db_error" and "timeout" in d.reason
    assert d.hot_guard  # no readings: rack inlet unknown, so nothing may warm up
    assert act.sent == [d.new] and all(d.new[r] <= START_SETPOINTS[r] for r in SETPOINT_ROLES)


def test_model_provider_failure_is_a_model_error() -> None:
    d, _, _ = run(model=cannot_load)
    assert d.reason_code == "model_error" and "sha256 mismatch" in d.reason


def test_decision_row_round_trips() -> None:
    d = decide()
    row = {**d.to_row(), "id": 7}
    back = Decision.from_row(row)
    assert back.new == d.new and back.previous == d.previous and back.outcome == d.outcome
    assert back.chosen == d.chosen and back.what_if == tuple(d.what_if) and back.decision_id == 7
    assert np.isfinite(back.expected_saving_kw or math.nan)


@dataclass
class ColdTowerForecaster(PhysicsForecaster):
    """Believes condenser water can never be too cold (each K saves 5 kW): the trap the tower floor stops."""

    def predict(self, state: pd.DataFrame, candidates: np.ndarray) -> Any:
        fc = super().predict(state, candidates)
        return replace(fc, cooling_power_kw=fc.cooling_power_kw + 5.0 * (candidates[:, 2] - 18.0))


def test_the_optimiser_keeps_condenser_water_above_wetbulb_plus_the_tower_approach() -> None:
    last = {**START_SETPOINTS, "cw_supply_sp_c": 30.0}
    humid = window(setpoints=last)
    humid["outdoor_drybulb_c"] += 5.0  # about 30 C
    humid["outdoor_rh_pct"] = 95.0  # wet-bulb about 29 C
    wb = float(wetbulb_c(humid["outdoor_drybulb_c"].iloc[-1], 95.0))
    d = decide(humid, model=ColdTowerForecaster(), last=last, text="[optimizer]\nreversal_dwell_cycles = 0\n")
    # the floor (wet-bulb + 3 K) is above the cycle's rate-limited box [29, 31]: only 31 (or holding 30) is allowed
    assert wb + 3.0 > 31.0 and d.outcome in ("optimised", "hold")
    assert d.new["cw_supply_sp_c"] in (pytest.approx(30.0), pytest.approx(31.0))
    free = decide(humid, model=ColdTowerForecaster(), last=last,
                  text="[optimizer]\nreversal_dwell_cycles = 0\n[coupling]\nmin_tower_approach_k = 0.0\n")
    assert free.new["cw_supply_sp_c"] == pytest.approx(29.0)


def test_a_setpoint_does_not_reverse_its_latest_move_within_the_dwell() -> None:
    rising = window(setpoints={**START_SETPOINTS, "chw_supply_sp_c": 8.5})
    rising.loc[rising.index[-3:], "chw_supply_sp_c"] = 9.0  # moved up 0.5 K three rows ago
    class WantsColdWater(PhysicsForecaster):
        def predict(self, state: pd.DataFrame, candidates: np.ndarray) -> Any:
            fc = super().predict(state, candidates)
            return replace(fc, cooling_power_kw=fc.cooling_power_kw + 50.0 * candidates[:, 0])

    d = decide(rising, model=WantsColdWater())
    assert d.new["chw_supply_sp_c"] >= 9.0 - 1e-9  # may hold or rise, never fall back within 6 cycles
    free = decide(rising, model=WantsColdWater(), text="[optimizer]\nreversal_dwell_cycles = 0\n")
    assert free.new["chw_supply_sp_c"] == pytest.approx(8.5)
