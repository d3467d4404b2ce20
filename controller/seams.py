"""The seams of the decision core: what the cycle reads from, records to and actuates through.

The runtime (`controller.service`) and the application (`coolpilot`) implement them:
a historian source, a decision recorder, and actuators (SQL command table, MQTT, a
simulated plant, BACnet). The cycle itself never imports an implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from db.grid import GRID_FREQ
from db.query import WideFrame

if TYPE_CHECKING:
    from controller.decision import Decision


@dataclass(frozen=True)
class ActuationResult:
    """``sent``: the setpoints [C] the plant side confirmed; ``status``: "sent" or "failed: why"."""

    ok: bool
    status: str
    sent: dict[str, float] = field(default_factory=dict)


class ReadingSource(Protocol):
    """The part of ``db.historian.ReadingSource`` the cycle uses."""

    def read_wide(self, roles: Sequence[str], start: datetime, end: datetime, freq: str = GRID_FREQ) -> WideFrame:
        """Roles over [start, end) every ``freq``: a UTC-indexed wide frame, NaN for gaps."""
        ...


class Recorder(Protocol):
    """Keeps decision rows; may buffer them while the database is down (returns None)."""

    def record(self, decision: Decision) -> int | None: ...

    def set_actuation(self, decision_id: int | None, decision: Decision) -> None: ...


class Actuator(Protocol):
    """Sends setpoints to the plant; reports delivery failures instead of raising."""

    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult: ...



@runtime_checkable
class Releasable(Protocol):
    """An actuator that can hand control back to the plant's own logic (BACnet: write NULL).

    Optional: the wiring passes an actuator that is one as ``DaemonParts.releaser``, and the
    daemon releases on shutdown, after a failed cycle and in the modes where
    ``hands_back(mode)`` is true (existing actuators need not implement it).
    """

    def hands_back(self, mode: str) -> bool: ...

    def release(self, reason: str) -> ActuationResult: ...
