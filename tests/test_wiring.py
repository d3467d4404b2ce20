"""One wiring (`coolpilot.wiring.build_parts`) for `run`, the demo and the soak; one name per thing in metrics.

The soak backs the reliability figures, so it must run the parts a site runs: these
tests check from the source that every entry point builds its parts through
`build_parts` (nothing else constructs `DaemonParts`), and from `build_parts` itself
that the differences (the plant's clock and closing the loop around it) are only the
arguments given. The metrics, dashboard and alert rules use the config's mode names
and the decision's outcome and reason-code names.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.soak_faults import FlakyActuator, config_text
from controller.config import MODES, load_config
from controller.config_actuator import ActuatorSettings
from controller.decision import OUTCOMES, REASON_CODES, Outcome
from controller.seams import ActuationResult
from controller.service.actuators import DbActuator
from controller.service.metric_series import OUTCOMES as METRIC_OUTCOMES
from controller.service.metrics import CoolpilotMetrics
from coolpilot.harness.sim_bridge import PlantActuator, PlantBridge
from coolpilot.wiring import build_parts, plant_clock, utc_now
from db.records import insert_setpoint_commands
from tests._ctl_support import NOW, START_SETPOINTS, PhysicsForecaster, config, window

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("coolpilot", "controller", "forecasting", "db", "simulator", "benchmarks", "scripts")
ENTRY_POINTS = {"coolpilot/run_cli.py": "cmd_run", "coolpilot/demo.py": "run_demo", "benchmarks/soak.py": "run_soak"}
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "coolpilot.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "alerts_test.yml"
T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def calls(path: Path, name: str) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def module_calls(path: Path) -> dict[str, set[str]]:
    """Functions of ``path`` -> names of the module-level functions each calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    return {name: {c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            for name, fn in defs.items()}


def reaches(graph: Mapping[str, set[str]], start: str, target: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        if target in graph.get(fn, set()):
            return True
        todo.extend(graph.get(fn, set()) & set(graph))
    return False


def test_build_parts_is_the_only_place_daemon_parts_are_made() -> None:
    made = [str(p.relative_to(ROOT)) for folder in SOURCES for p in sorted((ROOT / folder).rglob("*.py"))
            if calls(p, "DaemonParts")]
    assert made == ["coolpilot/wiring.py"]


@pytest.mark.parametrize("path", sorted(ENTRY_POINTS))
def test_run_demo_and_soak_build_their_parts_with_build_parts(path: str) -> None:
    source = ROOT / path
    assert calls(source, "build_parts"), f"{path} does not call build_parts"
    assert reaches(module_calls(source), ENTRY_POINTS[path], "build_parts"), \
        f"{path}:{ENTRY_POINTS[path]} does not reach build_parts"
    text = source.read_text(encoding="utf-8")
    for own_wiring in ("DbActuator(", "DecisionRecorder(", "ChampionProvider(", "CoolpilotMetrics(", "PlantBridge(",
                       "PlantActuator(", "SystemdNotifier("):
        assert own_wiring not in text, f"{path} wires {own_wiring[:-1]} itself"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_the_soak_keeps_the_production_actuator_retries(tmp_path: Path) -> None:
    soak = load_config(write_config(tmp_path / "soak.toml", config_text("soak", 1.0)))
    assert soak.actuator.kind == "db"
    assert soak.actuator.retries == ActuatorSettings().retries > 0


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path / "coolpilot.toml", 'site_id = "w"\nmode = "auto"\n[metrics]\nenabled = false\n'
                        '[actuator]\nkind = "db"\nretries = 2\nretry_backoff_s = 0\n')


class Watch:
    """A caller's cycle hook."""

    def before_cycle(self) -> None:
        return None

    def after_cycle(self, decision: object) -> None:
        return None


class FakePlant:
    """Just enough of `simulator.plant.Plant` to be wired."""

    record_interval_s = 300.0

    def __init__(self) -> None:
        self.now = T0
        self.applied: list[dict[str, float]] = []

    def apply(self, setpoints: Mapping[str, float]) -> None:
        self.applied.append(dict(setpoints))

    def setpoints(self) -> dict[str, float]:
        return dict(START_SETPOINTS)

    def read(self) -> dict[str, float]:
        return {}

    def advance(self, seconds: float) -> None:
        return None


def test_at_a_site_the_parts_come_from_the_config_the_database_and_the_environment(
        sqlite_engine: sa.Engine, config_file: Path) -> None:
    insert_setpoint_commands(sqlite_engine, "w", T0, START_SETPOINTS, source="controller", status="sent")
    env = {"WATCHDOG_USEC": "4000000", "NOTIFY_SOCKET": "/run/none.sock"}
    with build_parts(config_file, engine=sqlite_engine, registry=CollectorRegistry(), clock=utc_now,
                     environ=env) as parts:
        assert parts.holder.config.site_id == "w" and parts.clock is utc_now
        assert isinstance(parts.actuator, DbActuator) and parts.actuator.retries == 2
        assert parts.last_applied == pytest.approx(START_SETPOINTS)
        assert parts.watchdog_interval_s == pytest.approx(2.0)
        assert parts.notifier.notify_socket == "/run/none.sock"
        assert tuple(parts.hooks) == () and parts.retrain is None


def test_against_a_plant_only_the_clock_and_the_plant_side_differ(sqlite_engine: sa.Engine,
                                                                   config_file: Path) -> None:
    insert_setpoint_commands(sqlite_engine, "w", T0, START_SETPOINTS, source="controller", status="sent")
    plant, flaky, watch = FakePlant(), FlakyActuator(), Watch()
    with build_parts(config_file, engine=sqlite_engine, registry=CollectorRegistry(), clock=plant_clock(plant),
                     plant=plant, actuator_layer=flaky.wrap, hooks=(watch,), environ={}) as parts:
        assert parts.clock() == T0
        assert plant.applied == [pytest.approx(START_SETPOINTS)]  # the plant still holds what was last sent
        assert isinstance(parts.actuator, PlantActuator) and parts.actuator.inner is flaky
        assert isinstance(flaky.inner, DbActuator) and flaky.inner.retries == 2  # the site's actuator, behind
        hooks = list(parts.hooks)
        assert hooks[0] is watch and isinstance(hooks[-1], PlantBridge)  # the bridge runs after the caller's
        assert parts.watchdog_interval_s is None and parts.notifier.notify_socket is None
        result = parts.actuator.send(dict(START_SETPOINTS), ts=T0, decision_id=None, reason="test")
        assert result == ActuationResult(ok=True, status="sent", sent=pytest.approx(START_SETPOINTS))


def test_build_parts_closes_the_actuator_it_opened(sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    path = write_config(tmp_path / "mqtt.toml",
                        'site_id = "w"\nmode = "auto"\n[metrics]\nenabled = false\n[actuator]\nkind = "mqtt"\n')
    with build_parts(path, engine=sqlite_engine, registry=CollectorRegistry(), clock=utc_now, environ={}) as parts:
        actuator: Any = parts.actuator
        actuator._client = closed = _Client()
    assert closed.disconnected and actuator._client is None


class _Client:
    disconnected = False

    def disconnect(self) -> None:
        self.disconnected = True

    def loop_stop(self) -> None:
        return None


# -- one name per thing ----------------------------------------------------------------

def test_metric_label_sets_are_the_config_modes_and_the_decision_outcomes_and_reasons() -> None:
    assert set(OUTCOMES) == set(get_args(Outcome))
    assert (*OUTCOMES, "error") == METRIC_OUTCOMES
    assert "no_saving" not in REASON_CODES and "actuator_error" not in REASON_CODES
    registry = CollectorRegistry()
    metrics = CoolpilotMetrics(registry)
    assert metrics.modes == MODES and metrics.fallback_reasons == REASON_CODES


@pytest.mark.parametrize("mode", MODES)
def test_metrics_use_the_config_mode_and_the_decision_outcome(mode: str) -> None:
    from controller.cycle import decide

    text = "[setpoints.chw_supply_sp_c]\npin_c = 10.0\n" if mode == "manual" else ""
    d = decide(config(text, mode=mode), window(), NOW, PhysicsForecaster(), START_SETPOINTS)
    registry = CollectorRegistry()
    CoolpilotMetrics(registry).observe_decision(**d.metrics_fields())
    assert registry.get_sample_value("coolpilot_mode", {"mode": mode}) == 1.0
    assert registry.get_sample_value("coolpilot_decisions_total", {"outcome": d.outcome}) == 1.0
    body = generate_latest(registry).decode()
    assert 'mode="ai"' not in body
    for old in ("applied", "advised", "unchanged"):
        assert f'outcome="{old}"' not in body


def label_values(text: str, label: str) -> set[str]:
    return set(re.findall(rf'\b{label}\s*=~?\s*\\?"([^"\\]*)\\?"', text))


def test_dashboard_and_alert_rules_name_only_modes_outcomes_and_reasons_that_exist() -> None:
    dashboard = DASHBOARD.read_text(encoding="utf-8")
    rules = ALERTS.read_text(encoding="utf-8") + ALERT_TESTS.read_text(encoding="utf-8")
    assert "coolpilot_mode{" in dashboard and 'coolpilot_mode{mode="rules"}' in rules  # the scan sees them
    for text in (dashboard, rules):
        assert label_values(text, "mode") <= set(MODES)
        assert label_values(text, "outcome") <= set(METRIC_OUTCOMES)
        assert label_values(text, "reason") <= set(REASON_CODES) | {"drift"}
    descriptions = " ".join(p.get("description", "") for p in json.loads(dashboard)["panels"])
    assert "ai (" not in descriptions
    for old in ("applied,", "advised", "unchanged"):
        assert old not in descriptions
    for outcome in OUTCOMES:
        assert outcome in descriptions

