"""Initial historian schema: sites, points, readings, decisions, setpoint commands, models.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False, comment: str | None = None) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, comment=comment)


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_sites"),
        sa.UniqueConstraint("name", name="uq_sites_name"),
    )
    op.create_table(
        "points",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("tag", sa.String(200), nullable=False, comment="the site's own historian tag name"),
        sa.Column("role", sa.String(64), nullable=False, comment="canonical role, db.roles"),
        sa.Column("unit", sa.String(16), nullable=False, comment="unit of the role (never converted)"),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_points"),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name="fk_points_site_id_sites", ondelete="CASCADE"),
        sa.UniqueConstraint("site_id", "tag", name="uq_points_site_tag"),
    )
    op.create_index("ix_points_site_role", "points", ["site_id", "role"])
    op.create_table(
        "readings",
        sa.Column("point_id", sa.Integer, nullable=False, autoincrement=False, comment="points.id (not a declared FK)"),
        sa.Column("ts_s", sa.BigInteger, nullable=False, autoincrement=False, comment="epoch seconds UTC [s]"),
        sa.Column("value", sa.Double, nullable=False, comment="in the unit of the point"),
        sa.PrimaryKeyConstraint("point_id", "ts_s", name="pk_readings"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False),
        _ts("ts", comment="control-cycle time"),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("previous_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("new_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("details_json", sa.Text, nullable=False, server_default="{}"),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name="fk_decisions_site_id_sites", ondelete="CASCADE"),
    )
    op.create_index("ix_decisions_site_ts", "decisions", ["site_id", "ts"])
    op.create_table(
        "setpoint_commands",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False),
        _ts("ts", comment="when the command was issued"),
        sa.Column("role", sa.String(64), nullable=False, comment="setpoint role, db.roles.SETPOINT_ROLES"),
        sa.Column("value_c", sa.Double, nullable=False, comment="[C]"),
        sa.Column("source", sa.String(32), nullable=False, comment="controller, operator, rules, simulator, ..."),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("decision_id", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        _ts("created_at"),
        _ts("updated_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_setpoint_commands"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_setpoint_commands_site_id_sites", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name="fk_setpoint_commands_decision_id_decisions",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_setpoint_commands_status_known"),
    )
    op.create_index("ix_setpoint_commands_site_role_ts", "setpoint_commands", ["site_id", "role", "ts"])
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        _ts("created_at"),
        sa.Column("artifact_path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="candidate"),
        sa.Column("pinned", sa.Boolean(create_constraint=False), nullable=False, server_default=sa.false()),
        sa.Column("metrics_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("meta_json", sa.Text, nullable=False, server_default="{}"),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name="fk_models_site_id_sites", ondelete="CASCADE"),
        sa.UniqueConstraint("version", name="uq_models_version"),
        sa.CheckConstraint(
            "status IN ('candidate', 'champion', 'retired', 'rejected')", name="ck_models_status_known"
        ),
    )
    op.create_index(
        "uq_models_one_champion",
        "models",
        ["site_id"],
        unique=True,
        sqlite_where=sa.text("status = 'champion'"),
        postgresql_where=sa.text("status = 'champion'"),
    )


def downgrade() -> None:
    op.drop_table("models")
    op.drop_table("setpoint_commands")
    op.drop_table("decisions")
    op.drop_table("readings")
    op.drop_table("points")
    op.drop_table("sites")
