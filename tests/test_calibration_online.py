"""Online (adaptive conformal) calibration: coverage held in closed loop, state kept, gates fed."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from controller.config import SafetySettings, ThresholdSettings
from controller.decision import Prediction
from controller.selection import failure_masks
from controller.service.forecast_check import CalibrationFeed, actual_target
from forecasting.online_calibration import (
    AdaptiveInterval,
    CalibratedForecaster,
    OnlineCalibration,
    gaussian_z,
)
from forecasting.protocol import FloatArray, Forecast

LEVEL = 0.9
Z = gaussian_z(LEVEL)


def run_stream(aci: AdaptiveInterval, errors: FloatArray, std: float = 1.0, delay: int = 12) -> list[bool]:
    """Issue a forecast per step with the current factor; each matures ``delay`` steps later (the horizon)."""
    issued: list[tuple[float, float]] = []
    hits: list[bool] = []
    for e in errors:
        issued.append((float(e), aci.factor()))
        if len(issued) > delay:
            err, factor = issued.pop(0)
            hit = aci.update(0.0, std, err, factor)
            assert hit is not None
            hits.append(hit)
    return hits


@pytest.mark.parametrize("true_sigma", [0.4, 3.0])
def test_coverage_reaches_the_level_where_the_training_factor_fails(true_sigma: float) -> None:
    """The model's sigma is 1; the plant's errors have sigma 3 (overconfident) or 0.4 (too wide)."""
    errors = np.random.default_rng(0).normal(0.0, true_sigma, 3 * 2016)
    static = float(np.mean(np.abs(errors) <= Z))  # the training-time interval, never adapted
    assert abs(static - LEVEL) > 0.05
    aci = AdaptiveInterval(LEVEL, Z)
    hits = run_stream(aci, errors)
    for week in range(1, 3):  # every 7-day window after the first
        share = float(np.mean(hits[week * 2016: (week + 1) * 2016]))
        assert 0.87 <= share <= 0.93, (week, share)
    assert aci.factor() == pytest.approx(true_sigma * Z, rel=0.15)
    assert aci.coverage() == pytest.approx(float(np.mean(hits[-2016:])))


def test_a_regime_change_is_followed_within_a_day() -> None:
    rng = np.random.default_rng(1)
    errors = np.concatenate([rng.normal(0, 1.0, 2016), rng.normal(0, 4.0, 2016)])
    aci = AdaptiveInterval(LEVEL, Z)
    hits = run_stream(aci, errors)
    after_a_day = hits[2016 + 288: 2 * 2016 - 12]
    assert 0.85 <= float(np.mean(after_a_day)) <= 0.95


def test_state_round_trips_through_json() -> None:
    cal = OnlineCalibration("v1", LEVEL, {"cooling_power_kw": AdaptiveInterval(LEVEL, 1.7),
                                          "rack_inlet_max_c": AdaptiveInterval(LEVEL, 2.1)})
    for i in range(100):
        cal.update("cooling_power_kw", 0.0, 1.0, 2.5 * math.sin(i), cal.factor("cooling_power_kw") or 0.0)
    back = OnlineCalibration.from_json(json.loads(json.dumps(cal.to_json())))
    assert back.to_json() == cal.to_json()
    assert back.factor("cooling_power_kw") == cal.factor("cooling_power_kw") != 1.7
    assert back.factor("rack_inlet_max_c") == 2.1  # nothing matured: the training factor
    with pytest.raises(ValueError, match="format"):
        OnlineCalibration.from_json({"version": "v1"})
    broken = cal.to_json()
    del broken["targets"]["cooling_power_kw"]["alpha_t"]
    with pytest.raises(ValueError, match="alpha_t"):
        OnlineCalibration.from_json(broken)


def test_a_new_champion_inherits_the_closed_loop_state() -> None:
    class New:
        version, interval_level = "v2", LEVEL
        targets = ("cooling_power_kw", "rack_inlet_max_c", "it_power_kw")
        conformal_factors = (1.5, 1.6, 1.7)

    old = OnlineCalibration("v1", LEVEL, {"cooling_power_kw": AdaptiveInterval(LEVEL, 1.6),
                                          "rack_inlet_max_c": AdaptiveInterval(LEVEL, 1.6)})
    run_stream(old.targets["rack_inlet_max_c"], np.random.default_rng(2).normal(0.0, 3.0, 500))
    new = old.carried_to(New())
    assert new.version == "v2"
    inherited = new.factor("rack_inlet_max_c")
    assert inherited is not None and inherited == old.factor("rack_inlet_max_c") and inherited > 3.0  # remembered
    assert new.factor("cooling_power_kw") == 1.6  # nothing matured for it: still the old training factor
    assert new.factor("it_power_kw") == 1.7  # a target the old model lacked: the new model's factor
    new.update("rack_inlet_max_c", 0.0, 1.0, 0.0, 1.0)
    assert len(new.targets["rack_inlet_max_c"].scores) == len(old.targets["rack_inlet_max_c"].scores) + 1


def test_bad_input_is_refused_or_ignored() -> None:
    with pytest.raises(ValueError, match="level"):
        AdaptiveInterval(1.5, 1.0)
    with pytest.raises(ValueError, match="factor"):
        AdaptiveInterval(LEVEL, 0.0)
    aci = AdaptiveInterval(LEVEL, 1.0)
    assert aci.update(0.0, 0.0, 1.0, 1.0) is None and aci.update(math.nan, 1.0, 1.0, 1.0) is None
    assert aci.coverage() is None and len(aci.scores) == 0


class _Inner:
    """A fixed forecaster: the same means and sigmas for every candidate (the seam's test double)."""

    version = "v1"
    horizon_min = 60
    interval_level = LEVEL
    targets = ("cooling_power_kw", "rack_inlet_max_c")
    conformal_factors = (Z, Z)

    def required_roles(self) -> tuple[str, ...]:
        return ("cooling_power_kw",)

    def setpoint_roles(self) -> tuple[str, ...]:
        return ("supply_air_sp_c",)

    def history_needed(self) -> int:
        return 13

    def predict(self, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
        n = len(candidates)
        one = np.ones(n)
        return Forecast(cooling_power_kw=100 * one, cooling_power_std_kw=2 * one, cooling_power_lo_kw=100 - 2 * Z * one,
                        cooling_power_hi_kw=100 + 2 * Z * one, rack_inlet_max_c=24 * one, rack_inlet_std_c=0.3 * one,
                        rack_inlet_lo_c=24 - 0.3 * Z * one, rack_inlet_hi_c=24 + 0.3 * Z * one,
                        ood_score=0.1 * one, interval_level=LEVEL)


def test_the_rack_inlet_bound_takes_the_calibrated_interval_and_the_std_gates_the_model_sigma() -> None:
    inner = _Inner()
    model = CalibratedForecaster(inner, OnlineCalibration.for_model(inner))
    cand = np.array([[20.0], [21.0]])
    safety = SafetySettings(rack_inlet_limit_c=25.5, k_sigma=2.0)
    thresholds = ThresholdSettings()
    assert not failure_masks(model.predict(pd.DataFrame(), cand), 0, safety, thresholds)["rack_inlet"].any()
    rack = model.calibration.targets["rack_inlet_max_c"]
    for _ in range(300):  # the plant's hottest inlet comes out 1.6 K above the forecast, again and again
        rack.update(24.0, 0.3, 25.6, rack.factor())
    f = model.predict(pd.DataFrame(), cand)
    assert rack.factor() / Z > 2.0
    np.testing.assert_allclose(f.rack_inlet_hi_c, 24 + 0.3 * rack.factor())
    np.testing.assert_allclose(f.rack_inlet_std_c, 0.3)  # the model's own sigma: the std gate judges it
    np.testing.assert_allclose(f.cooling_power_std_kw, 2.0)  # the other target is untouched
    masks = failure_masks(f, 0, safety, thresholds)
    assert masks["rack_inlet"].all()  # 24 + 2 * 0.3 stays below 25.5, the calibrated upper end does not
    assert not masks["inlet_uncertainty"].any()
    assert model.version == "v1" and model.history_needed() == 13 and model.targets == inner.targets
    with pytest.raises(ValueError, match="v2"):
        CalibratedForecaster(inner, OnlineCalibration("v2", LEVEL, {}))


def test_matured_forecasts_feed_the_calibration_per_target() -> None:
    inner = _Inner()
    model = CalibratedForecaster(inner, OnlineCalibration.for_model(inner))
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    idx = pd.date_range(t0, periods=40, freq="5min")
    frame = pd.DataFrame({"cooling_power_kw": 100.0 + np.arange(40) % 2, "rack_inlet_max_c": 24.0}, index=idx)
    frame.loc[idx[5], "rack_inlet_max_c"] = 27.0  # one hot reading inside the first horizon: the max counts
    feed = CalibrationFeed()
    for i in range(20):
        f = model.predict(pd.DataFrame(), np.array([[20.0]]))
        chosen = Prediction.from_forecast_row({k: float(np.asarray(v)[0]) for k, v in vars(f).items()
                                               if isinstance(v, np.ndarray)})
        feed.add(t0 + timedelta(minutes=5 * i), model, chosen)
    assert len(feed) == 20
    assert feed.mature(frame, idx[12], model) == 2  # the forecast from row 0 matured: two targets
    cool, rack = (model.calibration.targets[t] for t in ("cooling_power_kw", "rack_inlet_max_c"))
    assert cool.scores[0] == pytest.approx(0.5 / 2.0) and cool.hits[0]
    assert rack.scores[0] == pytest.approx(3.0 / 0.3) and not rack.hits[0]
    assert actual_target(frame["rack_inlet_max_c"], "rack_inlet_max_c", t0, 60) == 27.0
    assert actual_target(frame["cooling_power_kw"].iloc[:3], "cooling_power_kw", t0, 60) is None  # too few rows
    assert feed.mature(frame, idx[-1], model) == 2 * 19 and len(feed) == 0
    assert model.calibration.coverage()["cooling_power_kw"] == 1.0
