"""Shared pieces of the fuzz tests (issue #8): database snapshots and a tiny TOML writer."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck

from db.schema import points, readings, sites

#: the database fixtures are per test, not per example: every example uses its own site (or file)
FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


def snapshot(engine: sa.Engine) -> tuple[int, ...]:
    """Row counts of sites, points and readings: what a failed ingest must leave unchanged."""
    with engine.connect() as conn:
        return tuple(int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                     for t in (sites, points, readings))


def stored(engine: sa.Engine, site: str) -> tuple[dict[tuple[str, int], float], set[str]]:
    """A site's readings {(tag, ts_s): value} and its point tags."""
    query = (sa.select(points.c.tag, readings.c.ts_s, readings.c.value)
             .join(readings, readings.c.point_id == points.c.id).join(sites, sites.c.id == points.c.site_id)
             .where(sites.c.name == site))
    tags = sa.select(points.c.tag).join(sites, sites.c.id == points.c.site_id).where(sites.c.name == site)
    with engine.connect() as conn:
        return ({(t, int(ts)): float(v) for t, ts, v in conn.execute(query)}, set(conn.execute(tags).scalars()))


def toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are not all TOML's, so escape by hand)."""
    out = "".join(f"\\u{ord(c):04x}" if ord(c) < 32 or ord(c) == 127 or c in '"\\' else c for c in text)
    return f'"{out}"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
