"""The plants an evaluation runs: the twin or a user's ``module:factory``, or an EnergyPlus model.

Every input (factory spec, climate, workload, EnergyPlus model, point map, weather) is
checked here before any work starts, each with one clear line (`EvaluationError`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import cast

from simulator.plant import Plant, PlantFactory

PlantMaker = Callable[[datetime], Plant]


class EvaluationError(Exception):
    """An evaluation that cannot run (bad options, a plant that cannot be built, training failed)."""


def plant_maker(spec: str, climate: str | None, workload: str | None, seed: int) -> tuple[PlantMaker, bool]:
    """A function building the plant at a start time, and whether the factory takes ``start``.

    Factory arguments are passed only where the factory's signature takes them; a
    climate or workload it cannot take is an error rather than silently ignored.
    """
    try:
        factory = PlantFactory(spec)
        factory.refuse_untaken({"climate": climate, "workload": workload})
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None

    def make(start: datetime) -> Plant:
        try:
            return factory.build(climate=climate, workload=workload, seed=seed, start=start)
        except (ValueError, OSError) as exc:
            raise EvaluationError(f"plant {spec!r}: {exc}") from None

    return make, "start" in factory.takes


def check_energyplus(model: str | None, point_map: str | None, climate: str | None) -> str:
    """Check an EnergyPlus model, point map and weather without starting EnergyPlus; its label.

    ``simulator.energyplus.factory.check_inputs``: the checks ``make_plant`` runs before it
    starts the engine, for both ways a plant runs, so that a bad input is one clear line
    before any work.
    """
    from simulator.energyplus.engine import EngineMissingError
    from simulator.energyplus.factory import check_inputs

    try:
        return check_inputs(model, point_map, climate)
    except (ValueError, OSError, EngineMissingError) as exc:
        raise EvaluationError(str(exc).strip().splitlines()[0]) from None


def energyplus_maker(model: str | None, point_map: str | None, climate: str | None,
                     days: float) -> Callable[..., Plant]:
    """A function building an EnergyPlus plant at a start time (``own_controls`` as a keyword).

    ``days``: how far each plant may be advanced (history plus window).
    """
    check_energyplus(model, point_map, climate)

    def make(start: datetime, *, own_controls: bool = False) -> Plant:
        from simulator.energyplus import EnergyPlusError, make_plant

        try:
            return cast(Plant, make_plant(climate, start, model=model, point_map=point_map,
                                          own_controls=own_controls, days=days))
        except (ValueError, OSError, EnergyPlusError) as exc:
            raise EvaluationError(str(exc)) from None

    return make


def close_plant(plant: Plant | None) -> None:
    """Stop a plant that runs a process (EnergyPlus); nothing for the others."""
    close = getattr(plant, "close", None)
    if callable(close):
        close()
