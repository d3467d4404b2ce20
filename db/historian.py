"""Where history comes from: our own readings table, or a site's existing historian.

A site that already keeps trends in SQL can point CoolPilot at them without copying:
a config section names a table or view and its time, tag and value columns::

    [historian]
    table = "bms_trend"          # or a view; optional: schema = "bms"
    time_column = "sampled_at"   # TIMESTAMP(TZ) or numeric epoch seconds
    tag_column = "point_name"
    value_column = "val"
    tag_map = "tagmap.toml"      # site tags -> roles (or: [historian.tags] TAG = "role")
    # url = "postgresql://reader@bms-db/trends"   # when it lives in another database

That source is strictly read-only (SELECTs only; on PostgreSQL in a READ ONLY
transaction). Identifiers are reflected and quoted by SQLAlchemy and every value is a
bound parameter: no SQL is assembled from config strings. Naive timestamps in the
external table are read as UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc

from db import query
from db.engine import DatabaseError, db_errors, make_engine, redact_url
from db.grid import GRID_FREQ
from db.query import IntArray, WideFrame, bucket_to_grid, check_roles, make_grid, to_wide_frame
from db.tagmap import TagMap

log = logging.getLogger(__name__)

MAX_IDENTIFIER = 128
CONFIG_KEYS = frozenset({"table", "schema", "time_column", "tag_column", "value_column", "tag_map", "tags", "url"})


class HistorianConfigError(ValueError):
    """A historian section or table that cannot be used; the message says which key or column."""


@runtime_checkable
class ReadingSource(Protocol):
    """Anything that serves history as wide frames on a regular grid (see `db.query`)."""

    def read_wide(self, roles: Sequence[str], start: datetime, end: datetime, freq: str = GRID_FREQ) -> WideFrame:
        """Roles over [start, end) every ``freq``, NaN for gaps."""
        ...

    def latest_timestamp(self) -> datetime | None:
        """Time of the newest reading (UTC), None when there is none."""
        ...


@dataclass(frozen=True)
class InternalSource:
    """History from CoolPilot's own ``readings`` table for one site."""

    engine: sa.Engine
    site: str = "default"

    def read_wide(self, roles: Sequence[str], start: datetime, end: datetime, freq: str = GRID_FREQ) -> WideFrame:
        return query.read_wide(self.engine, roles, start, end, freq=freq, site=self.site)

    def latest_timestamp(self) -> datetime | None:
        return query.latest_timestamp(self.engine, site=self.site)


def _identifier(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HistorianConfigError(f"historian {key!r} must be a non-empty name")
    if len(value) > MAX_IDENTIFIER or any(ord(ch) < 32 for ch in value):
        raise HistorianConfigError(f"historian {key!r} {value!r} is not a valid SQL identifier")
    return value


class ExternalHistorianSource:
    """Read-only history from an existing table or view in long form (time, tag, value)."""

    def __init__(
        self,
        engine: sa.Engine,
        table: str,
        time_column: str,
        tag_column: str,
        value_column: str,
        tag_map: TagMap,
        schema: str | None = None,
    ) -> None:
        self.engine = engine
        self.table_name = _identifier(table, "table")
        self.schema = None if schema is None else _identifier(schema, "schema")
        self.time_column = _identifier(time_column, "time_column")
        self.tag_column = _identifier(tag_column, "tag_column")
        self.value_column = _identifier(value_column, "value_column")
        self.tag_map = tag_map
        self._table: sa.Table | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table_name}" if self.schema else self.table_name

    def check(self) -> sa.Table:
        """Reflect the table or view once and check its columns; clear errors otherwise."""
        if self._table is not None:
            return self._table
        where = f"{self.qualified_name!r} in {redact_url(self.engine.url)}"
        try:
            with db_errors(self.engine):
                table = sa.Table(self.table_name, sa.MetaData(), schema=self.schema, autoload_with=self.engine)
        except exc.NoSuchTableError:
            raise HistorianConfigError(f"historian table or view {where} does not exist") from None
        for key, name in (("time_column", self.time_column), ("tag_column", self.tag_column),
                          ("value_column", self.value_column)):
            if name not in table.c:
                raise HistorianConfigError(
                    f"historian {key} {name!r} is not a column of {where}; columns: {', '.join(table.c.keys())}"
                )
        time_type = table.c[self.time_column].type
        if not isinstance(time_type, sa.DateTime | sa.Integer | sa.Numeric | sa.Float):
            raise HistorianConfigError(
                f"historian time_column {self.time_column!r} of {where} is {time_type}; it must be a timestamp "
                "or numeric epoch seconds (a view can cast it)"
            )
        self._table = table
        return table

    def _time_bound(self, table: sa.Table, ts_s: int) -> Any:
        """A bound parameter value comparable with the time column."""
        column_type = table.c[self.time_column].type
        if isinstance(column_type, sa.DateTime):
            stamp = datetime.fromtimestamp(ts_s, UTC)
            return stamp if column_type.timezone else stamp.replace(tzinfo=None)
        return ts_s

    def _to_epoch_s(self, table: sa.Table, values: pd.Series) -> IntArray:
        if isinstance(table.c[self.time_column].type, sa.DateTime):
            stamps = pd.to_datetime(values, utc=True)  # naive values are taken as UTC
            micros = np.asarray(stamps.dt.as_unit("us").astype("int64"), dtype=np.int64)
            return np.asarray(micros // 1_000_000, dtype=np.int64)
        seconds = np.asarray(pd.to_numeric(values, errors="coerce"), dtype=np.float64)
        return np.asarray(np.floor(seconds), dtype=np.int64)

    def _connect(self) -> sa.Connection:
        conn = self.engine.connect()
        if self.engine.dialect.name == "postgresql":
            conn = conn.execution_options(postgresql_readonly=True)
        return conn

    def read_wide(self, roles: Sequence[str], start: datetime, end: datetime, freq: str = GRID_FREQ) -> WideFrame:
        role_list = check_roles(roles)
        grid = make_grid(start, end, freq)
        col_of_tag = {tag: i for i, r in enumerate(role_list) for tag in self.tag_map.tags_for(r)}
        if not grid.n or not col_of_tag:
            return to_wide_frame(np.full((grid.n, len(role_list)), np.nan), grid, role_list)
        table = self.check()
        lo_s, hi_s = grid.window_s()
        time_c, tag_c, value_c = table.c[self.time_column], table.c[self.tag_column], table.c[self.value_column]
        stmt = sa.select(time_c, tag_c, value_c).where(
            tag_c.in_(list(col_of_tag)), time_c > self._time_bound(table, lo_s), time_c <= self._time_bound(table, hi_s)
        )
        with db_errors(self.engine), self._connect() as conn:
            rows = pd.DataFrame(conn.execute(stmt).all(), columns=["time", "tag", "value"])
        values = pd.to_numeric(rows["value"], errors="coerce").to_numpy(dtype=np.float64)
        bad = int(np.isnan(values).sum() - rows["value"].isna().sum())
        if bad:
            log.warning("historian %s: %d non-numeric values read as gaps", self.qualified_name, bad)
        ts_s: IntArray = self._to_epoch_s(table, rows["time"]) if len(rows) else np.zeros(0, dtype=np.int64)
        cols = np.asarray(rows["tag"].map(col_of_tag).fillna(-1), dtype=np.int64)
        cells = bucket_to_grid(cols, ts_s, values, grid, len(role_list))
        return to_wide_frame(cells, grid, role_list)

    def latest_timestamp(self) -> datetime | None:
        tags = list(self.tag_map)
        if not tags:
            return None
        table = self.check()
        stmt = sa.select(sa.func.max(table.c[self.time_column])).where(table.c[self.tag_column].in_(tags))
        with db_errors(self.engine), self._connect() as conn:
            value = conn.execute(stmt).scalar()
        if value is None:
            return None
        return datetime.fromtimestamp(int(self._to_epoch_s(table, pd.Series([value]))[0]), UTC)


def historian_from_config(
    section: Mapping[str, Any] | None,
    engine: sa.Engine,
    site: str = "default",
    base_dir: Path | None = None,
) -> ReadingSource:
    """The reading source a config asks for: `InternalSource` when there is no
    ``[historian]`` section, else an `ExternalHistorianSource` (relative ``tag_map``
    paths are resolved against ``base_dir``, usually the config file's folder)."""
    if not section:
        return InternalSource(engine, site)
    unknown = set(section) - CONFIG_KEYS
    if unknown:
        raise HistorianConfigError(f"[historian] unknown key(s) {sorted(unknown)}; allowed: {sorted(CONFIG_KEYS)}")
    missing = [k for k in ("table", "time_column", "tag_column", "value_column") if k not in section]
    if missing:
        raise HistorianConfigError(f"[historian] missing key(s) {missing}")
    if ("tag_map" in section) == ("tags" in section):
        raise HistorianConfigError("[historian] give exactly one of 'tag_map' (a file) or 'tags' (a table)")
    if "tag_map" in section:
        path = Path(str(section["tag_map"]))
        tag_map = TagMap.load(path if path.is_absolute() or base_dir is None else base_dir / path)
    else:
        tags = section["tags"]
        if not isinstance(tags, Mapping) or not all(isinstance(v, str) for v in tags.values()):
            raise HistorianConfigError("[historian] 'tags' must map tag names to role names")
        tag_map = TagMap.from_mapping(tags, source="[historian.tags]")
    source_engine = engine
    if "url" in section:
        try:
            source_engine = make_engine(str(section["url"]))
        except DatabaseError as err:
            raise HistorianConfigError(f"[historian] url: {err}") from err
    return ExternalHistorianSource(
        source_engine, section["table"], section["time_column"], section["tag_column"],
        section["value_column"], tag_map, schema=section.get("schema"),
    )
