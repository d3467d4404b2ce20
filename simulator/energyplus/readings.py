"""Turn one timestep's raw EnergyPlus values into role readings (pure functions).

The worker sends, per 5-minute timestep, the values of the map's output variables and
meters in a fixed order. ``RoleReader`` knows where each source sits in that list and
combines them as the point map says. A missing or non-finite input makes the role NaN
(never an absent key): the Plant contract for a sensor that did not report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.energyplus.pointmap import MeasurementPoint, PointMap, Source


@dataclass(frozen=True)
class _Compiled:
    point: MeasurementPoint
    value_at: tuple[int, ...]
    weight_at: tuple[int, ...]


def _convert(value: float, how: str, step_s: float) -> float:
    if how == "W_to_kW":
        return value / 1000.0
    if how == "J_per_step_to_kW":
        return value / (step_s * 1000.0)
    if how == "fraction_to_pct":
        return value * 100.0
    return value


def combine(point: MeasurementPoint, values: Sequence[float], weights: Sequence[float], step_s: float) -> float:
    """One role's value from its sources' values (and flow weights); NaN if any input is missing."""
    if not values or not all(math.isfinite(v) for v in values):
        return math.nan
    how = point.combine
    if how == "sum":
        out = math.fsum(values)
    elif how == "mean":
        out = math.fsum(values) / len(values)
    elif how == "max":
        out = max(values)
    elif how == "min":
        out = min(values)
    elif how == "count_on":
        out = float(sum(1 for v in values if v > point.threshold))
    else:  # flow_weighted_mean: with no flow at all, the plain mean (nothing to weight by)
        if not all(math.isfinite(w) and w >= 0.0 for w in weights):
            return math.nan
        total = math.fsum(weights)
        out = (math.fsum(v * w for v, w in zip(values, weights, strict=True)) / total if total > 0.0
               else math.fsum(values) / len(values))
    return _convert(out, point.convert, step_s)


class RoleReader:
    """Maps the worker's raw value list to role readings for one point map."""

    def __init__(self, pointmap: PointMap) -> None:
        self.variables = pointmap.variables()
        self.meters = pointmap.meters()
        var_at = {v: i for i, v in enumerate(self.variables)}
        meter_at = {m: len(self.variables) + i for i, m in enumerate(self.meters)}

        def where(src: Source) -> int:
            if src.meter is not None:
                return meter_at[src.meter]
            return var_at[(str(src.variable), str(src.key))]

        self._points = [
            _Compiled(
                p,
                tuple(where(s) for s in p.sources),
                tuple(var_at[(s.weight_variable, s.weight_key)] for s in p.sources
                      if s.weight_variable is not None and s.weight_key is not None),
            )
            for p in pointmap.measurements.values()
        ]
        self._readback = {r: tuple(where(s) for s in sp.readback) for r, sp in pointmap.setpoints.items()}
        self._energy = {b: tuple(meter_at[m] for m in names) for b, names in pointmap.energy.items()}

    @property
    def width(self) -> int:
        """How many raw values one timestep carries."""
        return len(self.variables) + len(self.meters)

    def read(self, raw: Sequence[float], step_s: float) -> dict[str, float]:
        """Role readings for one timestep."""
        return {
            c.point.role: combine(c.point, [raw[i] for i in c.value_at], [raw[i] for i in c.weight_at], step_s)
            for c in self._points
        }

    def readback(self, raw: Sequence[float]) -> dict[str, float]:
        """Setpoints the model's own managers put in force (mean over the read-back nodes); NaN without any."""
        out: dict[str, float] = {}
        for role, at in self._readback.items():
            vals = [raw[i] for i in at]
            out[role] = math.fsum(vals) / len(vals) if vals and all(math.isfinite(v) for v in vals) else math.nan
        return out

    def energy_j(self, raw: Sequence[float]) -> dict[str, float]:
        """Energy of this timestep by bucket [J] (meters report J per timestep)."""
        return {b: math.fsum(raw[i] for i in at) for b, at in self._energy.items()}
