"""Equipment and sensor faults: injected by tests, or drawn at random at configured rates.

Kinds: ``chiller_trip`` (``count`` chillers unavailable), ``crah_failure`` (``count``
air handlers stopped), ``sensor_failure`` (``role``, ``mode`` dropout / stuck / offset,
``offset``). Random faults arrive as Poisson processes and last an exponential time
with the configured mean; every start and end is logged with its time, so that tests
and evaluations can count them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from simulator.config import FaultRates
from simulator.sensors import SENSOR_FAILURE_MODES

FAULT_KINDS = ("chiller_trip", "crah_failure", "sensor_failure")
SECONDS_PER_YEAR = 365.0 * 86400.0


@dataclass(frozen=True)
class FaultEvent:
    """One start or end of a fault."""

    time: datetime
    kind: str
    action: str  # "start" or "end"
    params: dict[str, Any]
    fault_id: int


@dataclass
class ActiveFault:
    kind: str
    params: dict[str, Any]
    fault_id: int
    ends_at_s: float | None = None  # plant seconds; None: until cleared


def validate_fault(kind: str, params: dict[str, Any], sensor_roles: tuple[str, ...]) -> dict[str, Any]:
    """Check a fault request and fill defaults; raises ValueError naming the problem."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)}")
    if kind == "sensor_failure":
        unknown = set(params) - {"role", "mode", "offset"}
        if unknown:
            raise ValueError(f"sensor_failure takes role, mode, offset; got {', '.join(sorted(unknown))}")
        role = params.get("role")
        if role not in sensor_roles:
            raise ValueError(f"sensor_failure needs role=<measurement role>; got {role!r}")
        mode = params.get("mode", "dropout")
        if mode not in SENSOR_FAILURE_MODES:
            raise ValueError(f"sensor_failure mode must be one of {', '.join(SENSOR_FAILURE_MODES)}, got {mode!r}")
        return {"role": role, "mode": mode, "offset": float(params.get("offset", 0.0))}
    unknown = set(params) - {"count"}
    if unknown:
        raise ValueError(f"{kind} takes count; got {', '.join(sorted(unknown))}")
    count = params.get("count", 1)
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"{kind} count must be a positive integer, got {count!r}")
    return {"count": count}


@dataclass
class FaultSchedule:
    """Active faults plus the random arrival process."""

    rates: FaultRates
    rng: np.random.Generator
    sensor_roles: tuple[str, ...]
    active: list[ActiveFault] = field(default_factory=list)
    log: list[FaultEvent] = field(default_factory=list)
    _next_id: int = 0
    _next_arrival_s: dict[str, float] = field(default_factory=dict)
    _next_event_s: float = float("inf")

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            self._next_arrival_s[kind] = self._draw_arrival(kind, 0.0)
        self._refresh_next_event()

    def _rate_per_s(self, kind: str) -> float:
        per_year = {
            "chiller_trip": self.rates.chiller_trips_per_year,
            "crah_failure": self.rates.crah_failures_per_year,
            "sensor_failure": self.rates.sensor_failures_per_year,
        }[kind]
        return per_year / SECONDS_PER_YEAR

    def _draw_arrival(self, kind: str, now_s: float) -> float:
        rate = self._rate_per_s(kind)
        return now_s + float(self.rng.exponential(1.0 / rate)) if rate > 0 else float("inf")

    def start(self, kind: str, params: dict[str, Any], now_s: float, when: datetime, ends_at_s: float | None = None) -> int:
        fault_id = self._next_id
        self._next_id += 1
        self.active.append(ActiveFault(kind, params, fault_id, ends_at_s))
        self.log.append(FaultEvent(when, kind, "start", dict(params), fault_id))
        self._refresh_next_event()
        return fault_id

    def clear(self, kind: str, when: datetime, role: str | None = None) -> int:
        """End active faults of ``kind`` (and ``role`` for sensors); returns how many."""
        keep, ended = [], 0
        for f in self.active:
            if f.kind == kind and (role is None or f.params.get("role") == role):
                self.log.append(FaultEvent(when, f.kind, "end", dict(f.params), f.fault_id))
                ended += 1
            else:
                keep.append(f)
        self.active = keep
        self._refresh_next_event()
        return ended

    def due(self, now_s: float) -> bool:
        """Whether a random arrival or repair falls at or before ``now_s`` (cheap per-step check)."""
        return self._next_event_s <= now_s

    def _refresh_next_event(self) -> None:
        ends = [f.ends_at_s for f in self.active if f.ends_at_s is not None]
        self._next_event_s = min([*self._next_arrival_s.values(), *ends])

    def advance(self, now_s: float, start: datetime) -> None:
        """Start random faults that arrived and end random faults that were repaired."""
        when = start + timedelta(seconds=now_s)
        for f in [f for f in self.active if f.ends_at_s is not None and f.ends_at_s <= now_s]:
            self.active.remove(f)
            self.log.append(FaultEvent(when, f.kind, "end", dict(f.params), f.fault_id))
        for kind in FAULT_KINDS:
            while self._next_arrival_s[kind] <= now_s:
                if kind == "sensor_failure":
                    role = self.sensor_roles[int(self.rng.integers(len(self.sensor_roles)))]
                    mode = SENSOR_FAILURE_MODES[int(self.rng.integers(len(SENSOR_FAILURE_MODES)))]
                    params: dict[str, Any] = {"role": role, "mode": mode, "offset": 3.0 if mode == "offset" else 0.0}
                else:
                    params = {"count": 1}
                repair_s = float(self.rng.exponential(self.rates.mean_repair_h * 3600.0))
                self.start(kind, params, now_s, when, ends_at_s=now_s + repair_s)
                self._next_arrival_s[kind] = self._draw_arrival(kind, self._next_arrival_s[kind])
        self._refresh_next_event()

    def count(self, kind: str) -> int:
        """Units out of service for an equipment fault kind."""
        return sum(int(f.params["count"]) for f in self.active if f.kind == kind)

    def sensor_failures(self) -> dict[str, tuple[str, float]]:
        """Failed sensors: role -> (mode, offset); the latest fault on a role wins."""
        return {f.params["role"]: (f.params["mode"], f.params["offset"]) for f in self.active if f.kind == "sensor_failure"}
