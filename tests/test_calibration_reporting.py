"""Rolling interval coverage where operators look: the metric, `explain`, and `evaluate`'s figures."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from controller.cycle import interval_coverage
from controller.decision import Decision
from controller.explain import explanation, render
from controller.service.metrics import CoolpilotMetrics
from coolpilot.evaluation import kpis as ev
from forecasting.online_calibration import AdaptiveInterval, OnlineCalibration


def test_the_gauge_has_one_series_per_target() -> None:
    registry = CollectorRegistry()
    metrics = CoolpilotMetrics(registry)
    metrics.set_interval_coverage({"cooling_power_kw": 0.89, "rack_inlet_max_c": None})
    name = "coolpilot_prediction_interval_coverage_ratio"
    assert registry.get_sample_value(name, {"target": "cooling_power_kw"}) == pytest.approx(0.89)
    value = registry.get_sample_value(name, {"target": "rack_inlet_max_c"})
    assert value is not None and math.isnan(value)  # nothing matured yet: a gap, not a number


def test_explain_shows_the_coverage_the_decision_was_made_with() -> None:
    cal = OnlineCalibration("v1", 0.9, {"cooling_power_kw": AdaptiveInterval(0.9, 1.6)})
    for i in range(10):
        cal.update("cooling_power_kw", 0.0, 1.0, 2.0 if i < 1 else 0.5, 1.6)
    coverage = interval_coverage(type("M", (), {"calibration": cal})())
    assert coverage == {"cooling_power_kw": pytest.approx(0.9)}
    d = Decision(ts=datetime(2024, 3, 1, tzinfo=UTC), site_id="s", mode="auto", outcome="optimised", reason="r",
                 previous={}, new={}, interval_level=0.9, interval_coverage=coverage)
    back = Decision.from_row({**d.to_row(), "id": 1})
    assert back.interval_coverage == coverage
    assert "90% intervals covered (last week's matured forecasts): cooling_power_kw 90%" in render(back)
    assert explanation(back)["interval_coverage"] == coverage
    assert interval_coverage(None) == {}


def test_evaluate_reports_the_rolling_coverage_at_the_end_of_the_run() -> None:
    idx = pd.date_range("2023-07-15", periods=4, freq="5min", tz="UTC")
    d = pd.DataFrame({"outcome": ["optimised"] * 4, "reason_code": [None] * 4,
                      "interval_coverage_cooling_power_kw": [math.nan, 0.5, 0.88, 0.9],
                      "interval_coverage_rack_inlet_max_c": [math.nan, math.nan, 1.0, 0.91]}, index=idx)
    out = ev.decision_figures(d)
    assert out["interval_coverage"] == {"cooling_power_kw": 0.9, "rack_inlet_max_c": 0.91}
    assert "interval_coverage" not in ev.decision_figures(d[["outcome", "reason_code"]])


class _Provider:
    """The daemon's model source, as far as the publisher uses it: save the calibration on request."""

    def __init__(self) -> None:
        self.saved = 0

    def save_calibration(self) -> None:
        self.saved += 1


def test_the_daemon_publisher_feeds_matured_forecasts_and_publishes_coverage() -> None:
    from controller.decision import Prediction
    from controller.service.cycle_metrics import CyclePublisher, RecordingSource
    from forecasting.online_calibration import CalibratedForecaster
    from tests.test_calibration_online import _Inner

    registry = CollectorRegistry()
    provider = _Provider()
    source = RecordingSource(inner=None)  # type: ignore[arg-type]  # the frame is set below, never read
    publisher = CyclePublisher(CoolpilotMetrics(registry), source, provider, recorder=None,  # type: ignore[arg-type]
                               period_s=300.0)
    inner = _Inner()
    model = CalibratedForecaster(inner, OnlineCalibration.for_model(inner))
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    idx = pd.date_range(t0, periods=30, freq="5min")
    source.frame = pd.DataFrame({"cooling_power_kw": 130.0, "rack_inlet_max_c": 24.0}, index=idx)
    chosen = Prediction(cooling_power_kw=100.0, cooling_power_lo_kw=96.7, cooling_power_hi_kw=103.3,
                        rack_inlet_max_c=24.0, rack_inlet_lo_c=23.5, rack_inlet_hi_c=24.5, rack_inlet_std_c=0.3,
                        cooling_power_std_kw=2.0, ood_score=0.1)
    for i in range(3):
        publisher.calibration_feed.add(idx[i].to_pydatetime(), model, chosen)
    publisher._check_calibration(model)
    cov = model.calibration.coverage()
    assert cov == {"cooling_power_kw": 0.0, "rack_inlet_max_c": 1.0}  # 30 kW above: three misses
    name = "coolpilot_prediction_interval_coverage_ratio"
    assert registry.get_sample_value(name, {"target": "cooling_power_kw"}) == 0.0
    assert registry.get_sample_value(name, {"target": "rack_inlet_max_c"}) == 1.0
    assert provider.saved == 1 and len(publisher.calibration_feed) == 0
