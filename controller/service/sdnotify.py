"""systemd service notifications (sd_notify) without libsystemd.

The protocol is one datagram of newline-separated ``KEY=VALUE`` lines sent to the
AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a path, or an abstract name written with a
leading ``@``). It is stable and tiny, so a dependency is not worth it. When the
variable is unset (not under systemd, or ``Type=simple``) every call is a no-op that
returns False, and a failed send is logged and returned as False, never raised: a
notification must not take the control loop down.

systemd uses these to know when the daemon is up (``READY=1``), alive (``WATCHDOG=1``
from the main loop, at least every ``WatchdogSec``/2), reloading its config
(``RELOADING=1`` with ``MONOTONIC_USEC``, as ``Type=notify-reload`` requires) and
shutting down (``STOPPING=1``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def _address(notify_socket: str) -> str | bytes:
    """The socket address for sendto: abstract names ('@name') start with a NUL byte."""
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()
    return notify_socket


def watchdog_interval_s(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between watchdog pings: half of ``$WATCHDOG_USEC``, or None when off.

    Like sd_watchdog_enabled(), honours ``$WATCHDOG_PID``: when set to another process
    the watchdog is not ours. ``pid`` defaults to this process.
    """
    usec = environ.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    want_pid = environ.get("WATCHDOG_PID", "").strip()
    if want_pid and want_pid != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("sdnotify: ignoring WATCHDOG_USEC=%r: not an integer [us]", usec)
        return None
    return value / 2e6 if value > 0 else None


class SystemdNotifier:
    """Sends sd_notify messages to one socket; a no-op when ``notify_socket`` is None."""

    def __init__(
        self,
        notify_socket: str | None,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.notify_socket = notify_socket or None
        self._monotonic_ns = monotonic_ns
        if self.notify_socket is not None and not self.notify_socket.startswith(("/", "@")):
            log.warning("sdnotify: NOTIFY_SOCKET=%r is neither a path nor an abstract name; disabled",
                        self.notify_socket)
            self.notify_socket = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """The notifier systemd asked for through ``$NOTIFY_SOCKET`` (default: os.environ)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.notify_socket is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True if it was delivered."""
        if self.notify_socket is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:
                raise ValueError(f"sdnotify: value of {key} must be one line, got {text!r}")
            lines.append(f"{key}={text}")
        payload = ("\n".join(lines) + "\n").encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, _address(self.notify_socket))
        except OSError as exc:
            log.warning("sdnotify: cannot notify %s: %s", self.notify_socket, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished (and, after a reload, the reload finished)."""
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        """The main loop is alive; call at least every `watchdog_interval_s`."""
        return self.notify(WATCHDOG=1)

    def reloading(self, status: str | None = None) -> bool:
        """A configuration reload began; send `ready` when it is done.

        Carries ``MONOTONIC_USEC`` (CLOCK_MONOTONIC [us]) so that systemd can tell this
        reload from an earlier one, as ``Type=notify-reload`` requires.
        """
        fields: dict[str, str | int] = {"RELOADING": 1, "MONOTONIC_USEC": self._monotonic_ns() // 1000}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown began."""
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start, reload or stop (e.g. a first training) [s]."""
        return self.notify(EXTEND_TIMEOUT_USEC=max(int(seconds * 1e6), 1))
