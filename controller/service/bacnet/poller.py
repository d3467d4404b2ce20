"""Reading the plant from the BMS, and the heartbeat the BMS watches: two cycle hooks.

``BacnetPoller.before_cycle`` reads every mapped role's presentValue and stores the
readings in CoolPilot's historian (``db.ingest.write_wide``), so a site without an
SQL historian runs from its BMS alone. A role that fails is retried with backoff and
then left as a gap; what was read is kept in a buffer until the database takes it
(a database outage loses nothing; ``write_wide`` skips rows already stored, so
nothing is stored twice).

``BacnetHeartbeat.after_cycle`` writes a rising counter to the heartbeat object at
CoolPilot's priority every cycle; BMS logic releases CoolPilot's priority when it
stops changing (docs/deploy.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import pandas as pd
import sqlalchemy as sa

from controller.config_bacnet import BacnetPoint, BacnetSettings
from controller.service.bacnet.client import BacnetError, BacnetUnreachable
from controller.service.bacnet.metrics import BacnetMetrics
from db.engine import DatabaseError

log = logging.getLogger(__name__)

#: Readings kept while the database is down (one row per cycle: ~35 days at 5 minutes).
MAX_BUFFERED_ROWS = 10_000
#: The heartbeat counter wraps here, well inside a REAL's exact integers.
HEARTBEAT_WRAP = 1_000_000


class ValueReader(Protocol):
    def read_value(self, address: str, point: BacnetPoint) -> float: ...


class ValueWriter(Protocol):
    def write_value(self, address: str, point: BacnetPoint, value: float | None, priority: int) -> None: ...


WriteWide = Callable[[sa.Engine, pd.DataFrame, str], int]


class BacnetPoller:
    """A ``CycleHook``: poll before each cycle, store, keep what could not be stored."""

    def __init__(self, io: ValueReader, settings: BacnetSettings, engine: sa.Engine, site: str, *,
                 clock: Callable[[], datetime], write: WriteWide | None = None,
                 metrics: BacnetMetrics | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.io, self.settings, self.engine, self.site = io, settings, engine, site
        self.clock, self.metrics, self._sleep = clock, metrics, sleep
        self._write = write
        self.buffer: dict[datetime, dict[str, float]] = {}

    def poll(self) -> dict[str, float]:
        """One reading of every mapped role [role units]; roles that keep failing are left out."""
        pending = dict(self.settings.measured())
        values: dict[str, float] = {}
        errors: dict[str, str] = {}
        for attempt in range(self.settings.poll_retries + 1):
            if attempt:
                self._sleep(self.settings.poll_backoff_s * 2 ** (attempt - 1))
            silent: set[int] = set()  # devices that did not answer in this attempt: skip their other points
            for role, point in list(pending.items()):
                if point.device in silent:
                    errors[role] = f"{point}: device {point.device} did not answer"
                    continue
                try:
                    values[role] = self.io.read_value(self.settings.address(point), point)
                except BacnetError as exc:
                    errors[role] = f"{point}: {exc}"
                    if isinstance(exc, BacnetUnreachable):
                        silent.add(point.device)
                    continue
                del pending[role]
            if not pending:
                break
        if pending:
            log.warning("BACnet poll: no reading for %s", "; ".join(errors[r] for r in pending))
            if self.metrics is not None:
                self.metrics.error("poll")
        return values

    def before_cycle(self) -> None:
        values = self.poll()
        if values:
            ts = self.clock()
            self.buffer[ts] = {**self.buffer.get(ts, {}), **values}
            while len(self.buffer) > MAX_BUFFERED_ROWS:
                dropped = min(self.buffer)
                del self.buffer[dropped]
                log.error("BACnet readings buffer full: dropped the row of %s", dropped.isoformat())
        self.flush()

    def flush(self) -> int:
        """Store the buffered readings; on a database error keep them for the next cycle."""
        if not self.buffer:
            return 0
        frame = pd.DataFrame.from_dict(self.buffer, orient="index")
        frame.index = pd.DatetimeIndex(frame.index).tz_convert("UTC")
        write = self._write or _write_wide
        try:
            n = write(self.engine, frame.sort_index(), self.site)
        except DatabaseError as exc:
            log.warning("BACnet readings kept (%d rows) until the database is back: %s", len(self.buffer), exc)
            raise
        self.buffer.clear()
        return n

    def after_cycle(self, decision: Any) -> None:
        return None


def _write_wide(engine: sa.Engine, frame: pd.DataFrame, site: str) -> int:
    from db.ingest import write_wide

    return write_wide(engine, frame, site)


class BacnetHeartbeat:
    """A ``CycleHook``: after every cycle (whatever it decided) the counter moves on by one."""

    def __init__(self, io: ValueWriter, settings: BacnetSettings, *, metrics: BacnetMetrics | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if settings.heartbeat is None:
            raise ValueError("bacnet.heartbeat: no heartbeat object configured")
        self.io, self.settings, self.point = io, settings, settings.heartbeat
        self.metrics, self.wall_clock = metrics, wall_clock
        self.count = 0

    def before_cycle(self) -> None:
        return None

    def after_cycle(self, decision: Any) -> None:
        self.beat()

    def beat(self) -> bool:
        """Write the next counter value; False (logged, counted) when the device did not take it."""
        value = float((self.count + 1) % HEARTBEAT_WRAP)
        try:
            self.io.write_value(self.settings.address(self.point), self.point, value, self.settings.priority)
        except BacnetError as exc:
            log.warning("BACnet heartbeat (%s) not written: %s", self.point, exc)
            if self.metrics is not None:
                self.metrics.error("heartbeat")
            return False
        self.count += 1
        if self.metrics is not None:
            self.metrics.heartbeat_ts.set(self.wall_clock())
        return True
