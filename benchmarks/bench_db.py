"""Historian speed: CSV ingest rate and the read of a 90-day, 20-role window, per backend.

Targets (2-core machine): ingest >= 200,000 readings/s on SQLite and PostgreSQL; the
90-day window of 20 roles at 5 minutes (about 520,000 readings) read into a wide frame
in <= 1.5 s. Each figure is the median of ``--runs`` runs; every ingest run starts from
empty tables (reset outside the timer). Prints the figures, then one JSON line.

    python benchmarks/bench_db.py [--runs 5] [--days 90] [--skip-pg] [--pg-admin-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from db.engine import make_engine, redact_url
from db.ingest import ingest_csv
from db.migrate import upgrade
from db.query import read_wide
from db.roles import ROLES
from db.schema import metadata

INGEST_TARGET_PER_S = 200_000
READ_TARGET_S = 1.5
START = datetime(2024, 1, 1, tzinfo=UTC)
ROLE_NAMES = list(ROLES)[:20]


def write_wide_csv(path: Path, days: int, seed: int = 0) -> int:
    """A wide CSV of 20 roles at 5 minutes with realistic decimals; returns readings written."""
    index = pd.date_range(START, periods=days * 288, freq="5min")
    rng = np.random.default_rng(seed)
    daily = np.sin(2 * np.pi * np.arange(len(index)) / 288.0)
    data = {
        name: np.round(20.0 + 5.0 * daily + rng.normal(0.0, 0.5, len(index)), 3) for name in ROLE_NAMES
    }
    frame = pd.DataFrame(data, index=index.rename("timestamp"))
    frame.to_csv(path, date_format="%Y-%m-%dT%H:%M:%SZ")
    return frame.size


def reset(engine: sa.Engine) -> None:
    """Empty every table (outside the timed region)."""
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


def median_time(fn: Callable[[], Any], runs: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_backend(url: str, csv_path: Path, n_readings: int, days: int, runs: int) -> dict[str, float]:
    engine = make_engine(url)
    try:
        upgrade(engine)
        ingest_s = median_time(lambda: ingest_csv(engine, csv_path), runs, before=lambda: reset(engine))
        reingest_s = median_time(lambda: ingest_csv(engine, csv_path), runs)  # everything is a duplicate now
        end = START + timedelta(days=days)
        wide = read_wide(engine, ROLE_NAMES, START, end)
        if wide.total_gaps != 0 or wide.frame.size != n_readings:
            raise SystemExit(f"read-back mismatch: {wide.frame.size} cells, {wide.total_gaps} gaps")
        read_s = median_time(lambda: read_wide(engine, ROLE_NAMES, START, end), runs)
    finally:
        engine.dispose()
    return {
        "ingest_readings_per_s": n_readings / ingest_s,
        "ingest_s": ingest_s,
        "reingest_readings_per_s": n_readings / reingest_s,
        "read_window_s": read_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "COOLPILOT_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="coolpilot-bench-") as tmp:
        csv_path = Path(tmp) / "wide.csv"
        n = write_wide_csv(csv_path, args.days)
        print(f"{n} readings ({args.days} days x {len(ROLE_NAMES)} roles at 5 min), {args.runs} runs, medians")
        results["sqlite"] = bench_backend(f"sqlite:///{Path(tmp) / 'bench.db'}", csv_path, n, args.days, args.runs)
        if not args.skip_pg:
            admin = make_engine(args.pg_admin_url).execution_options(isolation_level="AUTOCOMMIT")
            name = f"coolpilot_bench_{secrets.token_hex(4)}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            try:
                url = make_url(args.pg_admin_url).set(database=name).render_as_string(hide_password=False)
                print(f"postgres: {redact_url(url)}", file=sys.stderr)
                results["postgres"] = bench_backend(url, csv_path, n, args.days, args.runs)
            finally:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                admin.dispose()

    ok = True
    for backend, r in results.items():
        ingest_ok = r["ingest_readings_per_s"] >= INGEST_TARGET_PER_S
        read_ok = r["read_window_s"] <= READ_TARGET_S
        ok = ok and ingest_ok and read_ok
        print(f"{backend:8s} ingest {r['ingest_readings_per_s']:>10,.0f} readings/s "
              f"({'ok' if ingest_ok else 'BELOW'} target {INGEST_TARGET_PER_S:,})  "
              f"re-ingest {r['reingest_readings_per_s']:>10,.0f} readings/s  "
              f"read {args.days}-day window {r['read_window_s']:.3f} s ({'ok' if read_ok else 'ABOVE'} "
              f"target {READ_TARGET_S} s)")
    print(json.dumps({
        "benchmark": "db", "readings": n, "days": args.days, "roles": len(ROLE_NAMES), "runs": args.runs,
        "results": {b: {k: round(v, 4) for k, v in r.items()} for b, r in results.items()},
        "targets": {"ingest_readings_per_s": INGEST_TARGET_PER_S, "read_window_s": READ_TARGET_S},
        "meets_targets": ok,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
