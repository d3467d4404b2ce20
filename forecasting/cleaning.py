"""Remove bad readings from training history: out of physical range, or isolated spikes.

A single spike (a temperature 15 K off for one record, a meter reading tripled) in a
horizon target dominates a Gaussian likelihood and teaches the model nothing about the
plant. Such readings are set to NaN, so the samples that touch them are dropped and
counted like any other gap: nothing is invented in their place.

A spike is one record that jumps away from both neighbours, in the same direction, by
more than a floor per unit, while the two records on each side agree with each other.
Steps and first-order responses (a setpoint change, a chiller staging) move
monotonically, and an oscillation has no calm sides, so both are kept. A one-record
jump that another measurement corroborates (it moves beyond its own floor at the same
record: a compressor cycling moves cooling and IT power together) is the plant, not a
sensor, and is kept too. Stuck sensors are not detected here (a constant value is plausible for
hours); the controller checks those on its live window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from db.roles import ROLES

#: Smallest jump that can count as a spike, per unit (relative to the neighbours for kW).
FLOOR_BY_UNIT = {"C": 3.0, "%": 15.0, "count": 3.0, "fraction": 0.5}
POWER_FLOOR_FRACTION = 0.4
NEIGHBOUR_AGREEMENT = 0.5  # neighbours must differ by less than this share of the jump


def _floor(role: str, neighbours: pd.Series) -> pd.Series | float:
    unit = ROLES[role].unit
    if unit == "kW":
        return POWER_FLOOR_FRACTION * neighbours.abs()
    return FLOOR_BY_UNIT.get(unit, 0.0)


def outlier_mask(frame: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame: True where a measurement is out of physical range or a spike.

    Setpoint columns are commands, not sensors, and are never flagged. The frame must
    be on a regular grid (neighbours are the rows before and after).
    """
    out_of_range: dict[str, pd.Series] = {}
    spikes: dict[str, pd.Series] = {}
    moved: dict[str, pd.Series] = {}
    for col in frame.columns:
        role = ROLES.get(str(col))
        if role is None or role.kind != "measurement":
            continue
        s = frame[col].astype(float)
        out_of_range[str(col)] = (s < role.physical_min) | (s > role.physical_max)
        v = s.where(~out_of_range[str(col)])
        before, after = v.shift(1), v.shift(-1)
        up, down = v - before, v - after
        jump = np.minimum(up.abs(), down.abs())
        same_direction = np.sign(up) == np.sign(down)
        limit = NEIGHBOUR_AGREEMENT * jump
        calm = ((after - before).abs() < limit) & ~((before - v.shift(2)).abs() >= limit) \
            & ~((v.shift(-2) - after).abs() >= limit)
        floor = _floor(str(col), (before + after) / 2.0)
        spikes[str(col)] = (same_direction & calm & (jump > floor)).fillna(False).astype(bool)
        moved[str(col)] = ((up.abs() > floor) | (down.abs() > floor)).fillna(False).astype(bool)
    flags = {str(c): pd.Series(False, index=frame.index) for c in frame.columns}
    movers = pd.DataFrame(moved, index=frame.index).sum(axis=1) if moved else pd.Series(0, index=frame.index)
    for col, spike in spikes.items():
        corroborated = (movers - moved[col].astype(int)) >= 1  # another measurement moved at the same record
        flags[col] = out_of_range[col] | (spike & ~corroborated)
    return pd.DataFrame(flags, index=frame.index)[[str(c) for c in frame.columns]]


def drop_outliers(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The frame with outlying readings set to NaN, and how many were removed."""
    mask = outlier_mask(frame)
    mask.columns = frame.columns
    return frame.mask(mask), int(mask.to_numpy().sum())
