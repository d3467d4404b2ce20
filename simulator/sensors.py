"""Sensor model: what a historian records instead of the true values.

Real historian data has noise, gaps, sensors stuck at an old value and occasional
spikes; a model trained or a controller run on perfectly clean data learns nothing
about them. Rates are per reading (one role in one record) so that tests can count
them; every draw comes from a seeded generator, so the same seed gives the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from db.roles import ROLES

FloatArray = npt.NDArray[np.float64]
SENSOR_FAILURE_MODES = ("dropout", "stuck", "offset")
BLOCK_RECORDS = 256


@dataclass(frozen=True)
class SensorDefects:
    """Noise and defect rates of the plant's sensors (defaults: a decent historian)."""

    temperature_noise_k: float = 0.1  # standard deviation of temperature noise [K]
    power_noise_fraction: float = 0.005  # relative standard deviation of power meters [-]
    humidity_noise_pct: float = 1.5  # standard deviation of RH noise [% RH]
    dropout_rate: float = 0.001  # probability that a reading is missing (NaN) [-]
    stuck_rate: float = 0.0002  # probability per reading that a healthy sensor sticks [-]
    stuck_mean_records: float = 12.0  # mean length of a stuck episode [records]
    spike_rate: float = 0.0002  # probability that a reading is a spike [-]
    spike_temperature_k: float = 15.0  # spike size for temperatures [K]
    spike_power_factor: float = 3.0  # spikes multiply (or divide) powers by this [-]

    def __post_init__(self) -> None:
        for name in ("dropout_rate", "stuck_rate", "spike_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SensorDefects.{name} must be a probability in [0, 1], got {value}")
        if self.stuck_mean_records < 1.0:
            raise ValueError(f"SensorDefects.stuck_mean_records must be at least 1, got {self.stuck_mean_records}")

    @classmethod
    def clean(cls) -> SensorDefects:
        """Perfect sensors: true values, nothing missing."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0)


def _kinds(roles: tuple[str, ...]) -> tuple[FloatArray, FloatArray, FloatArray]:
    unit = [ROLES[r].unit for r in roles]
    temp = np.array([u == "C" for u in unit], dtype=np.float64)
    power = np.array([u == "kW" for u in unit], dtype=np.float64)
    humid = np.array([u == "%" for u in unit], dtype=np.float64)
    return temp, power, humid


class SensorBank:
    """Turns true values into readings, one record at a time (holds stuck and failure state)."""

    def __init__(self, roles: tuple[str, ...], defects: SensorDefects, rng: np.random.Generator) -> None:
        self.roles = roles
        self.defects = defects
        self._rng = rng
        self._temp, self._power, self._humid = _kinds(roles)
        self._index = {r: i for i, r in enumerate(roles)}
        self._stuck_left = np.zeros(len(roles), dtype=np.int64)
        self._last = np.full(len(roles), np.nan)
        self._noise = np.empty((0, len(roles)))
        self._uniform = np.empty((0, 4, len(roles)))
        self._next = 0

    def read(self, true_values: FloatArray, failures: Mapping[str, tuple[str, float]] | None = None) -> FloatArray:
        """Readings for one record, in the order of ``roles``.

        ``failures``: failed sensors, role -> (mode, offset), see ``simulator.faults``.
        """
        d, rng, n = self.defects, self._rng, len(self.roles)
        if self._next >= len(self._noise):  # draw in blocks: two generator calls per 256 records
            self._noise = rng.standard_normal((BLOCK_RECORDS, n))
            self._uniform = rng.random((BLOCK_RECORDS, 4, n))
            self._next = 0
        noise, u = self._noise[self._next], self._uniform[self._next]
        self._next += 1
        out = true_values + noise * (
            self._temp * d.temperature_noise_k
            + self._power * d.power_noise_fraction * np.abs(true_values)
            + self._humid * d.humidity_noise_pct
        )
        out = np.where(self._humid > 0, np.clip(out, 0.0, 100.0), out)
        spike = u[0] < d.spike_rate
        if spike.any():
            sign = np.where(u[1] < 0.5, -1.0, 1.0)
            factor = np.where(sign > 0, d.spike_power_factor, 1.0 / d.spike_power_factor)
            spiked = np.where(self._power > 0, out * factor, out + sign * d.spike_temperature_k)
            out = np.where(spike, spiked, out)
        # Stuck episodes: start with stuck_rate, last a geometric number of records.
        starting = (self._stuck_left == 0) & (u[2] < d.stuck_rate) & np.isfinite(self._last)
        if starting.any():
            p = 1.0 / d.stuck_mean_records
            self._stuck_left[starting] = rng.geometric(p, int(starting.sum()))
        stuck = self._stuck_left > 0
        out = np.where(stuck, self._last, out)
        self._stuck_left[stuck] -= 1
        for role, (mode, offset) in (failures or {}).items():
            i = self._index[role]
            if mode == "dropout":
                out[i] = np.nan
            elif mode == "stuck":
                out[i] = self._last[i]
            else:
                out[i] = out[i] + offset
        out = np.where(u[3] < d.dropout_rate, np.nan, out)
        self._last = np.where(np.isfinite(out), out, self._last)
        return out
