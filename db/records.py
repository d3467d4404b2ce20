"""Thin transactional helpers for decisions, setpoint commands and model records.

The controller and forecasting packages own what goes into these rows; this module
only validates the shape, stores it in one transaction and reads it back as plain
dicts: the table's columns (``*_json`` columns parsed into Python objects,
timestamps tz-aware UTC) plus ``site``, the site name. Sites are referred to by name
and created on first write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from db.catalog import ensure_site, site_id
from db.engine import translate_errors
from db.roles import SETPOINT_ROLES
from db.schema import MODEL_STATUSES, SETPOINT_COMMAND_STATUSES, decisions, models, setpoint_commands, sites

JsonInput = Mapping[str, Any] | Sequence[Any] | str | None

DECISION_FIELDS = frozenset({
    "site", "ts", "mode", "outcome", "reason", "model_version", "previous_json", "new_json", "details_json",
})


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars/arrays to Python, non-finite floats to null, datetimes to ISO."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return _plain(value.tolist())
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def to_json_text(value: JsonInput, field: str) -> str:
    """Serialise a JSON column value; a string must already be valid JSON."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{field}: not valid JSON: {err}") from err
        return value
    try:
        return json.dumps(_plain(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field}: cannot be stored as JSON: {err}") from err


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every table here has an integer primary key
        raise RuntimeError("insert returned no primary key")
    return int(key[0])


def _aware(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _site_fields_checked(row: Mapping[str, Any], site: str, what: str) -> dict[str, Any]:
    """The row without site/site_id keys, after checking they agree with ``site``."""
    out = dict(row)
    for key in ("site", "site_id"):
        given = out.pop(key, None)
        if given is not None and str(given) != site:
            raise ValueError(f"{what}: {key} {given!r} does not match site {site!r}")
    return out


def _unknown(row: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    extra = set(row) - allowed
    if extra:
        raise ValueError(f"{what}: unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}")


def _require(row: Mapping[str, Any], keys: Iterable[str], what: str) -> None:
    missing = [k for k in keys if row.get(k) in (None, "")]
    if missing:
        raise ValueError(f"{what}: missing field(s) {missing}")


# -- decisions ---------------------------------------------------------------------------------

@translate_errors
def insert_decision(engine: sa.Engine, site: str, row: Mapping[str, Any]) -> int:
    """Store one control-cycle decision of ``site`` (created on first write); returns its id.

    ``row`` fields: ts (aware), mode, outcome (required); reason, model_version,
    previous_json / new_json / details_json (dict or JSON text). A ``site`` or
    ``site_id`` field, if present, must name the same site.
    """
    row = _site_fields_checked(row, site, "decision")
    _unknown(row, DECISION_FIELDS, "decision")
    _require(row, ("ts", "mode", "outcome"), "decision")
    values = {
        "ts": _aware(row["ts"], "decision ts"),
        "mode": str(row["mode"]),
        "outcome": str(row["outcome"]),
        "reason": str(row.get("reason") or ""),
        "model_version": row.get("model_version"),
        "previous_json": to_json_text(row.get("previous_json"), "previous_json"),
        "new_json": to_json_text(row.get("new_json"), "new_json"),
        "details_json": to_json_text(row.get("details_json"), "details_json"),
        "created_at": datetime.now(UTC),
    }
    with engine.begin() as conn:
        values["site_id"] = ensure_site(conn, site)
        return _inserted_id(conn.execute(sa.insert(decisions).values(**values)))


def _decision_dict(row: sa.Row[Any]) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in ("previous_json", "new_json", "details_json"):
        data[key] = json.loads(data[key])
    return data


def _decision_query(site: str) -> sa.Select[Any]:
    return (
        sa.select(decisions, sites.c.name.label("site"))
        .join(sites, decisions.c.site_id == sites.c.id)
        .where(sites.c.name == site)
        .order_by(decisions.c.ts.desc(), decisions.c.id.desc())
        .limit(1)
    )


@translate_errors
def latest_decision(engine: sa.Engine, site: str = "default") -> dict[str, Any] | None:
    """The newest decision of a site, or None. The dict has the table's columns (JSON
    columns parsed into Python objects) plus ``site``, the site name."""
    with engine.connect() as conn:
        row = conn.execute(_decision_query(site)).first()
    return None if row is None else _decision_dict(row)


@translate_errors
def decision_at(engine: sa.Engine, site: str, ts: datetime) -> dict[str, Any] | None:
    """The decision of ``site`` in force at ``ts`` (aware): the newest one taken at or
    before it, or None. Same dict shape as `latest_decision`."""
    with engine.connect() as conn:
        row = conn.execute(_decision_query(site).where(decisions.c.ts <= _aware(ts, "ts"))).first()
    return None if row is None else _decision_dict(row)


@translate_errors
def controlled_since(engine: sa.Engine, site: str = "default") -> datetime | None:
    """When CoolPilot first decided in ``auto`` mode for ``site`` (its setpoints applied), or None.

    Retraining trains on everything since (``forecasting.train.split_blocks``): what
    the controller did is what the model most needs to learn from.
    """
    query = (sa.select(sa.func.min(decisions.c.ts)).join(sites, decisions.c.site_id == sites.c.id)
             .where(sites.c.name == site, decisions.c.mode == "auto"))
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    return None if value is None else _aware(value, "ts")


# -- setpoint commands -------------------------------------------------------------------------

def _command_values(
    role: str, value: float, *, ts: datetime, source: str, reason: str | None, status: str,
    decision_id: int | None, error: str | None, now: datetime,
) -> dict[str, Any]:
    if role not in SETPOINT_ROLES:
        raise ValueError(f"setpoint command: role {role!r} is not one of {SETPOINT_ROLES}")
    value_c = float(value)
    if not math.isfinite(value_c):
        raise ValueError(f"setpoint command: value_c {value!r} for {role} is not finite")
    return {
        "ts": ts, "role": role, "value_c": value_c, "source": source, "reason": reason or "",
        "status": status, "decision_id": decision_id, "error": error, "created_at": now,
    }


@translate_errors
def insert_setpoint_commands(
    engine: sa.Engine, site: str, ts: datetime, values: Mapping[str, float], *, source: str,
    reason: str | None = None, status: str = "pending", decision_id: int | None = None,
    error: str | None = None,
) -> list[int]:
    """Store one setpoint command per role of ``values`` ({role: value_c [C]}) for ``site``
    (created on first write), all or none; returns their ids in the order of ``values``.

    The other fields are shared by every command: ts (aware), source (required, at most
    32 characters), reason, status ('pending' default, 'sent', 'failed'), decision_id, error.
    """
    if not source:
        raise ValueError("setpoint command: missing field(s) ['source']")
    if len(source) > 32:
        raise ValueError(f"setpoint command: source {source!r} is longer than 32 characters")
    if status not in SETPOINT_COMMAND_STATUSES:
        raise ValueError(f"setpoint command: status {status!r} is not one of {SETPOINT_COMMAND_STATUSES}")
    ts_utc = _aware(ts, "setpoint command ts")
    now = datetime.now(UTC)
    prepared = [
        _command_values(role, value, ts=ts_utc, source=source, reason=reason, status=status,
                        decision_id=decision_id, error=error, now=now)
        for role, value in values.items()
    ]
    if not prepared:
        return []
    ids: list[int] = []
    with engine.begin() as conn:
        sid = ensure_site(conn, site)
        for row in prepared:
            ids.append(_inserted_id(conn.execute(sa.insert(setpoint_commands).values(site_id=sid, **row))))
    return ids


@translate_errors
def update_setpoint_command_status(
    engine: sa.Engine, command_ids: int | Sequence[int], status: str, error: str | None = None,
    at: datetime | None = None,
) -> int:
    """Set the status (and error text) of commands; returns how many rows changed."""
    if status not in SETPOINT_COMMAND_STATUSES:
        raise ValueError(f"status {status!r} is not one of {SETPOINT_COMMAND_STATUSES}")
    ids = [command_ids] if isinstance(command_ids, int) else list(command_ids)
    updated_at = _aware(at, "at") if at is not None else datetime.now(UTC)
    stmt = (
        sa.update(setpoint_commands)
        .where(setpoint_commands.c.id.in_(ids))
        .values(status=status, error=error, updated_at=updated_at)
    )
    with engine.begin() as conn:
        return int(conn.execute(stmt).rowcount)


@translate_errors
def last_applied_setpoints(engine: sa.Engine, site: str = "default") -> dict[str, float]:
    """The value of the last ``sent`` command per setpoint role [C] (roles never sent are absent).

    "Last" is the order of insertion, not the command's timestamp: after the clock
    jumped back, the newest command carries an older time than the ones before it.
    """
    out: dict[str, float] = {}
    with engine.connect() as conn:
        sid = site_id(conn, site)
        if sid is None:
            return out
        for role_name in SETPOINT_ROLES:
            value = conn.execute(
                sa.select(setpoint_commands.c.value_c)
                .where(setpoint_commands.c.site_id == sid, setpoint_commands.c.role == role_name,
                       setpoint_commands.c.status == "sent")
                .order_by(setpoint_commands.c.id.desc())
                .limit(1)
            ).scalar()
            if value is not None:
                out[role_name] = float(value)
    return out


# -- model records -----------------------------------------------------------------------------

def _model_dict(row: sa.Row[Any]) -> dict[str, Any]:
    data = dict(row._mapping)
    data["pinned"] = bool(data["pinned"])
    data["metrics_json"] = json.loads(data["metrics_json"])
    data["meta_json"] = json.loads(data["meta_json"])
    return data


def _models_query() -> sa.Select[Any]:
    return sa.select(models, sites.c.name.label("site")).join(sites, models.c.site_id == sites.c.id)


@translate_errors
def insert_model(
    engine: sa.Engine, version: str, artifact_path: str, sha256: str, metrics: JsonInput = None,
    meta: JsonInput = None, status: str = "candidate", site: str = "default", created_at: datetime | None = None,
) -> int:
    """Register a trained model artifact; returns its id. Versions are unique."""
    if status not in MODEL_STATUSES or status == "champion":
        raise ValueError(f"new model status {status!r} must be one of candidate, retired, rejected "
                         "(promote with set_model_status)")
    if not version or len(version) > 64:
        raise ValueError(f"model version {version!r} must be 1-64 characters")
    values = {
        "version": version, "artifact_path": str(artifact_path), "sha256": sha256, "status": status,
        "pinned": False, "metrics_json": to_json_text(metrics, "metrics"), "meta_json": to_json_text(meta, "meta"),
        "created_at": _aware(created_at, "created_at") if created_at is not None else datetime.now(UTC),
    }
    with engine.begin() as conn:
        if conn.execute(sa.select(models.c.id).where(models.c.version == version)).first() is not None:
            raise ValueError(f"model version {version!r} already exists")
        values["site_id"] = ensure_site(conn, site)
        return _inserted_id(conn.execute(sa.insert(models).values(**values)))


@translate_errors
def list_models(engine: sa.Engine, site: str = "default", status: str | None = None) -> list[dict[str, Any]]:
    """Model records of a site, newest first, optionally of one status."""
    stmt = _models_query().where(sites.c.name == site).order_by(models.c.created_at.desc(), models.c.id.desc())
    if status is not None:
        stmt = stmt.where(models.c.status == status)
    with engine.connect() as conn:
        return [_model_dict(row) for row in conn.execute(stmt)]


@translate_errors
def get_model(engine: sa.Engine, version: str) -> dict[str, Any] | None:
    """One model record by version, or None."""
    with engine.connect() as conn:
        row = conn.execute(_models_query().where(models.c.version == version)).first()
    return None if row is None else _model_dict(row)


@translate_errors
def set_model_status(engine: sa.Engine, version: str, status: str, pinned: bool | None = None) -> None:
    """Change a model's status (and optionally its pin). Promoting to ``champion``
    retires the site's previous champion in the same transaction."""
    if status not in MODEL_STATUSES:
        raise ValueError(f"model status {status!r} is not one of {MODEL_STATUSES}")
    with engine.begin() as conn:
        row = conn.execute(sa.select(models.c.id, models.c.site_id).where(models.c.version == version)).first()
        if row is None:
            raise KeyError(f"no model with version {version!r}")
        if status == "champion":
            conn.execute(
                sa.update(models)
                .where(models.c.site_id == row.site_id, models.c.status == "champion", models.c.id != row.id)
                .values(status="retired")
            )
        values: dict[str, Any] = {"status": status}
        if pinned is not None:
            values["pinned"] = pinned
        conn.execute(sa.update(models).where(models.c.id == row.id).values(**values))


@translate_errors
def current_champion(engine: sa.Engine, site: str = "default") -> dict[str, Any] | None:
    """The site's champion model record, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            _models_query().where(sites.c.name == site, models.c.status == "champion")
        ).first()
    return None if row is None else _model_dict(row)
