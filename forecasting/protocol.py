"""The `Forecaster` seam between learned models and the controller.

The controller scores thousands of candidate setpoint vectors in one call. It never
imports torch types: it gives a state (recent wide frame) and candidate setpoints,
and gets arrays back. Anything that implements this Protocol can drive the controller
(the torch ensemble, a test double, a user's own model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Forecast:
    """Predictions for N candidates over the model's horizon.

    Intervals are calibrated central intervals at ``interval_level`` (e.g. 0.9).
    ``ood_score`` is < 1 for inputs like the training data and grows with distance.
    """

    cooling_power_kw: FloatArray  # (N,) mean cooling power over the horizon [kW]
    cooling_power_std_kw: FloatArray  # (N,) total predictive std [kW]
    cooling_power_lo_kw: FloatArray  # (N,)
    cooling_power_hi_kw: FloatArray  # (N,)
    rack_inlet_max_c: FloatArray  # (N,) max rack inlet over the horizon [C]
    rack_inlet_std_c: FloatArray  # (N,) [K]
    rack_inlet_lo_c: FloatArray  # (N,)
    rack_inlet_hi_c: FloatArray  # (N,)
    ood_score: FloatArray  # (N,) [-]
    interval_level: float


@runtime_checkable
class Forecaster(Protocol):
    """A trained model that scores candidate setpoints for the current state."""

    @property
    def version(self) -> str:
        """Registry version string of this model."""
        ...

    @property
    def horizon_min(self) -> int:
        """Forecast horizon [min]."""
        ...

    def required_roles(self) -> tuple[str, ...]:
        """Roles the state frame must contain."""
        ...

    def history_needed(self) -> int:
        """Number of 5-minute rows of history the state frame must hold."""
        ...

    def predict(self, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
        """Score candidates.

        ``state``: wide frame (UTC index on the 5-minute grid, role columns), most
        recent row last. ``candidates``: (N, 3) setpoints in the order of
        ``db.roles.SETPOINT_ROLES`` [C].
        """
        ...
