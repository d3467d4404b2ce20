"""The `Plant` seam: anything that can be read, commanded and advanced in time.

The simulator implements it; a user's own digital twin can too, and everything that
runs closed loop (history generation, the demo, evaluation, the soak) takes a Plant.
The command line loads one from ``module:factory``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

#: Keyword arguments a plant factory may take; each is passed only where its signature does.
FACTORY_ARGS: tuple[str, ...] = ("climate", "workload", "start", "seed")


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


class PlantFactory:
    """A ``module:factory`` plant factory and the arguments of ``FACTORY_ARGS`` it takes.

    Why one class: the command line, the evaluation and the soak all pass a user's
    factory only the arguments its signature names, and refuse (rather than silently
    drop) a climate or workload it cannot take. Errors are ValueError with the spec.
    """

    def __init__(self, spec: str) -> None:
        factory = load_plant_factory(spec)
        if not callable(factory):
            raise ValueError(f"plant {spec!r} is not callable")
        self.spec, self._factory = spec, factory
        try:
            params = inspect.signature(factory).parameters
            anything = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
            self.takes = frozenset(a for a in FACTORY_ARGS if anything or a in params)
        except (TypeError, ValueError):  # no signature (a builtin, say): pass nothing
            self.takes = frozenset()

    def refuse_untaken(self, offered: Mapping[str, Any], *, optional: tuple[str, ...] = ("seed", "start")) -> None:
        """Raise ValueError naming the given options (not None) that the factory cannot take."""
        refused = [f"--{k}" for k, v in offered.items() if v is not None and k not in self.takes and k not in optional]
        if refused:
            raise ValueError(f"plant {self.spec!r} does not take {', '.join(refused)}")

    def build(self, **offered: Any) -> Plant:
        """Call the factory with the offered arguments it takes (None values left out); check the result."""
        kwargs = {k: v for k, v in offered.items() if k in self.takes and v is not None}
        plant: Callable[..., object] = self._factory
        made = plant(**kwargs)
        if not isinstance(made, Plant):
            raise ValueError(f"plant {self.spec!r} returned {type(made).__name__}, "
                             "which does not implement simulator.plant.Plant")
        return made
