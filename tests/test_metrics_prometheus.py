"""A real Prometheus scrapes CoolpilotMetrics over HTTP; queries, dashboard and rules run on it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from controller.service.metrics import CoolpilotMetrics, serve
from tests.prom_helpers import PrometheusServer, requires_prometheus, running_prometheus
from tests.test_deploy import ALERTS, dashboard_exprs

pytestmark = requires_prometheus


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    registry = CollectorRegistry()
    metrics = CoolpilotMetrics(registry)
    metrics.observe_decision(mode="auto", outcome="optimised", ts_s=time.time(), it_power_kw=800.0,
                             cooling_power_kw=200.0, cooling_power_pred_kw=190.0, cycle_duration_s=0.4,
                             rack_inlet_max_c=24.0, rack_inlet_limit_c=27.0)
    metrics.observe_matured_forecast(200.0, 190.0, 180.0, 210.0)
    server = serve(registry, port=0)
    try:
        with running_prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{server.port}"],
                                rule_files=[ALERTS]) as prom:
            yield prom
    finally:
        server.shutdown()


def test_a_coolpilot_series_reads_back_through_the_http_api(prometheus: PrometheusServer) -> None:
    result = prometheus.wait_for_series('coolpilot_pue_ratio{job="coolpilot"}')
    (sample,) = result
    assert float(sample["value"][1]) == pytest.approx(1.25)
    up = prometheus.wait_for_series('up{job="coolpilot"}')
    assert up[0]["value"][1] == "1"
    margin = prometheus.wait_for_series("coolpilot_rack_inlet_margin_celsius")
    assert float(margin[0]["value"][1]) == pytest.approx(3.0)


def test_every_dashboard_query_is_valid_promql(prometheus: PrometheusServer) -> None:
    prometheus.wait_for_series("coolpilot_build_info")
    for expr in dashboard_exprs():
        concrete = expr.replace("$instance", ".*").replace("$__rate_interval", "1m")
        prometheus.query(concrete)  # raises with Prometheus's parse error


def test_alert_rules_load_and_evaluate_without_errors(prometheus: PrometheusServer) -> None:
    deadline = time.monotonic() + 30
    while True:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        if rules and all(r["health"] != "unknown" for r in rules):
            break
        assert time.monotonic() < deadline, f"rules not evaluated within 30 s: {rules}"
        time.sleep(0.25)
    assert len(rules) >= 10
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad
    firing = {r["name"] for r in rules if r.get("alerts")}
    # A healthy daemon with 3 K of rack-inlet margin and fresh data triggers nothing.
    assert firing <= {"CoolpilotAbsent"}, firing
