"""Alembic migrations for the historian schema; run them with `db.migrate.upgrade`."""
