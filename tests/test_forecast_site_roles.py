"""Learning the plant a site has: its roles, its setpoints, IT power, and inputs that go missing."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from db.roles import SETPOINT_ROLES
from forecasting.artifact import SIDECAR_FILE, load_artifact, save_artifact
from forecasting.baselines import HistGBBaseline, Persistence, RidgeBaseline
from forecasting.evaluate import point_metrics
from forecasting.features import (
    ALL_TARGETS,
    TARGETS,
    FeatureError,
    FeatureSpec,
    build_samples,
    current_setpoints,
    state_vector,
)
from forecasting.model import EnsembleForecaster
from forecasting.protocol import IT_POWER_FIELDS, Forecast, Forecaster
from forecasting.train import TrainConfig, TrainResult, cpu_threads, fit_forecaster
from tests._forecast_synth import single_setpoint_history, synthetic_history

TINY = TrainConfig(members=2, hidden=(32, 32), max_epochs=12, batch_size=256, min_samples=1000, baselines=False)
SAT = ("supply_air_sp_c",)
LEGACY_SPEC_KEYS = ("horizon_steps", "lag_steps", "rolling_steps", "state_roles", "lagged_roles",
                    "rolling_roles", "derive_wetbulb")


@pytest.fixture(scope="module")
def air_history() -> pd.DataFrame:
    return single_setpoint_history(days=14, seed=2)


@pytest.fixture(scope="module")
def air_model(air_history: pd.DataFrame) -> TrainResult:
    spec = FeatureSpec.for_history(air_history, SAT)
    return fit_forecaster(air_history, spec=spec, config=TINY, device="cpu")


@pytest.fixture(scope="module")
def full_history() -> pd.DataFrame:
    return synthetic_history(days=14, seed=4)


@pytest.fixture(scope="module")
def full_model(full_history: pd.DataFrame) -> EnsembleForecaster:
    return fit_forecaster(full_history, config=TINY, device="cpu").forecaster


def state_of(history: pd.DataFrame, model: Forecaster) -> pd.DataFrame:
    return history.iloc[-model.history_needed() - 1:].copy()


def test_spec_keeps_only_the_roles_the_site_has(air_history: pd.DataFrame) -> None:
    spec = FeatureSpec.for_history(air_history, SAT)
    assert spec.setpoint_roles == SAT
    for gone in ("chw_supply_c", "cw_supply_c", "economizer_active", "chillers_running", "chw_return_c"):
        assert gone not in spec.state_roles  # absent, constant, or logged on 30 % of rows only
    assert {"supply_air_c", "rack_inlet_mean_c", "outdoor_wetbulb_c"} <= set(spec.state_roles)
    assert spec.derive_wetbulb and "outdoor_wetbulb_c" not in spec.required_roles()
    assert spec.targets == ALL_TARGETS and spec.lagged_roles and set(spec.lagged_roles) <= set(spec.state_roles)
    assert spec.candidate_names() == ["supply_air_sp_c@horizon", "supply_air_sp_c@change", "supply_air_sp_c@end"]
    assert "outdoor_rh_pct@masked" in spec.state_names()
    # the current values of cooling power and rack inlet are never maskable; the rest is
    assert set(spec.essential_roles()) == {*TARGETS, *SAT}
    assert "cooling_power_kw" not in spec.group_columns("cooling_power_kw")
    assert FeatureSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    # without IT power: two targets; without a wet-bulb source: no wet-bulb
    dry = FeatureSpec.for_history(air_history.drop(columns=["it_power_kw", "outdoor_rh_pct"]), SAT)
    assert dry.targets == TARGETS and "outdoor_wetbulb_c" not in dry.state_roles
    # default setpoints: those the history has and varies
    assert FeatureSpec.for_history(air_history).setpoint_roles == SAT


def test_spec_refuses_history_without_the_essentials(air_history: pd.DataFrame) -> None:
    with pytest.raises(FeatureError, match="rack_inlet_max_c"):
        FeatureSpec.for_history(air_history.drop(columns=["rack_inlet_max_c"]), SAT)
    sparse = air_history.copy()
    sparse.loc[sparse.index[::2], "cooling_power_kw"] = np.nan
    sparse.loc[sparse.index[1::4], "cooling_power_kw"] = np.nan
    with pytest.raises(FeatureError, match=r"cooling_power_kw with at least 50%"):
        FeatureSpec.for_history(sparse, SAT)
    with pytest.raises(FeatureError, match="chw_supply_sp_c"):
        FeatureSpec.for_history(air_history, ("chw_supply_sp_c",))
    with pytest.raises(ValueError, match="not among"):
        FeatureSpec(setpoint_roles=("supply_air_c",))


def test_one_setpoint_site_trains_and_scores_n_by_1_candidates(air_model: TrainResult,
                                                               air_history: pd.DataFrame) -> None:
    model = air_model.forecaster
    assert isinstance(model, Forecaster) and model.setpoint_roles() == SAT
    assert air_model.report["setpoint_roles"] == list(SAT)
    state = state_of(air_history, model)
    cands = np.array([[15.0], [20.0], [25.0]])
    fc = model.predict(state, cands)
    assert fc.cooling_power_kw.shape == (3,) and np.isfinite(fc.cooling_power_kw).all()
    assert fc.cooling_power_kw[2] < fc.cooling_power_kw[0]  # warmer supply air saves cooling power
    assert fc.rack_inlet_max_c[2] > fc.rack_inlet_max_c[0] + 3.0
    assert fc.masked_roles == ()
    assert np.allclose(current_setpoints(state, SAT), air_history["supply_air_sp_c"].iloc[-2])
    with pytest.raises(ValueError, match=r"\(N, 1\)"):
        model.predict(state, np.array([[9.0, 20.0, 26.0]]))


def test_it_power_is_forecast_calibrated_and_responds_to_inlet(air_model: TrainResult,
                                                               air_history: pd.DataFrame) -> None:
    model = air_model.forecaster
    fc = model.predict(state_of(air_history, model), np.array([[15.0], [25.0]]))
    assert fc.it_power_kw is not None and fc.it_power_std_kw is not None
    assert fc.it_power_lo_kw is not None and fc.it_power_hi_kw is not None
    assert (fc.it_power_lo_kw < fc.it_power_kw).all() and (fc.it_power_kw < fc.it_power_hi_kw).all()
    assert (fc.it_power_std_kw > 0).all()
    # hotter inlet -> server fans: the IT forecast rises (about 8 kW/K above 20 C in this plant)
    assert fc.it_power_kw[1] - fc.it_power_kw[0] > 15.0
    recent_it = air_history["it_power_kw"].iloc[-24:].mean()
    assert abs(fc.it_power_kw[0] - recent_it) < 0.1 * recent_it
    ens = air_model.report["metrics"]["ensemble"]
    assert len(air_model.report["conformal_factors"]) == 3
    assert 0.5 <= ens["it_power_kw"]["coverage"] <= 1.0 and ens["it_power_kw"]["interval_width"] > 0
    # the baselines cover the third target too, and the ensemble beats persistence on it
    fs = build_samples(air_history, model.spec)
    x = model.x_scaler.impute(fs.x)  # the first rows' lags are masked (before the history starts)
    train, test = slice(0, 1500), slice(-400, None)
    fitted = [Persistence(fs.names), RidgeBaseline(), HistGBBaseline()]
    with cpu_threads(1):  # as fit_forecaster does: OpenMP threads spin badly on a shared machine
        for b in fitted:
            b.fit(x[train], fs.y[train])
        preds = [b.predict(x[test]) for b in fitted]
    assert all(p.shape == (400, 3) for p in preds)
    assert np.array_equal(preds[0][:, 2], fs.x[test, fs.names.index("it_power_kw")])
    pers = point_metrics(fs.y[test], preds[0])["it_power_kw"]["mae"]
    assert model.predict_rows(fs.x[test]).mean.shape == (400, 3)
    assert point_metrics(fs.y[test], model.predict_rows(fs.x[test]).mean)["it_power_kw"]["mae"] < pers
    with pytest.raises(ValueError, match="all given or all None"):
        Forecast(**{**fc.__dict__, "it_power_lo_kw": None})


def test_a_missing_input_is_masked_and_named_not_fatal(air_model: TrainResult, air_history: pd.DataFrame) -> None:
    model = air_model.forecaster
    state = state_of(air_history, model)
    cands = np.array([[16.0], [22.0]])
    clean = model.predict(state, cands)
    suspect = state.assign(outdoor_rh_pct=np.nan)  # declared suspect by the controller: all NaN
    fc = model.predict(suspect, cands)
    assert fc.masked_roles == ("outdoor_rh_pct", "outdoor_wetbulb_c")  # derived wet-bulb goes with RH
    for arr in (fc.cooling_power_kw, fc.rack_inlet_max_c, fc.it_power_kw, fc.ood_score):
        assert arr is not None and np.isfinite(arr).all()
    assert np.allclose(fc.cooling_power_kw, clean.cooling_power_kw, rtol=0.1)
    absent = model.predict(state.drop(columns=["rack_inlet_mean_c"]), cands)
    assert absent.masked_roles == ("rack_inlet_mean_c",) and np.isfinite(absent.rack_inlet_max_c).all()
    old_lag = state.copy()
    old_lag.loc[old_lag.index[-13:-11], "cooling_power_kw"] = np.nan  # two records an hour ago: its lag12
    lagged = model.predict(old_lag, cands)
    assert lagged.masked_roles == ("cooling_power_kw",) and np.isfinite(lagged.cooling_power_kw).all()
    # the hottest inlet now cannot be imputed
    blind = state.copy()
    blind.loc[blind.index[-2:], "rack_inlet_max_c"] = np.nan
    with pytest.raises(FeatureError, match=r"gaps in rack_inlet_max_c"):
        model.predict(blind, cands)
    with pytest.raises(FeatureError, match="rack_inlet_max_c"):
        model.predict(state.drop(columns=["rack_inlet_max_c"]), cands)


def test_a_model_trained_on_every_role_predicts_when_one_input_is_missing(
        full_model: EnsembleForecaster, full_history: pd.DataFrame) -> None:
    model = full_model
    assert model.setpoint_roles() == SETPOINT_ROLES and model.targets == ALL_TARGETS
    state = state_of(full_history, model)
    cands = np.array([[9.0, 20.0, 24.0], [12.0, 22.0, 27.0]])
    clean = model.predict(state, cands)
    for role in ("chw_return_c", "economizer_active", "outdoor_rh_pct", "chw_supply_c"):
        holed = state.copy()
        holed.loc[holed.index[-3:], role] = np.nan  # a 15-minute dropout, past what bridging fills
        fc = model.predict(holed, cands)
        assert role in fc.masked_roles
        assert np.isfinite(fc.cooling_power_kw).all() and np.isfinite(fc.rack_inlet_hi_c).all()
        assert np.allclose(fc.cooling_power_kw, clean.cooling_power_kw, rtol=0.15)
    lone = state.copy()
    lone.loc[lone.index[-1], "chw_return_c"] = np.nan  # the newest record only: carried forward
    assert model.predict(lone, cands).masked_roles == ()


def test_training_keeps_samples_with_gaps_in_an_input_and_masks_them(full_history: pd.DataFrame) -> None:
    spec = FeatureSpec.for_history(full_history)
    base = build_samples(full_history, spec)
    holed = full_history.copy()
    holed.loc[holed.index[1000:1100], "chw_return_c"] = np.nan
    fs = build_samples(holed, spec)
    assert fs.gaps.samples == base.gaps.samples  # kept, not dropped
    assert fs.gaps.masked_samples == base.gaps.masked_samples + 100
    ind = fs.names.index("chw_return_c@masked")
    at = fs.index.get_loc(full_history.index[1050])
    assert fs.x[at, ind] == 1.0 and np.isnan(fs.x[at, fs.names.index("chw_return_c")])
    # a gap in a target still drops the samples whose horizon it touches
    cool = full_history.copy()
    cool.loc[cool.index[2000:2010], "cooling_power_kw"] = np.nan
    assert build_samples(cool, spec).gaps.samples < base.gaps.samples
    # the legacy spec (no masking) still drops a sample with any gap
    legacy = build_samples(holed, FeatureSpec())
    assert legacy.gaps.samples <= build_samples(full_history, FeatureSpec()).gaps.samples - 100
    assert np.isfinite(legacy.x).all()


def test_an_old_spec_and_an_old_artifact_still_load(full_history: pd.DataFrame, tmp_path: Path) -> None:
    legacy = FeatureSpec()
    old_json = {k: v for k, v in legacy.to_json().items() if k in LEGACY_SPEC_KEYS}
    back = FeatureSpec.from_json(old_json)
    assert back == legacy and back.setpoint_roles == SETPOINT_ROLES and back.targets == TARGETS
    assert back.mask_roles == () and not any(n.endswith("@masked") for n in back.feature_names())
    assert len(back.feature_names()) == 55  # the feature vector models were trained on before

    result = fit_forecaster(full_history, spec=legacy, config=TrainConfig(**{**TINY.__dict__, "max_epochs": 2}),
                            device="cpu")
    path, digest = save_artifact(result.forecaster, tmp_path)
    sidecar = json.loads((path / SIDECAR_FILE).read_text())
    sidecar["feature_spec"] = old_json  # as written before the spec grew
    sidecar.pop("data_profile", None)
    (path / SIDECAR_FILE).write_text(json.dumps(sidecar))
    model = load_artifact(path, expected_sha256=digest)
    assert model.setpoint_roles() == SETPOINT_ROLES and model.data_profile is None
    state = state_of(full_history, model)
    fc = model.predict(state, np.array([[10.0, 21.0, 25.0]]))
    assert np.isfinite(fc.cooling_power_kw).all() and fc.masked_roles == ()
    assert all(getattr(fc, name) is None for name in IT_POWER_FIELDS)
    holed = state.copy()
    holed.loc[holed.index[-3:], "chw_return_c"] = np.nan
    with pytest.raises(FeatureError, match="chw_return_c"):  # an old model was not trained to mask
        state_vector(holed, model.spec)


@dataclass(frozen=True)
class FakeProfile:
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FakeProfile:
        return cls(rows=int(data["rows"]))


def test_the_data_profile_is_learned_stored_and_loaded(air_history: pd.DataFrame, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("forecasting.data_profile")
    fake.DataProfile = FakeProfile  # type: ignore[attr-defined]
    fake.learn_profile = lambda frame: FakeProfile(rows=len(frame))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "forecasting.data_profile", fake)
    cfg = TrainConfig(**{**TINY.__dict__, "max_epochs": 1})
    model = fit_forecaster(air_history, spec=FeatureSpec.for_history(air_history, SAT), config=cfg,
                           device="cpu").forecaster
    path, digest = save_artifact(model, tmp_path)
    assert json.loads((path / SIDECAR_FILE).read_text())["data_profile"] == {"rows": len(air_history)}
    assert load_artifact(path, expected_sha256=digest).data_profile == FakeProfile(rows=len(air_history))

    monkeypatch.setitem(sys.modules, "forecasting.data_profile", None)  # the module is not there
    bare = fit_forecaster(air_history, spec=FeatureSpec.for_history(air_history, SAT), config=cfg,
                          device="cpu").forecaster
    assert "data_profile" not in bare.sidecar() and bare.data_profile is None
