"""The historian's time grid: one 5-minute step, one frequency string, one floor function.

Every record, window and forecast horizon in CoolPilot sits on this grid. A grid row
labelled t holds the readings of (t - 5 min, t]. Nothing else defines the step.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

GRID_FREQ = "5min"
#: One grid step [s] and as a timedelta.
GRID_S = 300
GRID = timedelta(seconds=GRID_S)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to_grid(ts: datetime, freq: str = GRID_FREQ) -> datetime:
    """``ts`` floored to a multiple of ``freq`` since the epoch, as an aware UTC datetime.

    Integer microseconds, so no float rounding at far-off dates. A naive ``ts`` is a
    ValueError: CoolPilot never guesses a time zone.
    """
    if not isinstance(ts, datetime):
        raise TypeError(f"ts must be a datetime, got {type(ts).__name__}")
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"ts {ts.isoformat()} is naive; pass a timezone-aware datetime")
    step_us = int(pd.Timedelta(freq) // pd.Timedelta(microseconds=1))
    if step_us <= 0:
        raise ValueError(f"grid frequency {freq!r} must be positive")
    us = (ts.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    return _EPOCH + timedelta(microseconds=(us // step_us) * step_us)
