"""Reading history back as wide frames on a regular grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from db.grid import floor_to_grid
from db.ingest import ingest_csv, write_wide
from db.query import (
    Grid,
    bucket_to_grid,
    latest_timestamp,
    make_grid,
    read_wide,
    site_stats,
    time_span,
)
from db.tagmap import TagMap

T0 = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def _frame(values: dict[str, list[float]], start: datetime = T0, freq: str = "5min") -> pd.DataFrame:
    n = len(next(iter(values.values())))
    return pd.DataFrame(values, index=pd.date_range(start, periods=n, freq=freq))


def test_grid_columns_and_gaps(engine: sa.Engine) -> None:
    write_wide(engine, _frame({"chw_supply_c": [7.0, np.nan, 7.2, 7.3], "supply_air_c": [18.0, 18.1, 18.2, 18.3]}))
    wide = read_wide(engine, ["supply_air_c", "chw_supply_c", "rack_inlet_max_c"], T0, T0 + timedelta(minutes=30))
    frame = wide.frame
    assert list(frame.columns) == ["supply_air_c", "chw_supply_c", "rack_inlet_max_c"]
    assert len(frame) == 6
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert frame.index[0] == pd.Timestamp(T0)
    assert (frame.index[1:] - frame.index[:-1] == pd.Timedelta("5min")).all()
    assert wide.gaps == {"supply_air_c": 2, "chw_supply_c": 3, "rack_inlet_max_c": 6}
    assert wide.total_gaps == 11
    assert frame["chw_supply_c"].iloc[2] == pytest.approx(7.2)
    assert np.isnan(frame["chw_supply_c"].iloc[1])  # a gap is never filled


def test_end_is_exclusive_and_window_is_respected(engine: sa.Engine) -> None:
    write_wide(engine, _frame({"chw_supply_c": [float(i) for i in range(12)]}))
    wide = read_wide(engine, ["chw_supply_c"], T0 + timedelta(minutes=10), T0 + timedelta(minutes=25))
    assert wide.frame["chw_supply_c"].tolist() == [2.0, 3.0, 4.0]


def test_off_grid_readings_are_averaged_into_the_next_grid_row(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "one_minute.csv"
    rows = [f"{(T0 + timedelta(minutes=m)).isoformat()},{float(m)}" for m in range(0, 11)]
    path.write_text("timestamp,chw_supply_c\n" + "\n".join(rows) + "\n", encoding="utf-8")
    ingest_csv(engine, path)
    wide = read_wide(engine, ["chw_supply_c"], T0, T0 + timedelta(minutes=15))
    # row t holds (t - 5 min, t]: 12:00 -> {0}, 12:05 -> {1..5}, 12:10 -> {6..10}
    assert wide.frame["chw_supply_c"].tolist() == [0.0, 3.0, 8.0]


def test_points_sharing_a_role_are_averaged(engine: sa.Engine, tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    old.write_text(f"timestamp,tag,value\n{T0.isoformat()},OLD.SAT,18.0\n", encoding="utf-8")
    new = tmp_path / "new.csv"
    new.write_text(f"timestamp,tag,value\n{T0.isoformat()},NEW.SAT,19.0\n", encoding="utf-8")
    ingest_csv(engine, old, tag_map=TagMap.from_mapping({"OLD.SAT": "supply_air_c"}))
    ingest_csv(engine, new, tag_map=TagMap.from_mapping({"NEW.SAT": "supply_air_c"}))
    assert read_wide(engine, ["supply_air_c"], T0, T0 + timedelta(minutes=5)).frame.iloc[0, 0] == pytest.approx(18.5)


def test_sites_are_separate_and_unknown_site_is_all_gaps(engine: sa.Engine) -> None:
    write_wide(engine, _frame({"chw_supply_c": [7.0, 7.1]}), site="a")
    write_wide(engine, _frame({"chw_supply_c": [9.0, 9.1]}), site="b")
    end = T0 + timedelta(minutes=10)
    assert read_wide(engine, ["chw_supply_c"], T0, end, site="b").frame["chw_supply_c"].tolist() == [9.0, 9.1]
    nobody = read_wide(engine, ["chw_supply_c"], T0, end, site="nobody")
    assert nobody.gaps == {"chw_supply_c": 2}


def test_other_frequencies_and_non_utc_bounds(engine: sa.Engine) -> None:
    write_wide(engine, _frame({"it_power_kw": [100.0, 110, 120, 130, 140, 150]}))
    berlin = T0.astimezone(ZoneInfo("Europe/Berlin"))
    wide = read_wide(engine, ["it_power_kw"], berlin + timedelta(minutes=5), berlin + timedelta(minutes=35), freq="15min")
    # 12:05 <- (11:50, 12:05] = {100, 110}; 12:20 <- (12:05, 12:20] = {120, 130, 140}
    assert wide.frame.index[0] == pd.Timestamp(T0 + timedelta(minutes=5))
    assert wide.frame["it_power_kw"].tolist() == [105.0, 130.0]


@pytest.mark.parametrize(
    ("roles", "start", "end", "freq", "error"),
    [
        (["chw_supply_f"], T0, T0 + timedelta(hours=1), "5min", "unknown role"),
        (["chw_supply_c", "chw_supply_c"], T0, T0 + timedelta(hours=1), "5min", "repeated"),
        (["chw_supply_c"], T0.replace(tzinfo=None), T0 + timedelta(hours=1), "5min", "naive"),
        (["chw_supply_c"], T0, T0 - timedelta(hours=1), "5min", "before start"),
        (["chw_supply_c"], T0, T0 + timedelta(hours=1), "often", "invalid frequency"),
        (["chw_supply_c"], T0, T0 + timedelta(hours=1), "-5min", "positive"),
    ],
)
def test_bad_arguments(engine: sa.Engine, roles: list[str], start: datetime, end: datetime, freq: str,
                       error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read_wide(engine, roles, start, end, freq=freq)


def test_latest_timestamp_time_span_and_stats(engine: sa.Engine) -> None:
    assert latest_timestamp(engine) is None
    assert time_span(engine) is None
    write_wide(engine, _frame({"chw_supply_c": [7.0, 7.1, 7.2], "supply_air_c": [18.0, np.nan, np.nan]}))
    write_wide(engine, _frame({"chw_supply_c": [1.0]}, start=T0 + timedelta(days=1)), site="other")
    assert latest_timestamp(engine) == T0 + timedelta(minutes=10)
    assert time_span(engine) == (T0, T0 + timedelta(minutes=10))
    stats = {s["site"]: s for s in site_stats(engine)}
    assert stats["default"]["points"] == 2 and stats["default"]["readings"] == 4
    assert stats["other"]["start"] == T0 + timedelta(days=1)


def test_floor_to_grid() -> None:
    ts = datetime(2024, 1, 15, 12, 7, 31, 999, tzinfo=UTC)
    assert floor_to_grid(ts) == datetime(2024, 1, 15, 12, 5, tzinfo=UTC)
    assert floor_to_grid(ts, "1h") == datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


@settings(max_examples=60, deadline=None)
@given(
    offsets_s=st.lists(st.integers(min_value=-900, max_value=4000), min_size=0, max_size=60),
    step_s=st.sampled_from([60, 300, 900]),
    n_rows=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_bucket_to_grid_matches_pandas_resample(offsets_s: list[int], step_s: int, n_rows: int,
                                                data: st.DataObject) -> None:
    """Property: bucketing equals pandas' right-closed, right-labelled resample mean."""
    start = pd.Timestamp(T0)
    values = np.array(data.draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=len(offsets_s),
                                         max_size=len(offsets_s))), dtype=np.float64)
    ts_s = int(start.timestamp()) + np.array(offsets_s, dtype=np.int64)
    grid = Grid(int(start.value // 1000), step_s * 1_000_000, n_rows)
    cells = bucket_to_grid(np.zeros(len(ts_s), dtype=np.int64), ts_s, values, grid, 1)[:, 0]
    index = grid.index()
    series = pd.Series(values, index=pd.to_datetime(ts_s, unit="s", utc=True))
    expected = (
        series.resample(pd.Timedelta(seconds=step_s), closed="right", label="right", origin=start).mean()
        .reindex(index)
    )
    np.testing.assert_allclose(cells, expected.to_numpy(), equal_nan=True)


def test_make_grid_rounds_the_row_count_up() -> None:
    grid = make_grid(T0, T0 + timedelta(minutes=11), "5min")
    assert grid.n == 3
    assert grid.index()[-1] == pd.Timestamp(T0 + timedelta(minutes=10))
