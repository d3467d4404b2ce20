"""A site's training history: the last N days on the 5-minute grid, read from the historian.

Library code shared by ``coolpilot train``, the daemon's retraining and the fleet jobs.
With a spec, roles with no data at all are refused with a message that names them.
Without one, every role the forecaster could use is read and the empty ones are left
out, for `FeatureSpec.for_history` to pick from.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from db.grid import GRID, floor_to_grid
from db.query import latest_timestamp, read_wide
from db.roles import SETPOINT_ROLES
from forecasting.features import ESSENTIAL_ROLES, STATE_ROLES, WETBULB, FeatureError, FeatureSpec


def load_history(engine: sa.Engine, site: str, days: int, spec: FeatureSpec | None = None, *,
                 setpoint_roles: Sequence[str] | None = None, until: datetime | None = None) -> pd.DataFrame:
    """The last ``days`` of a site's history on the 5-minute grid (up to ``until``, UTC, when given).

    ``spec`` given: its roles, and roles with no data are refused. ``spec`` None: every
    state role and ``setpoint_roles`` (default all setpoints); roles with no data are
    dropped, except cooling power, rack inlet and explicitly listed setpoints (refused).
    """
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    latest = latest_timestamp(engine, site)
    if latest is None:
        raise ValueError(f"site {site!r} has no history: ingest sensor data first (coolpilot db ingest)")
    if until is not None:  # a replay of a past moment: nothing after it is read
        latest = min(latest, until)
    end = floor_to_grid(latest) + GRID
    start = end - pd.Timedelta(days=days).to_pytimedelta()
    if spec is not None:
        needed = list(spec.required_roles())
        roles = list(dict.fromkeys([*needed, WETBULB]))
    else:
        needed = [*ESSENTIAL_ROLES, *(setpoint_roles or ())]
        roles = list(dict.fromkeys([*STATE_ROLES, *(setpoint_roles or SETPOINT_ROLES)]))
    frame = read_wide(engine, roles, start, end, site=site).frame
    has_data = frame.notna().any(axis=1)
    if has_data.any():  # the window starts at the site's first reading, not before it
        frame = frame.loc[has_data.idxmax():]
    empty = [str(c) for c in frame.columns if frame[c].isna().all()]
    refused = [c for c in empty if c in needed and (spec is None or c != WETBULB)]
    if refused:
        raise FeatureError(
            f"site {site!r} has no readings for role(s) {', '.join(refused)} between {start.isoformat()} and "
            f"{end.isoformat()}; map a tag to each (the forecaster needs {', '.join(needed)})"
        )
    # wet-bulb without a sensor is derived from dry-bulb and RH; other empty roles the spec will not use
    return frame.drop(columns=[c for c in empty if c == WETBULB or spec is None])
