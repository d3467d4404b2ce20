"""Property test of the whole decision: whatever the readings, forecast and config, what leaves is safe."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.config import MODES, Config
from controller.cycle import decide
from controller.safety import clamped_reference
from db.roles import REQUIRED_MEASUREMENT_ROLES, SETPOINT_ROLES
from forecasting.protocol import Forecast
from tests._ctl_support import NOW, window

CHW, SA, CW = SETPOINT_ROLES
WEIRD = [math.nan, math.inf, -math.inf, 1e12, -1e12, -40.0, 0.0, 99.0]


@dataclass
class ArbitraryForecaster:
    """Returns whatever the drawn style says: sane values, NaN, inf, negatives, huge, or raises."""

    seed: int
    style: str

    version = "arbitrary"
    horizon_min = 60

    def setpoint_roles(self) -> tuple[str, ...]:
        return SETPOINT_ROLES

    def required_roles(self) -> tuple[str, ...]:
        return ("it_power_kw", "rack_inlet_max_c")

    def history_needed(self) -> int:
        return 3

    def predict(self, state: pd.DataFrame, candidates: Any) -> Forecast:
        if self.style == "raise":
            raise ValueError("model exploded")
        rng = np.random.default_rng(self.seed)
        n = len(candidates)

        def arr(lo: float, hi: float) -> Any:
            values = rng.uniform(lo, hi, n)
            if self.style == "nan":
                values[rng.random(n) < 0.3] = np.nan
            elif self.style == "inf":
                values[rng.random(n) < 0.3] = np.inf
            elif self.style == "negative":
                values = -values
            elif self.style == "huge":
                values *= 1e9
            return values

        return Forecast(
            cooling_power_kw=arr(100, 400), cooling_power_std_kw=arr(0, 20), cooling_power_lo_kw=arr(50, 300),
            cooling_power_hi_kw=arr(200, 500), rack_inlet_max_c=arr(18, 30), rack_inlet_std_c=arr(0, 1.5),
            rack_inlet_lo_c=arr(15, 25), rack_inlet_hi_c=arr(20, 32), ood_score=arr(0, 2),
            interval_level=0.9,
        )


@st.composite
def configs(draw: st.DrawFn) -> Config:
    setpoints: dict[str, dict[str, float]] = {}
    for role, (lo, hi) in {CHW: (5.0, 16.0), SA: (15.0, 26.0), CW: (16.0, 34.0)}.items():
        a, b = sorted((draw(st.floats(lo, hi)), draw(st.floats(lo, hi))))
        entry = {"min_c": a, "max_c": b, "max_step_k": draw(st.floats(0.1, 2.0))}
        if draw(st.integers(0, 3)) == 0:
            entry["pin_c"] = draw(st.floats(a, b))
        setpoints[role] = entry
    data = {
        "mode": draw(st.sampled_from(MODES)),
        "setpoints": setpoints,
        "coupling": {"min_coil_approach_k": draw(st.floats(0.0, 5.0))},
        "safety": {"k_sigma": draw(st.floats(0.0, 4.0)), "near_limit_margin_k": draw(st.floats(0.0, 2.0))},
        "optimizer": {"random_candidates": 200, "refine_candidates": 100, "grid_points_per_role": 4},
    }
    try:
        return Config.model_validate(data)
    except ValidationError:
        assume(False)
        raise


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    frame = window()
    for role in (*REQUIRED_MEASUREMENT_ROLES, *SETPOINT_ROLES):
        what = draw(st.integers(0, 30))
        if what == 1:
            frame = frame.drop(columns=[role])
        elif what == 2:
            frame[role] = draw(st.sampled_from(WEIRD))
        elif what == 3:
            frame.loc[frame.index[-draw(st.integers(1, 5)):], role] = draw(st.sampled_from(WEIRD))
        elif what == 4 and role in SETPOINT_ROLES:
            frame[role] = draw(st.floats(-100, 100))
    return frame


references = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(SETPOINT_ROLES), st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                                                st.floats(0, 40))),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(configs(), frames(), references, st.integers(0, 2**31),
       st.sampled_from(["sane", "nan", "inf", "negative", "huge", "raise", "none"]))
def test_emitted_setpoints_are_always_safe(config: Config, frame: pd.DataFrame, last: dict[str, float] | None,
                                           seed: int, style: str) -> None:
    model = None if style == "none" else ArbitraryForecaster(seed, style)
    d = decide(config, frame, NOW, model, last)
    event(f"{d.outcome} {d.reason_code or ''}")
    env = config.envelope()
    ref = clamped_reference(d.previous, env)
    if not d.new:  # a current setpoint is unknown: nothing may be written at all
        assert d.reason_code == "setpoint_unknown" and not d.apply
        return
    for role in SETPOINT_ROLES:
        b = env.bounds(role)
        value = d.new[role]
        assert math.isfinite(value), (role, value)
        assert b.min_c - 1e-9 <= value <= b.max_c + 1e-9, (role, value)
        if role in ref:
            assert abs(value - ref[role]) <= b.max_step_k + 1e-9, (role, value, ref[role])
            if d.hot_guard:
                assert value <= ref[role] + 1e-9
        pin = config.pins().get(role)
        if pin is not None and role in ref:
            assert abs(value - pin) <= abs(ref[role] - pin) + 1e-9
    if len(ref) == len(SETPOINT_ROLES) and ref[SA] - ref[CHW] >= env.min_coil_approach_k:
        assert d.new[SA] - d.new[CHW] >= env.min_coil_approach_k - 1e-9
    if d.outcome == "optimised":
        assert d.verification_ok and model is not None
