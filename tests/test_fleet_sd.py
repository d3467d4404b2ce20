"""``coolpilot fleet sd``: Prometheus file_sd targets from hall configs, checked by promtool
and scraped by a real Prometheus (three metrics endpoints, one ``site`` label each)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from controller.config import parse_config
from controller.service.metrics import CoolpilotMetrics, serve
from coolpilot.cli import main
from coolpilot.fleet_cli import Hall, check_unique, hall_of, sd_groups
from tests.prom_helpers import PROMTOOL, requires_promtool, running_prometheus

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
FLEET_PROMETHEUS = DEPLOY / "prometheus" / "prometheus-fleet.yml"
FLEET_DASHBOARD = DEPLOY / "grafana" / "dashboards" / "coolpilot-fleet.json"


def write_hall(folder: Path, site: str, port: int, host: str = "127.0.0.1", enabled: bool = True) -> Path:
    path = folder / f"{site}.toml"
    path.write_text(f'site_id = "{site}"\n[metrics]\nenabled = {str(enabled).lower()}\nhost = "{host}"\n'
                    f"port = {port}\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def test_targets_come_from_each_configs_site_and_metrics_address() -> None:
    cfg = parse_config('site_id = "hall-b"\n[metrics]\nhost = "0.0.0.0"\nport = 9202\n')
    assert hall_of("b.toml", cfg, "10.0.0.5") == Hall("b.toml", "hall-b", "10.0.0.5:9202")
    v6 = parse_config('site_id = "v6"\n[metrics]\nhost = "::1"\nport = 9203\n')
    assert hall_of("v6.toml", v6, "127.0.0.1").target == "[::1]:9203"
    off = parse_config('site_id = "off"\n[metrics]\nenabled = false\n')
    halls = [Hall("b.toml", "hall-b", "h:2"), Hall("a.toml", "hall-a", "h:1"), hall_of("off.toml", off, "x")]
    assert sd_groups(halls) == [{"targets": ["h:1"], "labels": {"site": "hall-a"}},
                                {"targets": ["h:2"], "labels": {"site": "hall-b"}}]


def test_a_shared_site_name_or_port_names_both_files() -> None:
    with pytest.raises(ValueError, match=r"b.toml: site_id 'x' is also used by a.toml"):
        check_unique([Hall("a.toml", "x", "h:1"), Hall("b.toml", "x", "h:2")])
    with pytest.raises(ValueError, match=r"b.toml: metrics address h:1 is also used by a.toml"):
        check_unique([Hall("a.toml", "x", "h:1"), Hall("b.toml", "y", "h:1")])


def test_the_command_rejects_a_clash_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_hall(tmp_path, "hall-a", 9301)
    write_hall(tmp_path, "hall-b", 9301)
    out = tmp_path / "targets.json"
    assert main(["fleet", "sd", "--configs", str(tmp_path / "*.toml"), "--out", str(out)]) == 2
    assert "metrics address 127.0.0.1:9301 is also used by" in capsys.readouterr().err
    assert not out.exists()


@requires_promtool
def test_written_targets_pass_promtool_with_the_fleet_config(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for i, site in enumerate(("hall-a", "hall-b", "hall-c")):
        write_hall(tmp_path, site, 9301 + i)
    write_hall(tmp_path, "hall-d", 9399, enabled=False)
    out = tmp_path / "sd" / "targets.json"
    assert main(["fleet", "sd", "--configs", str(tmp_path / "*.toml"), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics_disabled"] == ["hall-d"]
    groups = json.loads(out.read_text())
    assert [(g["labels"]["site"], g["targets"]) for g in groups] == [
        ("hall-a", ["127.0.0.1:9301"]), ("hall-b", ["127.0.0.1:9302"]), ("hall-c", ["127.0.0.1:9303"])]
    config = tmp_path / "prometheus.yml"
    config.write_text(FLEET_PROMETHEUS.read_text().replace("/etc/prometheus/coolpilot-targets.json", str(out))
                      .replace("- alerts.yml", f"- {FLEET_PROMETHEUS.parent / 'alerts.yml'}"))
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "does not exist" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_prometheus_scrapes_every_hall_with_its_site_label(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    servers = []
    try:
        for age_s, site in enumerate(("hall-a", "hall-b", "hall-c"), start=1):
            registry = CollectorRegistry()
            CoolpilotMetrics(registry).set_data_age(float(age_s))
            servers.append(server := serve(registry, port=0))
            write_hall(etc, site, server.port)
        out = tmp_path / "targets.json"
        assert main(["fleet", "sd", "--configs", str(etc / "*.toml"), "--out", str(out)]) == 0
        with running_prometheus(tmp_path / "prom", [], sd_files=[out]) as prom:
            prom.wait_for_series("count(count by (site) (coolpilot_data_age_seconds)) == 3")
            ages = prom.query("coolpilot_data_age_seconds")
            for expr in fleet_dashboard_queries():  # each one parses and runs on the real server
                prom.query(expr)
            halls_up = prom.query(fleet_dashboard_queries()[0])
    finally:
        for server in servers:
            server.shutdown()
    assert {s["metric"]["site"]: float(s["value"][1]) for s in ages} == {"hall-a": 1.0, "hall-b": 2.0, "hall-c": 3.0}
    assert float(halls_up[0]["value"][1]) == 3.0


def fleet_dashboard_queries() -> list[str]:
    """The fleet dashboard's queries with Grafana's variables filled in as Grafana would (All halls)."""
    dashboard = json.loads(FLEET_DASHBOARD.read_text())
    return [t["expr"].replace("$site", ".*").replace("$__range", "5m")
            for p in dashboard["panels"] for t in p["targets"]]
