"""Static checks of deploy/: alert rules (promtool), Grafana, systemd unit, Dockerfile, compose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from controller.service.metrics import CoolpilotMetrics
from tests.prom_helpers import PROMTOOL, requires_promtool

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "coolpilot.json"
UNIT = DEPLOY / "systemd" / "coolpilot.service"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD_UID = "coolpilot-overview"
# Series not from CoolpilotMetrics that queries may use: Prometheus's own scrape health.
PROMETHEUS_BUILTIN = {"up"}
SELECTOR_NAME = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
COOLPILOT_NAME = re.compile(r"\bcoolpilot_[a-z0-9_]+")


def exposed_series_names() -> set[str]:
    registry = CollectorRegistry()
    m = CoolpilotMetrics(registry)
    m.observe_decision(mode="auto", outcome="optimised", ts_s=1.0, cycle_duration_s=0.1)
    m.observe_matured_forecast(100.0, 90.0, 80.0, 95.0)
    m.set_interval_coverage({"cooling_power_kw": 0.9})  # a labelled series shows once it has a label
    names = set()
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def referenced_names(expr: str) -> set[str]:
    return set(COOLPILOT_NAME.findall(expr)) | set(SELECTOR_NAME.findall(expr))


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


# -- Prometheus ------------------------------------------------------------------------

@requires_promtool
def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    assert PROMTOOL is not None
    tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
    assert tests
    proc = subprocess.run([PROMTOOL, "test", "rules", *map(str, tests)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@requires_promtool
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml", "prometheus-fleet.yml"])
def test_promtool_check_config(config: str) -> None:
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    names = {r["alert"] for r in alert_rules()}
    tested: set[str] = set()
    for path in (DEPLOY / "prometheus" / "tests").glob("*.yml"):
        for t in yaml.safe_load(path.read_text())["tests"]:
            tested |= {a["alertname"] for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    assert names - tested == set(), "alerts never shown to fire in a unit test"
    required = {"CoolpilotDown", "CoolpilotStuckInFallback", "CoolpilotDataStale", "CoolpilotRackInletNearLimit",
                "CoolpilotPredictionErrorDrift", "CoolpilotTrainingFailing", "CoolpilotConfigReloadFailing"}
    assert required <= names


def test_alert_rules_use_only_exposed_metrics() -> None:
    exposed = exposed_series_names() | PROMETHEUS_BUILTIN
    for rule in alert_rules():
        missing = referenced_names(rule["expr"]) - exposed
        assert not missing, f"{rule['alert']} references {sorted(missing)}, not defined by CoolpilotMetrics"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_scrape_configs_target_the_metrics_port() -> None:
    host = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for sc in host["scrape_configs"] if sc["job_name"] == "coolpilot"
               for c in sc["static_configs"] for t in c["targets"]]
    assert targets == ["127.0.0.1:9109"]
    compose = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())
    targets = [t for sc in compose["scrape_configs"] if sc["job_name"] == "coolpilot"
               for c in sc["static_configs"] for t in c["targets"]]
    assert targets == ["coolpilot:9109"]


# -- Grafana ---------------------------------------------------------------------------

def test_dashboard_has_fixed_uid_and_required_panels() -> None:
    d = dashboard()
    assert d["uid"] == DASHBOARD_UID
    panels = [p for p in d["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["targets"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        assert p.get("description"), f"panel {p['title']!r} needs a description"
    exprs = " ".join(dashboard_exprs())
    for needed in ["coolpilot_pue_ratio", "coolpilot_pue_predicted_ratio", "coolpilot_cooling_power_watts",
                   "coolpilot_savings_estimated_energy_joules", "coolpilot_setpoint_max_celsius",
                   "coolpilot_rack_inlet_margin_celsius", "coolpilot_fallback_reason", "coolpilot_mode",
                   "coolpilot_ood_score", "coolpilot_cooling_power_predicted_upper_watts",
                   "coolpilot_forecast_relative_error_ratio_sum", "coolpilot_training_consecutive_failures",
                   "coolpilot_cycle_duration_seconds_bucket"]:
        assert needed in exprs, f"dashboard shows nothing of {needed}"


def test_dashboard_queries_use_only_exposed_metrics() -> None:
    exposed = exposed_series_names() | PROMETHEUS_BUILTIN
    for expr in dashboard_exprs():
        missing = referenced_names(expr) - exposed
        assert not missing, f"dashboard query {expr!r} references {sorted(missing)}"


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/coolpilot.yml").read_text())
    (p,) = provider["providers"]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./grafana/dashboards"] == p["options"]["path"]
    sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = sources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"


# -- systemd ---------------------------------------------------------------------------

def unit_directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, val = line.partition("=")
        out.setdefault(key.strip(), []).append(val.strip())
    return out


def test_unit_is_a_hardened_notify_service() -> None:
    d = unit_directives()
    expected = {
        "Type": "notify", "Restart": "on-failure", "DynamicUser": "yes", "StateDirectory": "coolpilot",
        "ConfigurationDirectory": "coolpilot", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "NoNewPrivileges": "yes", "ExecReload": "/bin/kill -HUP $MAINPID",
        "NotifyAccess": "main",
    }
    for key, val in expected.items():
        assert d.get(key) == [val], f"{key}: {d.get(key)}"
    assert d["WatchdogSec"] and d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in d["SystemCallFilter"]
    assert d["ExecStart"][0].endswith("coolpilot run --config /etc/coolpilot/coolpilot.toml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at an executable of this machine.
    exe = shutil.which("coolpilot") or sys.executable
    text = UNIT.read_text().replace("/opt/coolpilot/venv/bin/coolpilot", exe)
    unit = tmp_path / "coolpilot.service"
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "coolpilot.service" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    # Exposure score (0 best .. 10 worst) of the hardening; --threshold is in tenths.
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager",
                           str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Overall exposure level for coolpilot.service" in proc.stdout


TEMPLATE = DEPLOY / "systemd" / "coolpilot@.service"


def test_fleet_template_is_the_hardened_unit_per_site() -> None:
    """coolpilot@.service differs from coolpilot.service only where the site (%i) goes."""
    def directives(path: Path) -> list[str]:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]

    single, template = directives(UNIT), directives(TEMPLATE)
    per_site = [ln for ln in template if "%i" in ln]
    assert {ln.split("=")[0] for ln in template} == {ln.split("=")[0] for ln in single}  # same directives
    assert {ln for ln in template if "%i" not in ln} <= set(single)  # same hardening and values
    assert "ExecStart=/opt/coolpilot/venv/bin/coolpilot run --config /etc/coolpilot/%i.toml" in per_site
    assert {"StateDirectory=coolpilot/%i", "WorkingDirectory=%S/coolpilot/%i",
            "Environment=COOLPILOT_MODELS_DIR=%S/coolpilot/%i/models"} <= set(per_site)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_fleet_template(tmp_path: Path) -> None:
    exe = shutil.which("coolpilot") or sys.executable
    unit = tmp_path / "coolpilot@.service"
    unit.write_text(TEMPLATE.read_text().replace("/opt/coolpilot/venv/bin/coolpilot", exe))
    instance = tmp_path / "coolpilot@hall-a.service"
    instance.symlink_to(unit)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(instance)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "coolpilot@" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager",
                           str(instance)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


# -- Dockerfile and compose ------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_copies_existing_files_and_every_package() -> None:
    instructions = dockerfile_instructions()
    copied: list[str] = []
    for op, rest in instructions:
        if op == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            copied += sources
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), f"Dockerfile COPYs {src}, which is not in the repository"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied into the image"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for src in copied:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f"{src} is excluded by Dockerfile.dockerignore"


def test_dockerfile_cpu_by_default_cuda_by_argument_and_unprivileged() -> None:
    instructions = dockerfile_instructions()
    args = [rest for op, rest in instructions if op == "ARG"]
    assert "TORCH_VARIANT=cpu" in args
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in runs
    users = [rest for op, rest in instructions if op == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    cmd = [json.loads(rest) for op, rest in instructions if op == "CMD"][-1]
    entry = [json.loads(rest) for op, rest in instructions if op == "ENTRYPOINT"][-1]
    assert entry + cmd == ["coolpilot", "run", "--config", "/etc/coolpilot/coolpilot.toml"]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_services_volumes_and_ports() -> None:
    c = compose()
    services = c["services"]
    assert set(services) == {"postgres", "coolpilot", "prometheus", "grafana"}
    build = services["coolpilot"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    named = set(c["volumes"])
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name} mounts {src}, which does not exist"
            else:
                assert src in named, f"{name} uses undeclared volume {src}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "ports" not in services["postgres"] and "ports" not in services["coolpilot"]
    prom = services["prometheus"]
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    targets = {v.split(":")[1] for v in prom["volumes"] if v.startswith("./")}
    assert config_arg.split("=", 1)[1] in targets
    assert "/etc/prometheus/alerts.yml" in targets


def test_compose_passwords_come_from_the_environment() -> None:
    services = compose()["services"]
    for svc, key in [("postgres", "POSTGRES_PASSWORD"), ("coolpilot", "PGPASSWORD"),
                     ("grafana", "GF_SECURITY_ADMIN_PASSWORD")]:
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", services[svc]["environment"][key]), key
    url = services["coolpilot"]["environment"]["COOLPILOT_DATABASE_URL"]
    assert "@postgres:5432/" in url and ":" not in url.split("//", 1)[1].split("@")[0], "no password in the URL"


def test_compose_config_is_valid_and_exposes_metrics_to_prometheus() -> None:
    from controller.config import parse_config

    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose()["services"]["coolpilot"]["volumes"]}
    path = DEPLOY / mounts["/etc/coolpilot/coolpilot.toml"]
    config = parse_config(path.read_text(), str(path))
    assert config.metrics.enabled and config.metrics.host == "0.0.0.0"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())
    targets = [t for sc in scrape["scrape_configs"] if sc["job_name"] == "coolpilot"
               for c in sc["static_configs"] for t in c["targets"]]
    assert targets == [f"coolpilot:{config.metrics.port}"]
