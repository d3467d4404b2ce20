"""Test helpers: run a real Prometheus server on loopback and query it.

`running_prometheus` writes a temporary config that scrapes the given targets every
second, starts the Debian ``prometheus`` binary on a free 127.0.0.1 port with its own
storage directory, waits (bounded) until it is ready, and stops it afterwards.
`wait_for_series` polls the HTTP API until a query returns data or a deadline passes,
so tests never sleep for a fixed time.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

requires_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus binary not installed (Debian package `prometheus`; scripts/bootstrap.sh)"
)
requires_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; scripts/bootstrap.sh)"
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (callers retry if it gets taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PrometheusServer:
    """A running test Prometheus: its base URL and files."""

    url: str
    port: int
    config_path: Path
    data_dir: Path
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data`` or raises with Prometheus's error."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the list of result samples (empty when nothing matches)."""
        data = self.api("query", query=promql)
        result = data["result"]
        return result if isinstance(result, list) else [result]

    def wait_for_series(self, promql: str, timeout_s: float = 30.0, poll_s: float = 0.25) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns samples; fail the test at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                targets = self.api("targets")
                raise AssertionError(f"no data for {promql!r} within {timeout_s} s; targets: {targets}")
            time.sleep(poll_s)


def _config(targets: Sequence[str], job: str, scrape_interval_s: float, rule_files: Sequence[Path],
            sd_files: Sequence[Path] = ()) -> str:
    rules = "".join(f"  - {json.dumps(str(p))}\n" for p in rule_files)
    interval = f"{max(round(scrape_interval_s * 1000), 1)}ms"
    discovery = (  # file-based service discovery (coolpilot fleet sd) instead of fixed targets
        "    file_sd_configs:\n"
        f"      - files: {json.dumps([str(p) for p in sd_files])}\n"
        "        refresh_interval: 1s\n"
    ) if sd_files else f"    static_configs:\n      - targets: {json.dumps(list(targets))}\n"
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + "scrape_configs:\n"
        f"  - job_name: {json.dumps(job)}\n"
        + discovery
    )


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"prometheus not ready within {timeout_s} s; log:\n{log_path.read_text()[-3000:]}")


@contextmanager
def running_prometheus(
    tmp_dir: Path,
    targets: Sequence[str],
    *,
    job: str = "coolpilot",
    scrape_interval_s: float = 1.0,
    rule_files: Sequence[Path] = (),
    startup_timeout_s: float = 60.0,
    attempts: int = 3,
    sd_files: Sequence[Path] = (),
) -> Iterator[PrometheusServer]:
    """Run ``prometheus`` scraping ``targets`` ("host:port"), or the targets of file_sd
    ``sd_files`` when given, on 127.0.0.1:<free port>."""
    if PROMETHEUS is None:
        pytest.skip("prometheus binary not installed")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    config_path = tmp_dir / "prometheus.yml"
    config_path.write_text(_config(targets, job, scrape_interval_s, rule_files, sd_files))
    log_path = tmp_dir / "prometheus.log"
    for attempt in range(attempts):
        port = free_port()
        data_dir = tmp_dir / f"data{attempt}"
        url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={data_dir}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            if not _wait_ready(proc, url, log_path, startup_timeout_s):
                if "address already in use" in log_path.read_text():
                    continue  # the free port was taken meanwhile: try another
                break
            yield PrometheusServer(url, port, config_path, data_dir, log_path)
            return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    raise AssertionError(f"prometheus failed to start; log:\n{log_path.read_text()[-3000:]}")
