"""The `Plant` seam: anything that can be read, commanded and advanced in time.

The simulator implements it; a user's own digital twin can too, and everything that
runs closed loop (history generation, the demo, evaluation, the soak) takes a Plant.
The command line loads one from ``module:factory``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Plant(Protocol):
    """A cooling plant in closed loop.

    Readings and setpoints are keyed by the canonical role names of ``db.roles``;
    temperatures in C, powers in kW. Missing sensor values are NaN, never absent keys
    for roles the plant has.
    """

    @property
    def now(self) -> datetime:
        """Plant time, timezone-aware UTC."""
        ...

    @property
    def record_interval_s(self) -> float:
        """Seconds between historian records (usually 300)."""
        ...

    def read(self) -> dict[str, float]:
        """The latest historian record: measurement roles as the sensors report them."""
        ...

    def setpoints(self) -> dict[str, float]:
        """The setpoints currently in force, by setpoint role."""
        ...

    def apply(self, setpoints: Mapping[str, float]) -> None:
        """Command new setpoints (any subset of the setpoint roles)."""
        ...

    def advance(self, seconds: float) -> None:
        """Advance plant time; records are produced every ``record_interval_s``."""
        ...


def load_plant_factory(spec: str) -> object:
    """Import ``module:factory`` and return the factory callable, with a clear error."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"plant spec {spec!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"plant spec {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"plant spec {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
