"""``EnergyPlusPlant``: an EnergyPlus building model as a ``simulator.plant.Plant``.

The parent side of the co-simulation. It writes the prepared model into its own work
folder, starts a worker process (``worker.py``) and then steps it one 5-minute zone
timestep at a time: each step brings that timestep's outputs, which become the
role readings (``readings.py``) and the meter energies booked by ``energy_kwh()``.
Setpoints applied now are sent with the next step and hold from the next timestep.

Time: EnergyPlus stamps a timestep with its end, in local standard time; the plant
converts with the EPW's UTC offset, so ``now`` is the end of the latest timestep, in
UTC, on a 5-minute grid. Several plants can run side by side (one process each).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Any

from db.roles import ROLES, SETPOINT_ROLES
from simulator.energyplus.climate import materialize
from simulator.energyplus.engine import Engine
from simulator.energyplus.model import Doc, write_model
from simulator.energyplus.pointmap import PointMap
from simulator.energyplus.readings import RoleReader
from simulator.energyplus.worker import WorkerSpec, receive, run_worker, send

RECORD_INTERVAL_S = 300.0
ERR_TAIL_LINES = 25
ENERGY_KEYS = ("facility_kwh", "it_kwh", "cooling_kwh", "other_kwh")


class EnergyPlusError(RuntimeError):
    """EnergyPlus stopped or failed; the message names the model and ends with the tail of eplusout.err."""


@dataclass(frozen=True)
class PlantSetup:
    """A checked plant description (``factory.make_plant`` builds it)."""

    label: str
    pointmap: PointMap
    model: Doc
    weather: Path
    utc_offset_h: float
    start: datetime
    own_controls: bool
    engine: Engine
    keep_output: bool = False
    leap_day: bool = False


def _err_tail(output_dir: Path) -> str:
    err = output_dir / "eplusout.err"
    if not err.is_file():
        return "(no eplusout.err was written)"
    lines = err.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-ERR_TAIL_LINES:])


def _shutdown(process: BaseProcess, conn: Connection, workdir: Path, keep: bool) -> None:
    """Stop the worker (politely, then by signal) and remove the work folder; safe to call twice."""
    if process.is_alive():
        with contextlib.suppress(OSError, ValueError):
            send(conn, ["stop"])
        process.join(timeout=5.0)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5.0)
        if process.is_alive():
            process.kill()
            process.join()
    conn.close()
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)


class EnergyPlusPlant:
    """An EnergyPlus model in closed loop; implements ``simulator.plant.Plant``.

    Build it with ``simulator.energyplus.make_plant``. Close it (or use it as a context
    manager) to stop its worker; it is also stopped when the plant is collected or
    the interpreter exits, and the worker exits by itself if this process dies.
    """

    def __init__(self, setup: PlantSetup) -> None:
        if setup.start.tzinfo is None:
            raise ValueError("plant start time must be timezone-aware (UTC)")
        self.label = setup.label
        self.own_controls = setup.own_controls
        self._reader = RoleReader(setup.pointmap)
        self._offset = timedelta(hours=setup.utc_offset_h)
        self._roles = tuple(setup.pointmap.setpoints)
        self._commanded = {r: sp.initial_c for r, sp in setup.pointmap.setpoints.items()}
        self._pending = False
        self._energy_j = dict.fromkeys(setup.pointmap.energy, 0.0)
        self._workdir = Path(tempfile.mkdtemp(prefix=f"coolpilot-eplus-{setup.label}-"))
        self.output_dir = self._workdir / "output"
        model_path = write_model(setup.model, self._workdir / "model.epJSON")
        weather = materialize(setup.weather, self._workdir, leap_day=setup.leap_day)
        actuated = () if setup.own_controls else tuple(setup.pointmap.setpoints.values())
        spec = WorkerSpec(
            library=str(setup.engine.library), model=str(model_path), weather=str(weather),
            output_dir=str(self.output_dir), variables=tuple(self._reader.variables),
            meters=tuple(self._reader.meters), actuators=tuple(sp.actuator for sp in actuated),
            initial=tuple(sp.initial_c for sp in actuated),
        )
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        self._process = ctx.Process(target=run_worker, args=(spec, child), daemon=True,
                                    name=f"energyplus-{setup.label}")
        self._process.start()
        child.close()
        self._finalizer = weakref.finalize(self, _shutdown, self._process, self._conn, self._workdir,
                                           setup.keep_output)
        self._now = datetime.min.replace(tzinfo=UTC)
        self._raw: list[float] = []
        self._step_s = RECORD_INTERVAL_S
        self._reading: dict[str, float] = {}
        start = setup.start.astimezone(UTC)
        try:
            self._receive()
            while self._now < start:  # the run period begins at local midnight: skip up to the start
                self._go()
                self._receive()
        except BaseException:
            self.close()
            raise

    # --- the Plant protocol -------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self._now

    @property
    def record_interval_s(self) -> float:
        return RECORD_INTERVAL_S

    def read(self) -> dict[str, float]:
        return dict(self._reading)

    def setpoints(self) -> dict[str, float]:
        """Setpoints in force: as commanded, or (own controls) as the model's managers set them."""
        if self.own_controls:
            return self._reader.readback(self._raw)
        return dict(self._commanded)

    def apply(self, setpoints: Mapping[str, float]) -> None:
        """Command setpoints from the next timestep on.

        Unknown roles, non-finite values and values outside the role's physical range
        are refused. Setpoint roles this model has no loop for are ignored, as a BMS
        ignores a write to a point it does not have; so is everything with own controls.
        """
        for role, value in setpoints.items():
            if role not in SETPOINT_ROLES:
                raise ValueError(f"unknown setpoint role {role!r}; known: {', '.join(SETPOINT_ROLES)}")
            spec = ROLES[role]
            if not math.isfinite(value) or not spec.physical_min <= value <= spec.physical_max:
                raise ValueError(f"setpoint {role} must be finite and in [{spec.physical_min:g}, "
                                 f"{spec.physical_max:g}] C, got {value!r}")
        if self.own_controls:
            return
        for role in self._roles:
            if role in setpoints and float(setpoints[role]) != self._commanded[role]:
                self._commanded[role] = float(setpoints[role])
                self._pending = True

    def advance(self, seconds: float) -> None:
        """Advance by whole 5-minute timesteps."""
        steps = round(seconds / RECORD_INTERVAL_S) if math.isfinite(seconds) else -1
        if steps < 0 or abs(steps * RECORD_INTERVAL_S - seconds) > 1e-6:
            raise ValueError(f"advance needs a non-negative multiple of {RECORD_INTERVAL_S:g} s, got {seconds!r}")
        for _ in range(steps):
            self._go()
            self._receive()
            for bucket, joules in self._reader.energy_j(self._raw).items():
                self._energy_j[bucket] += joules

    # --- extras -------------------------------------------------------------------

    def energy_kwh(self) -> dict[str, float]:
        """Metered energy since the start [kWh]: facility, IT, cooling (HVAC) and other."""
        return {f"{bucket}_kwh": joules / 3.6e6 for bucket, joules in self._energy_j.items()}

    def close(self) -> None:
        """Stop the worker and remove the work folder (idempotent)."""
        self._finalizer()

    def __enter__(self) -> EnergyPlusPlant:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------

    def _go(self) -> None:
        values = [self._commanded[r] for r in self._roles] if self._pending else None
        self._pending = False
        try:
            send(self._conn, ["go", values])
        except (OSError, ValueError) as exc:
            raise self._failure(f"the EnergyPlus worker is gone ({exc})") from None

    def _receive(self) -> None:
        message: list[Any] | None = None
        while message is None:
            try:
                if self._conn.poll(1.0):
                    message = receive(self._conn)
                elif not self._process.is_alive():
                    raise self._failure(f"the EnergyPlus worker died (exit code {self._process.exitcode})")
            except (EOFError, OSError, ValueError):
                raise self._failure("the EnergyPlus worker died without a word") from None
        kind = message[0]
        if kind == "step":
            (year, month, day, minute), step_s, raw = message[1], message[2], message[3]
            if abs(step_s - RECORD_INTERVAL_S) > 1e-6:
                raise self._failure(f"the model runs {step_s:g} s timesteps, not {RECORD_INTERVAL_S:g} s")
            self._now = self._step_end_utc(year, month, day, minute, step_s)
            self._raw, self._step_s = raw, step_s
            self._reading = self._reader.read(raw, step_s)
        elif kind == "error":
            raise self._failure(str(message[1]).strip())
        elif self._raw:
            raise self._failure(f"the EnergyPlus run ended (return code {message[1]}) after {self._now:%Y-%m-%d %H:%M}"
                                " UTC; build the plant with more days, or see the errors below")
        else:
            raise self._failure(f"EnergyPlus stopped before the run period began (return code {message[1]})")

    def _step_end_utc(self, year: int, month: int, day: int, minute: int, step_s: float) -> datetime:
        """The end of the timestep EnergyPlus reports, in UTC.

        EnergyPlus's calendar year already reads the new year during the last timestep of
        31 December (hour 24): of the years around the reported one, take the one that
        makes this step follow the previous one.
        """
        def at(y: int) -> datetime | None:
            try:
                return datetime(y, month, day, tzinfo=UTC) + timedelta(minutes=minute) - self._offset
            except ValueError:  # 29 February of a year without one
                return None

        reported = at(year)
        if not self._raw and reported is not None:
            return reported
        expected = self._now + timedelta(seconds=step_s)
        found = [t for t in (at(year - 1), reported, at(year + 1)) if t is not None]
        return min(found, key=lambda t: abs((t - expected).total_seconds()))

    def _failure(self, what: str) -> EnergyPlusError:
        """An error naming the model and quoting eplusout.err; the plant is closed."""
        if self._process.is_alive():
            self._process.join(timeout=2.0)
        tail = _err_tail(self.output_dir)
        self.close()
        return EnergyPlusError(f"EnergyPlus model {self.label}: {what}\n--- eplusout.err (last lines) ---\n{tail}")
