"""Data-quality checks on the recent sensor window, before any model sees it.

Why: a model fed a frozen, missing or spiking sensor gives confident nonsense. Each
check is a pure function of the window; a failure names the role and the reason, and
the cycle falls back to rules on any failure of a role it needs.

Checks: freshness (latest reading no older than two cycles), completeness (share of
missing rows), physical range (``db.roles``), stuck sensors (no change over many
rows, for roles that are expected to vary) and spikes (a robust z-score on the
latest rows, with an absolute floor so that quiet sensors do not trip it; a rack
inlet that jumps hot is believed, see ``HOT_IS_REAL``).

Before the checks, ``mask_out_of_range`` drops physically impossible readings older
than the newest row: one impossible value is a glitch, not a plant state, and should
not cost two hours of fallback while it sits in the window. Before that,
``usable_window`` puts a malformed window (unsorted, naive index, a column twice) in
the shape the checks assume, and ``clock_problem`` refuses a window when the clock is
behind the historian (a clock that jumped back would read old data as current).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from controller.config import QualitySettings
from db.roles import ROLES

ROW_S = 300  # spacing of historian rows [s]

#: Roles whose sudden rise is acted on, never set aside as a spike: a real one (air handlers
#: lost) looks exactly like a glitch for the first hour, and a glitch only costs some cooling.
HOT_IS_REAL = frozenset({"rack_inlet_max_c", "rack_inlet_mean_c"})

#: Units whose readings legitimately stay constant for hours (counts, shares, setpoints).
_MAY_BE_CONSTANT_UNITS = frozenset({"count", "fraction"})


@dataclass(frozen=True)
class QualityIssue:
    role: str
    check: str  # freshness | completeness | range | stuck | spike | missing
    detail: str

    def __str__(self) -> str:
        return f"{self.role}: {self.check}: {self.detail}"


def _may_be_constant(role: str) -> bool:
    r = ROLES.get(role)
    return r is None or r.kind == "setpoint" or r.unit in _MAY_BE_CONSTANT_UNITS


def _spike_floor(role: str, median: float, settings: QualitySettings) -> float:
    unit = ROLES[role].unit if role in ROLES else ""
    if unit == "C":
        return settings.spike_min_jump_k
    return settings.spike_min_jump_frac * max(abs(median), 1e-9)


def check_role(
    role: str, series: pd.Series, now: datetime, interval_s: float, settings: QualitySettings
) -> list[QualityIssue]:
    """All quality issues of one role's window (UTC DatetimeIndex, NaN for missing)."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    issues: list[QualityIssue] = []
    finite = np.isfinite(values)
    if not finite.any():
        return [QualityIssue(role, "missing", f"no finite reading in the last {len(values)} rows")]
    last_ts = pd.Timestamp(series.index[np.flatnonzero(finite)[-1]]).to_pydatetime()
    age_s = (now - last_ts).total_seconds()
    if age_s > 2 * interval_s:
        issues.append(QualityIssue(role, "freshness", f"latest reading {last_ts.isoformat()} is {age_s / 60:.0f} min old"))
    missing = 1.0 - finite.mean()
    if missing > settings.max_missing_fraction:
        issues.append(
            QualityIssue(role, "completeness", f"{missing:.0%} of {len(values)} rows missing "
                         f"(limit {settings.max_missing_fraction:.0%})")
        )
    if role in ROLES:
        r = ROLES[role]
        bad = finite & ((values < r.physical_min) | (values > r.physical_max))
        bad |= np.isinf(values)
        if bad.any():
            worst = values[bad][np.argmax(np.abs(values[bad]))]
            issues.append(QualityIssue(role, "range", f"{int(bad.sum())} reading(s) outside "
                                       f"[{r.physical_min}, {r.physical_max}] {r.unit}, e.g. {worst}"))
    ok = values[finite]
    if not _may_be_constant(role) and len(ok) >= settings.stuck_rows:
        tail = ok[-settings.stuck_rows:]
        if float(np.ptp(tail)) == 0.0:
            issues.append(QualityIssue(role, "stuck", f"unchanged at {tail[-1]} for the last {settings.stuck_rows} readings"))
    if not _may_be_constant(role) and len(ok) > settings.spike_rows + 2:
        median = float(np.median(ok))
        mad = float(np.median(np.abs(ok - median))) * 1.4826
        floor = _spike_floor(role, median, settings)
        latest = ok[-settings.spike_rows:]
        dev = np.abs(latest - median)
        spikes = (dev > floor) & (dev > settings.spike_robust_z * mad)
        if role in HOT_IS_REAL:
            spikes &= latest < median
        if spikes.any():
            issues.append(QualityIssue(role, "spike", f"reading {latest[spikes][-1]} departs {dev[spikes].max():.2f} "
                                       f"from the window median {median:.2f}"))
    return issues


def mask_out_of_range(frame: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The window with impossible readings (outside ``db.roles`` ranges, or infinite) set to NaN.

    The newest row is left as it is, so the range check still blocks a cycle whose
    current state is impossible. Returns the notes (one per role) for the decision record.
    """
    if len(frame) < 2:
        return frame, ()
    notes: list[str] = []
    out = frame
    older = np.arange(len(frame)) < len(frame) - 1
    for col in frame.columns:
        r = ROLES.get(str(col))
        if r is None:
            continue
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = older & (np.isinf(values) | (values < r.physical_min) | (values > r.physical_max))
        if bad.any():
            if out is frame:
                out = frame.copy()
            out[col] = np.where(bad, np.nan, values)
            notes.append(f"{col}: masked {int(bad.sum())} older reading(s) outside "
                         f"[{r.physical_min}, {r.physical_max}] {r.unit}")
    return out, tuple(notes)


@dataclass(frozen=True)
class QualityReport:
    issues: tuple[QualityIssue, ...]
    latest: dict[str, float]  # latest finite reading per role (NaN when none)

    @property
    def ok(self) -> bool:
        return not self.issues

    def summary(self) -> str:
        return "; ".join(str(i) for i in self.issues)

    def adding(self, *issues: QualityIssue | None) -> QualityReport:
        """This report with further issues appended (None entries skipped)."""
        extra = tuple(i for i in issues if i is not None)
        return QualityReport(issues=(*self.issues, *extra), latest=self.latest) if extra else self


def check_window(
    frame: pd.DataFrame, roles: Iterable[str], now: datetime, interval_s: float, settings: QualitySettings
) -> QualityReport:
    """Check the last ``window_rows`` rows of every role the cycle needs; absent columns are issues.

    ``interval_s``: the control-cycle interval [s]; data older than two cycles is stale.
    """
    issues: list[QualityIssue] = []
    latest: dict[str, float] = {}
    start = now - timedelta(seconds=settings.window_rows * ROW_S)
    recent = frame.loc[frame.index > pd.Timestamp(start)] if len(frame) else frame
    for role in roles:
        if role not in recent.columns:
            issues.append(QualityIssue(role, "missing", "role absent from the historian window"))
            latest[role] = float("nan")
            continue
        col = recent[role]
        issues.extend(check_role(role, col, now, interval_s, settings))
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        latest[role] = float(finite[-1]) if len(finite) else float("nan")
    return QualityReport(issues=tuple(issues), latest=latest)


def usable_window(frame: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The window in the shape the checks assume, or an empty one and why.

    Why: every check reads rows by position (latest = last) and compares the index with
    the clock, so a reading source that returns rows out of order, a naive or non-time
    index, or one column twice must cost a fallback, never the cycle or a wrong "latest".
    Rows are put in time order; a repeated column is dropped (which copy is right?).
    """
    empty = pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
    if isinstance(frame.columns, pd.MultiIndex):
        return empty, "window columns are nested (a MultiIndex); expected one column per role"
    index = frame.index
    if len(frame) and not (isinstance(index, pd.DatetimeIndex) and index.tz is not None):
        kind = "naive timestamps" if isinstance(index, pd.DatetimeIndex) else f"a {type(index).__name__} of {index.dtype}"
        return empty, f"window index must be timezone-aware timestamps, got {kind}"
    problem = None
    twice = frame.columns.duplicated(keep=False)
    if twice.any():
        problem = f"column(s) {sorted({str(c) for c in frame.columns[twice]})} appear more than once: ignored"
        frame = frame.loc[:, ~twice]
    if not index.is_monotonic_increasing:
        frame = frame.sort_index(kind="stable")
    return frame, problem


#: Readings stamped more than this after the cycle's clock mean the clock is behind [s].
CLOCK_AHEAD_TOLERANCE = timedelta(minutes=5)


def clock_problem(source: object, now: datetime) -> str | None:
    """Why the window cannot be trusted because the clock is behind the data, or None.

    A clock that jumped back would read an old window as if it were current (and rate
    limit against old measured setpoints). Only sources that know their newest reading
    (``latest_timestamp``) are checked; a failing query is left to the window read.
    """
    latest = getattr(source, "latest_timestamp", None)
    if not callable(latest):
        return None
    try:
        newest = latest()
    except Exception:
        return None
    if not isinstance(newest, datetime) or newest <= now + CLOCK_AHEAD_TOLERANCE:
        return None
    ahead_min = (newest - now).total_seconds() / 60.0
    return (f"the newest reading ({newest.isoformat()}) is {ahead_min:.0f} min ahead of the controller clock "
            f"({now.isoformat()}): the clock is behind (did it jump back?), so the window would be old data")
