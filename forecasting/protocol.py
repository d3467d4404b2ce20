"""The `Forecaster` seam between learned models and the controller.

The controller scores thousands of candidate setpoint vectors in one call. It never
imports torch types: it gives a state (recent wide frame) and candidate setpoints,
and gets arrays back. Anything that implements this Protocol can drive the controller
(the torch ensemble, a test double, a user's own model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

#: Per-candidate (N,) arrays that every Forecast holds.
CANDIDATE_FIELDS: tuple[str, ...] = (
    "cooling_power_kw", "cooling_power_std_kw", "cooling_power_lo_kw", "cooling_power_hi_kw",
    "rack_inlet_max_c", "rack_inlet_std_c", "rack_inlet_lo_c", "rack_inlet_hi_c", "ood_score",
)
#: Per-candidate (N,) arrays present only when the model forecasts IT power (else all None).
IT_POWER_FIELDS: tuple[str, ...] = ("it_power_kw", "it_power_std_kw", "it_power_lo_kw", "it_power_hi_kw")
#: Optional (M, N) arrays: each ensemble member's mean for each candidate (None: not an ensemble).
MEMBER_FIELDS: tuple[str, ...] = ("cooling_power_members_kw", "it_power_members_kw")


@dataclass(frozen=True)
class Forecast:
    """Predictions for N candidates over the model's horizon.

    Intervals are calibrated central intervals at ``interval_level`` (e.g. 0.9).
    ``ood_score`` is < 1 for inputs like the training data and grows with distance.
    The IT-power fields are None when the model has no IT target (IT power rises with
    inlet temperature where server fans speed up, so facility power = cooling + IT).
    ``masked_roles``: roles whose inputs had gaps (or were set to NaN as suspect) and
    were imputed for this state; for cooling power and rack inlet only their lags and
    rolling means are ever imputed, never their current value.
    ``*_members_kw`` (optional, (M, N)): each of M ensemble members' mean. Their spread
    across members of a *difference* between two candidates is how sure the model is
    that one costs less than the other; the total std above also holds the noise every
    candidate shares (what the weather and the load do next), which cancels there.
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
    it_power_kw: FloatArray | None = None  # (N,) mean IT power over the horizon [kW]
    it_power_std_kw: FloatArray | None = None  # (N,) [kW]
    it_power_lo_kw: FloatArray | None = None  # (N,)
    it_power_hi_kw: FloatArray | None = None  # (N,)
    masked_roles: tuple[str, ...] = field(default=())
    cooling_power_members_kw: FloatArray | None = None  # (M, N) [kW]
    it_power_members_kw: FloatArray | None = None  # (M, N) [kW]; only with the IT-power fields

    def __post_init__(self) -> None:
        given = [getattr(self, name) is not None for name in IT_POWER_FIELDS]
        if any(given) and not all(given):
            raise ValueError(f"IT-power fields must be all given or all None: {', '.join(IT_POWER_FIELDS)}")


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

    def setpoint_roles(self) -> tuple[str, ...]:
        """The setpoints this model controls: the columns of ``predict``'s candidates, in order."""
        ...

    def history_needed(self) -> int:
        """Number of 5-minute rows of history the state frame must hold."""
        ...

    def predict(self, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
        """Score candidates.

        ``state``: wide frame (UTC index on the 5-minute grid, role columns), most
        recent row last; a role that is all NaN (or absent) is treated as missing.
        ``candidates``: (N, len(setpoint_roles())) setpoints in the order of
        ``setpoint_roles()`` [C].
        """
        ...
