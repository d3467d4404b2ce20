"""Security controls, each proven: listeners, no pickle, bound SQL, secrets, config permissions, systemd.

docs/security.md maps every threat to the test here (or elsewhere) that proves its
control. Processes run for real (the daemon as a subprocess, the metrics server on a
real socket, PostgreSQL and Mosquitto where needed); waits are bounded polls.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
import torch
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from controller.config import parse_config
from controller.config_bacnet import BacnetSettings
from controller.cycle import run_cycle
from controller.service.actuators import DbActuator
from controller.service.config_watch import ConfigHolder
from controller.service.daemon import Daemon, DaemonParts, WallClockTrigger
from controller.service.metrics import CoolpilotMetrics, serve
from controller.service.recorder import DecisionRecorder
from controller.service.retraining import ChampionProvider, Retrainer
from coolpilot.cli import main
from db import bulk, partitions, records
from db.engine import SQLITE_BUSY_TIMEOUT_MS, DatabaseError, make_engine, redact_url
from db.historian import ExternalHistorianSource, InternalSource
from db.ingest import ingest_csv, write_wide
from db.query import latest_timestamp, read_wide, site_stats
from db.schema import decisions, metadata, setpoint_commands
from db.tagmap import TagMap
from forecasting.artifact import SIDECAR_FILE, WEIGHTS_FILE, ArtifactError, sha256_bytes
from forecasting.registry import load_champion, register_trained
from forecasting.train import TrainConfig, fit_forecaster
from tests._ctl_support import window
from tests._forecast_synth import synthetic_history
from tests._security_scan import listening_sockets, scan_product, scan_source
from tests.prom_helpers import free_port
from tests.test_daemon_process import decision_rows, scrape, wait_for
from tests.test_deploy import unit_directives

SITE = "sec"
ROOT = Path(__file__).resolve().parents[1]
DB_SECRET = "s3cretPW"
MQTT_SECRET = "mqttS3cretPW"
requires_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")


def write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@contextmanager
def coolpilot_run(config: Path, log: Path, env: dict[str, str], *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """`coolpilot [flags] run --config FILE` as a real process, killed if still running at the end."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    environ.update(env)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "coolpilot.cli", *flags, "run", "--config", str(config)],
                                cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


@pytest.fixture
def site_db(sqlite_url: str, sqlite_engine: sa.Engine) -> str:
    """Two hours of healthy readings of site SITE ending now."""
    write_wide(sqlite_engine, window(datetime.now(UTC).replace(microsecond=0)), site=SITE)
    return sqlite_url


# -- 1. listeners ------------------------------------------------------------------------

@requires_proc
@pytest.mark.parametrize("host", [None, "127.0.0.2"])
def test_metrics_server_listens_only_where_configured(host: str | None) -> None:
    server = serve(CollectorRegistry(), port=0) if host is None else serve(CollectorRegistry(), host=host, port=0)
    expected = host or "127.0.0.1"
    other = "127.0.0.2" if host is None else "127.0.0.1"
    try:
        assert {s for s in listening_sockets() if s[2] == server.port} == {("tcp", expected, server.port)}
        with socket.create_connection((expected, server.port), timeout=5):
            pass
        with pytest.raises(ConnectionRefusedError):  # a wildcard bind would accept this
            socket.create_connection((other, server.port), timeout=5).close()
    finally:
        server.shutdown()


@requires_proc
@pytest.mark.parametrize("host", [None, "127.0.0.2"])
def test_the_daemon_listens_on_nothing_but_its_metrics_port(host: str | None, site_db: str, tmp_path: Path) -> None:
    port = free_port()
    bind = "" if host is None else f'host = "{host}"\n'
    config = write_config(tmp_path / "c.toml", f'site_id = "{SITE}"\nmode = "rules"\n[metrics]\n{bind}port = {port}\n'
                                               '[actuator]\nkind = "db"\nretries = 0\n')
    log = tmp_path / "daemon.log"
    with coolpilot_run(config, log, {"COOLPILOT_DATABASE_URL": site_db,
                                     "COOLPILOT_MODELS_DIR": str(tmp_path / "models")}) as proc:
        wait_for(lambda: "daemon running" in log.read_text(), "the daemon to start", proc=proc, log=log)
        wait_for(lambda: decision_rows(site_db), "the first cycle", proc=proc, log=log)
        assert listening_sockets(proc.pid) == {("tcp", host or "127.0.0.1", port)}
        assert stop(proc) == 0


def test_no_product_code_opens_a_listener_but_the_metrics_server() -> None:
    found = {f.where for f in scan_product("listen")}
    # the metrics server, and the BACnet client's own device (UDP, only with the bacnet actuator,
    # at bacnet.local_address: 127.0.0.1 unless the operator sets the BMS network's address)
    assert found == {"controller/service/metrics.py::MetricsServer.__init__",
                     "controller/service/bacnet/client.py::_check_bind"}, found
    assert BacnetSettings.model_fields["local_address"].default.startswith("127.0.0.1:")
    # the scan does see listeners (it is not vacuous)
    assert scan_source("listen", "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 80))\n")


# -- 2. no pickle --------------------------------------------------------------------------

def test_product_code_never_unpickles() -> None:
    assert [str(f) for f in scan_product("pickle")] == []
    risky = ("import joblib\nfrom dill import loads\nimport torch, numpy as np\ntorch.load('m.pt')\n"
             "torch.load('m.pt', weights_only=False)\nnp.load('a.npy', allow_pickle=True)\n")
    assert len(scan_source("pickle", risky)) == 5
    safe = "import torch, numpy as np\ntorch.load('m.pt', weights_only=True)\nnp.load('a.npy', allow_pickle=False)\n"
    assert scan_source("pickle", safe) == []


class _Payload:
    """Unpickling this creates ``marker``: proof that a pickle ran, if it ever does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def _plant_champion(engine: sa.Engine, artifact: Path, weights: bytes) -> None:
    """Register ``artifact`` as the site's champion with hashes that match ``weights`` everywhere."""
    artifact.mkdir(parents=True)
    (artifact / WEIGHTS_FILE).write_bytes(weights)
    digest = sha256_bytes(weights)
    (artifact / SIDECAR_FILE).write_text(json.dumps({"version": "evil-1", "weights_sha256": digest}))
    records.insert_model(engine, site=SITE, version="evil-1", artifact_path=str(artifact), sha256=digest)
    records.set_model_status(engine, "evil-1", "champion")


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickle_where_the_model_should_be_is_refused_and_never_run(
        kind: str, sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    if kind == "pickle":
        weights = pickle.dumps(_Payload(marker))
    else:
        path = tmp_path / "model.pt"
        torch.save({"w": torch.zeros(2), "payload": _Payload(marker)}, path)
        weights = path.read_bytes()
    artifact = tmp_path / "models" / "evil-1"
    _plant_champion(sqlite_engine, artifact, weights)
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(artifact / WEIGHTS_FILE))}: not a valid safetensors"):
        load_champion(sqlite_engine, SITE)
    # the control cycle turns it into a rules fallback that names the problem
    now = datetime.now(UTC).replace(microsecond=0)
    write_wide(sqlite_engine, window(now), site=SITE)
    decision = run_cycle(parse_config(f'site_id = "{SITE}"\nmode = "advisory"\n'), InternalSource(sqlite_engine, SITE),
                         ChampionProvider(sqlite_engine, SITE), None, DecisionRecorder(sqlite_engine, SITE),
                         lambda: now, {})
    assert decision.outcome == "fallback" and decision.reason_code == "model_error"
    assert "not a valid safetensors file" in decision.reason
    assert not marker.exists(), "the pickle was executed"


def test_a_changed_model_sidecar_is_refused(sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    """The JSON sidecar (scalers, calibration) shapes every prediction: its hash is in the record too."""
    history = synthetic_history(days=10, seed=2)
    tiny = TrainConfig(members=1, hidden=(16,), max_epochs=2, batch_size=256, min_samples=500, baselines=False)
    decision = register_trained(sqlite_engine, fit_forecaster(history, config=tiny, device="cpu"), history,
                                tmp_path / "models", site=SITE)
    assert decision.promoted and decision.artifact_path is not None
    assert load_champion(sqlite_engine, SITE) is not None  # untouched, it loads
    sidecar_path = decision.artifact_path / SIDECAR_FILE
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["y_scaler"]["mean"][1] -= 3.0  # forecasts of the rack inlet 3 K cooler than the model learnt
    sidecar_path.write_text(json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    with pytest.raises(ArtifactError, match=rf"{SIDECAR_FILE}: sha256 .* differs from the database record"):
        load_champion(sqlite_engine, SITE)


def test_a_model_directory_holding_only_a_pickle_is_refused(sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    artifact = tmp_path / "models" / "evil-1"
    _plant_champion(sqlite_engine, artifact, b"unused")
    (artifact / WEIGHTS_FILE).rename(artifact / "model.pkl")
    with pytest.raises(ArtifactError, match=rf"{WEIGHTS_FILE}: file not found"):
        load_champion(sqlite_engine, SITE)


# -- 3. SQL --------------------------------------------------------------------------------

#: The only SQL built from pieces, and the pieces allowed there. Each is an identifier or
#: keyword argument that SQL cannot bind as a parameter, and none comes from input.
SQL_ALLOWED: dict[str, set[str]] = {
    # COPY names its table; callers pass "readings" or _TEMP_TABLE (checked below)
    "db/bulk.py::_copy": {"table"},
    # the temporary table's fixed name (a module constant)
    "db/bulk.py::_insert_postgresql": {"_TEMP_TABLE"},
    # PRAGMA takes no bound parameters: an int module constant, formatted with :d
    "db/engine.py::_sqlite_pragmas": {"SQLITE_BUSY_TIMEOUT_MS"},
    # Partition DDL takes no bound parameters for names or bounds: names come from
    # partition_name (two ints, checked below) or the DEFAULT_PARTITION constant, bounds
    # are ints; a name read back from pg_class is dropped only if it matches _NAME.
    "db/partitions.py::create_month": {"name", "DEFAULT_PARTITION", "hi", "lo"},
    "db/partitions.py::apply_retention": {"part.name", "DEFAULT_PARTITION"},
    # the migration's fixed DDL: a bool switch, the _COMMENTS constants, the default partition's name
    "db/migrations/versions/0002_partition_readings.py::_create_readings": {
        "' PARTITION BY RANGE (ts_s)' if partitioned else ''", "column", "text"},
    "db/migrations/versions/0002_partition_readings.py::upgrade": {"DEFAULT_PARTITION"},
}


def test_product_sql_is_never_built_from_input() -> None:
    findings = scan_product("sql")
    unexpected = [str(f) for f in findings if f.where not in SQL_ALLOWED or
                  not set(f.what.split("pieces: ")[1].split(", ")) <= SQL_ALLOWED[f.where]]
    assert unexpected == []
    assert {f.where for f in findings} == set(SQL_ALLOWED), "SQL_ALLOWED lists a place that no longer exists"
    assert re.fullmatch(r"[a-z_]+", bulk._TEMP_TABLE) and isinstance(SQLITE_BUSY_TIMEOUT_MS, int)
    assert re.fullmatch(r"[a-z_]+", partitions.DEFAULT_PARTITION)
    assert partitions._NAME.fullmatch(partitions.partition_name((2035, 2)))
    with pytest.raises((TypeError, ValueError)):
        partitions.partition_name(("2035; DROP TABLE readings", 2))  # type: ignore[arg-type]
    source = (ROOT / "db" / "bulk.py").read_text()
    assert set(re.findall(r"_copy\(conn, ([^,]+),", source)) == {'"readings"', "_TEMP_TABLE"}
    # the scan is not vacuous: each way of building SQL is caught
    bad = ("def f(conn, cur, name):\n    conn.execute(sa.text(f\"SELECT * FROM t WHERE n = '{name}'\"))\n"
           "    sql = 'DELETE FROM t WHERE n = %s' % name\n    cur.execute(sql)\n"
           "    conn.exec_driver_sql('SELECT ' + name)\n    conn.execute(text('SELECT {}'.format(name)))\n")
    assert len(scan_source("sql", bad)) == 4
    assert scan_source("sql", "def f(conn, n):\n    conn.execute(sa.text('SELECT 1 WHERE n = :n'), {'n': n})\n") == []


HOSTILE_SITE = "x'; DROP TABLE readings; --"
HOSTILE_TAG = "rack\"inlet'); DELETE FROM sites; --"
HOSTILE_TABLE = 'bms"; DROP TABLE readings; --'
HOSTILE_COLUMNS = ("t'; DROP TABLE points; --", 'tag"--', "v); DELETE FROM decisions; --")


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_hostile_site_and_tag_names_are_only_data(engine: sa.Engine, tmp_path: Path) -> None:
    end = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
    write_wide(engine, window(end), site="victim")
    stamps = [end - timedelta(minutes=5 * i) for i in range(6)]
    path = tmp_path / "hostile.csv"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["timestamp", "tag", "value"])
        out.writerows([ts.isoformat(), tag, value] for ts in stamps
                      for tag, value in ((HOSTILE_TAG, 23.5), ("chw'--", 9.5)))
    tag_map = TagMap.from_mapping({HOSTILE_TAG: "rack_inlet_max_c", "chw'--": "chw_supply_c"})
    report = ingest_csv(engine, path, tag_map, site=HOSTILE_SITE)
    assert report.readings_inserted == 12 and report.site == HOSTILE_SITE

    frame = read_wide(engine, ["rack_inlet_max_c", "chw_supply_c"], stamps[-1], end + timedelta(minutes=5),
                      site=HOSTILE_SITE).frame
    assert frame["rack_inlet_max_c"].tolist() == [23.5] * 6 and frame["chw_supply_c"].tolist() == [9.5] * 6
    assert latest_timestamp(engine, HOSTILE_SITE) == end
    stats = {s["site"]: s for s in site_stats(engine)}
    assert stats[HOSTILE_SITE]["readings"] == 12 and stats["victim"]["readings"] == window(end).size
    sneaky = read_wide(engine, ["rack_inlet_max_c"], stamps[-1], end, site="victim' OR '1'='1").frame
    assert sneaky["rack_inlet_max_c"].isna().all()  # no rows of another site leak out

    # a site historian whose table, columns and tags are all hostile names
    md = sa.MetaData()
    trend = sa.Table(HOSTILE_TABLE, md, sa.Column(HOSTILE_COLUMNS[0], sa.BigInteger),
                     sa.Column(HOSTILE_COLUMNS[1], sa.String(100)), sa.Column(HOSTILE_COLUMNS[2], sa.Float))
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(trend.insert(), [{HOSTILE_COLUMNS[0]: int(ts.timestamp()), HOSTILE_COLUMNS[1]: tag,
                                       HOSTILE_COLUMNS[2]: value}
                                      for ts in stamps for tag, value in ((HOSTILE_TAG, 24.0), ("other", 99.0))])
    source = ExternalHistorianSource(engine, HOSTILE_TABLE, *HOSTILE_COLUMNS,
                                     tag_map=TagMap.from_mapping({HOSTILE_TAG: "rack_inlet_max_c"}))
    got = source.read_wide(["rack_inlet_max_c"], stamps[-1], end + timedelta(minutes=5)).frame
    assert got["rack_inlet_max_c"].tolist() == [24.0] * 6
    assert source.latest_timestamp() == end
    assert {t.name for t in metadata.sorted_tables} | {HOSTILE_TABLE} <= _tables(engine)


# -- 4. secrets ----------------------------------------------------------------------------

DB_URLS = {
    "userinfo": f"postgresql+psycopg://u:{DB_SECRET}@127.0.0.1:1/db",
    "percent-encoded": f"postgresql://u:{quote(DB_SECRET + '@/x', safe='')}@127.0.0.1:1/db",
    "query": f"postgresql://u@127.0.0.1:1/db?password={DB_SECRET}&sslpassword={DB_SECRET}",
    "raw-at-sign": f"postgresql://u:at@{DB_SECRET}@127.0.0.1:1/db",  # the parser would take the tail for the host
}


@pytest.mark.parametrize("url", [*DB_URLS.values(), f"weird:://u:{DB_SECRET}@h/x?password={DB_SECRET} y"])
def test_redacted_urls_hold_no_password(url: str) -> None:
    shown = redact_url(url)
    assert DB_SECRET not in shown and quote(DB_SECRET) not in shown and "***" in shown


def test_a_password_with_a_raw_at_sign_is_refused_before_connecting() -> None:
    with pytest.raises(DatabaseError, match="percent-encode it as %40") as info:
        make_engine(DB_URLS["raw-at-sign"])
    assert DB_SECRET not in str(info.value)


@pytest.mark.parametrize("url", DB_URLS.values(), ids=DB_URLS.keys())
def test_cli_output_and_logs_never_hold_a_password(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COOLPILOT_MQTT_PASSWORD", MQTT_SECRET)
    caplog.set_level(logging.DEBUG)
    cfg = str(write_config(tmp_path / "c.toml", f'site_id = "{SITE}"\nmode = "auto"\n[database]\nurl = "{url}"\n'
                                                '[actuator]\nkind = "mqtt"\n[actuator.mqtt]\nusername = "u"\n'
                                                'password_env = "COOLPILOT_MQTT_PASSWORD"\n'))
    seen = []
    for argv, expected in ((["config", "check", cfg], 0), (["config", "check", cfg, "--json"], 0),
                           (["-v", "decide", "--once", "--config", cfg], 2),
                           (["decide", "--once", "--config", cfg, "--json"], 2),
                           (["-v", "run", "--config", cfg], 2), (["explain", "--last", "--config", cfg], 2)):
        code, out, err = cli(capsys, *argv)
        assert code == expected, (argv, err)
        seen.append(out + err)
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert DB_SECRET not in text and quote(DB_SECRET) not in text and MQTT_SECRET not in text
    assert "***" in seen[0] and "***" in json.loads(seen[1])["effective"]["database"]["url"]  # shown, redacted
    assert "COOLPILOT_MQTT_PASSWORD" in seen[0]  # the variable's name is shown, never its value
    assert all("127.0.0.1:1" in s for s in seen[2:6]), seen[2:6]  # each failure names the database


def test_the_daemon_with_its_database_down_logs_and_exports_no_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = make_engine(f"postgresql://coolpilot:{DB_SECRET}@127.0.0.1:1/coolpilot?connect_timeout=3")
    registry = CollectorRegistry()
    parts = DaemonParts(
        holder=ConfigHolder(write_config(tmp_path / "c.toml", f'site_id = "{SITE}"\nmode = "auto"\n')),
        source=InternalSource(dead, SITE), forecaster=ChampionProvider(dead, SITE),
        actuator=DbActuator(dead, SITE, retries=0), recorder=DecisionRecorder(dead, SITE),
        metrics=CoolpilotMetrics(registry, cycle_period_s=300.0), clock=lambda: datetime.now(UTC),
        retrain=Retrainer(dead, SITE, tmp_path / "models", history_days=30),
    )
    daemon = Daemon(parts, WallClockTrigger(interval_s=300.0))
    caplog.set_level(logging.DEBUG)
    try:
        report = daemon.run_one_cycle()
        daemon._quality_job()
        daemon._training_job()
    finally:
        daemon._wake_r.close()
        daemon._wake_w.close()
    assert report.decision is not None and report.decision.reason_code == "db_error"
    assert daemon.trainings and not daemon.trainings[0].ok
    logged = [r.getMessage() for r in caplog.records if "127.0.0.1:1" in r.getMessage()]
    assert len(logged) >= 3, caplog.text  # the recorder, the quality check and training each said so
    exposition = generate_latest(registry).decode()
    assert registry.get_sample_value("coolpilot_training_runs_total", {"result": "failure"}) == 1
    for text in (caplog.text, exposition, json.dumps(report.decision.to_json()), str(daemon.trainings)):
        assert DB_SECRET not in text


def _broker_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.postgres
@pytest.mark.skipif(not _broker_up(), reason="needs Mosquitto on 127.0.0.1:1883")
def test_a_running_daemon_never_shows_its_passwords(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL here trusts local connections, so a URL with a password works and the daemon runs fully."""
    url = sa.engine.make_url(pg_url).set(password=DB_SECRET).render_as_string(hide_password=False)
    pg = make_engine(pg_url)
    write_wide(pg, window(datetime.now(UTC).replace(microsecond=0)), site=SITE)
    port = free_port()
    topic = f"coolpilot-test-{secrets.token_hex(4)}/{{site_id}}/{{role}}"
    config = write_config(tmp_path / "c.toml", f'site_id = "{SITE}"\nmode = "rules"\n[metrics]\nport = {port}\n'
                                               '[actuator]\nkind = "mqtt"\nretries = 0\n[actuator.mqtt]\n'
                                               f'topic = "{topic}"\nretain = false\nusername = "coolpilot"\n'
                                               'password_env = "COOLPILOT_MQTT_PASSWORD"\n')
    log = tmp_path / "daemon.log"
    env = {"COOLPILOT_DATABASE_URL": url, "COOLPILOT_MQTT_PASSWORD": MQTT_SECRET,
           "COOLPILOT_MODELS_DIR": str(tmp_path / "models")}

    def rows(table: sa.Table) -> list[dict[str, Any]]:
        with pg.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table))]

    try:
        with coolpilot_run(config, log, env, "-v") as proc:
            wait_for(lambda: [c for c in rows(setpoint_commands) if c["status"] != "pending"],
                     "the first cycle's MQTT setpoints", proc=proc, log=log)
            body = scrape(port)
            assert stop(proc) == 0
        commands, stored = rows(setpoint_commands), rows(decisions)
    finally:
        pg.dispose()
    text = log.read_text()
    assert f"database {sa.engine.make_url(url).render_as_string(hide_password=True)}" in text  # redacted
    assert stored and {c["status"] for c in commands} == {"sent"}  # MQTT ran, with the password
    assert 'coolpilot_decisions_total{outcome=' in body
    for what, value in (("log", text), ("metrics", body), ("setpoint_commands", str(commands)),
                        ("decisions", str(stored))):
        assert DB_SECRET not in value and MQTT_SECRET not in value, what


# -- 5. config permissions --------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_config_others_can_write_stops_every_command(mode: int, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(write_config(tmp_path / "c.toml", f'site_id = "{SITE}"\n', mode))
    for argv in (["config", "check", cfg], ["decide", "--once", "--config", cfg], ["run", "--config", cfg]):
        code, out, err = cli(capsys, *argv)
        assert code == 2 and out == "", argv
        assert f"{cfg}: file is writable by group or other (mode {mode:o})" in err and f"chmod go-w {cfg}" in err


def test_a_reload_of_a_config_others_can_write_is_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", 'mode = "advisory"\n')
    holder = ConfigHolder(path)
    write_config(path, 'mode = "auto"\n[safety]\nrack_inlet_limit_c = 35.0\n', 0o646)
    result = holder.poll()  # the content changed: a reload is attempted
    assert result is not None and not result.reload_ok and "writable by group or other" in (result.error or "")
    assert holder.config.mode == "advisory" and holder.config.safety.rack_inlet_limit_c == 27.0
    holder.request_reload()  # SIGHUP: the same refusal
    result = holder.poll()
    assert result is not None and not result.reload_ok
    path.chmod(0o600)
    holder.request_reload()
    result = holder.poll()
    assert result is not None and result.reload_ok and holder.config.safety.rack_inlet_limit_c == 35.0


# -- 6. systemd ----------------------------------------------------------------------------

HARDENING = {
    "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateMounts": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
    "ProtectHostname": "yes", "ProtectProc": "invisible", "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "RemoveIPC": "yes", "CapabilityBoundingSet": "",
    "AmbientCapabilities": "", "SystemCallArchitectures": "native", "UMask": "0077",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallErrorNumber": "EPERM",
}


def test_the_unit_keeps_its_hardening_and_holds_no_secret() -> None:
    d = unit_directives()
    for key, value in HARDENING.items():
        assert d.get(key) == [value], f"{key}: {d.get(key)}"
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert "MemoryDenyWriteExecute" not in d  # PyTorch's oneDNN generates code at run time (see the unit)
    settings = " ".join(d.get("Environment", []) + d.get("ExecStart", []))
    assert not re.search(r"password|://[^ ]*:[^ ]*@", settings, re.IGNORECASE), settings
