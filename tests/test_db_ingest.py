"""CSV ingest and programmatic writes, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from db.ingest import IngestError, ingest_csv, write_wide
from db.query import read_wide
from db.schema import points, readings, sites
from db.tagmap import TagMap

DATA = Path(__file__).resolve().parent / "data"
T0 = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _stored(engine: sa.Engine, tag: str, site: str = "default") -> dict[int, float]:
    query = (
        sa.select(readings.c.ts_s, readings.c.value)
        .join(points, points.c.id == readings.c.point_id)
        .join(sites, sites.c.id == points.c.site_id)
        .where(points.c.tag == tag, sites.c.name == site)
    )
    with engine.connect() as conn:
        return {int(ts): float(v) for ts, v in conn.execute(query)}


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_wide_example_with_tag_map_units_offsets_and_gaps(engine: sa.Engine) -> None:
    tag_map = TagMap.load(DATA / "tagmap.toml")
    report = ingest_csv(engine, DATA / "historian_wide.csv", tag_map=tag_map, site="dc1")
    frame = pd.read_csv(DATA / "historian_wide.csv")
    used = [c for c in frame.columns[1:] if "FILTER_DP" not in c]  # the ignored tag
    expected_values = int(frame[used].notna().sum().sum())
    assert report.format == "wide"
    assert report.rows_read == len(frame) == 12
    assert report.readings_inserted == expected_values
    assert report.values_missing == len(used) * len(frame) - expected_values == 2
    assert report.points_created == len(used)
    # -05:00 offsets are converted to UTC
    assert report.start == datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    assert report.end == datetime(2024, 1, 15, 12, 55, tzinfo=UTC)
    stored = _stored(engine, "DC1.CHW.SUP_T", "dc1")
    assert stored[int(T0.timestamp())] == pytest.approx(float(frame["DC1.CHW.SUP_T [C]"].iloc[0]))
    # the ignored tag never becomes a point
    with engine.connect() as conn:
        tags = set(conn.execute(sa.select(points.c.tag)).scalars())
    assert "DC1.AHU01.FILTER_DP" not in tags


def test_reingest_changes_nothing(engine: sa.Engine) -> None:
    tag_map = TagMap.load(DATA / "tagmap.csv")
    first = ingest_csv(engine, DATA / "historian_long.csv", tag_map=tag_map, site="dc1")
    n_before = _count(engine, readings)
    with engine.connect() as conn:
        before = sorted(conn.execute(sa.select(readings)).all())
    second = ingest_csv(engine, DATA / "historian_long.csv", tag_map=tag_map, site="dc1")
    with engine.connect() as conn:
        after = sorted(conn.execute(sa.select(readings)).all())
    assert first.readings_inserted == n_before > 0
    assert second.readings_inserted == 0
    assert second.readings_skipped_duplicate == first.readings_in_file
    assert second.points_created == 0
    assert before == after


def test_long_and_wide_give_the_same_readings(engine: sa.Engine, tmp_path: Path) -> None:
    wide = _write(tmp_path, "timestamp,chw_supply_c,supply_air_c\n"
                            "2024-01-15T12:00:00Z,7.1,18.0\n2024-01-15T12:05:00Z,7.2,\n", "wide.csv")
    long = _write(tmp_path, "timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.1\n"
                            "2024-01-15T12:00:00Z,supply_air_c,18.0\n2024-01-15T12:05:00Z,chw_supply_c,7.2\n", "long.csv")
    ingest_csv(engine, wide, site="a")
    ingest_csv(engine, long, site="b")
    for tag in ("chw_supply_c", "supply_air_c"):
        assert _stored(engine, tag, "a") == _stored(engine, tag, "b")
    assert len(_stored(engine, "supply_air_c", "a")) == 1


def test_partial_overlap_inserts_only_new_readings(engine: sa.Engine, tmp_path: Path) -> None:
    first = _write(tmp_path, "timestamp,chw_supply_c\n2024-01-15T12:00:00Z,7.0\n2024-01-15T12:05:00Z,7.1\n", "a.csv")
    second = _write(tmp_path, "timestamp,chw_supply_c\n2024-01-15T12:05:00Z,9.9\n2024-01-15T12:10:00Z,7.2\n", "b.csv")
    ingest_csv(engine, first)
    report = ingest_csv(engine, second)
    assert (report.readings_inserted, report.readings_skipped_duplicate) == (1, 1)
    stored = _stored(engine, "chw_supply_c")
    assert stored[int(T0.timestamp()) + 300] == pytest.approx(7.1)  # first write wins
    assert len(stored) == 3


def test_naive_timestamps_need_a_timezone(engine: sa.Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, "timestamp,chw_supply_c\n2024-07-01 08:00:00,7.0\n")
    with pytest.raises(IngestError, match=r"data\.csv:2: field 'timestamp': .*no UTC offset.*--timezone"):
        ingest_csv(engine, path)
    report = ingest_csv(engine, path, timezone="America/New_York")
    assert report.start == datetime(2024, 7, 1, 12, 0, tzinfo=UTC)  # EDT is UTC-4


@pytest.mark.parametrize(
    ("stamp", "problem"),
    [("2024-03-10 02:30:00", "does not exist"), ("2024-11-03 01:30:00", "is ambiguous")],
)
def test_local_times_at_dst_changes_are_errors(engine: sa.Engine, tmp_path: Path, stamp: str,
                                               problem: str) -> None:
    path = _write(tmp_path, f"timestamp,chw_supply_c\n2024-01-01 00:00:00,7.0\n{stamp},7.1\n")
    with pytest.raises(IngestError, match=rf"data\.csv:3: field 'timestamp': .*{problem}"):
        ingest_csv(engine, path, timezone="America/New_York")
    assert _count(engine, readings) == 0


def test_unknown_timezone_is_rejected(engine: sa.Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, "timestamp,chw_supply_c\n2024-07-01 08:00:00,7.0\n")
    with pytest.raises(IngestError, match="unknown time zone 'Mars/Olympus'"):
        ingest_csv(engine, path, timezone="Mars/Olympus")


def test_exact_repeats_in_a_file_are_skipped_and_conflicts_rejected(engine: sa.Engine, tmp_path: Path) -> None:
    repeat = _write(tmp_path, "timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.0\n"
                              "2024-01-15T12:00:00Z,chw_supply_c,7.0\n", "repeat.csv")
    report = ingest_csv(engine, repeat)
    assert (report.readings_inserted, report.readings_skipped_duplicate) == (1, 1)
    conflict = _write(tmp_path, "timestamp,tag,value\n2024-01-15T13:00:00Z,chw_supply_c,7.0\n"
                                "2024-01-15T14:00:00+01:00,chw_supply_c,8.0\n", "conflict.csv")
    with pytest.raises(IngestError, match=r"conflict\.csv:3: field 'value': .*8\.0.* but 7\.0 on line 2"):
        ingest_csv(engine, conflict)
    assert _count(engine, readings) == 1


def test_blank_lines_and_crlf_keep_line_numbers_right(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"timestamp,tag,value\r\n2024-01-15T12:00:00Z,chw_supply_c,7.0\r\n\r\n"
                     b"2024-01-15T12:05:00Z,chw_supply_c,abc\r\n")
    with pytest.raises(IngestError, match=r"data\.csv:4: field 'value': 'abc' is not a number"):
        ingest_csv(engine, path)


def test_quoted_fields_are_parsed(engine: sa.Engine, tmp_path: Path) -> None:
    tag_map = TagMap.from_mapping({"AHU 1, supply air": "supply_air_c"})
    path = _write(tmp_path, 'timestamp,tag,value\n2024-01-15T12:00:00Z,"AHU 1, supply air",18.5\n'
                            '\n2024-01-15T12:05:00Z,"AHU 1, supply air","x"\n')
    with pytest.raises(IngestError, match=r"data\.csv:4: field 'value': 'x' is not a number"):
        ingest_csv(engine, path, tag_map=tag_map)
    path.write_text('timestamp,tag,value\n2024-01-15T12:00:00Z,"AHU 1, supply air",18.5\n', encoding="utf-8")
    assert ingest_csv(engine, path, tag_map=tag_map).readings_inserted == 1


BAD_FILES = [
    pytest.param("timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.0\n2024-01-15T12:05:00Z,chw_supply_c,7,1\n",
                 r"data\.csv:3: malformed row: 4 fields, the header has 3", id="too-many-fields"),
    pytest.param("timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.0\n2024-01-15T12:05:00Z,chw_supply_c\n",
                 r"data\.csv:3: malformed row: 2 fields, the header has 3", id="too-few-fields"),
    pytest.param("timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.0\n15/01/2024 12:05,chw_supply_c,7.1\n",
                 r"data\.csv:3: field 'timestamp': '15/01/2024 12:05' is not an ISO 8601 timestamp", id="bad-timestamp"),
    pytest.param("timestamp,chw_supply_c,supply_air_c\n2024-01-15T12:00:00Z,7.0,18\n2024-01-15T12:05:00Z,7.1,abc\n",
                 r"data\.csv:3: field 'supply_air_c': 'abc' is not a number", id="non-numeric-wide"),
    pytest.param("timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.0\n2024-01-15T12:05:00Z,chw_supply_c,seven\n",
                 r"data\.csv:3: field 'value': 'seven' is not a number", id="non-numeric-long"),
    pytest.param("timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.0\n2024-01-15T12:05:00Z,chw_supply_c,inf\n",
                 r"data\.csv:3: field 'value': inf is not a finite number", id="infinite"),
    pytest.param("timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.0\n2024-01-15T12:05:00Z,CHW-ST-9,7.1\n",
                 r"data\.csv:3: field 'tag': unknown tag 'CHW-ST-9': not in identity map", id="unknown-tag-long"),
    pytest.param("timestamp,chw_supply_c,mystery_sensor\n2024-01-15T12:00:00Z,7.0,1\n",
                 r"data\.csv:1: field 'mystery_sensor': unknown tag 'mystery_sensor'", id="unknown-tag-wide"),
    pytest.param("timestamp,tag,value,unit\n2024-01-15T12:00:00Z,chw_supply_c,7.0,C\n2024-01-15T12:05:00Z,chw_supply_c,45.1,F\n",
                 r"data\.csv:3: field 'unit': tag 'chw_supply_c': unit 'F' does not match role chw_supply_c, which is in 'C'",
                 id="mixed-unit-long"),
    pytest.param("timestamp,chw_supply_c [F],supply_air_c\n2024-01-15T12:00:00Z,45.0,18\n",
                 r"data\.csv:1: field 'chw_supply_c \[F\]': tag 'chw_supply_c': unit 'F' does not match", id="unit-wide"),
    pytest.param("timestamp,tag,value,unit\n2024-01-15T12:00:00Z,it_power_kw,0.7,MW\n",
                 r"data\.csv:2: field 'unit': tag 'it_power_kw': unit 'MW' does not match role it_power_kw", id="MW"),
    pytest.param("timestamp,tag,value,unit\n2024-01-15T12:00:00Z,it_power_kw,700,hp\n",
                 r"data\.csv:2: field 'unit': tag 'it_power_kw': unit 'hp' is not recognised", id="unknown-unit"),
    pytest.param("", r"data\.csv:1: missing header line", id="empty-file"),
    pytest.param("when,chw_supply_c\n2024-01-15T12:00:00Z,7.0\n", r"data\.csv:1: field 'when': first column", id="no-time-col"),
    pytest.param("timestamp,chw_supply_c,chw_supply_c\n2024-01-15T12:00:00Z,7.0,7.1\n",
                 r"data\.csv:1: field 'chw_supply_c': column appears twice", id="duplicate-column"),
    pytest.param("timestamp,tag,value\n1850-01-01T00:00:00Z,chw_supply_c,7.0\n",
                 r"data\.csv:2: field 'timestamp': .*outside 1970\.\.2200", id="ancient"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_input_names_file_line_and_field_and_writes_nothing(
    engine: sa.Engine, tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(IngestError, match=message):
        ingest_csv(engine, path)
    assert _count(engine, readings) == 0
    assert _count(engine, points) == 0


def test_non_utf8_file(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"timestamp,tag,value\n2024-01-15T12:00:00Z,chw_supply_c,7.0\n" + b"caf\xe9,x,1\n")
    with pytest.raises(IngestError, match=r"data\.csv:3: file is not UTF-8 text"):
        ingest_csv(engine, path)


def test_missing_file(engine: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"nope\.csv: cannot read file"):
        ingest_csv(engine, tmp_path / "nope.csv")


def test_a_tag_cannot_change_role_silently(engine: sa.Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, "timestamp,tag,value\n2024-01-15T12:00:00Z,T1,7.0\n")
    ingest_csv(engine, path, tag_map=TagMap.from_mapping({"T1": "chw_supply_c"}))
    path.write_text("timestamp,tag,value\n2024-01-15T12:05:00Z,T1,18.0\n", encoding="utf-8")
    with pytest.raises(IngestError, match="tag 'T1' is stored as role chw_supply_c, but is now mapped to supply_air_c"):
        ingest_csv(engine, path, tag_map=TagMap.from_mapping({"T1": "supply_air_c"}))
    assert _count(engine, readings) == 1


def test_write_wide_skips_nan_and_is_idempotent(engine: sa.Engine) -> None:
    index = pd.date_range(T0, periods=6, freq="5min", name="ts")
    frame = pd.DataFrame(
        {"chw_supply_c": [7.0, 7.1, np.nan, 7.3, 7.4, 7.5], "cooling_power_kw": [200.0, 201, 202, 203, np.nan, 205]},
        index=index,
    )
    assert write_wide(engine, frame, site="sim") == 10
    assert write_wide(engine, frame, site="sim") == 0
    extended = pd.concat([frame, pd.DataFrame({"chw_supply_c": [7.6]}, index=[index[-1] + pd.Timedelta("5min")])])
    assert write_wide(engine, extended, site="sim") == 1
    wide = read_wide(engine, ["chw_supply_c", "cooling_power_kw"], T0, T0 + pd.Timedelta("35min"), site="sim")
    assert wide.gaps == {"chw_supply_c": 1, "cooling_power_kw": 2}
    np.testing.assert_allclose(wide.frame["chw_supply_c"].iloc[:6].to_numpy(), frame["chw_supply_c"].to_numpy())


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"chw_supply_c": [7.0]}, index=pd.DatetimeIndex(["2024-01-01"])), "timezone-aware"),
        (pd.DataFrame({"chw_supply_f": [7.0]}, index=pd.DatetimeIndex(["2024-01-01"], tz=UTC)), "not roles"),
        (pd.DataFrame({"chw_supply_c": [np.inf]}, index=pd.DatetimeIndex(["2024-01-01"], tz=UTC)), "infinite"),
        (pd.DataFrame({"chw_supply_c": [1.0, 2.0]}, index=pd.DatetimeIndex(["2024-01-01"] * 2, tz=UTC)), "duplicate"),
    ],
)
def test_write_wide_rejects_bad_frames(engine: sa.Engine, frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_wide(engine, frame)
    assert _count(engine, readings) == 0


def test_report_to_dict_is_json_ready(engine: sa.Engine) -> None:
    report = ingest_csv(engine, DATA / "historian_long.csv", tag_map=TagMap.load(DATA / "tagmap.toml"))
    data = report.to_dict()
    assert data["start"] == "2024-01-15T12:00:00+00:00"
    assert data["readings_inserted"] == report.readings_inserted == 35
    assert set(data) >= {"rows_read", "readings_inserted", "readings_skipped_duplicate", "points_created", "start", "end"}


def test_larger_file_round_trips_through_read_wide(engine: sa.Engine, tmp_path: Path) -> None:
    """~60k readings (more than one insert chunk) with random gaps come back cell for cell."""
    rng = np.random.default_rng(3)
    roles = ["it_power_kw", "cooling_power_kw", "chw_supply_c", "supply_air_c", "rack_inlet_max_c", "outdoor_rh_pct"]
    index = pd.date_range(T0, periods=11_000, freq="5min", name="timestamp")
    values = np.round(np.clip(rng.normal(20.0, 5.0, (len(index), len(roles))), 5.0, 30.0), 3)  # inside every range
    values[rng.random(values.shape) < 0.05] = np.nan
    frame = pd.DataFrame(values, index=index, columns=roles)
    path = tmp_path / "big.csv"
    frame.to_csv(path, date_format="%Y-%m-%dT%H:%M:%S+00:00")
    report = ingest_csv(engine, path)
    assert report.readings_inserted == int(np.isfinite(values).sum()) > 50_000
    wide = read_wide(engine, roles, index[0].to_pydatetime(), (index[-1] + pd.Timedelta("5min")).to_pydatetime())
    np.testing.assert_array_equal(wide.frame.to_numpy(), values)
    assert wide.gaps == {r: int(np.isnan(values[:, i]).sum()) for i, r in enumerate(roles)}


@pytest.mark.postgres
def test_postgres_copy_falls_back_to_merge_when_rows_appear_meanwhile(
    pg_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another writer stores overlapping rows between the check and the COPY, the
    COPY's unique violation is rolled back to a savepoint and the rows are merged."""
    from db import bulk

    frame = pd.DataFrame({"chw_supply_c": [7.0, 7.1]}, index=pd.date_range(T0, periods=2, freq="5min"))
    assert write_wide(pg_engine, frame) == 2
    monkeypatch.setattr(bulk, "_may_collide", lambda *args: False)
    longer = pd.DataFrame({"chw_supply_c": [9.0, 9.1, 7.2]}, index=pd.date_range(T0, periods=3, freq="5min"))
    assert write_wide(pg_engine, longer) == 1
    assert sorted(_stored(pg_engine, "chw_supply_c").values()) == [7.0, 7.1, 7.2]
