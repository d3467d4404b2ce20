"""SQL sensor historian: schema, migrations, ingest and queries (SQLite and PostgreSQL).

Modules, from the edges in:

* `db.engine`: URLs, engines, `DatabaseError` (one line, never a password).
* `db.schema` / `db.migrate`: tables (SQLAlchemy Core) and Alembic migrations.
* `db.tagmap`: site tags -> canonical roles (`db.roles`), units checked, never converted.
* `db.ingest` (with `db.csvfile`, `db.bulk`, `db.catalog`): CSV files and frames in.
* `db.query` / `db.historian`: wide frames on a regular grid out, from our table or a
  site's own historian table.
* `db.records`: decisions, setpoint commands and model records.
* `coolpilot.db_cli`: ``coolpilot db init``, ``coolpilot db stats``, ``coolpilot ingest``.
"""
