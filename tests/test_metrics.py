"""CoolpilotMetrics: naming practice, unit conversion, bounded labels and the HTTP server."""

from __future__ import annotations

import logging
import math
import platform
import re
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from controller.bounds import RoleBounds, SetpointEnvelope
from controller.config import MODES
from controller.decision import REASON_CODES
from controller.service.metric_series import OUTCOMES
from controller.service.metrics import CoolpilotMetrics, CycleObservation, serve
from db.roles import SETPOINT_ROLES
from tests.prom_helpers import PROMTOOL, requires_promtool

# Unit suffix -> the unit its HELP text must name in brackets.
SUFFIX_UNITS = {
    "_timestamp_seconds": {"s since epoch"},
    "_seconds": {"s"},
    "_celsius": {"C", "K"},
    "_watts": {"W"},
    "_joules": {"J"},
    "_ratio": {"ratio"},
    "_info": {"info"},
}
# Metrics without a unit suffix count things or are flags.
UNITLESS_HELP_UNITS = {"bool", "1", "cycles", "runs", "errors", "forecasts", "reloads"}
NON_BASE_UNITS = re.compile(r"_(kw|kilowatts?|kwh|milli\w*|micro\w*|minutes?|hours?|days?|percent|pct|fahrenheit|c)(_|$)")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> CoolpilotMetrics:
    return CoolpilotMetrics(registry, build_version="9.9.9-test")


def families(registry: CollectorRegistry) -> dict[str, Metric]:
    parsed = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    # prometheus_client's classic text format lists each counter's/histogram's
    # creation time as a separate `<name>_created` gauge; it is not a metric of ours.
    bases = {n for n, f in parsed.items() if f.type in ("counter", "histogram")}
    return {n: f for n, f in parsed.items() if not (n.endswith("_created") and n[: -len("_created")] in bases)}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    v = registry.get_sample_value(name, labels)
    assert v is not None, f"no sample {name}{labels}"
    return v


def help_unit(doc: str) -> str:
    m = re.search(r"\[([^\]]+)\]$", doc.strip())
    assert m, f"HELP text must end with its unit in brackets: {doc!r}"
    return m.group(1)


def test_every_metric_is_prefixed_documented_and_named_by_its_unit(registry: CollectorRegistry,
                                                                    metrics: CoolpilotMetrics) -> None:
    fams = families(registry)
    assert len(fams) >= 40
    for name, fam in fams.items():
        assert name.startswith("coolpilot_"), name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        assert not NON_BASE_UNITS.search(name), f"{name}: use base units (watts, seconds, celsius, joules)"
        unit = help_unit(fam.documentation)
        suffix = next((s for s in SUFFIX_UNITS if name.endswith(s)), None)
        if suffix is None:
            assert unit in UNITLESS_HELP_UNITS, f"{name}: unit-less name but HELP names unit [{unit}]"
        else:
            assert unit in SUFFIX_UNITS[suffix], f"{name}: suffix {suffix} but HELP names unit [{unit}]"
        if fam.type == "counter":
            sample_names = {s.name for s in fam.samples}
            assert sample_names == {name + "_total"}, f"counter {name} must expose only {name}_total"
        else:
            assert not name.endswith("_total"), f"{name}: only counters end in _total"


def test_required_metrics_exist_with_their_types(registry: CollectorRegistry, metrics: CoolpilotMetrics) -> None:
    fams = families(registry)
    expected = {
        "coolpilot_mode": "gauge", "coolpilot_fallback_active": "gauge", "coolpilot_fallbacks": "counter",
        "coolpilot_decisions": "counter", "coolpilot_setpoint_celsius": "gauge", "coolpilot_pue_ratio": "gauge",
        "coolpilot_pue_predicted_ratio": "gauge", "coolpilot_cooling_power_predicted_watts": "gauge",
        "coolpilot_cooling_power_predicted_lower_watts": "gauge",
        "coolpilot_cooling_power_predicted_upper_watts": "gauge",
        "coolpilot_rack_inlet_margin_celsius": "gauge", "coolpilot_ood_score": "gauge",
        "coolpilot_forecast_error_watts": "gauge", "coolpilot_forecast_relative_error_ratio": "histogram",
        "coolpilot_savings_estimated_watts": "gauge", "coolpilot_savings_estimated_energy_joules": "gauge",
        "coolpilot_savings_estimated_energy_lower_joules": "gauge",
        "coolpilot_savings_estimated_energy_upper_joules": "gauge",
        "coolpilot_savings_estimated_lower_watts": "gauge", "coolpilot_savings_estimated_upper_watts": "gauge",
        "coolpilot_facility_power_watts": "gauge", "coolpilot_facility_power_metered": "gauge",
        "coolpilot_it_energy_joules": "counter", "coolpilot_cooling_energy_joules": "counter",
        "coolpilot_facility_energy_joules": "counter",
        "coolpilot_cycle_duration_seconds": "histogram", "coolpilot_data_age_seconds": "gauge",
        "coolpilot_last_cycle_success_timestamp_seconds": "gauge",
        "coolpilot_last_training_success_timestamp_seconds": "gauge",
        "coolpilot_training_duration_seconds": "gauge",
        "coolpilot_model_validation_cooling_power_mae_watts": "gauge", "coolpilot_model": "info",
        "coolpilot_build": "info", "coolpilot_config_last_reload_successful": "gauge",
        "coolpilot_config_last_reload_success_timestamp_seconds": "gauge",
        "coolpilot_db_errors": "counter", "coolpilot_actuator_errors": "counter",
    }
    # The text parser reports Info metrics as gauges named <name>_info.
    got = {n: f.type for n, f in fams.items()}
    for name, kind in expected.items():
        if kind == "info":
            assert got.get(name + "_info") == "gauge", name
        else:
            assert got.get(name) == kind, f"{name}: expected {kind}, got {got.get(name)}"


def test_label_children_exist_from_the_start(registry: CollectorRegistry, metrics: CoolpilotMetrics) -> None:
    for reason in REASON_CODES:
        assert value(registry, "coolpilot_fallbacks_total", reason=reason) == 0
        assert value(registry, "coolpilot_fallback_reason", reason=reason) == 0
    for outcome in OUTCOMES:
        assert value(registry, "coolpilot_decisions_total", outcome=outcome) == 0
    for mode in MODES:
        assert value(registry, "coolpilot_mode", mode=mode) == 0
    for role in SETPOINT_ROLES:
        assert math.isnan(value(registry, "coolpilot_setpoint_celsius", role=role))
    assert value(registry, "coolpilot_training_runs_total", result="failure") == 0
    assert value(registry, "coolpilot_build_info", version="9.9.9-test",
                 python_version=platform.python_version()) == 1


def test_never_uses_the_global_registry() -> None:
    from prometheus_client import REGISTRY

    before = set(REGISTRY._names_to_collectors)
    CoolpilotMetrics(CollectorRegistry())
    assert set(REGISTRY._names_to_collectors) == before
    CoolpilotMetrics(CollectorRegistry())  # a second instance does not collide either


def test_decision_converts_units_and_derives_pue(registry: CollectorRegistry, metrics: CoolpilotMetrics) -> None:
    metrics.observe_decision(
        mode="auto", outcome="optimised", ts_s=1_700_000_000.0,
        setpoints_c={"chw_supply_sp_c": 11.5, "supply_air_sp_c": 19.0, "cw_supply_sp_c": 24.0},
        it_power_kw=1000.0, cooling_power_kw=250.0, cooling_power_pred_kw=240.0,
        cooling_power_pred_lo_kw=220.0, cooling_power_pred_hi_kw=260.0, interval_level=0.9,
        rack_inlet_max_c=24.5, rack_inlet_pred_hi_c=25.5, rack_inlet_limit_c=27.0, ood_score=0.4,
        savings_kw=30.0, cycle_period_s=300.0, cycle_duration_s=0.2,
    )
    assert value(registry, "coolpilot_mode", mode="auto") == 1
    assert value(registry, "coolpilot_mode", mode="rules") == 0
    assert value(registry, "coolpilot_decisions_total", outcome="optimised") == 1
    assert value(registry, "coolpilot_fallback_active") == 0
    assert value(registry, "coolpilot_setpoint_celsius", role="chw_supply_sp_c") == 11.5
    assert value(registry, "coolpilot_it_power_watts") == 1_000_000.0
    assert value(registry, "coolpilot_cooling_power_predicted_upper_watts") == 260_000.0
    assert value(registry, "coolpilot_pue_ratio") == pytest.approx(1.25)
    assert value(registry, "coolpilot_pue_predicted_ratio") == pytest.approx(1.24)
    assert value(registry, "coolpilot_rack_inlet_margin_celsius") == pytest.approx(2.5)
    assert value(registry, "coolpilot_rack_inlet_predicted_margin_celsius") == pytest.approx(1.5)
    assert value(registry, "coolpilot_savings_estimated_watts") == 30_000.0
    assert value(registry, "coolpilot_savings_estimated_energy_joules") == pytest.approx(30_000.0 * 300.0)
    assert value(registry, "coolpilot_facility_power_metered") == 0  # no meter: facility = IT + cooling
    assert value(registry, "coolpilot_facility_power_watts") == 1_250_000.0
    assert value(registry, "coolpilot_cooling_energy_joules_total") == pytest.approx(250_000.0 * 300.0)
    assert value(registry, "coolpilot_cycle_duration_seconds_count") == 1
    assert value(registry, "coolpilot_cycle_duration_seconds_bucket", le="0.25") == 1
    assert value(registry, "coolpilot_cycle_duration_seconds_bucket", le="0.1") == 0
    assert value(registry, "coolpilot_last_cycle_success_timestamp_seconds") == 1_700_000_000.0


def test_fallback_cycle_sets_reason_and_blanks_forecasts(registry: CollectorRegistry,
                                                         metrics: CoolpilotMetrics) -> None:
    metrics.observe_decision(mode="auto", outcome="optimised", ts_s=100.0, cooling_power_pred_kw=240.0,
                             savings_kw=-5.0, cycle_period_s=300.0)
    assert value(registry, "coolpilot_savings_estimated_energy_joules") == pytest.approx(-5_000.0 * 300.0)
    metrics.observe_decision({"mode": "auto", "outcome": "fallback", "ts_s": 400.0, "fallback_reason": "ood"})
    metrics.observe_decision(CycleObservation(mode="auto", outcome="fallback", ts_s=700.0, fallback_reason="ood"))
    assert value(registry, "coolpilot_fallback_active") == 1
    assert value(registry, "coolpilot_fallback_reason", reason="ood") == 1
    assert value(registry, "coolpilot_fallback_reason", reason="no_model") == 0
    assert value(registry, "coolpilot_fallbacks_total", reason="ood") == 2
    assert value(registry, "coolpilot_decisions_total", outcome="fallback") == 2
    assert math.isnan(value(registry, "coolpilot_cooling_power_predicted_watts"))
    metrics.observe_decision(mode="auto", outcome="error", ts_s=1000.0)
    assert value(registry, "coolpilot_last_cycle_success_timestamp_seconds") == 700.0
    assert value(registry, "coolpilot_fallback_active") == 0


def test_unknown_label_values_stay_bounded(registry: CollectorRegistry, metrics: CoolpilotMetrics,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.service.metrics"):
        metrics.observe_decision(mode="turbo", outcome="optimised", ts_s=1.0, fallback_reason="cosmic_rays",
                                 setpoints_c={"made_up_sp_c": 3.0})
        metrics.observe_decision(mode="turbo", outcome="optimised", ts_s=2.0, fallback_reason="cosmic_rays")
    assert value(registry, "coolpilot_fallbacks_total", reason="other") == 2
    assert registry.get_sample_value("coolpilot_fallbacks_total", {"reason": "cosmic_rays"}) is None
    assert registry.get_sample_value("coolpilot_mode", {"mode": "turbo"}) is None
    assert registry.get_sample_value("coolpilot_setpoint_celsius", {"role": "made_up_sp_c"}) is None
    assert all(value(registry, "coolpilot_mode", mode=m) == 0 for m in MODES)
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("turbo" in w for w in warnings) == 1  # warned once, not every cycle
    assert any("cosmic_rays" in w for w in warnings)


def test_bad_decision_fields_name_the_problem(metrics: CoolpilotMetrics) -> None:
    with pytest.raises(TypeError, match=r"unknown field.*pue_meassured"):
        metrics.observe_decision(mode="auto", outcome="optimised", ts_s=1.0, pue_meassured=1.2)
    with pytest.raises(TypeError, match=r"missing required field.*ts_s"):
        metrics.observe_decision({"mode": "auto", "outcome": "optimised"})


def test_matured_forecast_error_and_interval_misses(registry: CollectorRegistry,
                                                    metrics: CoolpilotMetrics) -> None:
    metrics.observe_matured_forecast(actual_kw=200.0, predicted_kw=190.0, lo_kw=180.0, hi_kw=210.0)
    metrics.observe_matured_forecast(actual_kw=200.0, predicted_kw=250.0, lo_kw=230.0, hi_kw=270.0)
    metrics.observe_matured_forecast(actual_kw=float("nan"), predicted_kw=250.0)  # ignored
    assert value(registry, "coolpilot_forecast_error_watts") == pytest.approx(-50_000.0)
    assert value(registry, "coolpilot_forecast_relative_error_ratio_count") == 2
    assert value(registry, "coolpilot_forecast_relative_error_ratio_sum") == pytest.approx(0.05 + 0.25)
    assert value(registry, "coolpilot_forecast_interval_misses_total") == 1


def test_training_model_reload_and_errors(registry: CollectorRegistry, metrics: CoolpilotMetrics) -> None:
    metrics.observe_training(False, ts_s=10.0, duration_s=5.0)
    metrics.observe_training(False, ts_s=20.0, duration_s=6.0)
    assert value(registry, "coolpilot_training_consecutive_failures") == 2
    assert value(registry, "coolpilot_last_training_success_timestamp_seconds") == 0
    metrics.observe_training(True, ts_s=30.0, duration_s=42.0, val_cooling_power_mae_kw=3.5,
                             val_rack_inlet_mae_c=0.3)
    assert value(registry, "coolpilot_training_consecutive_failures") == 0
    assert value(registry, "coolpilot_last_training_success_timestamp_seconds") == 30.0
    assert value(registry, "coolpilot_training_duration_seconds") == 42.0
    assert value(registry, "coolpilot_model_validation_cooling_power_mae_watts") == 3500.0
    assert value(registry, "coolpilot_training_runs_total", result="failure") == 2
    metrics.set_model_info("v7", trained_ts_s=30.0)
    metrics.set_model_info("v8", trained_ts_s=60.0)
    assert value(registry, "coolpilot_model_info", version="v8", kind="ensemble") == 1
    assert registry.get_sample_value("coolpilot_model_info", {"version": "v7", "kind": "ensemble"}) is None
    metrics.observe_reload(True, ts_s=50.0)
    metrics.observe_reload(False, ts_s=60.0)
    assert value(registry, "coolpilot_config_last_reload_successful") == 0
    assert value(registry, "coolpilot_config_last_reload_success_timestamp_seconds") == 50.0
    metrics.db_error()
    metrics.actuator_error()
    metrics.actuator_error()
    assert value(registry, "coolpilot_db_errors_total") == 1
    assert value(registry, "coolpilot_actuator_errors_total") == 2
    metrics.set_data_age(123.0)
    assert value(registry, "coolpilot_data_age_seconds") == 123.0


def test_envelope_bounds_are_published(registry: CollectorRegistry, metrics: CoolpilotMetrics) -> None:
    env = SetpointEnvelope(roles={
        "chw_supply_sp_c": RoleBounds(7.0, 15.0, 0.5),
        "supply_air_sp_c": RoleBounds(17.0, 24.0, 0.5),
        "cw_supply_sp_c": RoleBounds(18.0, 30.0, 1.0),
    })
    metrics.set_envelope(env)
    assert value(registry, "coolpilot_setpoint_min_celsius", role="chw_supply_sp_c") == 7.0
    assert value(registry, "coolpilot_setpoint_max_celsius", role="cw_supply_sp_c") == 30.0


@pytest.fixture
def served(registry: CollectorRegistry, metrics: CoolpilotMetrics) -> Iterator[str]:
    metrics.observe_decision(mode="auto", outcome="optimised", ts_s=1.0, it_power_kw=500.0, cooling_power_kw=100.0,
                             cycle_duration_s=0.3)
    server = serve(registry, port=0)
    try:
        yield server.url
    finally:
        server.shutdown()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def test_serve_on_loopback_and_shutdown_frees_the_port(registry: CollectorRegistry,
                                                       metrics: CoolpilotMetrics) -> None:
    server = serve(registry, port=0)
    assert server.url.startswith("http://127.0.0.1:")
    body = scrape(server.url)
    assert "coolpilot_pue_ratio" in body
    server.shutdown()
    server.shutdown()  # idempotent
    again = serve(registry, port=server.port)  # the port is free again
    again.shutdown()


@requires_promtool
def test_promtool_check_metrics_on_a_live_scrape(served: str) -> None:
    body = scrape(served)
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_savings_energy_uses_the_configured_cycle_period() -> None:
    registry = CollectorRegistry()
    m = CoolpilotMetrics(registry, cycle_period_s=300.0)
    m.observe_decision(mode="auto", outcome="optimised", ts_s=1.0, savings_kw=10.0)
    m.observe_decision(mode="auto", outcome="optimised", ts_s=2.0, savings_kw=10.0, cycle_period_s=60.0)
    assert value(registry, "coolpilot_savings_estimated_energy_joules") == pytest.approx(10_000.0 * 360.0)
    m.observe_decision(mode="manual", outcome="manual", ts_s=3.0)
    assert value(registry, "coolpilot_mode", mode="manual") == 1


def test_pue_uses_the_facility_meter_where_there_is_one_and_the_estimate_keeps_other_losses(
        registry: CollectorRegistry, metrics: CoolpilotMetrics) -> None:
    metrics.observe_decision(mode="auto", outcome="optimised", ts_s=1.0, it_power_kw=1000.0,
                             cooling_power_kw=200.0, facility_power_kw=1270.0, cooling_power_pred_kw=180.0,
                             cycle_period_s=300.0)
    assert value(registry, "coolpilot_pue_ratio") == pytest.approx(1.27)  # the meter, not (IT + cooling) / IT
    assert value(registry, "coolpilot_facility_power_metered") == 1
    assert value(registry, "coolpilot_pue_predicted_ratio") == pytest.approx(1.25)  # 70 kW other losses kept
    assert value(registry, "coolpilot_facility_energy_joules_total") == pytest.approx(1_270_000.0 * 300.0)
    help_text = generate_latest(registry).decode()
    assert "facility meter where there is one, else IT + cooling" in help_text


def test_estimated_savings_go_down_with_negative_estimates_and_keep_their_bounds(
        registry: CollectorRegistry, metrics: CoolpilotMetrics) -> None:
    for kw, lo, hi in ((10.0, 4.0, 16.0), (-6.0, -12.0, 1.0)):
        metrics.observe_decision(mode="auto", outcome="optimised", ts_s=1.0, savings_kw=kw, savings_lo_kw=lo,
                                 savings_hi_kw=hi, cycle_period_s=3600.0)
    assert value(registry, "coolpilot_savings_estimated_watts") == -6_000.0
    assert value(registry, "coolpilot_savings_estimated_lower_watts") == -12_000.0
    assert value(registry, "coolpilot_savings_estimated_energy_joules") == pytest.approx(4_000.0 * 3600.0)
    assert value(registry, "coolpilot_savings_estimated_energy_lower_joules") == pytest.approx(-8_000.0 * 3600.0)
    assert value(registry, "coolpilot_savings_estimated_energy_upper_joules") == pytest.approx(17_000.0 * 3600.0)
