"""Training options tried to make the ensemble beat its baselines: residual targets and beta-NLL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecasting.ensemble import gaussian_nll
from forecasting.features import FeatureSpec, build_samples
from forecasting.model import EnsembleForecaster, residual_targets
from forecasting.train import TrainConfig, fit_forecaster
from tests._forecast_synth import synthetic_history

TINY = TrainConfig(members=2, hidden=(16, 16), max_epochs=2, min_samples=1000, baselines=False, residual=True,
                   ood_reference=500)


def test_residual_targets_are_learned_as_changes_and_survive_the_round_trip() -> None:
    history = synthetic_history(days=6, seed=2)
    spec = FeatureSpec.for_history(history)
    assert residual_targets(spec) == ("cooling_power_kw", "rack_inlet_max_c", None)  # IT power may be masked
    model = fit_forecaster(history, spec=spec, config=TINY, device="cpu").forecaster
    sidecar = model.sidecar()
    assert sidecar["residual_of"] == ["cooling_power_kw", "rack_inlet_max_c", None]
    again = EnsembleForecaster.from_parts(model.tensors(), sidecar)
    fs = build_samples(history, spec)
    x = fs.x[-300:]
    p, q = model.predict_rows(x, with_ood=False), again.predict_rows(x, with_ood=False)
    np.testing.assert_array_equal(p.mean, q.mean)
    # the network's output is a change: the forecast is it plus the current reading
    names = spec.feature_names()
    plain = EnsembleForecaster.from_parts(model.tensors(), {**sidecar, "residual_of": [None, None, None]})
    diff = p.mean - plain.predict_rows(x, with_ood=False).mean
    np.testing.assert_allclose(diff[:, 0], x[:, names.index("cooling_power_kw")])
    np.testing.assert_allclose(diff[:, 1], x[:, names.index("rack_inlet_max_c")])
    np.testing.assert_allclose(diff[:, 2], 0.0)
    with pytest.raises(ValueError, match="residual_of"):
        EnsembleForecaster.from_parts(model.tensors(), {**sidecar, "residual_of": [None]})


def test_beta_nll_weights_the_mean_like_squared_error() -> None:
    mean = torch.tensor([[[1.0], [2.0]]], requires_grad=True)
    var = torch.tensor([[[4.0], [0.25]]])
    y = torch.tensor([[0.0], [0.0]])
    plain = 0.5 * (np.log([4.0, 0.25]) + np.array([1.0, 4.0]) / np.array([4.0, 0.25]))
    assert float(gaussian_nll(mean, var, y).detach()) == pytest.approx(float(plain.mean()))
    gaussian_nll(mean, var, y, 1.0).backward()  # type: ignore[no-untyped-call]
    assert mean.grad is not None
    # d/dmu of var * (mu - y)^2 / (2 var), averaged over 2 terms: (mu - y) / 2, whatever the variance
    np.testing.assert_allclose(mean.grad.numpy().ravel(), [0.5, 1.0])
