"""`coolpilot run` as a real process: signals, systemd notifications, restart, Prometheus.

The daemon runs on the wall clock in rules mode (these tests are about its life, not
its model): its first cycle runs at start, so each test waits for that cycle's
decision row, then acts. Waits are bounded polls.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from db.engine import make_engine
from db.ingest import write_wide
from db.schema import decisions
from tests._ctl_support import START_SETPOINTS, window
from tests.prom_helpers import PROMTOOL, free_port, requires_prometheus, requires_promtool, running_prometheus

SITE = "proc"
ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 60.0
MAX_STEP_K = {"chw_supply_sp_c": 0.5, "supply_air_sp_c": 0.5, "cw_supply_sp_c": 1.0}  # config defaults


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S,
             proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for {what}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path | None) -> str:
    return "" if log is None or not log.exists() else log.read_text()[-3000:]


def write_config(path: Path, mode: str = "rules", metrics_port: int | None = None, extra: str = "") -> None:
    """Atomically (rename) so a reload never reads half a file."""
    metrics = f"[metrics]\nport = {metrics_port}\n" if metrics_port else "[metrics]\nenabled = false\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f'site_id = "{SITE}"\nmode = "{mode}"\n{extra}{metrics}[actuator]\nkind = "db"\nretries = 0\n',
                   encoding="utf-8")
    tmp.chmod(0o600)
    os.replace(tmp, path)


@pytest.fixture
def site_db(sqlite_url: str) -> str:
    """Two hours of fresh readings ending now, with the measured setpoints at START_SETPOINTS."""
    engine = make_engine(sqlite_url)
    try:
        write_wide(engine, window(datetime.now(UTC).replace(microsecond=0)), site=SITE)
    finally:
        engine.dispose()
    return sqlite_url


class Daemon:
    """A running `python -m coolpilot.cli run` with its log file."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def wait_until(self, predicate: Callable[[], Any], what: str) -> Any:
        return wait_for(predicate, what, proc=self.proc, log=self.log)

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not stop within {DEADLINE_S} s:\n{_tail(self.log)}") from None


@contextmanager
def running_daemon(config: Path, db_url: str, tmp_path: Path, env: dict[str, str] | None = None,
                   name: str = "daemon", args: Sequence[str] = ()) -> Iterator[Daemon]:
    log = tmp_path / f"{name}.log"
    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    environ.update(env or {})
    environ["COOLPILOT_MODELS_DIR"] = str(tmp_path / "models")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "coolpilot.cli", "run", "--config", str(config),
                                 "--db", db_url, *args], cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    daemon = Daemon(proc, log)
    try:
        yield daemon
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def decision_rows(db_url: str) -> list[dict[str, Any]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(decisions).order_by(decisions.c.id))]
    finally:
        engine.dispose()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def sample(body: str, series: str) -> float:
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {series} in the scrape")


class Notifications:
    """The systemd side of sd_notify: a datagram socket that collects messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.seen: list[dict[str, str]] = []

    def poll(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                return self.seen
            self.seen.append(dict(line.split("=", 1) for line in data.splitlines()))

    def after(self, index: int, key: str) -> dict[str, str] | None:
        """The first message from ``index`` on that carries ``key``."""
        return next((m for m in self.poll()[index:] if key in m), None)


def test_sighup_reloads_a_valid_config_keeps_the_last_good_one_and_sigterm_stops(
        site_db: str, tmp_path: Path) -> None:
    config = tmp_path / "coolpilot.toml"
    port = free_port()
    write_config(config, "rules", port)
    notes = Notifications(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notes.path), "WATCHDOG_USEC": "400000"}
    with running_daemon(config, site_db, tmp_path, env) as d:
        ready = d.wait_until(lambda: notes.after(0, "READY"), "READY=1")
        assert "mode rules" in ready["STATUS"]
        d.wait_until(lambda: decision_rows(site_db), "the first cycle")
        d.wait_until(lambda: notes.after(0, "WATCHDOG"), "a watchdog ping")

        mark = len(notes.poll())
        write_config(config, "advisory", port)
        d.proc.send_signal(signal.SIGHUP)
        reloading = d.wait_until(lambda: notes.after(mark, "RELOADING"), "RELOADING=1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        after = notes.seen.index(reloading)
        done = d.wait_until(lambda: notes.after(after, "READY"), "READY=1 after the reload")
        assert "mode advisory" in done["STATUS"]

        mark = len(notes.poll())
        write_config(config, "advisory", port, extra="[safety]\nk_sigma = -1.0\n")
        d.proc.send_signal(signal.SIGHUP)
        reloading = d.wait_until(lambda: notes.after(mark, "RELOADING"), "RELOADING=1 for the bad file")
        after = notes.seen.index(reloading)
        done = d.wait_until(lambda: notes.after(after, "READY"), "READY=1 after the rejected reload")
        assert "rejected" in done["STATUS"] and "k_sigma" in done["STATUS"] and "mode advisory" in done["STATUS"]
        body = scrape(port)
        assert sample(body, "coolpilot_config_last_reload_successful") == 0.0
        assert sample(body, 'coolpilot_config_reloads_total{result="failure"}') >= 1
        assert sample(body, 'coolpilot_config_reloads_total{result="success"}') >= 1
        assert d.proc.poll() is None  # still running on the last good config

        mark = len(notes.poll())
        assert d.terminate() == 0
        assert notes.after(mark, "STOPPING") is not None
    log = (tmp_path / "daemon.log").read_text()
    assert "config reload rejected, previous config stays in force" in log and "Traceback" not in log


def test_a_restart_resumes_from_the_last_applied_setpoints_without_a_jump(site_db: str, tmp_path: Path) -> None:
    config = tmp_path / "coolpilot.toml"
    write_config(config, "rules")
    with running_daemon(config, site_db, tmp_path, name="first") as d:
        d.wait_until(lambda: decision_rows(site_db), "the first run's cycle")
        assert d.terminate() == 0
    (first,) = decision_rows(site_db)
    first_new = json.loads(first["new_json"])
    assert json.loads(first["previous_json"]) == pytest.approx(START_SETPOINTS)  # measured: nothing applied yet
    assert first_new != pytest.approx(START_SETPOINTS)  # the rules moved (by one rate-limited step)

    with running_daemon(config, site_db, tmp_path, name="second") as d:
        d.wait_until(lambda: len(decision_rows(site_db)) >= 2, "the second run's cycle")
        assert d.terminate() == 0
    second = decision_rows(site_db)[1]
    # The readings still show the old measured setpoints; the reference is what was last applied.
    assert json.loads(second["previous_json"]) == pytest.approx(first_new)
    second_new = json.loads(second["new_json"])
    for role, step in MAX_STEP_K.items():
        assert abs(second_new[role] - first_new[role]) <= step + 1e-9


@requires_promtool
@requires_prometheus
def test_prometheus_scrapes_a_running_daemon_and_promtool_accepts_its_metrics(
        site_db: str, tmp_path: Path) -> None:
    config = tmp_path / "coolpilot.toml"
    port = free_port()
    write_config(config, "rules", port)
    with running_daemon(config, site_db, tmp_path) as d:
        d.wait_until(lambda: decision_rows(site_db), "the first cycle")
        body = d.wait_until(lambda: (lambda b: b if "coolpilot_last_cycle_success_timestamp_seconds 0.0" not in b
                                     else None)(scrape(port)), "a published cycle")
        assert PROMTOOL is not None
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
            check.stdout + check.stderr
        with running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"]) as prom:
            (mode,) = prom.wait_for_series('coolpilot_mode{job="coolpilot", mode="rules"}')
            assert mode["value"][1] == "1"
            (fallbacks,) = prom.wait_for_series('coolpilot_fallbacks_total{reason="mode_rules"}')
            assert float(fallbacks["value"][1]) >= 1
            (last,) = prom.wait_for_series("coolpilot_last_cycle_success_timestamp_seconds > 0")
            assert abs(float(last["value"][1]) - time.time()) < 600
        assert d.terminate() == 0
