"""Decision rows: written every cycle, queued in memory while the database is down.

Why a queue: the control loop must keep running (rules, safety gate, MQTT) through a
database outage, and the record of what it did must not be lost when the database
comes back. The queue is bounded (one week of 5-minute cycles by default); when it
overflows, the oldest rows go first and the count of dropped rows is kept.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace

import sqlalchemy as sa

from controller.decision import Decision
from db.engine import DatabaseError, db_errors
from db.schema import decisions

log = logging.getLogger(__name__)


class DecisionRecorder:
    """Writes `Decision` rows for one site; ``record`` returns the row id, or None when queued."""

    def __init__(self, engine: sa.Engine, site: str, *, max_queue: int = 2016) -> None:
        self.engine, self.site = engine, site
        self._queue: deque[Decision] = deque(maxlen=max_queue)
        self.dropped = 0
        self.last_error: str | None = None

    @property
    def queued(self) -> int:
        """Decisions waiting for the database."""
        return len(self._queue)

    def _insert(self, decision: Decision) -> int:
        from db.records import insert_decision

        return int(insert_decision(self.engine, self.site, decision.to_row()))

    def flush(self) -> int:
        """Write queued decisions, oldest first; stops at the first database error."""
        written = 0
        while self._queue:
            try:
                self._insert(self._queue[0])
            except DatabaseError as exc:
                self.last_error = str(exc)
                break
            self._queue.popleft()
            written += 1
        if written:
            log.info("wrote %d queued decision row(s)", written)
        return written

    def record(self, decision: Decision) -> int | None:
        self.flush()
        if not self._queue:
            try:
                decision_id = self._insert(decision)
            except DatabaseError as exc:
                self.last_error = str(exc)
            else:
                self.last_error = None
                return decision_id
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(decision)
        log.warning("database unavailable, decision queued (%d waiting): %s", len(self._queue), self.last_error)
        return None

    def set_actuation(self, decision_id: int | None, decision: Decision) -> None:
        """Store the actuation outcome with the decision (row or queued copy)."""
        if decision_id is None:
            for i in range(len(self._queue) - 1, -1, -1):
                if self._queue[i].ts == decision.ts:
                    self._queue[i] = replace(decision, decision_id=None)
                    break
            return
        try:
            with db_errors(self.engine), self.engine.begin() as conn:
                conn.execute(sa.update(decisions).where(decisions.c.id == decision_id)
                             .values(details_json=decision.to_row()["details_json"]))
        except DatabaseError as exc:  # the row keeps "pending"; the command rows tell the truth
            self.last_error = str(exc)
            log.warning("cannot store actuation result of decision %d: %s", decision_id, exc)
