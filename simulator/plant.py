"""The `Plant` seam: anything that can be read, commanded and advanced in time.

The simulator implements it; a user's own digital twin can too, and everything that
runs closed loop (history generation, the demo, evaluation, the soak) takes a Plant.
The command line loads one from ``module:factory``.

`SteadyStatePlant` is a second, optional seam: a plant that can also answer "where
would you settle under these candidate setpoints?" from its own noise-free model. The
oracle (``coolpilot.harness.oracle``) searches such a plant; the evaluation runs the
oracle only where ``isinstance(plant, SteadyStatePlant)`` holds and notes why not
otherwise. ``simulator.plant_sim.SimulatedPlant`` implements both, and `RolloutPlant`
(the same candidates held over a horizon on a copy of its full dynamic model), which
the oracle prefers where a plant offers it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

#: Keyword arguments a plant factory may take; each is passed only where its signature does.
FACTORY_ARGS: tuple[str, ...] = ("climate", "workload", "start", "seed")

#: What `SteadyStatePlant.steady_state` must return, one array of N values each: the
#: quasi-steady cooling power [kW], hottest rack inlet [C], and the chilled-water,
#: supply-air and condenser-water temperatures reached [C] (which fall short of an
#: unreachable setpoint). An implementation may return more.
STEADY_STATE_KEYS: tuple[str, ...] = (
    "cooling_power_kw", "rack_inlet_max_c", "chw_supply_c", "supply_air_c", "cw_supply_c",
)


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


@runtime_checkable
class SteadyStatePlant(Protocol):
    """A plant whose own true model can be searched: what the oracle needs, and nothing else.

    Optional: a `Plant` need not implement it (a real site or a co-simulation cannot),
    and then the evaluation skips the oracle with a note.
    """

    def setpoints(self) -> dict[str, float]:
        """The setpoints currently in force, by setpoint role (the search starts from these)."""
        ...

    def steady_state(self, setpoints: npt.NDArray[np.float64]) -> Mapping[str, npt.NDArray[np.float64]]:
        """Quasi-steady true response to N candidate setpoints.

        ``setpoints``: shape (N, 3), columns in ``db.roles.SETPOINT_ROLES`` order [C];
        at today's weather and load, with the local loops settled. Returns at least
        ``STEADY_STATE_KEYS``, each an array of N values.
        """
        ...


#: What `RolloutPlant.rollout` must return, one array of N values each: cooling energy
#: over the horizon [kWh] and the hottest rack inlet at any step of it [C].
ROLLOUT_KEYS: tuple[str, ...] = ("cooling_kwh", "rack_inlet_max_c")


@runtime_checkable
class RolloutPlant(Protocol):
    """A plant that can play candidate setpoints forward on its own full dynamic model.

    Optional, like `SteadyStatePlant`; with it the oracle scores candidates by what the
    plant really does over a horizon (lags, staging delays, economiser hysteresis).
    """

    def rollout(self, setpoints: npt.ArrayLike, seconds: float) -> Mapping[str, npt.NDArray[np.float64]]:
        """Each of N candidates (N, 3) [C] held for ``seconds`` on a copy; the plant does not move.

        Returns at least ``ROLLOUT_KEYS``, each an array of N values.
        """
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
