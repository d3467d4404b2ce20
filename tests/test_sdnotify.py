"""sd_notify sender against real AF_UNIX datagram sockets made in the test."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.service.sdnotify import SystemdNotifier, watchdog_interval_s


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    assert data.endswith("\n")
    return dict(line.split("=", 1) for line in data.splitlines())


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield str(path), sock


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"coolpilot-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield "@" + name, sock


def test_lifecycle_messages_on_a_path_socket(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    n = SystemdNotifier.from_environ({"NOTIFY_SOCKET": address})
    assert n.enabled
    assert n.ready(status="serving")
    assert receive(sock) == {"READY": "1", "STATUS": "serving"}
    assert n.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}
    assert n.stopping()
    assert receive(sock) == {"STOPPING": "1"}
    assert n.status("training model v3")
    assert receive(sock) == {"STATUS": "training model v3"}
    assert n.extend_timeout(90)
    assert receive(sock) == {"EXTEND_TIMEOUT_USEC": "90000000"}


def test_reloading_carries_monotonic_usec(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    n = SystemdNotifier(address, monotonic_ns=lambda: 123_456_789_012)
    assert n.reloading()
    assert receive(sock) == {"RELOADING": "1", "MONOTONIC_USEC": "123456789"}


def test_reloading_uses_the_real_monotonic_clock(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    SystemdNotifier(address).reloading()
    after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before_us <= int(receive(sock)["MONOTONIC_USEC"]) <= after_us


def test_no_op_without_notify_socket() -> None:
    n = SystemdNotifier.from_environ({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.reloading() is False


def test_send_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = SystemdNotifier(str(tmp_path / "nobody-listens.sock"))
    with caplog.at_level(logging.WARNING, logger="controller.service.sdnotify"):
        assert n.watchdog() is False
    assert "nobody-listens.sock" in caplog.text


def test_relative_socket_name_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.service.sdnotify"):
        n = SystemdNotifier("relative/notify.sock")
    assert not n.enabled
    assert "neither a path nor an abstract name" in caplog.text


def test_multi_line_value_is_refused(abstract_socket: tuple[str, socket.socket]) -> None:
    address, _ = abstract_socket
    with pytest.raises(ValueError, match="STATUS must be one line"):
        SystemdNotifier(address).status("two\nlines")


def test_watchdog_interval() -> None:
    pid = os.getpid()
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(pid)}) == 60.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(pid + 1)}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
