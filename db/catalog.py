"""Sites and points: get-or-create by name/tag, and lookups by role.

These run inside the caller's transaction (they take a `Connection`), so an ingest
that fails later leaves no half-created points behind. Creation is race-safe:
insert-if-absent by the unique key, then read back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from db.roles import ROLES
from db.schema import points, readings, sites

MAX_SITE_NAME = 100


class PointConflictError(ValueError):
    """A tag already stored under another role than the one now given."""


def check_site_name(name: str) -> str:
    """A site name must be non-empty, at most 100 characters, without control characters."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("site name must be a non-empty string")
    if len(name) > MAX_SITE_NAME or any(ord(ch) < 32 for ch in name):
        raise ValueError(f"site name {name!r} must be at most {MAX_SITE_NAME} printable characters")
    return name


def _insert_ignore(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(pg_insert(table).on_conflict_do_nothing(index_elements=keys), rows)
    else:
        conn.execute(sqlite_insert(table).on_conflict_do_nothing(index_elements=keys), rows)


def site_id(conn: sa.Connection, name: str) -> int | None:
    """The id of a site, or None when it does not exist (reads never create sites)."""
    found = conn.execute(sa.select(sites.c.id).where(sites.c.name == name)).scalar_one_or_none()
    return None if found is None else int(found)


def ensure_site(conn: sa.Connection, name: str) -> int:
    """The id of a site, creating it if missing."""
    check_site_name(name)
    existing = site_id(conn, name)
    if existing is not None:
        return existing
    _insert_ignore(conn, sites, [{"name": name, "created_at": datetime.now(UTC)}], ["name"])
    return int(conn.execute(sa.select(sites.c.id).where(sites.c.name == name)).scalar_one())


def ensure_points(conn: sa.Connection, site: int, tag_roles: Mapping[str, str]) -> tuple[dict[str, int], int]:
    """Point ids for {tag: role} at a site, creating missing points; returns (ids, number created).

    Raises `PointConflictError` if a tag is already stored under a different role.
    """
    for role_name in set(tag_roles.values()):
        if role_name not in ROLES:
            raise ValueError(f"unknown role {role_name!r}; known roles: {', '.join(ROLES)}")
    tags = list(tag_roles)
    if not tags:
        return {}, 0

    def existing() -> dict[str, tuple[int, str]]:
        query = sa.select(points.c.tag, points.c.id, points.c.role).where(
            points.c.site_id == site, points.c.tag.in_(tags)
        )
        return {row.tag: (int(row.id), str(row.role)) for row in conn.execute(query)}

    found = existing()
    now = datetime.now(UTC)
    missing = [
        {"site_id": site, "tag": tag, "role": tag_roles[tag], "unit": ROLES[tag_roles[tag]].unit, "created_at": now}
        for tag in tags
        if tag not in found
    ]
    _insert_ignore(conn, points, missing, ["site_id", "tag"])
    if missing:
        found = existing()
    for tag, (_, stored_role) in found.items():
        if stored_role != tag_roles[tag]:
            raise PointConflictError(
                f"tag {tag!r} is stored as role {stored_role}, but is now mapped to {tag_roles[tag]}; "
                "fix the tag map (roles of stored tags never change silently)"
            )
    return {tag: found[tag][0] for tag in tags}, len(missing)


def points_for_roles(conn: sa.Connection, site: int, roles: Iterable[str]) -> dict[int, str]:
    """{point_id: role} for every point of a site whose role is in ``roles``."""
    wanted = list(roles)
    query = sa.select(points.c.id, points.c.role).where(points.c.site_id == site, points.c.role.in_(wanted))
    return {int(row.id): str(row.role) for row in conn.execute(query)}


def delete_site(conn: sa.Connection, name: str) -> bool:
    """Delete a site with its points and readings (and, by cascade, its decisions, commands
    and models); returns whether it existed. Readings go explicitly: see `db.schema`."""
    sid = site_id(conn, name)
    if sid is None:
        return False
    point_ids = sa.select(points.c.id).where(points.c.site_id == sid).scalar_subquery()
    conn.execute(sa.delete(readings).where(readings.c.point_id.in_(point_ids)))
    conn.execute(sa.delete(sites).where(sites.c.id == sid))
    return True
