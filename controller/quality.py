"""Data-quality checks on the recent sensor window, before any model sees it.

Why: a model fed a frozen, missing or spiking sensor gives confident nonsense. Each
check is a pure function of the window; a failure names the role and the reason
(``QualityIssue``), so the cycle can decide per role what a suspect reading costs.

Checks: freshness (latest reading no older than two cycles), completeness (share of
missing rows), physical range (``db.roles``), stuck sensors and spikes. The last two
judge a reading against the site's own behaviour (``forecasting.data_profile``),
because flat is not stuck and a step is not a spike: plants hold a loop exactly at its
setpoint, freeze a loop's temperatures while it is off, stage chillers (cooling power
jumps by tens of kW) and store hourly weather; historians deadband repeated values.

* stuck: a run of identical readings longer than the longest the site's history showed
  (times a margin, ``stuck_threshold_rows``) while related roles move; a role whose
  related roles all hold still too is a quiet plant, not a frozen sensor.
* spike: a one-record jump in the newest rows, away from the window, larger than the
  site's normal steps (its 99.9th-percentile step times a margin, never below a floor
  per unit) that no related role corroborates by moving in the same or a next record.
  A rack inlet that jumps hot is believed, see ``HOT_IS_REAL``.

Related roles are the partners the profile learned (roles that moved together in the
history); without a profile (no model trained yet), every role on the same side
(weather: ``outdoor_*``, or plant), with conservative defaults: flat for under 24 h is
never stuck, a jump must clear a floor and the window's own step scale, and any
related role moving with it clears it (``QualitySettings`` documents each setting).

Before the checks, ``mask_out_of_range`` drops physically impossible readings older
than the newest row: one impossible value is a glitch, not a plant state, and should
not cost two hours of fallback while it sits in the window. Before that,
``usable_window`` puts a malformed window (unsorted, naive index, a column twice) in
the shape the checks assume, and ``clock_problem`` refuses a window when the clock is
behind the historian (a clock that jumped back would read old data as current).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from controller.config import QualitySettings
from db.roles import ROLES
from forecasting.data_profile import (
    BoolArray,
    DataProfile,
    FloatArray,
    RoleProfile,
    as_floats,
    flat_runs,
    move_step,
    moved,
    one_record_steps,
)

ROW_S = 300  # spacing of historian rows [s]

#: Roles whose sudden rise is acted on, never set aside as a spike: a real one (air handlers
#: lost) looks exactly like a glitch for the first hour, and a glitch only costs some cooling.
HOT_IS_REAL = frozenset({"rack_inlet_max_c", "rack_inlet_mean_c"})

#: Outdoor roles move with the weather, the others with the plant: without a learned
#: profile a role is related only to roles on its own side.
WEATHER_ROLES = frozenset(r for r in ROLES if r.startswith("outdoor_"))

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


def _learned(role: str, profile: DataProfile | None) -> RoleProfile | None:
    return None if profile is None else profile.role(role)


def _freshness(role: str, series: pd.Series, finite: BoolArray, now: datetime, interval_s: float) -> QualityIssue | None:
    last_ts = pd.Timestamp(series.index[np.flatnonzero(finite)[-1]]).to_pydatetime()
    age_s = (now - last_ts).total_seconds()
    if age_s <= 2 * interval_s:
        return None
    return QualityIssue(role, "freshness", f"latest reading {last_ts.isoformat()} is {age_s / 60:.0f} min old")


def _completeness(role: str, finite: BoolArray, settings: QualitySettings) -> QualityIssue | None:
    missing = 1.0 - finite.mean()
    if missing <= settings.max_missing_fraction:
        return None
    return QualityIssue(role, "completeness", f"{missing:.0%} of {len(finite)} rows missing "
                        f"(limit {settings.max_missing_fraction:.0%})")


def _range(role: str, values: FloatArray, finite: BoolArray) -> QualityIssue | None:
    if role not in ROLES:
        return None
    r = ROLES[role]
    bad = (finite & ((values < r.physical_min) | (values > r.physical_max))) | np.isinf(values)
    if not bad.any():
        return None
    worst = values[bad][np.argmax(np.abs(values[bad]))]
    return QualityIssue(role, "range", f"{int(bad.sum())} reading(s) outside "
                        f"[{r.physical_min}, {r.physical_max}] {r.unit}, e.g. {worst}")


def _related(role: str, columns: Iterable[str], profile: DataProfile | None, *, corroborate: bool) -> list[str]:
    """The roles whose movement tells about ``role``: its learned partners, else its side.

    For corroboration, a profile that learned the role has no partners means none: its
    jumps never came with another role's. For a flat run, the side is used instead (is
    the plant around it moving at all?).
    """
    present = [str(c) for c in columns if str(c) != role]
    learned = _learned(role, profile)
    if learned is not None and learned.partners is not None:
        partners = [r for r in learned.partners if r in present]
        if partners or (corroborate and not learned.partners):
            return partners
    side = role in WEATHER_ROLES
    return [r for r in present if (r in WEATHER_ROLES) == side]


def stuck_threshold_rows(role: str, settings: QualitySettings, profile: DataProfile | None = None) -> int:
    """Identical readings for this many rows (or more) can mean a stuck ``role``.

    Without a profile ``settings.stuck_rows``; with one, ``stuck_margin_factor`` times
    the longest flat run of the site's history, and at least ``stuck_min_rows``.
    A cycle that wants the check to see such a run must read this many rows.
    """
    learned = _learned(role, profile)
    if learned is None:
        return settings.stuck_rows
    return max(settings.stuck_min_rows, math.floor(settings.stuck_margin_factor * learned.longest_flat_rows) + 1)


def _changes(frame: pd.DataFrame, role: str, first: int, last: int) -> bool:
    values = as_floats(frame[role].iloc[first:last + 1])
    values = values[np.isfinite(values)]
    return len(values) > 1 and bool(np.ptp(values) > 0.0)


def _stuck_run(role: str, frame: pd.DataFrame, first: int, last: int, settings: QualitySettings,
               profile: DataProfile | None) -> tuple[int, list[str]] | None:
    """(limit, moving related roles) when the flat run ``first..last`` of ``role`` is a stuck sensor, else None.

    Stuck: at least ``stuck_threshold_rows`` long while a related role moved (or with no
    related role to ask); everything around it holding still is a quiet plant.
    """
    limit = stuck_threshold_rows(role, settings, profile)
    if last - first + 1 < limit:
        return None
    related = _related(role, frame.columns, profile, corroborate=False)
    moving = [r for r in related if _changes(frame, r, first, last)]
    if related and not moving:
        return None  # everything around it holds still too: a loop that is off, a quiet plant
    return limit, moving


def _stuck(role: str, frame: pd.DataFrame, settings: QualitySettings, profile: DataProfile | None) -> QualityIssue | None:
    """A flat run at the end of ``frame`` longer than the site ever showed, while related roles move."""
    values = as_floats(frame[role])
    starts, ends = flat_runs(values)
    if not len(starts):
        return None
    first, last = int(starts[-1]), int(ends[-1])
    stuck = _stuck_run(role, frame, first, last, settings, profile)
    if stuck is None:
        return None
    limit, moving = stuck
    learned = _learned(role, profile)
    seen = "no profile" if learned is None else f"the site's longest was {learned.longest_flat_rows} rows"
    why = f" while {', '.join(moving[:3])} moved" if moving else ""
    return QualityIssue(role, "stuck", f"unchanged at {values[last]} for {last - first + 1} rows "
                        f"(limit {limit}; {seen}){why}")


def stuck_readings(frame: pd.DataFrame, settings: QualitySettings, profile: DataProfile | None,
                   rows_read: int | None = None, roles: Iterable[str] | None = None) -> pd.DataFrame:
    """Boolean frame like ``frame``: True on every flat run the stuck check would have flagged.

    Why: retraining must not learn a stuck sensor as the site's normal behaviour. A
    profile learned from a history holding a 55-row stuck rack inlet would raise the
    stuck limit to 83 rows, and the next fault that short would pass unseen. So the
    readings that the checks in force (``profile``: the champion's; None: the defaults)
    would have called stuck, on any run of the history and not only at its end, are
    left out of training (``forecasting.train.fit_forecaster``'s ``suspect``).
    ``rows_read``: the rows a cycle reads (``controller.cycle.window_rows``); a role whose
    limit is longer is never flagged live, so not here either (None: no such bound).
    One difference from live: whether a related role moved is asked over the whole run,
    where a cycle sees only its last ``rows_read`` rows of a longer one.
    ``roles``: the roles to judge (None: all). Roles that may stay constant (setpoints,
    counts, shares) are never flagged.
    """
    flags = np.zeros(frame.shape, dtype=np.bool_)
    judged = None if roles is None else frozenset(roles)
    for j, col in enumerate(frame.columns):
        role = str(col)
        limit = stuck_threshold_rows(role, settings, profile)
        if (judged is not None and role not in judged) or _may_be_constant(role) \
                or (rows_read is not None and limit > rows_read):
            continue
        starts, ends = flat_runs(as_floats(frame[col]))
        long = ends - starts + 1 >= limit  # most runs are short
        for first, last in zip(starts[long].tolist(), ends[long].tolist(), strict=True):
            if _stuck_run(role, frame, first, last, settings, profile) is not None:
                flags[first:last + 1, j] = True
    return pd.DataFrame(flags, index=frame.index, columns=frame.columns)


def _move_step(role: str, steps: FloatArray, profile: DataProfile | None) -> float:
    """A non-zero step this large is a move of ``role``: from the profile, else the window's median step."""
    learned = _learned(role, profile)
    if learned is not None:
        return learned.move_step
    finite = steps[np.isfinite(steps)]
    return move_step(float(np.median(finite))) if len(finite) else math.inf


def _movers(related: list[str], window: pd.DataFrame, t: int, profile: DataProfile | None) -> list[str]:
    """The related roles that moved in record ``t`` or a record next to it."""
    out = []
    for other in related:
        steps = one_record_steps(as_floats(window[other]))
        if moved(steps[max(t - 1, 1):t + 2], _move_step(other, steps, profile)).any():
            out.append(other)
    return out


def _jump_limit(role: str, values: FloatArray, settings: QualitySettings, profile: DataProfile | None) -> float:
    """A one-record step larger than this is a jump worth explaining."""
    floor = _spike_floor(role, float(np.nanmedian(values)), settings)
    learned = _learned(role, profile)
    if learned is not None:
        return max(floor, settings.spike_margin_factor * learned.step_p999)
    with np.errstate(invalid="ignore"):
        signed = np.diff(values)
    signed = signed[np.isfinite(signed)]
    if not len(signed):
        return floor
    scale = 1.4826 * float(np.median(np.abs(signed - np.median(signed))))
    return max(floor, settings.spike_robust_z * scale)


def _spike(role: str, window: pd.DataFrame, settings: QualitySettings, profile: DataProfile | None) -> QualityIssue | None:
    """An uncorroborated jump, away from the window, in the newest ``spike_rows`` rows (a hot rise is believed)."""
    values = as_floats(window[role])
    if np.isfinite(values).sum() <= settings.spike_rows + 2:
        return None
    limit = _jump_limit(role, values, settings, profile)
    median = float(np.nanmedian(values))
    with np.errstate(invalid="ignore"):
        signed = np.r_[np.nan, np.diff(values)]
    for t in range(len(values) - 1, max(len(values) - 1 - settings.spike_rows, 0), -1):
        step = signed[t]
        if not abs(step) > limit or not abs(values[t] - median) > limit or (role in HOT_IS_REAL and step > 0):
            continue  # small, back toward the window (the end of an excursion), or a hot rise
        related = _related(role, window.columns, profile, corroborate=True)
        if _movers(related, window, t, profile):
            continue  # a plant or weather event, seen by its partners too
        learned = _learned(role, profile)
        seen = "" if learned is None else f", the site's largest step {learned.step_max:.3g}"
        return QualityIssue(role, "spike", f"reading {values[t]} jumped {step:+.2f} in one record "
                            f"(limit {limit:.3g}{seen}) and departs {abs(values[t] - median):.2f} from the window "
                            f"median {median:.2f}; no related role ({', '.join(related[:3]) or 'none'}) moved with it")
    return None


def check_role(
    role: str, series: pd.Series, now: datetime, interval_s: float, settings: QualitySettings,
    profile: DataProfile | None = None, context: pd.DataFrame | None = None,
) -> list[QualityIssue]:
    """All quality issues of one role's window (UTC DatetimeIndex, NaN for missing).

    ``profile``: the site's learned data profile, None for the defaults (see
    ``QualitySettings``). ``context``: the frame ``series`` was taken from, all roles
    (it may reach further back): flat runs are measured over it and related roles read
    from it; None: the role alone, so a flat run is judged by its length only and
    nothing corroborates a jump.
    """
    values = as_floats(series)
    finite = np.isfinite(values)
    if not finite.any():
        return [QualityIssue(role, "missing", f"no finite reading in the last {len(values)} rows")]
    found = [_freshness(role, series, finite, now, interval_s), _completeness(role, finite, settings),
             _range(role, values, finite)]
    if not _may_be_constant(role):
        frame = context if context is not None and role in context.columns else series.to_frame(role)
        in_window = (frame.index >= series.index[0]) & (frame.index <= series.index[-1])
        found += [_stuck(role, frame, settings, profile), _spike(role, frame.loc[in_window], settings, profile)]
    return [i for i in found if i is not None]


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
    frame: pd.DataFrame, roles: Iterable[str], now: datetime, interval_s: float, settings: QualitySettings,
    profile: DataProfile | None = None,
) -> QualityReport:
    """Check the last ``window_rows`` rows of every role the cycle needs; absent columns are issues.

    ``interval_s``: the control-cycle interval [s]; data older than two cycles is stale.
    ``profile``: the site's learned data profile (``forecasting.data_profile``), None for
    the defaults. Every column of ``frame`` can corroborate a jump or show that the plant
    moves; flat runs are measured over all of ``frame``, which may reach past the window.
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
        issues.extend(check_role(role, col, now, interval_s, settings, profile, frame))
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


def _newest_reading(source: object) -> datetime | None:
    """The source's newest reading where it can say (``latest_timestamp``); None when it cannot or fails."""
    latest = getattr(source, "latest_timestamp", None)
    if not callable(latest):
        return None
    try:
        newest = latest()
    except Exception:  # a failing query is left to the window read, which reports it
        return None
    return newest if isinstance(newest, datetime) else None


def history_age_problem(source: object, now: datetime, window_start: datetime) -> str | None:
    """"newest reading ... UTC, N days old" when the source's newest reading is before the window, else None.

    Why: then every role of the window is missing for one reason (the history stops),
    which is said once instead of once per role. Sources without ``latest_timestamp``
    and failing queries are left to the window read.
    """
    newest = _newest_reading(source)
    if newest is None or newest >= window_start:
        return None
    age = now - newest
    old = f"{age.days} days" if age >= timedelta(days=2) else f"{age.total_seconds() / 3600:.1f} h"
    return f"newest reading {newest.astimezone(UTC):%Y-%m-%d %H:%M} UTC, {old} old"


def collapse_missing(issues: Iterable[QualityIssue], history_age: str | None) -> tuple[QualityIssue, ...]:
    """The issues with the per-role "missing" ones said once as ``history_age`` when the whole history is old."""
    issues = tuple(issues)
    if history_age is None:
        return issues
    kept = tuple(i for i in issues if i.check != "missing")
    return (QualityIssue("history", "freshness", history_age), *kept) if len(kept) < len(issues) else issues


#: Readings stamped more than this after the cycle's clock mean the clock is behind [s].
CLOCK_AHEAD_TOLERANCE = timedelta(minutes=5)


def clock_problem(source: object, now: datetime) -> str | None:
    """Why the window cannot be trusted because the clock is behind the data, or None.

    A clock that jumped back would read an old window as if it were current (and rate
    limit against old measured setpoints). Only sources that know their newest reading
    (``latest_timestamp``) are checked; a failing query is left to the window read.
    """
    newest = _newest_reading(source)
    if newest is None or newest <= now + CLOCK_AHEAD_TOLERANCE:
        return None
    ahead_min = (newest - now).total_seconds() / 60.0
    return (f"the newest reading ({newest.isoformat()}) is {ahead_min:.0f} min ahead of the controller clock "
            f"({now.isoformat()}): the clock is behind (did it jump back?), so the window would be old data")
