"""The BACnet actuator: setpoints written at CoolPilot's priority, read back, handed back by NULL.

Why this way (BACnet's command prioritisation, ASHRAE 135 clause 19.2): the BMS keeps
a 16-slot priority array per commandable object and runs the lowest-numbered
non-NULL slot. CoolPilot writes only its own slot (``[bacnet] priority``, 9..16), so
an operator at 8 always wins; after each write it reads back ``priorityArray`` and
``presentValue``: a higher slot in control is an operator override, which is recorded
(decision status, command log, metric) and never fought (no retries, no escalation).
Handing back (modes ``advisory``/``rules``/``manual``, shutdown, a failed cycle) writes NULL to our
slot so that the BMS's own logic resumes by the standard's mechanism.

A retry after a device error first reads back: a write that landed before the device
went away is confirmed, not written twice. Command rows go ``pending`` first, then
``sent`` or ``failed``, exactly as for MQTT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa

from controller.config_bacnet import BacnetPoint, BacnetSettings
from controller.seams import ActuationResult
from controller.service.actuators import CommandLog, _valid
from controller.service.bacnet.client import BacnetError, BacnetUnreachable, PointState
from controller.service.bacnet.metrics import BacnetMetrics
from db.roles import SETPOINT_ROLES

log = logging.getLogger(__name__)

SOURCE = "controller"
#: A BACnet REAL is 32-bit: a read-back within this of what was written is the same value [C].
TOLERANCE_C = 1e-3
#: Modes in which the BMS's own logic controls and CoolPilot's slot is relinquished
#: (advisory: CoolPilot only advises, so its last write must not linger either).
HAND_BACK_MODES: tuple[str, ...] = ("advisory", "rules", "manual")


class PointIO(Protocol):
    """What the actuator needs of ``BacnetClient``."""

    def read_state(self, address: str, point: BacnetPoint) -> PointState: ...

    def write_value(self, address: str, point: BacnetPoint, value: float | None, priority: int) -> None: ...


@dataclass
class _Pending:
    value: float | None  # None: relinquish
    written: bool = False  # the write was acknowledged; a retry only reads back
    error: str = ""
    unreachable: bool = False  # the last try got no answer at all


@dataclass
class _Outcome:
    done: dict[str, float] = field(default_factory=dict)
    overridden: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def errors(self) -> dict[str, str | None]:
        """Per role, None where written, else why not (for the command log)."""
        out: dict[str, str | None] = dict(self.failed)
        out.update({r: f"overridden: {why}" for r, why in self.overridden.items()})
        out.update(dict.fromkeys(self.done))
        return out


class BacnetActuator:
    """Implements ``controller.seams.Actuator`` and ``Releasable`` over a ``PointIO``.

    ``mode``: the config's mode now (the holder's); in ``hand_back_modes`` a send
    relinquishes instead of writing.
    """

    def __init__(self, io: PointIO, settings: BacnetSettings, site: str, *, engine: sa.Engine | None = None,
                 metrics: BacnetMetrics | None = None, mode: Callable[[], str] = lambda: "auto",
                 hand_back_modes: Collection[str] = HAND_BACK_MODES, retries: int = 3, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, close: Callable[[], None] | None = None) -> None:
        self.io, self.settings, self.site, self.engine = io, settings, site, engine
        self.metrics, self._mode, self.hand_back_modes = metrics, mode, tuple(hand_back_modes)
        self.retries, self.backoff_s, self._sleep = retries, backoff_s, sleep
        self._close = close
        self._commands = CommandLog(engine, site, "BACnet")
        self.released = False  # our slot is NULL on every setpoint (until the next write)

    @property
    def priority(self) -> int:
        return self.settings.priority

    def close(self) -> None:
        if self._close is not None:
            self._close()

    # -- the Actuator seam ---------------------------------------------------------------
    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult:
        mode = self._mode()
        if mode in self.hand_back_modes:
            return self.release(f"mode {mode}: the BMS's own logic controls")
        values = _valid(setpoints)
        missing = [r for r in values if r not in self.settings.points]
        if missing:
            return ActuationResult(ok=False, status=f"failed: no BACnet point for {', '.join(missing)}")
        ids = self._commands.pending(values, ts, decision_id, reason)
        outcome = self._apply({r: _Pending(v) for r, v in values.items()}, "write")
        self.released = False
        self._commands.settle(ids, outcome.errors())
        return _result(outcome, self.priority)

    # -- Releasable ----------------------------------------------------------------------
    def hands_back(self, mode: str) -> bool:
        return mode in self.hand_back_modes

    def release(self, reason: str) -> ActuationResult:
        """Write NULL at our priority on every mapped setpoint; once per hand-back."""
        if self.released:
            return ActuationResult(ok=True, status=f"released (BMS in control): {reason}")
        roles = [r for r in SETPOINT_ROLES if r in self.settings.points]
        outcome = self._apply({r: _Pending(None) for r in roles}, "release")
        if outcome.failed:
            why = "; ".join(f"{r}: {e}" for r, e in outcome.failed.items())
            log.error("could not relinquish priority %d (%s): %s", self.priority, reason, why)
            return ActuationResult(ok=False, status=f"failed: relinquish: {why}")
        self.released = True
        if self.metrics is not None:
            self.metrics.releases.inc()
        log.info("relinquished BACnet priority %d on %s: %s", self.priority, ", ".join(roles), reason)
        return ActuationResult(ok=True, status=f"released (BMS in control): {reason}")

    # -- one write or release per role, with retries ----------------------------------
    def _apply(self, pending: dict[str, _Pending], operation: str) -> _Outcome:
        outcome = _Outcome()
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            silent: dict[int, str] = {}  # devices that did not answer in this attempt: skip their other points
            for role in list(pending):
                device = self.settings.points[role].device
                if device in silent:
                    pending[role].error = silent[device]
                elif self._step(role, pending[role], outcome):
                    del pending[role]
                elif pending[role].unreachable:
                    silent[device] = f"not tried: device {device} did not answer"
            if not pending:
                break
            log.warning("BACnet %s failed (attempt %d of %d): %s", operation, attempt + 1, self.retries + 1,
                        "; ".join(f"{r}: {p.error}" for r, p in pending.items()))
        for role, p in pending.items():
            outcome.failed[role] = p.error
            if self.metrics is not None:
                self.metrics.error(operation)
        return outcome

    def _step(self, role: str, p: _Pending, outcome: _Outcome) -> bool:
        """One try for one role: write (unless already acknowledged), read back, judge. True: settled."""
        point = self.settings.points[role]
        address = self.settings.address(point)
        try:
            if not p.written:
                self.io.write_value(address, point, p.value, self.priority)
                p.written = True
            state = self.io.read_state(address, point)
        except BacnetError as exc:
            p.error, p.unreachable = f"{point} at {address}: {exc}", isinstance(exc, BacnetUnreachable)
            return False
        p.unreachable = False
        ours = state.at(self.priority)
        if not _same(ours, p.value):
            p.written, p.error = False, (f"{point}: read back {ours} at priority {self.priority}, "
                                         f"wrote {p.value}")
            return False
        if p.value is None:
            outcome.done[role] = state.present_value
            return True
        active = state.active()
        held = active is not None and active.priority < self.priority
        if self.metrics is not None:
            self.metrics.override(role, held)
        if held and active is not None:
            outcome.overridden[role] = (f"priority {active.priority} holds {active.value:g} C; "
                                        f"ours ({p.value:g} C at {self.priority}) waits")
            log.warning("%s (%s) is overridden: %s", role, point, outcome.overridden[role])
            return True
        if abs(state.present_value - p.value) > TOLERANCE_C:
            p.error = f"{point}: presentValue {state.present_value} after writing {p.value}"
            return False
        outcome.done[role] = p.value
        return True


def _same(read: float | None, wrote: float | None) -> bool:
    if read is None or wrote is None:
        return read is None and wrote is None
    return abs(read - wrote) <= TOLERANCE_C


def _result(outcome: _Outcome, priority: int) -> ActuationResult:
    """``sent`` holds only what the plant runs now; an override is reported, not failed."""
    parts = []
    if outcome.overridden:
        parts.append("overridden: " + "; ".join(f"{r} ({why})" for r, why in outcome.overridden.items()))
    if outcome.failed:
        why = "; ".join(f"{r}: {e}" for r, e in outcome.failed.items())
        return ActuationResult(ok=False, status=f"failed: {why}" + (f"; {parts[0]}" if parts else ""),
                               sent=dict(outcome.done))
    status = "sent" + (f" at priority {priority}; " + parts[0] if parts else "")
    return ActuationResult(ok=True, status=status, sent=dict(outcome.done))
