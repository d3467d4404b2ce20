"""A site's training history: the last N days on the 5-minute grid, read from the historian.

Library code shared by ``coolpilot train``, the daemon's retraining and the fleet jobs.
Roles with no data at all are refused with a message that names them.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from db.grid import GRID, floor_to_grid
from db.query import latest_timestamp, read_wide
from forecasting.features import WETBULB, FeatureError, FeatureSpec


def load_history(engine: sa.Engine, site: str, days: int, spec: FeatureSpec) -> pd.DataFrame:
    """The last ``days`` of a site's history on the 5-minute grid; roles with no data are refused."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    latest = latest_timestamp(engine, site)
    if latest is None:
        raise ValueError(f"site {site!r} has no history: ingest sensor data first (coolpilot db ingest)")
    end = floor_to_grid(latest) + GRID
    start = end - pd.Timedelta(days=days).to_pytimedelta()
    roles = list(dict.fromkeys([*spec.required_roles(), WETBULB]))
    frame = read_wide(engine, roles, start, end, site=site).frame
    has_data = frame.notna().any(axis=1)
    if has_data.any():  # the window starts at the site's first reading, not before it
        frame = frame.loc[has_data.idxmax():]
    if frame[WETBULB].isna().all():
        frame = frame.drop(columns=[WETBULB])  # derived from dry-bulb and RH instead
    empty = [str(c) for c in frame.columns if frame[c].isna().all() and c != WETBULB]
    if empty:
        raise FeatureError(
            f"site {site!r} has no readings for role(s) {', '.join(empty)} between {start.isoformat()} and "
            f"{end.isoformat()}; map a tag to each (the forecaster needs {', '.join(spec.required_roles())})"
        )
    return frame
