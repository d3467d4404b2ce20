"""`db.query.read_wide` reads all roles in one query: same frame as reading each role on its own.

The reference is independent of `read_wide`: each role's readings fetched with its own
SQLAlchemy query and bucketed by pandas (``resample(closed="right", label="right")``),
which is what the per-role read did. History has gaps, several points sharing a role
(readings at the same instant, averaged), off-grid readings, a role with a point but no
readings in the window and a role with no point at all; on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from db.ingest import ingest_csv, write_wide
from db.query import read_wide
from db.schema import points, readings, sites
from db.tagmap import TagMap

T0 = datetime(2031, 5, 31, 22, 0, tzinfo=UTC)  # the window crosses a month (two partitions on PostgreSQL)
SITE = "hall-q"
ROLES = ["chw_supply_c", "supply_air_c", "it_power_kw", "rack_inlet_max_c", "chw_return_c"]


def _per_role_reference(engine: sa.Engine, roles: list[str], start: datetime, end: datetime,
                        freq: str) -> pd.DataFrame:
    """Each role on its own: its readings, then pandas' right-closed, right-labelled mean."""
    index = pd.date_range(start, end, freq=freq, inclusive="left", name="ts")
    step_s = int(pd.Timedelta(freq).total_seconds())
    lo_s, hi_s = int(start.timestamp()) - step_s, int(index[-1].timestamp())
    columns = {}
    with engine.connect() as conn:
        for role in roles:
            rows = conn.execute(
                sa.select(readings.c.ts_s, readings.c.value)
                .select_from(readings.join(points, points.c.id == readings.c.point_id)
                             .join(sites, sites.c.id == points.c.site_id))
                .where(sites.c.name == SITE, points.c.role == role, readings.c.ts_s > lo_s,
                       readings.c.ts_s <= hi_s)
            ).all()
            series = pd.Series([float(r.value) for r in rows],
                               index=pd.to_datetime([int(r.ts_s) for r in rows], unit="s", utc=True), dtype=float)
            binned = series.resample(freq, closed="right", label="right", origin=pd.Timestamp(start)).mean()
            columns[role] = binned.reindex(index)
    return pd.DataFrame(columns, index=index, dtype=np.float64)


def _history(engine: sa.Engine, tmp_path: Path) -> None:
    n = 48
    index = pd.date_range(T0, periods=n, freq="5min")
    rng = np.random.default_rng(7)
    chw = rng.normal(7.0, 0.2, n)
    chw[[3, 4, 5, 20]] = np.nan  # gaps
    power = rng.normal(500.0, 5.0, n)
    power[10:30] = np.nan  # a long gap
    write_wide(engine, pd.DataFrame({"chw_supply_c": chw, "it_power_kw": power}, index=index), site=SITE)
    # a point of chw_return_c with readings only outside the window read below
    write_wide(engine, pd.DataFrame({"chw_return_c": [12.0]}, index=[T0 - timedelta(days=2)]), site=SITE)
    # supply_air_c from two points (same instants: averaged) and one-minute off-grid readings
    for tag, offset in (("AHU1.SAT", 18.0), ("AHU2.SAT", 19.0)):
        path = tmp_path / f"{tag}.csv"
        lines = [f"{(T0 + timedelta(minutes=m)).isoformat()},{tag},{offset + m / 100}" for m in range(0, 90, 1)]
        path.write_text("timestamp,tag,value\n" + "\n".join(lines) + "\n", encoding="utf-8")
        ingest_csv(engine, path, site=SITE, tag_map=TagMap.from_mapping({tag: "supply_air_c"}))


@pytest.mark.parametrize("freq", ["5min", "15min"])
def test_one_query_equals_the_per_role_read(engine: sa.Engine, tmp_path: Path, freq: str) -> None:
    _history(engine, tmp_path)
    start, end = T0 + timedelta(minutes=7), T0 + timedelta(hours=5)  # past the data: trailing gaps
    wide = read_wide(engine, ROLES, start, end, freq=freq, site=SITE)
    expected = _per_role_reference(engine, ROLES, start, end, freq)
    pd.testing.assert_frame_equal(wide.frame, expected, check_freq=False, check_exact=False, rtol=1e-12)
    assert wide.gaps == {role: int(expected[role].isna().sum()) for role in ROLES}
    assert wide.gaps["rack_inlet_max_c"] == wide.gaps["chw_return_c"] == len(expected)  # no point / no readings
    assert 0 < wide.gaps["chw_supply_c"] < len(expected)
    # the two AHUs' readings are averaged: (18 + m/100 + 19 + m/100) / 2 over the bucket's minutes
    first_full = wide.frame["supply_air_c"].dropna().iloc[0]
    assert 18.5 < first_full < 19.5
    # each role's column is what a read of that role alone gives
    for role in ROLES:
        alone = read_wide(engine, [role], start, end, freq=freq, site=SITE).frame[role]
        pd.testing.assert_series_equal(wide.frame[role], alone, check_freq=False)


def test_role_order_does_not_mix_columns(engine: sa.Engine, tmp_path: Path) -> None:
    _history(engine, tmp_path)
    start, end = T0, T0 + timedelta(hours=2)
    forward = read_wide(engine, ROLES, start, end, site=SITE).frame
    backward = read_wide(engine, ROLES[::-1], start, end, site=SITE).frame
    assert list(backward.columns) == ROLES[::-1]
    pd.testing.assert_frame_equal(forward, backward[ROLES])


def test_other_sites_points_are_not_read(engine: sa.Engine, tmp_path: Path) -> None:
    _history(engine, tmp_path)
    index = pd.date_range(T0, periods=24, freq="5min")
    write_wide(engine, pd.DataFrame({"chw_supply_c": 99.0, "rack_inlet_max_c": 99.0}, index=index), site="other")
    wide = read_wide(engine, ROLES, T0, T0 + timedelta(hours=2), site=SITE)
    assert float(wide.frame["chw_supply_c"].max()) < 9.0
    assert wide.gaps["rack_inlet_max_c"] == len(wide.frame)
    assert read_wide(engine, ROLES, T0, T0 + timedelta(hours=2), site="nowhere").total_gaps == 24 * len(ROLES)
