"""The EnergyPlus worker process: one engine run, stepped by its parent over a Pipe.

EnergyPlus keeps global state, so each plant runs it in its own process (started with
the "spawn" context, its own output folder). At the end of every zone timestep of the
weather-file run period (not sizing, not warm-up) the callback sends the parent that
timestep's values, then blocks until the parent says go on, with the actuator values
to hold from the next timestep. Warm-up and sizing run without stopping, at the
initial actuator values.

Messages, worker -> parent: ``["step", [year, month, day, minute_of_day_at_end],
step_s, values]``, ``["error", text]``, ``["done", return_code]``. Parent -> worker:
``["go", actuator_values | null]`` or ``["stop"]``. If the parent goes away, the pipe
closes and the worker stops the engine and exits (and Linux sends it SIGTERM when its
parent dies, in case it is busy in warm-up).

Messages are JSON over the pipe (``send`` / ``receive``), never pickles: neither side
unpickles what the other sends (the spawn start-up itself is multiprocessing's own).
This module imports only the standard library, so a worker starts quickly.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from simulator.energyplus.engine import CALLBACK, load_api

RUN_PERIOD_WEATHER = 3  # kindOfSim: weather-file run period


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs; plain data so it pickles into a spawned process."""

    library: str
    model: str
    weather: str
    output_dir: str
    variables: tuple[tuple[str, str], ...]
    meters: tuple[str, ...]
    actuators: tuple[tuple[str, str, str], ...]
    initial: tuple[float, ...]


def send(conn: Connection, message: list[Any]) -> None:
    """One message as JSON (NaN allowed, floats round-trip exactly)."""
    conn.send_bytes(json.dumps(message).encode("utf-8"))


def receive(conn: Connection) -> list[Any]:
    """The next message; raises EOFError when the other side has gone."""
    message = json.loads(conn.recv_bytes().decode("utf-8"))
    if not isinstance(message, list) or not message:
        raise ValueError(f"malformed message on the EnergyPlus pipe: {message!r}")
    return message


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG); a no-op elsewhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class _Runner:
    """Holds the handles and talks to the parent from inside EnergyPlus's callback."""

    def __init__(self, lib: ctypes.CDLL, state: int, spec: WorkerSpec, conn: Connection) -> None:
        self.lib, self.state, self.spec, self.conn = lib, state, spec, conn
        self.var_handles: list[int] = []
        self.meter_handles: list[int] = []
        self.act_handles: list[int] = []
        self.actuator_values = list(spec.initial)
        self.stopped = False
        self.resolved = False
        self.tries = 0
        self._meter_order: list[str] | None = None

    def _meter_handle(self, name: str) -> int:
        handle = int(self.lib.getMeterHandle(self.state, name.encode()))
        if handle >= 0:
            return handle
        # 25.2 numbers meters from 0 but reports index 0 (Electricity:Facility) as "not found";
        # the API data list gives the meters in index order, so look the name up there.
        if self._meter_order is None:
            raw = self.lib.listAllAPIDataCSV(self.state)
            text = ctypes.string_at(raw).decode("utf-8", "replace") if raw else ""
            self._meter_order = [line.split(",")[1].strip().casefold() for line in text.splitlines()
                                 if line.startswith("OutputMeter,") and len(line.split(",")) > 1]
        return 0 if self._meter_order[:1] == [name.casefold()] else -1

    def _resolve(self) -> list[str]:
        """Look up every handle; returns what is missing."""
        lib, st, spec = self.lib, self.state, self.spec
        self.var_handles = [int(lib.getVariableHandle(st, n.encode(), k.encode())) for n, k in spec.variables]
        self.meter_handles = [self._meter_handle(m) for m in spec.meters]
        self.act_handles = [int(lib.getActuatorHandle(st, c.encode(), t.encode(), k.encode()))
                            for c, t, k in spec.actuators]
        missing = [f"output variable {n!r} for key {k!r}" for (n, k), h in zip(spec.variables, self.var_handles,
                                                                             strict=True) if h < 0]
        missing += [f"meter {m!r}" for m, h in zip(spec.meters, self.meter_handles, strict=True) if h < 0]
        missing += [f"actuator {t!r} of {c} {k!r}" for (c, t, k), h in zip(spec.actuators, self.act_handles,
                                                                         strict=True) if h < 0]
        return missing

    def _set_actuators(self) -> None:
        for handle, value in zip(self.act_handles, self.actuator_values, strict=True):
            if handle >= 0:
                self.lib.setActuatorValue(self.state, handle, value)

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.lib.stopSimulation(self.state)

    def on_end_of_zone_timestep(self, state: int) -> None:
        """The callback; never raises into EnergyPlus (an error is sent and the run stopped)."""
        if self.stopped:
            return
        try:
            self._step()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self._stop()  # the parent has gone
        except BaseException:  # report anything, then stop the engine
            with contextlib.suppress(OSError, EOFError):
                send(self.conn, ["error", traceback.format_exc(limit=3)])
            self._stop()

    def _step(self) -> None:
        lib, st = self.lib, self.state
        if not lib.apiDataFullyReady(st):
            return
        in_run = lib.kindOfSim(st) == RUN_PERIOD_WEATHER and not lib.warmupFlag(st)
        if not self.resolved and (self.tries == 0 or in_run):
            self.tries += 1
            missing = self._resolve()
            self.resolved = not missing
            if missing and in_run:
                send(self.conn, ["error", "EnergyPlus has no " + "; no ".join(missing)])
                self._stop()
                return
        self._set_actuators()
        if not in_run:
            return
        values = [float(lib.getVariableValue(st, h)) for h in self.var_handles]
        values += [float(lib.getMeterValue(st, h)) for h in self.meter_handles]
        # The zone timestep's end: currentTime() and minutes() follow HVAC sub-steps, so count zone steps.
        minute = int(lib.hour(st)) * 60 + int(lib.zoneTimeStepNum(st)) * 60 // max(int(lib.numTimeStepsInHour(st)), 1)
        when = (int(lib.calendarYear(st)), int(lib.month(st)), int(lib.dayOfMonth(st)), minute)
        send(self.conn, ["step", when, float(lib.zoneTimeStep(st)) * 3600.0, values])
        message = receive(self.conn)
        if message[0] == "go":
            if message[1] is not None:
                self.actuator_values = [float(v) for v in message[1]]
                self._set_actuators()
        else:
            self._stop()


def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    """Process entry point: run EnergyPlus once, stepping with the parent; always report how it ended."""
    _die_with_parent()
    rc = -1
    try:
        Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
        lib = load_api(Path(spec.library))
        state = lib.stateNew()
        lib.setConsoleOutputState(state, 0)
        for name, key in spec.variables:
            lib.requestVariable(state, name.encode(), key.encode())
        runner = _Runner(lib, state, spec, conn)
        callback = CALLBACK(runner.on_end_of_zone_timestep)  # kept alive for the whole run
        lib.callbackEndOfZoneTimeStepAfterZoneReporting(state, callback)
        args = [b"energyplus", b"-w", spec.weather.encode(), b"-d", spec.output_dir.encode(), spec.model.encode()]
        argv = (ctypes.c_char_p * len(args))(*args)
        rc = int(lib.energyplus(state, len(args), argv))
        stopped = runner.stopped
    except BaseException:  # the parent needs to hear why
        with contextlib.suppress(OSError, EOFError):
            send(conn, ["error", traceback.format_exc(limit=3)])
        rc, stopped = -1, False
    if not stopped:
        with contextlib.suppress(OSError, EOFError):
            send(conn, ["done", rc])
    with contextlib.suppress(OSError):
        conn.close()
    os._exit(0)  # skip interpreter teardown of the engine's global state
