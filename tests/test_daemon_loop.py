"""The daemon in-process, closed loop around the simulated plant, on a real SQLite database.

The rig (plant, history, daemon parts) is `tests._fault_rig`, shared with the
fault-injection tests (tests/test_faults_*.py).

Cycles run in accelerated time (`PacedTrigger`) or on the wall clock through APScheduler
(`WallClockTrigger`); the model is the tests' physics-shaped forecaster, so nothing here
trains. Waits are bounded polls on events, never fixed sleeps.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.decision import Decision
from controller.service.config_watch import ConfigHolder
from controller.service.daemon import CycleReport, Daemon, PacedTrigger, WallClockTrigger
from controller.service.retraining import TrainingOutcome
from controller.service.sdnotify import SystemdNotifier
from db.roles import SETPOINT_ROLES
from db.schema import setpoint_commands
from tests._ctl_support import PhysicsForecaster
from tests._fault_rig import DEADLINE_S, Rig, make_rig, wait_for, write_config


@pytest.fixture
def rig(sqlite_engine: sa.Engine, tmp_path: Path) -> Rig:
    return make_rig(sqlite_engine, tmp_path)


@pytest.fixture
def any_rig(engine: sa.Engine, tmp_path: Path) -> Rig:
    """The rig on each backend (SQLite and PostgreSQL)."""
    return make_rig(engine, tmp_path)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.2)
        yield str(path), sock


def drain(sock: socket.socket) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    while True:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            return messages
        messages.append(dict(line.split("=", 1) for line in data.splitlines()))


def test_closed_loop_records_applies_and_publishes_every_cycle(
        any_rig: Rig, notify_socket: tuple[str, socket.socket]) -> None:
    rig = any_rig
    address, sock = notify_socket
    reports: list[CycleReport] = []
    daemon = rig.daemon(PacedTrigger(cycles_per_s=0, max_cycles=20, quality_every_cycles=5),
                        forecaster=PhysicsForecaster(), on_cycle=[reports.append],
                        notifier=SystemdNotifier(address))
    assert daemon.run(install_signals=False) == 0

    assert daemon.cycles == 20 and [r.n for r in reports] == list(range(1, 21))
    rows = rig.decision_rows()
    assert len(rows) == 20
    last: Decision | None = reports[-1].decision
    assert last is not None and last.actuation == "sent"
    assert rig.plant.setpoints() == pytest.approx(last.new)  # what was decided reached the plant
    assert daemon.last_applied == pytest.approx(last.new)
    with rig.engine.connect() as conn:
        sent = conn.execute(sa.select(sa.func.count()).select_from(setpoint_commands)
                            .where(setpoint_commands.c.status == "sent")).scalar()
    assert sent == 20 * len(SETPOINT_ROLES)
    outcomes = [r.decision.outcome for r in reports if r.decision is not None]
    assert "optimised" in outcomes or "hold" in outcomes, outcomes

    total = sum(rig.value("coolpilot_decisions_total", outcome=o)
                for o in ("optimised", "hold", "fallback", "manual", "error"))
    assert total == 20
    assert rig.value("coolpilot_mode", mode="auto") == 1.0 and rig.value("coolpilot_mode", mode="rules") == 0.0
    for role in SETPOINT_ROLES:
        assert rig.value("coolpilot_setpoint_celsius", role=role) == pytest.approx(last.new[role])
    assert rig.value("coolpilot_cycle_duration_seconds_count") == 20
    since_last_s = daemon.parts.wall_clock() - rig.value("coolpilot_last_cycle_success_timestamp_seconds")
    assert 0.0 <= since_last_s < 600.0  # health is wall-clock time, not the plant's (last.ts)
    assert 0.0 <= rig.value("coolpilot_data_age_seconds") <= 300.0
    assert rig.value("coolpilot_model_info", version="physics-test-1", kind="forecaster") == 1.0
    # forecasts made an hour (12 cycles) earlier were checked against the plant's readings
    assert rig.value("coolpilot_forecast_relative_error_ratio_count") >= 1
    assert math.isfinite(rig.value("coolpilot_forecast_error_watts"))
    used_model = [r for r in reports if r.decision is not None and r.decision.chosen is not None]
    assert used_model and all(r.savings_vs_rules_kw is not None for r in used_model)
    assert math.isfinite(rig.value("coolpilot_job_last_duration_seconds", job="quality"))

    messages = drain(sock)
    assert messages[0]["READY"] == "1" and "mode auto" in messages[0]["STATUS"]
    assert messages[-1]["STOPPING"] == "1"


def test_daemon_metrics_are_prefixed_documented_and_pass_naming_rules(rig: Rig) -> None:
    rig.daemon(PacedTrigger(cycles_per_s=0, max_cycles=1)).run(install_signals=False)
    body = generate_latest(rig.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    ours = {n: f for n, f in families.items() if n.startswith(("coolpilot_job", "coolpilot_data_quality"))}
    assert set(ours) >= {"coolpilot_job_overruns", "coolpilot_job_skipped_runs", "coolpilot_job_last_duration_seconds",
                         "coolpilot_data_quality_issues"}
    for name, fam in families.items():
        if name.endswith("_created"):
            continue
        assert name.startswith("coolpilot_"), name
        assert re.search(r"\[[^\]]+\]$", fam.documentation.strip()), f"{name}: HELP must end with [unit]"


class BlockingHook:
    """Blocks inside cycle ``block_at`` until released (to act while a cycle is running)."""

    def __init__(self, block_at: int) -> None:
        self.block_at = block_at
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def before_cycle(self) -> None:
        self.calls += 1
        if self.calls == self.block_at:
            self.entered.set()
            assert self.release.wait(DEADLINE_S), "never released"

    def after_cycle(self, decision: Decision | None) -> None:
        return None


@pytest.mark.parametrize("trigger", [PacedTrigger(cycles_per_s=0), WallClockTrigger(interval_s=300.0)],
                         ids=["paced", "wall-clock"])
def test_sigterm_during_a_cycle_finishes_that_cycle_and_exits(
        rig: Rig, trigger: PacedTrigger | WallClockTrigger) -> None:
    block_at = 2 if isinstance(trigger, PacedTrigger) else 1
    hook = BlockingHook(block_at)
    daemon = rig.daemon(trigger, hooks=[hook])
    previous_handler = signal.getsignal(signal.SIGTERM)

    def terminate_mid_cycle() -> None:
        assert hook.entered.wait(DEADLINE_S)
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: daemon.stop_requested, "the SIGTERM flag")
        hook.release.set()

    helper = threading.Thread(target=terminate_mid_cycle)
    helper.start()
    try:
        assert daemon.run() == 0
    finally:
        hook.release.set()
        helper.join()
    assert daemon.cycles == block_at  # the running cycle finished; no new one began
    rows = rig.decision_rows()
    assert len(rows) == block_at and json.loads(rows[-1].new_json) == pytest.approx(rig.plant.setpoints())
    assert signal.getsignal(signal.SIGTERM) is previous_handler


def test_training_runs_beside_the_cycle_and_never_blocks_it(rig: Rig) -> None:
    rig.holder = ConfigHolder(write_config(rig.holder.path, "rules"))
    started, release = threading.Event(), threading.Event()
    seen: dict[str, int] = {}
    daemon_box: list[Daemon] = []

    def retrain(cancel: threading.Event) -> TrainingOutcome:
        if not started.is_set():
            started.set()
            assert release.wait(DEADLINE_S) or cancel.is_set()
        return TrainingOutcome(ok=True, duration_s=1.0, finished_ts_s=1_700_000_000.0, version="v2",
                               promoted=True, cooling_power_mae_kw=5.0, rack_inlet_mae_c=0.3)

    def on_cycle(report: CycleReport) -> None:
        daemon = daemon_box[0]
        if started.is_set() and "at_start" not in seen:
            seen["at_start"] = report.n
        if "at_start" in seen and report.n >= seen["at_start"] + 8 and not release.is_set():
            seen["while_training"] = report.n - seen["at_start"]
            release.set()
        if daemon.trainings and "done" not in seen:
            seen["done"] = report.n
        if "done" in seen and report.n >= seen["done"] + 2:
            daemon.request_stop()

    daemon = rig.daemon(PacedTrigger(cycles_per_s=0, retrain_every_cycles=2), on_cycle=[on_cycle], retrain=retrain)
    daemon_box.append(daemon)
    assert daemon.run(install_signals=False) == 0
    assert seen["while_training"] >= 8  # cycles kept coming while training was busy
    assert daemon.monitor.skipped["training"] >= 1  # submissions during the run were refused, not queued up
    assert rig.value("coolpilot_training_runs_total", result="success") >= 1
    assert rig.value("coolpilot_last_training_success_timestamp_seconds") == 1_700_000_000.0
    assert rig.value("coolpilot_model_validation_rack_inlet_mae_celsius") == pytest.approx(0.3)


def test_an_overrunning_cycle_is_reported_and_the_next_cycles_still_run(rig: Rig) -> None:
    rig.holder = ConfigHolder(write_config(rig.holder.path, "rules"))
    box: list[Daemon] = []

    class SlowOnce:
        calls = 0

        def before_cycle(self) -> None:
            self.calls += 1
            if self.calls == 2:  # run past the 0.5 s budget of 2 cycles per second
                wait_for(lambda: (box[0].monitor.running_for_s("cycle") or 0.0) > 0.6, "an overrun")

        def after_cycle(self, decision: Decision | None) -> None:
            return None

    daemon = rig.daemon(PacedTrigger(cycles_per_s=2.0, max_cycles=4), hooks=[SlowOnce()])
    box.append(daemon)
    assert daemon.run(install_signals=False) == 0
    assert daemon.cycles == 4 and len(rig.decision_rows()) == 4
    assert daemon.monitor.overruns["cycle"] >= 1
    assert rig.value("coolpilot_job_overruns_total", job="cycle") >= 1
