"""Hypothesis fuzzing of the readings fed to a control cycle (issue #8), beyond test_ctl_properties.

``test_ctl_properties`` drives ``decide`` with odd *values* in a well-formed window.
Here the window itself is malformed: rows shuffled or repeated, the index naive, a
RangeIndex, strings or in another time zone, timestamps centuries away, columns of
strings, categories or booleans, columns repeated or nested, empty frames, and the
cycle's clock far in the past or future. ``decide`` must never raise and what it emits
must stay inside the operator bounds and one rate-limit step of its reference. Two
further properties: the order of the rows does not change the decision, and a
physically impossible readback of a setpoint never moves that setpoint more than one
step from the one last applied.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from controller.config import Config
from controller.cycle import decide
from controller.decision import Decision
from controller.safety import clamped_reference
from db.roles import ROLES, SETPOINT_ROLES
from tests._ctl_support import NOW, START_SETPOINTS, PhysicsForecaster, config, window

SMALL_SEARCH = "[optimizer]\ngrid_points_per_role = 3\nrandom_candidates = 60\nrefine_candidates = 20\nseed = 7\n"
CONFIGS = {
    "auto": config(SMALL_SEARCH, mode="auto"),
    "advisory": config(SMALL_SEARCH, mode="advisory"),
    "rules": config(SMALL_SEARCH, mode="rules"),
    "manual": config(SMALL_SEARCH + "[setpoints.chw_supply_sp_c]\npin_c = 10.0\n", mode="manual"),
}
IMPOSSIBLE = [math.nan, math.inf, -math.inf, 1e12, -1e12, -40.0, 99.0, 1e300]
ABSURD = [math.nan, math.inf, -math.inf, 1e300, -1e300, 1e12, -273.15, 0.0, "abc", None, True]
SHIFTS = [timedelta(0), timedelta(minutes=-7), timedelta(hours=3), timedelta(days=-40), timedelta(days=365 * 150),
          timedelta(days=-365 * 200)]


def assert_safe(d: Decision, cfg: Config) -> None:
    """Every setpoint finite, inside the operator bounds, within one step of the (clamped) reference."""
    env = cfg.envelope()
    ref = clamped_reference(d.previous, env)
    if not d.new:  # a current setpoint is unknown: nothing may be written at all
        assert d.reason_code == "setpoint_unknown" and not d.apply
        return
    assert set(d.new) == set(SETPOINT_ROLES)
    for role in SETPOINT_ROLES:
        b, value = env.bounds(role), d.new[role]
        assert isinstance(value, float) and math.isfinite(value), (role, value)
        assert b.min_c - 1e-9 <= value <= b.max_c + 1e-9, (role, value)
        if role in ref:
            assert abs(value - ref[role]) <= b.max_step_k + 1e-9, (role, value, ref[role])
            if d.hot_guard:
                assert value <= ref[role] + 1e-9, (role, value, ref[role])


@st.composite
def malformed_windows(draw: st.DrawFn) -> pd.DataFrame:
    frame: pd.DataFrame = window(rows=draw(st.sampled_from([0, 1, 3, 24, 30])), seed=draw(st.integers(0, 3)))
    for _ in range(draw(st.integers(0, 4))):
        what = draw(st.sampled_from(["shuffle", "repeat rows", "shift", "index", "dtype", "repeat column",
                                     "nest columns", "drop", "extra column", "cells", "empty"]))
        event(what)
        if what == "shuffle":
            frame = frame.iloc[draw(st.permutations(range(len(frame))))]
        elif what == "repeat rows" and len(frame):
            extra = frame.iloc[draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=5))].copy()
            numeric = all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in extra.dtypes)
            if numeric and draw(st.booleans()):  # the repeated timestamps carry other values
                extra = extra * draw(st.sampled_from([0.5, 2.0, -1.0]))
            frame = pd.concat([frame, extra])
        elif what == "shift" and isinstance(frame.index, pd.DatetimeIndex):
            frame = frame.set_axis(frame.index + draw(st.sampled_from(SHIFTS)))
        elif what == "index" and isinstance(frame.index, pd.DatetimeIndex):
            kind = draw(st.sampled_from(["naive", "range", "text", "tokyo", "seconds", "object"]))
            index: Any = {
                "naive": lambda i: i.tz_localize(None) if i.tz is not None else i,
                "range": lambda i: pd.RangeIndex(len(i)),
                "text": lambda i: i.astype(str),
                "tokyo": lambda i: i.tz_convert("Asia/Tokyo") if i.tz is not None else i,
                "seconds": lambda i: i.as_unit("s"),
                "object": lambda i: pd.Index(list(i), dtype=object),
            }[kind](frame.index)
            frame = frame.set_axis(index)
        elif what == "dtype" and len(frame.columns):
            pos = draw(st.integers(0, len(frame.columns) - 1))  # by position: a label may be repeated
            kind = draw(st.sampled_from(["object", "str", "category", "float32", "bool", "int", "none", "text"]))
            values = frame.iloc[:, pos]
            if kind in ("float32", "int") and not pd.api.types.is_numeric_dtype(values):
                kind = "object"  # an earlier step made it text ("abc"): no numeric cast exists for it
            frame = frame.copy()
            frame.isetitem(pos, {
                "object": lambda v: v.astype(object), "str": lambda v: v.astype(str),
                "category": lambda v: v.astype("category"), "float32": lambda v: v.astype(np.float32),
                "bool": lambda v: v.astype(bool), "int": lambda v: v.fillna(0).astype(np.int64),
                "none": lambda v: pd.Series([None] * len(v), index=v.index, dtype=object),
                "text": lambda v: pd.Series(["12,5 C"] * len(v), index=v.index, dtype=object),
            }[kind](values))
        elif what == "repeat column" and len(frame.columns):
            copy = frame.iloc[:, [draw(st.integers(0, len(frame.columns) - 1))]]
            if pd.api.types.is_float_dtype(copy.dtypes.iloc[0]):  # the second copy may disagree
                copy = copy + draw(st.sampled_from([0.0, 5.0]))
            frame = pd.concat([frame, copy], axis=1)
        elif what == "nest columns" and len(frame.columns):
            frame = frame.set_axis(pd.MultiIndex.from_tuples([(str(c), "x") for c in frame.columns]), axis=1)
        elif what == "drop" and len(frame.columns):
            frame = frame.drop(columns=draw(st.lists(st.sampled_from(list(frame.columns)), unique=True)))
        elif what == "extra column" and not isinstance(frame.columns, pd.MultiIndex):
            frame = frame.copy()
            frame[draw(st.sampled_from(["foo", 42, "rack_inlet_max_c ", ""]))] = draw(st.sampled_from(ABSURD))
        elif what == "cells" and len(frame) and len(frame.columns):
            as_object = draw(st.booleans()) or not all(pd.api.types.is_float_dtype(t) for t in frame.dtypes)
            frame = frame.astype(object) if as_object else frame.copy()
            for _ in range(draw(st.integers(1, 6))):
                row, col = draw(st.integers(0, len(frame) - 1)), draw(st.integers(0, len(frame.columns) - 1))
                frame.iat[row, col] = draw(st.sampled_from(ABSURD if as_object else IMPOSSIBLE))
        elif what == "empty":
            frame = draw(st.sampled_from([frame.iloc[:0], frame.iloc[:, :0], pd.DataFrame()]))
    return frame


clocks = st.sampled_from([NOW, NOW + timedelta(minutes=4), NOW - timedelta(hours=6), NOW + timedelta(days=400),
                          datetime(1960, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC),
                          NOW.astimezone(timezone(timedelta(hours=-5)))])
last_applied = st.none() | st.dictionaries(
    st.sampled_from([*SETPOINT_ROLES, "unknown_sp"]),
    st.floats(allow_nan=True, allow_infinity=True) | st.floats(0.0, 40.0) | st.sampled_from([1e308, -0.0]))


@settings(max_examples=300, deadline=None)
@given(frame=malformed_windows(), mode=st.sampled_from(sorted(CONFIGS)), now=clocks, last=last_applied,
       use_model=st.booleans())
@example(frame=window().tz_localize(None), mode="auto", now=NOW, last=None, use_model=False)  # TypeError
@example(frame=window().reset_index(drop=True), mode="auto", now=NOW, last=None, use_model=False)  # TypeError
@example(frame=pd.concat([window(), window()[["rack_inlet_max_c"]]], axis=1), mode="auto", now=NOW, last=None,
         use_model=True)  # TypeError: a column twice
@example(frame=window(), mode="auto", now=datetime(1960, 1, 1, tzinfo=UTC), last=None, use_model=False)  # seed < 0
def test_malformed_windows_never_raise_and_emit_safe_setpoints(frame: pd.DataFrame, mode: str, now: datetime,
                                                               last: dict[str, float] | None, use_model: bool) -> None:
    cfg = CONFIGS[mode]
    d = decide(cfg, frame, now, PhysicsForecaster() if use_model else None, last)
    event(f"{d.outcome} {d.reason_code or ''}")
    assert_safe(d, cfg)
    assert d.outcome != "optimised" or (use_model and d.verification_ok)


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(range(24)), mode=st.sampled_from(["auto", "advisory"]), use_model=st.booleans(),
       seed=st.integers(0, 3), hot=st.booleans())
@example(order=list(range(23, -1, -1)), mode="auto", use_model=True, seed=0, hot=False)  # was a stale "latest"
def test_the_order_of_the_rows_does_not_change_the_decision(order: list[int], mode: str, use_model: bool,
                                                           seed: int, hot: bool) -> None:
    frame = window(seed=seed, rack_inlet_c=26.8 if hot else 22.0)
    cfg = CONFIGS[mode]
    model = PhysicsForecaster() if use_model else None
    in_order = decide(cfg, frame, NOW, model, START_SETPOINTS)
    shuffled = decide(cfg, frame.iloc[order], NOW, PhysicsForecaster() if use_model else None, START_SETPOINTS)
    assert (shuffled.outcome, shuffled.reason_code) == (in_order.outcome, in_order.reason_code), shuffled.reason
    assert shuffled.new == in_order.new
    assert shuffled.hot_guard == in_order.hot_guard


@settings(max_examples=150, deadline=None)
@given(role=st.sampled_from(SETPOINT_ROLES), value=st.sampled_from(IMPOSSIBLE), rows=st.integers(1, 24),
       use_model=st.booleans(), mode=st.sampled_from(["auto", "rules"]))
@example(role="chw_supply_sp_c", value=1e12, rows=1, use_model=False, mode="auto")  # moved 9.0 -> 14.5 C
def test_an_impossible_setpoint_readback_never_moves_a_setpoint_more_than_one_step(
    role: str, value: float, rows: int, use_model: bool, mode: str
) -> None:
    """The measured setpoint wins over the last applied one only when it is a possible reading."""
    r = ROLES[role]
    assert not r.physical_min <= value <= r.physical_max
    frame = window()
    frame.loc[frame.index[-rows:], role] = value
    cfg = CONFIGS[mode]
    d = decide(cfg, frame, NOW, PhysicsForecaster() if use_model else None, START_SETPOINTS)
    env = cfg.envelope()
    applied = clamped_reference(START_SETPOINTS, env)
    for name in SETPOINT_ROLES:
        assert abs(d.new[name] - applied[name]) <= env.bounds(name).max_step_k + 1e-9, (name, d.new, d.reason)
    assert_safe(d, cfg)
