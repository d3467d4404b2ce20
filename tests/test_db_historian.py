"""Reading sources: our own readings table and a site's existing historian (read-only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from db.historian import (
    ExternalHistorianSource,
    HistorianConfigError,
    InternalSource,
    ReadingSource,
    historian_from_config,
)
from db.ingest import write_wide
from db.tagmap import TagMap

DATA = Path(__file__).resolve().parent / "data"
T0 = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
TAGS = {"BMS/CHW supply": "chw_supply_c", "BMS/SAT": "supply_air_c"}


def _make_site_table(engine: sa.Engine, name: str, time_type: sa.types.TypeEngine[Any]) -> sa.Table:
    """A site's own trend table with awkward identifiers (spaces, quotes, mixed case)."""
    table = sa.Table(
        name, sa.MetaData(),
        sa.Column("Sampled At", time_type, nullable=False),
        sa.Column("point's name", sa.String(100), nullable=False),
        sa.Column("Val", sa.Float, nullable=True),
    )
    table.create(engine)
    rows = []
    for i in range(6):
        stamp = T0 + timedelta(minutes=5 * i)
        when: object = stamp
        if isinstance(time_type, sa.BigInteger):
            when = int(stamp.timestamp())
        elif isinstance(time_type, sa.DateTime) and not time_type.timezone:
            when = stamp.replace(tzinfo=None)
        rows.append({"Sampled At": when, "point's name": "BMS/CHW supply", "Val": 7.0 + i / 10})
        if i != 3:
            rows.append({"Sampled At": when, "point's name": "BMS/SAT", "Val": 18.0 + i / 10})
        rows.append({"Sampled At": when, "point's name": "BMS/unused", "Val": 99.0})
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    return table


@pytest.mark.parametrize(
    "time_type", [sa.DateTime(timezone=True), sa.DateTime(timezone=False), sa.BigInteger()],
    ids=["timestamptz", "naive-utc", "epoch-s"],
)
def test_external_table_reads_like_internal(engine: sa.Engine, time_type: sa.types.TypeEngine[Any]) -> None:
    table = _make_site_table(engine, "Site Trends", time_type)
    source = ExternalHistorianSource(
        engine, "Site Trends", "Sampled At", "point's name", "Val", TagMap.from_mapping(TAGS)
    )
    assert isinstance(source, ReadingSource)
    with engine.connect() as conn:
        before = sorted(tuple(r) for r in conn.execute(sa.select(table)))
    wide = source.read_wide(["chw_supply_c", "supply_air_c", "it_power_kw"], T0, T0 + timedelta(minutes=30))
    np.testing.assert_allclose(wide.frame["chw_supply_c"].to_numpy(), [7.0, 7.1, 7.2, 7.3, 7.4, 7.5])
    assert wide.gaps == {"chw_supply_c": 0, "supply_air_c": 1, "it_power_kw": 6}
    assert source.latest_timestamp() == T0 + timedelta(minutes=25)
    # the same data through our own table gives the same frame
    write_wide(engine, wide.frame[["chw_supply_c", "supply_air_c"]], site="copy")
    internal = InternalSource(engine, "copy").read_wide(["chw_supply_c", "supply_air_c", "it_power_kw"], T0,
                                                         T0 + timedelta(minutes=30))
    pd.testing.assert_frame_equal(internal.frame, wide.frame)
    with engine.connect() as conn:  # read-only: the site's table is untouched
        assert sorted(tuple(r) for r in conn.execute(sa.select(table))) == before


def test_hostile_identifiers_are_quoted_not_executed(engine: sa.Engine) -> None:
    _make_site_table(engine, "trends", sa.DateTime(timezone=True))
    source = ExternalHistorianSource(engine, "trends; DROP TABLE sites; --", "Sampled At", "point's name", "Val",
                                     TagMap.from_mapping(TAGS))
    with pytest.raises(HistorianConfigError, match="does not exist"):
        source.read_wide(["chw_supply_c"], T0, T0 + timedelta(minutes=5))
    assert "sites" in sa.inspect(engine).get_table_names()


def test_missing_column_and_text_time_column_are_explained(engine: sa.Engine) -> None:
    _make_site_table(engine, "trends", sa.DateTime(timezone=True))
    tag_map = TagMap.from_mapping(TAGS)
    with pytest.raises(HistorianConfigError, match=r"value_column 'value' is not a column of 'trends'.*Val"):
        ExternalHistorianSource(engine, "trends", "Sampled At", "point's name", "value", tag_map).check()
    with pytest.raises(HistorianConfigError, match=r"time_column \"point's name\" .* must be a timestamp"):
        ExternalHistorianSource(engine, "trends", "point's name", "point's name", "Val", tag_map).check()


def test_view_works_too(engine: sa.Engine) -> None:
    _make_site_table(engine, "raw_trends", sa.DateTime(timezone=True))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE VIEW chw_only AS SELECT "Sampled At" AS t, "point\'s name" AS tag, "Val" AS v '
            "FROM raw_trends WHERE \"point's name\" = 'BMS/CHW supply'"
        )
    source = historian_from_config(
        {"table": "chw_only", "time_column": "t", "tag_column": "tag", "value_column": "v",
         "tags": {"BMS/CHW supply": "chw_supply_c"}},
        engine,
    )
    assert source.read_wide(["chw_supply_c"], T0, T0 + timedelta(minutes=10)).frame["chw_supply_c"].tolist() == [
        pytest.approx(7.0), pytest.approx(7.1)]


def test_config_without_section_is_internal(engine: sa.Engine) -> None:
    source = historian_from_config(None, engine, site="dc1")
    assert isinstance(source, InternalSource) and source.site == "dc1"


def test_config_resolves_tag_map_file(engine: sa.Engine) -> None:
    source = historian_from_config(
        {"table": "t", "time_column": "a", "tag_column": "b", "value_column": "c", "tag_map": "tagmap.toml"},
        engine, base_dir=DATA,
    )
    assert isinstance(source, ExternalHistorianSource)
    assert source.tag_map.role_for("DC1.AHU01.SAT") == "supply_air_c"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"table": "t", "time_column": "a", "tag_column": "b", "value_column": "c"}, "exactly one of 'tag_map'"),
        ({"table": "t", "time_column": "a", "tag_column": "b"}, r"missing key\(s\) \['value_column'\]"),
        ({"table": "t", "time_column": "a", "tag_column": "b", "value_column": "c", "tags": {}, "colour": 1},
         "unknown key"),
        ({"table": "", "time_column": "a", "tag_column": "b", "value_column": "c", "tags": {"x": "it_power_kw"}},
         "'table' must be a non-empty name"),
        ({"table": "t", "time_column": "a", "tag_column": "b", "value_column": "c", "tags": {"x": "it_power_kw"},
          "url": "nonsense"}, r"url: invalid database URL"),
    ],
)
def test_bad_config_sections(engine: sa.Engine, section: dict[str, object], message: str) -> None:
    with pytest.raises(HistorianConfigError, match=message):
        historian_from_config(section, engine)
