"""The model seen through the site's controlled setpoints, and what it predicted for a cycle's decision.

``SetpointView`` is how the search and the decision record call the model over only
the setpoints the site controls; ``predictions`` gives the decision its predictions
for the emitted setpoints and for holding (reused from the search where it scored
them) and the predicted IT change the facility search did not count.
Pure apart from calling the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from controller.candidates import to_vector
from controller.config import Config
from controller.cycle_state import DEFAULT_MODEL_SETPOINTS, CheckedState
from controller.decision import Prediction
from controller.optimizer import ModelError, OptimisationResult, take, what_if_rows
from controller.safety import clamped_reference
from controller.selection import it_change_kw
from forecasting.protocol import FloatArray, Forecast, Forecaster


class SetpointView:
    """The model seen through the site's controlled setpoints.

    A model scores the setpoints it was trained on (``setpoint_roles()``, all three for
    older models); the search moves only the controlled ones. Uncontrolled setpoints
    are held at their reference. A controlled setpoint the model never saw, or an
    uncontrolled one with no known value, is a ``ModelError``.
    """

    def __init__(self, model: Forecaster, controlled: Sequence[str], reference: Mapping[str, float]) -> None:
        model_roles = tuple(getattr(model, "setpoint_roles", lambda: DEFAULT_MODEL_SETPOINTS)())
        unseen = [r for r in controlled if r not in model_roles]
        if unseen:
            raise ModelError(f"model {model.version} was not trained on setpoint(s) {', '.join(unseen)}")
        fixed = [r for r in model_roles if r not in controlled]
        unknown = [r for r in fixed if not math.isfinite(reference.get(r, math.nan))]
        if unknown:
            raise ModelError(f"the model needs the current {', '.join(unknown)}, which is unknown")
        self._model, self._columns = model, [list(controlled).index(r) if r in controlled else -1 for r in model_roles]
        self._fixed = np.array([reference.get(r, math.nan) for r in model_roles], dtype=np.float64)
        self.version, self.horizon_min = model.version, model.horizon_min

        self._controlled = tuple(controlled)

    def setpoint_roles(self) -> tuple[str, ...]:
        return self._controlled

    def required_roles(self) -> tuple[str, ...]:
        return self._model.required_roles()

    def history_needed(self) -> int:
        return self._model.history_needed()

    def predict(self, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
        full = np.repeat(self._fixed[None, :], len(candidates), axis=0)
        for j, col in enumerate(self._columns):
            if col >= 0:
                full[:, j] = candidates[:, col]
        return self._model.predict(state, full)


def _scored_rows(opt: OptimisationResult | None, new: Mapping[str, float], hold: Mapping[str, float],
                 roles: Sequence[str]) -> tuple[int, int] | None:
    """The search's candidate rows of ``new`` and ``hold``, if it scored exactly these vectors."""
    if opt is None or any(r not in hold or r not in new for r in roles):
        return None
    found = []
    for vector in (to_vector(new, roles), to_vector(hold, roles)):
        rows = np.flatnonzero(np.all(np.abs(opt.candidates - vector) <= 1e-12, axis=1))
        if len(rows) == 0:
            return None
        found.append(int(rows[0]))
    return found[0], found[1]


def _it_set_aside_kw(config: Config, opt: OptimisationResult | None, rows: tuple[int, int] | None) -> float | None:
    """The predicted IT change [kW] of the emitted row over holding's that the facility search did not count.

    ``controller.selection.it_change_kw`` counts an IT change only where the model can
    know it; the decision says how much it set aside. None: no facility search scored both.
    """
    if opt is None or rows is None or opt.objective != "facility" or opt.forecast.it_power_kw is None:
        return None
    it = np.asarray(opt.forecast.it_power_kw, dtype=np.float64)
    counted = it_change_kw(opt.forecast, rows[1], config.thresholds.it_saving_sigma)[rows[0]]
    return float(it[rows[0]] - it[rows[1]] - counted)


@dataclass(frozen=True)
class Predictions:
    """The model's predictions for the emitted setpoints and for holding, and the what-if moves."""

    chosen: Prediction | None = None
    hold: Prediction | None = None
    what_if: tuple[dict[str, Any], ...] = ()
    interval_level: float | None = None
    note: str | None = None
    it_set_aside_kw: float | None = None  # predicted IT change over holding the search did not count [kW]


def predictions(config: Config, checked: CheckedState, opt: OptimisationResult | None, model_usable: bool,
                new: Mapping[str, float], model: Forecaster | None) -> Predictions:
    """The model's view of what was emitted and of holding: reused from the search, else one call."""
    env = config.envelope()
    roles, hold = env.setpoint_roles, clamped_reference(checked.reference, env)
    rows = _scored_rows(opt, new, hold, roles)
    aside = _it_set_aside_kw(config, opt, rows)
    if opt is not None and rows is not None and not config.optimizer.what_if:  # scored in the search: no model call
        return Predictions(Prediction.from_forecast_row(take(opt.forecast, rows[0])),
                           Prediction.from_forecast_row(take(opt.forecast, rows[1])),
                           interval_level=float(opt.forecast.interval_level), it_set_aside_kw=aside)
    if not (model_usable and model is not None) or any(r not in hold or r not in new for r in roles):
        return Predictions()
    try:
        view = SetpointView(model, roles, checked.measured | checked.reference)
        table = what_if_rows(view, checked.state, to_vector(new, roles), to_vector(hold, roles), env,
                             moves=config.optimizer.what_if)
    except ModelError as exc:
        return Predictions(note=f"no predictions for the emitted setpoints: {exc}")
    return Predictions(Prediction.from_forecast_row(table[0]), Prediction.from_forecast_row(table[1]),
                       tuple(table[2:]), float(table[0]["interval_level"]), it_set_aside_kw=aside)
