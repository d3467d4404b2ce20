"""SQL sensor historian: schema, migrations, ingest and queries (SQLite and PostgreSQL)."""
