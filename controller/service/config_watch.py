"""Keeping the config current while the daemon runs: reload on SIGHUP or on file change.

Why a holder: the control loop must always have a valid config. A reload that fails
validation is rejected with the parser's message and the last good config stays in
force. Settings in ``RESTART_REQUIRED`` (database, metrics listener, actuator, cycle
interval...) keep their start-up values until a restart, and the reload says so.

The signal handler only sets a flag; the daemon calls ``poll()`` from its loop, so
no validation ever runs inside a signal handler.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.config import RESTART_REQUIRED, Config, ConfigError, load_config, restart_required_changes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    """What a reload attempt did; ``restart_required`` lists changed settings not yet in force."""

    reload_ok: bool
    changed: bool
    error: str | None = None
    restart_required: tuple[str, ...] = ()

    def message(self) -> str:
        if not self.reload_ok:
            return f"config reload rejected, previous config stays in force: {self.error}"
        text = "config reloaded" if self.changed else "config unchanged"
        if self.restart_required:
            text += "; these changes need a restart to take effect: " + ", ".join(self.restart_required)
        return text


def _keep_startup_values(startup: Config, new: Config, changed: tuple[str, ...]) -> Config:
    """``new`` with the restart-only settings of ``startup``."""
    update: dict[str, Any] = {}
    for dotted in changed:
        section, _, key = dotted.partition(".")
        if key:
            base = update.get(section, getattr(new, section))
            update[section] = base.model_copy(update={key: getattr(getattr(startup, section), key)})
        else:
            update[section] = getattr(startup, section)
    return new.model_copy(update=update)


class ConfigHolder:
    """The config in force, reloadable. Construction raises ConfigError for a bad file.

    ``loader`` is injectable for tests; it must raise ConfigError on invalid input.
    """

    def __init__(self, path: str | Path, loader: Callable[[Path], Config] = load_config) -> None:
        self.path = Path(path)
        self._loader = loader
        self._lock = threading.Lock()
        self._reload_requested = threading.Event()
        self._startup = loader(self.path)
        self._config = self._startup
        self._fingerprint = self._read_fingerprint()
        self.last_result = ReloadResult(reload_ok=True, changed=False)

    @property
    def config(self) -> Config:
        with self._lock:
            return self._config

    @property
    def reload_ok(self) -> bool:
        return self.last_result.reload_ok

    @property
    def restart_required(self) -> tuple[str, ...]:
        return self.last_result.restart_required

    def _read_fingerprint(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def request_reload(self) -> None:
        """Ask for a reload at the next ``poll()`` (safe to call from a signal handler)."""
        self._reload_requested.set()

    def reload(self) -> ReloadResult:
        """Load the file now; on failure keep the last good config."""
        fingerprint = self._read_fingerprint()
        try:
            new = self._loader(self.path)
        except ConfigError as exc:
            result = ReloadResult(reload_ok=False, changed=False, error=str(exc),
                                  restart_required=self.last_result.restart_required)
            log.error("%s", result.message())
        else:
            pending = restart_required_changes(self._startup, new)
            effective = _keep_startup_values(self._startup, new, pending)
            with self._lock:
                changed = effective != self._config
                self._config = effective
            result = ReloadResult(reload_ok=True, changed=changed, restart_required=pending)
            log.info("%s", result.message())
        self._fingerprint = fingerprint
        self.last_result = result
        return result

    def poll(self) -> ReloadResult | None:
        """Reload if SIGHUP arrived or the file content changed since the last attempt."""
        requested = self._reload_requested.is_set()
        self._reload_requested.clear()
        if requested or self._read_fingerprint() != self._fingerprint:
            return self.reload()
        return None

    def install_sighup(self) -> None:
        """Route SIGHUP to ``request_reload`` (call from the main thread)."""
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.request_reload())


__all__ = ["RESTART_REQUIRED", "ConfigHolder", "ReloadResult"]
