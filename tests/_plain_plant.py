"""A plant with the `Plant` seam only: the simulator behind a wrapper without ``steady_state``.

As a site's own digital twin or a co-simulation might be: it can be read, commanded and
advanced (and, like the simulator, offers its noise-free record and energy totals), but
has no model the oracle could search. Usable as ``--plant tests._plain_plant:make_plain_plant``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from simulator.plant_sim import SimulatedPlant, make_plant


class PlainPlant:
    """Delegates the `Plant` protocol (and the optional extras the evaluation reads) to a simulated plant."""

    def __init__(self, inner: SimulatedPlant) -> None:
        self._inner = inner

    @property
    def now(self) -> datetime:
        return self._inner.now

    @property
    def record_interval_s(self) -> float:
        return self._inner.record_interval_s

    def read(self) -> dict[str, float]:
        return self._inner.read()

    def setpoints(self) -> dict[str, float]:
        return self._inner.setpoints()

    def apply(self, setpoints: Mapping[str, float]) -> None:
        self._inner.apply(setpoints)

    def advance(self, seconds: float) -> None:
        self._inner.advance(seconds)

    def true_record(self) -> dict[str, float]:
        return self._inner.true_record()

    def totals(self) -> dict[str, float]:
        return self._inner.totals()


def make_plain_plant(climate: str | None = None, workload: str | None = None, start: datetime | None = None,
                     seed: int = 0) -> PlainPlant:
    return PlainPlant(make_plant(climate, workload, start, seed))
