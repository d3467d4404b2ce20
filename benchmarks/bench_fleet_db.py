"""A fleet on one PostgreSQL: ingest rate, the 24-hour window read under load, and size.

Simulates ``--halls`` halls x ``--days`` days x ``--roles`` roles at 5-minute records
(defaults 100 x 90 x 20: about 52 million readings) in a database of its own
(``coolpilot_fleet_bench_<random>``, partitioned by month by migration 0002, dropped at
the end). Each hall's history goes through the project's own write path
(`db.ingest.write_wide` -> `db.bulk.insert_readings`: binary COPY on PostgreSQL). Then
``--readers`` threads, each with its own connection and hall, start together and each
read their hall's last 24 hours ``--reads`` times (`db.historian.InternalSource`, the
daemon's read): p50/p95 over all reads. The same for one hall on SQLite (the embedded
default) is the baseline. Prints figures, one JSON line, and writes the marker section
``fleet-db`` of docs/performance.md (``--no-docs`` to skip).

    python benchmarks/bench_fleet_db.py [--halls 100] [--days 90] [--readers N] [--no-docs]

The readers share the server's ``max_connections`` with everything else on it: when
fewer are free, the run uses what is free (leaving ``--spare-connections``) and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_closed_loop import commit_hash, invocation, write_marked_section  # noqa: E402
from db.engine import make_engine, redact_url  # noqa: E402
from db.historian import InternalSource  # noqa: E402
from db.ingest import write_wide  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.roles import ROLES  # noqa: E402

MARKER = "fleet-db"
PERFORMANCE_MD = ROOT / "docs" / "performance.md"
START = datetime(2026, 1, 1, tzinfo=UTC)
STEP = "5min"


def hall_frame(hall: int, days: int, roles: Sequence[str]) -> pd.DataFrame:
    """One hall's history: ``days`` of 5-minute rows, one column per role, a daily cycle plus noise."""
    index = pd.date_range(START, periods=days * 288, freq=STEP, tz="UTC")
    rng = np.random.default_rng(hall)
    daily = np.sin(2 * np.pi * np.arange(len(index)) / 288.0)
    data = {r: np.round(20.0 + 5.0 * daily + rng.normal(0.0, 0.5, len(index)), 3) for r in roles}
    return pd.DataFrame(data, index=index)


def site(hall: int) -> str:
    return f"hall-{hall:03d}"


def ingest(engine: sa.Engine, halls: int, days: int, roles: Sequence[str]) -> dict[str, float]:
    """Every hall's history through write_wide; the timer covers the writes only, not making the frames."""
    written, spent = 0, 0.0
    for hall in range(halls):
        frame = hall_frame(hall, days, roles)
        t0 = time.perf_counter()
        written += write_wide(engine, frame, site=site(hall))
        spent += time.perf_counter() - t0
        if hall % 10 == 9:
            print(f"  {hall + 1}/{halls} halls, {written:,} readings, {written / spent:,.0f} readings/s",
                  file=sys.stderr, flush=True)
    return {"readings": written, "ingest_s": spent, "ingest_readings_per_s": written / spent}


def window_reads(url: str, halls: Sequence[int], roles: Sequence[str], end: datetime, reads: int) -> list[float]:
    """Each hall in its own thread and connection, started together; seconds per 24-hour read."""
    barrier = threading.Barrier(len(halls))
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def reader(hall: int) -> None:
        engine = make_engine(url)
        try:
            source = InternalSource(engine, site(hall))
            source.read_wide(roles, end - timedelta(hours=24), end)  # connect and warm, outside the timer
            barrier.wait()
            mine = []
            for _ in range(reads):
                t0 = time.perf_counter()
                wide = source.read_wide(roles, end - timedelta(hours=24), end)
                mine.append(time.perf_counter() - t0)
                if wide.total_gaps:
                    raise RuntimeError(f"{site(hall)}: {wide.total_gaps} gaps in the 24-hour window")
            with lock:
                latencies.extend(mine)
        except BaseException as err:  # reported after join
            errors.append(err)
            barrier.abort()
        finally:
            engine.dispose()

    threads = [threading.Thread(target=reader, args=(h,)) for h in halls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a reader failed: {errors[0]!r}") from errors[0]
    return latencies


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(latencies)
    return {"p50_s": float(np.percentile(arr, 50)), "p95_s": float(np.percentile(arr, 95)), "n": len(arr)}


def free_connections(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        limit = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
        used = int(conn.exec_driver_sql("SELECT count(*) FROM pg_stat_activity").scalar_one())
    return limit - used


def pg_size(engine: sa.Engine) -> dict[str, float]:
    with engine.connect() as conn:
        readings = conn.exec_driver_sql(
            "SELECT sum(pg_total_relation_size(relid)), count(*) FILTER (WHERE isleaf) "
            "FROM pg_partition_tree('readings')"
        ).one()
        database = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
    return {"readings_bytes": float(readings[0]), "partitions": float(readings[1]), "database_bytes": float(database)}


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A PostgreSQL database of our own, dropped afterwards whatever happens."""
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"coolpilot_fleet_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def bench_postgres(args: argparse.Namespace, roles: Sequence[str]) -> dict[str, Any]:
    end = START + timedelta(days=args.days)
    with scratch_database(args.pg_admin_url) as url:
        print(f"postgres: {redact_url(url)}", file=sys.stderr)
        engine = make_engine(url)
        try:
            upgrade(engine)
            out: dict[str, Any] = ingest(engine, args.halls, args.days, roles)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE readings")  # what autovacuum does soon after a load
            out.update(pg_size(engine))
            free = free_connections(engine) - args.spare_connections
            readers = min(args.readers or args.halls, args.halls, max(free, 1))
            if readers < (args.readers or args.halls):
                print(f"  only {free} connections free on the server: {readers} readers at once", file=sys.stderr)
            out["readers"] = readers
            out["read_one"] = percentiles(window_reads(url, [0], roles, end, args.reads * 4))
            out["read_all"] = percentiles(window_reads(url, range(readers), roles, end, args.reads))
        finally:
            engine.dispose()
    return out


def bench_sqlite(args: argparse.Namespace, roles: Sequence[str]) -> dict[str, Any]:
    end = START + timedelta(days=args.days)
    with tempfile.TemporaryDirectory(prefix="coolpilot-fleet-bench-") as tmp:
        path = Path(tmp) / "hall.db"
        engine = make_engine(f"sqlite:///{path}")
        try:
            upgrade(engine)
            out: dict[str, Any] = ingest(engine, 1, args.days, roles)
            engine.dispose()
            out["database_bytes"] = float(sum(p.stat().st_size for p in Path(tmp).iterdir()))
            out["read_one"] = percentiles(window_reads(f"sqlite:///{path}", [0], roles, end, args.reads * 4))
        finally:
            engine.dispose()
    return out


def docs_section(r: dict[str, Any], args: argparse.Namespace, command: str, commit: str) -> str:
    pg, lite = r["postgres"], r["sqlite"]
    ms = 1000.0
    full = args.halls == 100 and args.days == 90 and args.roles == 20
    return "\n".join([
        f"Fleet database (`{command}`, commit {commit}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores shared with other work; "
        f"{'the full size' if full else 'a fraction of the full 100 halls x 90 days x 20 roles'}):",
        "",
        "| figure | PostgreSQL fleet | SQLite, one hall |",
        "| --- | --- | --- |",
        f"| halls x days x roles (5-min) | {args.halls} x {args.days} x {args.roles} | 1 x {args.days} x {args.roles} |",
        f"| readings | {pg['readings']:,} | {lite['readings']:,} |",
        f"| ingest (write_wide, COPY on PostgreSQL) | {pg['ingest_readings_per_s']:,.0f} readings/s | "
        f"{lite['ingest_readings_per_s']:,.0f} readings/s |",
        f"| 24-h window read, one reader, p50 / p95 | {pg['read_one']['p50_s'] * ms:.1f} / "
        f"{pg['read_one']['p95_s'] * ms:.1f} ms | {lite['read_one']['p50_s'] * ms:.1f} / "
        f"{lite['read_one']['p95_s'] * ms:.1f} ms |",
        f"| 24-h window read, {pg['readers']} halls at once, p50 / p95 | {pg['read_all']['p50_s'] * ms:.1f} / "
        f"{pg['read_all']['p95_s'] * ms:.1f} ms | - |",
        f"| size | readings {pg['readings_bytes'] / 2**30:.2f} GiB in {int(pg['partitions'])} partitions "
        f"(database {pg['database_bytes'] / 2**30:.2f} GiB) | {lite['database_bytes'] / 2**20:.0f} MiB |",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--halls", type=int, default=100)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--roles", type=int, default=20, choices=range(1, 21), metavar="1..20")
    parser.add_argument("--readers", type=int, default=None, help="halls reading at once (default: all halls)")
    parser.add_argument("--reads", type=int, default=5, help="24-hour reads per reader (default 5)")
    parser.add_argument("--spare-connections", type=int, default=15,
                        help="connections left free on a shared server (default 15)")
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "COOLPILOT_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--out-md", type=Path, default=PERFORMANCE_MD, help="page with the fleet-db marker section")
    parser.add_argument("--no-docs", action="store_true", help="do not write the section")
    args = parser.parse_args(argv)
    roles = list(ROLES)[: args.roles]
    command, commit = invocation(), commit_hash()
    print(f"{args.halls} halls x {args.days} days x {len(roles)} roles at 5 min = "
          f"{args.halls * args.days * 288 * len(roles):,} readings", file=sys.stderr)
    t0 = time.perf_counter()
    results = {"sqlite": bench_sqlite(args, roles), "postgres": bench_postgres(args, roles)}
    section = docs_section(results, args, command, commit)
    print(section, file=sys.stderr)
    if not args.no_docs:
        write_marked_section(args.out_md, MARKER, section)
        print(f"wrote the table into {args.out_md} ({MARKER} markers)", file=sys.stderr)
    print(json.dumps({"bench": "fleet_db", "commit": commit, "command": command, "halls": args.halls,
                      "days": args.days, "roles": len(roles), "results": results,
                      "seconds": round(time.perf_counter() - t0, 1)}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
