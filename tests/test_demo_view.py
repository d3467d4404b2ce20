"""What the demo shows: the savings share with its running length and interval, a rejected
config reload, rules mode as the operator's choice, the summary after a broken pipe, and
the previous log kept. Pure parts and the demo's own stats, without running the demo."""

from __future__ import annotations

import copy
import io
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from controller.config import Config
from controller.decision import Decision, Outcome
from controller.service.config_watch import ReloadResult
from controller.service.daemon import CycleReport
from coolpilot.demo import RULES_MODE, DemoStats, print_summary, rotate_log, running_saving, summary_text
from coolpilot.harness.history import rules_decide
from coolpilot.harness.sim_bridge import RulesTwin
from coolpilot.live_view import render
from simulator.plant_sim import make_plant


def test_running_saving_is_the_energy_ratio_with_an_interval_that_narrows_with_hours() -> None:
    rng = np.random.default_rng(0)
    rules = 100.0 + rng.normal(0.0, 5.0, 200)
    ours = rules * (1 - 0.05) + rng.normal(0.0, 2.0, 200)  # 5 % saving, hour-to-hour noise
    share, ci = running_saving(rules[:26], ours[:26])
    assert share == pytest.approx(100.0 * (rules[:26] - ours[:26]).sum() / rules[:26].sum())
    assert 0.0 < ci < 5.0
    _, ci_long = running_saving(rules, ours)
    assert ci_long < ci  # more hours, a narrower interval
    assert math.isnan(running_saving(rules[:2], ours[:2])[1])  # too early to say
    assert math.isnan(running_saving([], [])[0])


def test_correlated_hours_widen_the_interval() -> None:
    rng = np.random.default_rng(1)
    rules = np.full(48, 100.0)
    noise = rng.normal(0.0, 2.0, 48)
    drift = np.convolve(rng.normal(0.0, 2.0, 60), np.ones(12) / np.sqrt(12), mode="valid")[:48]
    _, ci_white = running_saving(rules, rules * 0.95 + noise)
    _, ci_red = running_saving(rules, rules * 0.95 + drift * noise.std() / drift.std())
    assert ci_red > ci_white


def stats() -> DemoStats:
    plant = make_plant(seed=0)
    twin = RulesTwin(copy.deepcopy(plant), rules_decide("tuned", Config(site_id="demo").envelope()))
    return DemoStats(plant, twin, 27.0)


def decision(outcome: Outcome, reason: str | None) -> Decision:
    return Decision(ts=datetime(2023, 7, 1, tzinfo=UTC), site_id="demo", mode="rules" if reason == "mode_rules"
                    else "auto", outcome=outcome, reason="test", previous={}, new={}, reason_code=reason)


def test_the_live_view_shows_the_interval_hours_a_rejected_reload_and_rules_mode_apart() -> None:
    s = stats()
    s.hourly = [(0.0, 0.0), *[(100.0 * h, 96.0 * h + (1.0 if h % 2 else 0.0)) for h in range(1, 27)]]
    s.cycles_metered = 26 * 12
    cycles: tuple[tuple[Outcome, str | None], ...] = (("fallback", "mode_rules"), ("fallback", "mode_rules"), ("fallback", "ood"),
                                                      ("optimised", None))
    for outcome, reason in cycles:
        s.on_cycle(CycleReport(1, decision(outcome, reason), 0.1, None))
    s.reload = ReloadResult(reload_ok=False, changed=False, error="coolpilot.toml line 3: mode 'fast' is not one of")
    text = "\n".join(render(s.status(None, "rules", "v1", None)))
    assert "after 26 h" in text and "\u00b1" in text
    assert "config reload rejected" in text and "line 3" in text
    assert s.outcomes[RULES_MODE] == 2 and s.outcomes["fallback"] == 1
    assert dict(s.fallbacks) == {"ood": 1}  # the operator's rules mode is not a fallback
    share, ci, hours = s.saving_share()
    assert hours == 26 and math.isfinite(ci) and share == pytest.approx(100.0 * (2600 - 2496) / 2600)


def test_the_summary_survives_a_closed_pipe_and_the_old_log_is_kept(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader (e.g. `| tee`) died with the same Ctrl-C
    out = os.fdopen(write_fd, "w")
    err = io.StringIO()
    print_summary("CoolPilot demo: 12 cycles", out, err)
    assert "CoolPilot demo: 12 cycles" in err.getvalue()
    out.close()

    log = tmp_path / "demo.log"
    log.write_text("first run\n")
    rotate_log(log)
    assert (tmp_path / "demo.log.1").read_text() == "first run\n" and not log.exists()


def test_the_summary_text_gives_the_share_with_its_interval_and_hours() -> None:
    energy = {"it_kwh": 1000.0, "cooling_kwh": 200.0, "facility_kwh": 1270.0}
    summary = {"cycles": 312, "simulated_hours": 26.0, "run_seconds": 30.0, "setup_seconds": 40.0, "mode": "auto",
               "energy_kwh": {"coolpilot": energy, "rules": {**energy, "cooling_kwh": 206.4}},
               "cooling_savings_kwh": 6.4, "cooling_savings_pct": 3.1, "cooling_savings_ci95_pct": 2.0,
               "cooling_savings_hours": 26.0, "pue": {"coolpilot": 1.27, "rules": 1.276}, "outcomes": {},
               "fallbacks": {}, "rack_inlet_max_c": {"coolpilot": 24.0, "rules": 24.0}, "rack_inlet_limit_c": 27.0,
               "records_above_limit": {"coolpilot": 0, "rules": 0}, "database": "sqlite:///d.db", "site": "demo"}
    text = summary_text(summary)
    assert "(3.1 % \u00b1 2.0 (95 %), over 26 complete hours)" in text
    assert "PUE (facility / IT energy): CoolPilot 1.270" in text
