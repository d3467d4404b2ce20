"""Fault injection for the soak (``benchmarks/soak.py``): seeded, counted, always cleaned up.

Why these pieces: a soak must break each edge of the daemon the way a site breaks it,
without touching the daemon's code. Each fault lives at one edge:

* plant faults through ``SimulatedPlant.inject_fault`` (chiller trip, CRAH failure,
  sensor failure), on the controlled plant and on the rules twin alike, so the
  baseline faces the same hardware trouble;
* `DatabaseOutage`: an engine event that makes every statement fail with the driver's
  own ``OperationalError`` while it is down (every reader and writer of that engine
  sees an unreachable database: historian writes, the cycle's read, decision rows,
  setpoint commands, the model registry, retraining);
* `FlakyActuator`: delivers nothing (or only the first setpoint) while it is failing;
* `HistorianWriter`: the site historian of ``PlantBridge``: corrupts readings (NaN or
  a spike) while a bad-reading fault is on, and keeps records it could not store to
  write them when the database is back, as a historian backfills;
* config reloads: a valid edit or an invalid file, picked up by the daemon's own file
  watch (one reload per change, so every outcome can be matched to its file); an
  invalid file is restored once the daemon has rejected it.

`FaultInjector` is a daemon cycle hook that starts a fault with probability
``rate`` per cycle. Kinds come from a shuffled bag (every kind once per round, in a
random order), so that any run long enough sees every kind.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

from controller.decision import Decision
from controller.seams import ActuationResult, Actuator
from controller.service.config_watch import ConfigHolder, ReloadResult
from db.roles import MEASUREMENT_ROLES

log = logging.getLogger(__name__)

PLANT_FAULTS = ("chiller_trip", "crah_failure", "sensor_failure")
FAULT_KINDS = (*PLANT_FAULTS, "db_outage", "actuator_failure", "bad_reading", "config_reload", "config_invalid")
#: Fault length [cycles] (inclusive range): plant faults 30 min to 3 h, the rest minutes.
DURATION_CYCLES: dict[str, tuple[int, int]] = {
    "chiller_trip": (6, 36), "crah_failure": (6, 36), "sensor_failure": (6, 36),
    "db_outage": (1, 6), "actuator_failure": (1, 6), "bad_reading": (1, 3),
    "config_reload": (1, 1), "config_invalid": (1, 1),
}
#: A reload the daemon has not acted on after this many cycles is given up (and counted).
RELOAD_WAIT_CYCLES = 200
SENSOR_MODES = ("dropout", "stuck", "offset")
SENSOR_OFFSET_K = 3.0  # positive: a drifted sensor reads high, as the simulator's own random faults
#: Invalid edits: (mode, extra text) of `config_text`.
INVALID_CONFIGS = (
    ("turbo", ""),  # not a mode
    ("auto", "[safety\nrack_inlet_limit_c = 27.0\n"),  # TOML syntax error
    ("auto", '[safety]\nrack_inlet_limit_c = "hot"\n'),  # wrong type
)


def config_text(site: str, min_saving_pct: float, mode: str = "auto", extra: str = "") -> str:
    """The soak daemon's config: auto mode, metrics off (the soak reads the registry), DB actuator.

    The actuator keeps the production retry count; only the pause between attempts is 0,
    since in accelerated time a pause would only stretch the run (the plant waits anyway).
    """
    return (f'site_id = "{site}"\nmode = "{mode}"\n\n[metrics]\nenabled = false\n\n'
            f'[actuator]\nkind = "db"\nretry_backoff_s = 0\n\n[thresholds]\nmin_saving_pct = {min_saving_pct:g}\n\n{extra}')


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a reload never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class DatabaseOutage:
    """Makes ``engine``'s database unreachable while ``down``: every statement raises.

    The error is the driver's own ``OperationalError``, so SQLAlchemy wraps it and the
    code under test turns it into ``DatabaseError`` exactly as for a real outage.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.down = False
        self.refused = 0  # statements refused [-]
        self._error = engine.dialect.loaded_dbapi.OperationalError
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, *_args: Any) -> None:
        if self.down:
            self.refused += 1
            raise self._error("soak: database unreachable (injected outage)")

    def remove(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)


class FlakyActuator:
    """Wraps an actuator; while ``mode`` is set, sends fail ("all") or deliver one role ("partial").

    It sits between the configured actuator and the plant: pass `wrap` as
    ``coolpilot.wiring.build_parts(actuator_layer=...)``.
    """

    def __init__(self, inner: Actuator | None = None) -> None:
        self.inner = inner
        self.mode: str | None = None
        self.failed_sends = 0

    def wrap(self, inner: Actuator) -> FlakyActuator:
        """Put this layer in front of ``inner``; returns itself."""
        self.inner = inner
        return self

    def send(self, setpoints: Mapping[str, float], *, ts: datetime, decision_id: int | None,
             reason: str) -> ActuationResult:
        if self.inner is None:
            raise RuntimeError("FlakyActuator: no actuator to wrap (use wrap)")
        if self.mode is None:
            return self.inner.send(setpoints, ts=ts, decision_id=decision_id, reason=reason)
        self.failed_sends += 1
        if self.mode == "partial" and setpoints:
            first = next(iter(setpoints))
            part = self.inner.send({first: setpoints[first]}, ts=ts, decision_id=decision_id, reason=reason)
            return ActuationResult(ok=False, status="failed: soak: only one setpoint delivered", sent=part.sent)
        return ActuationResult(ok=False, status="failed: soak: actuator unreachable (injected)")


class HistorianWriter:
    """``PlantBridge``'s write: corrupts readings on request and backfills after outages.

    ``readings_written`` counts the non-NaN cells of every frame the database accepted,
    which is what must be found in the ``readings`` table at the end.
    """

    def __init__(self, write: Callable[[sa.Engine, pd.DataFrame, str], int], rng: np.random.Generator) -> None:
        self._write, self._rng = write, rng
        self.corrupt = False
        self._pending: list[pd.DataFrame] = []
        self.readings_written = 0
        self.readings_inserted = 0
        self.corrupted = Counter[str]()
        self.backfilled_records = 0

    def _corrupted(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        roles = [r for r in MEASUREMENT_ROLES if r in frame.columns]
        for role in self._rng.choice(roles, size=int(self._rng.integers(1, 4)), replace=False):
            value = float(frame[role].iloc[-1])
            if self._rng.random() < 0.5 or not math.isfinite(value):
                frame.loc[frame.index[-1], role] = math.nan
                self.corrupted["nan"] += 1
            else:
                sign = 1.0 if self._rng.random() < 0.5 else -1.0
                frame.loc[frame.index[-1], role] = value + sign * max(10.0, abs(value))
                self.corrupted["spike"] += 1
        return frame

    def __call__(self, engine: sa.Engine, frame: pd.DataFrame, site: str) -> int:
        self._pending.append(self._corrupted(frame) if self.corrupt else frame)
        return self.flush(engine, site)

    def flush(self, engine: sa.Engine, site: str) -> int:
        """Write everything pending in one transaction; raises (keeping it pending) while the database is down."""
        if not self._pending:
            return 0
        batch = pd.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        inserted = self._write(engine, batch, site)
        self.backfilled_records += len(self._pending) - 1
        self.readings_written += int(batch.notna().to_numpy().sum())
        self.readings_inserted += inserted
        self._pending.clear()
        return inserted

    @property
    def pending_records(self) -> int:
        return len(self._pending)


@dataclass
class _Active:
    kind: str
    ends_at: int  # cycle number at which it ends
    detail: str = ""
    before: ReloadResult | None = None  # config faults: the holder's result before the file changed
    restoring: bool = False  # config_invalid: the valid file is back, waiting for its reload


class FaultInjector:
    """Cycle hook that starts and ends faults (see the module docstring); counts everything."""

    def __init__(self, *, rate: float, rng: np.random.Generator, plants: tuple[Any, ...], outage: DatabaseOutage,
                 actuator: FlakyActuator, writer: HistorianWriter, holder: ConfigHolder, config_path: Path,
                 site: str) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be a probability per cycle in [0, 1], got {rate!r}")
        self.rate, self.rng, self.plants = rate, rng, plants
        self.outage, self.actuator, self.writer = outage, actuator, writer
        self.holder, self.config_path, self.site = holder, config_path, site
        self.cycle = 0
        self.started = Counter[str]({k: 0 for k in FAULT_KINDS})
        self.reloads = Counter[str]()
        self.active: dict[str, _Active] = {}
        self._bag: list[str] = []
        self._saving_pct = 1.0
        self._valid_text = config_text(site, self._saving_pct)

    # -- the cycle hook ----------------------------------------------------------------
    def before_cycle(self) -> None:
        self.cycle += 1
        for fault in list(self.active.values()):
            if fault.kind.startswith("config"):
                self._check_reload(fault)
            elif self.cycle >= fault.ends_at:
                self._end(fault)
        if self.rate > 0 and self.rng.random() < self.rate:
            self._start_next()

    def after_cycle(self, decision: Decision | None) -> None:
        return None

    def finish(self) -> None:
        """After the daemon stopped: end every fault (database back, valid config in force)."""
        for fault in list(self.active.values()):
            if fault.kind.startswith("config"):
                write_atomically(self.config_path, self._valid_text)
                self.holder.reload()
                self.active.pop(fault.kind)
            else:
                self._end(fault)

    # -- starting and ending -----------------------------------------------------------
    def _start_next(self) -> None:
        if not self._bag:
            self._bag = list(self.rng.permutation(FAULT_KINDS))
        kind = str(self._bag[-1])
        if kind in self.active or (kind.startswith("config") and any(k.startswith("config") for k in self.active)):
            return  # still running (one config change at a time): try again on a later cycle
        self._bag.pop()
        lo, hi = DURATION_CYCLES[kind]
        fault = _Active(kind, self.cycle + int(self.rng.integers(lo, hi + 1)))
        getattr(self, f"_start_{kind}")(fault)
        self.active[kind] = fault
        self.started[kind] += 1
        log.info("soak: %s started at cycle %d %s", kind, self.cycle, fault.detail)

    def _start_chiller_trip(self, fault: _Active) -> None:
        for plant in self.plants:
            plant.inject_fault("chiller_trip", count=1)

    def _start_crah_failure(self, fault: _Active) -> None:
        for plant in self.plants:
            plant.inject_fault("crah_failure", count=1)

    def _start_sensor_failure(self, fault: _Active) -> None:
        role = str(self.rng.choice(MEASUREMENT_ROLES))
        mode = str(self.rng.choice(SENSOR_MODES))
        fault.detail = f"{role} {mode}"
        for plant in self.plants:
            plant.inject_fault("sensor_failure", role=role, mode=mode,
                               offset=SENSOR_OFFSET_K if mode == "offset" else 0.0)

    def _start_db_outage(self, fault: _Active) -> None:
        self.outage.down = True

    def _start_actuator_failure(self, fault: _Active) -> None:
        fault.detail = "all" if self.rng.random() < 0.5 else "partial"
        self.actuator.mode = fault.detail

    def _start_bad_reading(self, fault: _Active) -> None:
        self.writer.corrupt = True

    def _start_config_reload(self, fault: _Active) -> None:
        self._saving_pct = 1.5 if self._saving_pct == 1.0 else 1.0
        self._valid_text = config_text(self.site, self._saving_pct)
        self._write(fault, self._valid_text)

    def _start_config_invalid(self, fault: _Active) -> None:
        mode, extra = INVALID_CONFIGS[int(self.rng.integers(len(INVALID_CONFIGS)))]
        fault.detail = f"mode {mode!r}" if mode != "auto" else extra.splitlines()[0]
        self._write(fault, config_text(self.site, self._saving_pct, mode, extra))

    def _write(self, fault: _Active, text: str) -> None:
        fault.before = self.holder.last_result
        fault.ends_at = self.cycle
        write_atomically(self.config_path, text)

    def _check_reload(self, fault: _Active) -> None:
        """A config fault ends once the daemon has acted on the file (or after a long wait)."""
        result = self.holder.last_result
        if result is fault.before and self.cycle - fault.ends_at < RELOAD_WAIT_CYCLES:
            return
        expected_ok = fault.kind == "config_reload" or fault.restoring
        if result is fault.before:
            self.reloads["not_acted_on"] += 1
        elif result.reload_ok == expected_ok:
            self.reloads["restored" if fault.restoring else "accepted" if expected_ok else "rejected"] += 1
        else:
            self.reloads["unexpected"] += 1
            log.error("soak: %s reload ended reload_ok=%s: %s", fault.kind, result.reload_ok, result.message())
        if fault.kind == "config_invalid" and not fault.restoring:  # the operator fixes the file
            fault.restoring = True
            self._write(fault, self._valid_text)
            return
        self.active.pop(fault.kind)

    def _end(self, fault: _Active) -> None:
        kind = fault.kind
        if kind in PLANT_FAULTS:
            for plant in self.plants:
                plant.clear_fault(kind)
        elif kind == "db_outage":
            self.outage.down = False
        elif kind == "actuator_failure":
            self.actuator.mode = None
        elif kind == "bad_reading":
            self.writer.corrupt = False
        self.active.pop(kind)
        log.info("soak: %s ended at cycle %d", kind, self.cycle)

    def config_ok(self) -> bool:
        """Whether the config in force is the last valid one written (mode auto, the expected threshold)."""
        config = self.holder.config
        return config.mode == "auto" and config.thresholds.min_saving_pct == self._saving_pct
