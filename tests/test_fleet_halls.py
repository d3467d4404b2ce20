"""A fleet of three halls on the real PostgreSQL: one test process, three daemons' cycles per tick.

Each hall is wired by `coolpilot.wiring.build_parts` from its own config, with its own
simulated plant (its records go through `db.ingest.write_wide` into the one readings
table) and its own `CollectorRegistry`. The ticks run across a month boundary, so the
first February record creates February's partition; retention then drops January.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.decision import OUTCOMES
from controller.service.daemon import Daemon
from controller.service.triggers import PacedTrigger
from coolpilot.harness.history import generate_history
from coolpilot.wiring import build_parts, plant_clock
from db.historian import InternalSource
from db.ingest import write_wide
from db.partitions import DEFAULT_PARTITION, apply_retention, forget, list_partitions
from simulator.plant_sim import SimulatedPlant, make_plant

HALLS = ("hall-a", "hall-b", "hall-c")
START = datetime(2035, 1, 31, 22, 0, tzinfo=UTC)  # one hour of history, then cycles past midnight
TICKS = 14  # 23:00 .. 00:05 on 1 February


def hall_config(folder: Path, site: str, port: int) -> Path:
    path = folder / f"{site}.toml"
    path.write_text(f'site_id = "{site}"\nmode = "auto"\n[metrics]\nport = {port}\n'
                    '[actuator]\nkind = "db"\nretries = 1\nretry_backoff_s = 0\n', encoding="utf-8")
    path.chmod(0o600)
    return path


def hall_with_history(engine: sa.Engine, site: str, seed: int) -> SimulatedPlant:
    plant = make_plant(start=START, seed=seed)
    write_wide(engine, generate_history(plant, days=1 / 24, explore_share=0.0, seed=seed), site=site)
    return plant


def _scalar(engine: sa.Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def per_site_readings(engine: sa.Engine, table: str = "readings") -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT s.name, count(*) FROM {table} r JOIN points p ON p.id = r.point_id "
            "JOIN sites s ON s.id = p.site_id GROUP BY s.name"
        ).all()
    return {str(name): int(n) for name, n in rows}


def test_three_halls_cycle_on_one_postgresql_with_partitions_and_retention(
        pg_engine: sa.Engine, tmp_path: Path) -> None:
    with pg_engine.begin() as conn:  # another test may have made February 2035 already
        conn.exec_driver_sql("DROP TABLE IF EXISTS readings_p203502")
        forget(conn)
    plants = {site: hall_with_history(pg_engine, site, seed) for seed, site in enumerate(HALLS)}
    registries = {site: CollectorRegistry() for site in HALLS}
    daemons: dict[str, Daemon] = {}
    with ExitStack() as stack:
        for i, site in enumerate(HALLS):
            parts = stack.enter_context(build_parts(
                hall_config(tmp_path, site, 9301 + i), engine=pg_engine, registry=registries[site],
                clock=plant_clock(plants[site]), plant=plants[site], environ={},
            ))
            daemons[site] = daemon = Daemon(parts, PacedTrigger(cycles_per_s=0.0, period_s=300.0))
            stack.callback(daemon._wake_r.close)
            stack.callback(daemon._wake_w.close)
        for _ in range(TICKS):
            for daemon in daemons.values():
                daemon.run_one_cycle()

    for site, daemon in daemons.items():  # each hall ran its own cycles and published its own metrics
        assert daemon.cycles == TICKS and daemon.cycle_errors == 0, site
        decided = sum(registries[site].get_sample_value("coolpilot_decisions_total", {"outcome": o}) or 0.0
                      for o in (*OUTCOMES, "error"))
        assert decided == TICKS, site
        assert registries[site].get_sample_value("coolpilot_last_cycle_success_timestamp_seconds") is not None
        recorded = _scalar(pg_engine, "SELECT count(*) FROM decisions d JOIN sites s ON s.id = d.site_id "
                                      "WHERE s.name = :site", site=site)
        assert recorded == TICKS, site
    rack = {site: registries[site].get_sample_value("coolpilot_rack_inlet_max_celsius") for site in HALLS}
    assert all(r is not None for r in rack.values()) and len(set(rack.values())) == 3  # three different plants

    with pg_engine.connect() as conn:
        parts_now = {p.name for p in list_partitions(conn)}
    assert {"readings_p203501", "readings_p203502"} <= parts_now
    february = per_site_readings(pg_engine, "readings_p203502")
    assert set(february) == set(HALLS) and min(february.values()) > 0  # the first February records
    assert per_site_readings(pg_engine, DEFAULT_PARTITION) == {}
    january = per_site_readings(pg_engine, "readings_p203501")

    with pg_engine.begin() as conn:
        report = apply_retention(conn, keep_days=30, now=datetime(2035, 3, 5, tzinfo=UTC))
    assert "readings_p203501" in report.partitions_dropped
    assert per_site_readings(pg_engine) == february  # January gone, February intact
    assert sum(january.values()) > 0
    source = InternalSource(pg_engine, "hall-b")
    frame = source.read_wide(["it_power_kw"], datetime(2035, 2, 1, tzinfo=UTC),
                             datetime(2035, 2, 1, tzinfo=UTC) + timedelta(minutes=10))
    assert frame.frame["it_power_kw"].notna().any()
