"""A reading source seen from a past moment, for ``decide --at``.

Why: replaying a past moment of a historian must look to the cycle exactly like that
moment did. The cycle's clock is set to the moment; this view makes the source's
newest reading no later than it too, so the clock check does not take the readings
after the moment for a clock that jumped back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from controller.seams import ReadingSource
from db.grid import GRID_FREQ
from db.query import WideFrame


@dataclass(frozen=True)
class AsOfSource:
    """``source`` as of ``at`` (UTC): windows are read as asked, the newest reading is capped at ``at``."""

    source: ReadingSource
    at: datetime

    def read_wide(self, roles: Sequence[str], start: datetime, end: datetime, freq: str = GRID_FREQ) -> WideFrame:
        return self.source.read_wide(roles, start, end, freq)

    def latest_timestamp(self) -> datetime | None:
        """The source's newest reading, or ``at`` when the source holds later ones."""
        latest = getattr(self.source, "latest_timestamp", None)
        newest = latest() if callable(latest) else None
        return None if not isinstance(newest, datetime) else min(newest, self.at)
