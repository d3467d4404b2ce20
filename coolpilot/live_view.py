"""The demo's live terminal view: what the controller is doing, against the rules.

`render` is a pure function of a `LiveStatus` (so it is tested without a terminal);
`LiveView` redraws it in place on a terminal, or prints one compact line per
simulated hour when the output is a log or a pipe.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from db.roles import SETPOINT_ROLES

_SHORT = {"chw_supply_sp_c": "chilled water", "supply_air_sp_c": "supply air", "cw_supply_sp_c": "condenser water"}


def _f(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


@dataclass(frozen=True)
class LiveStatus:
    """One frame of the view; energies since the demo started [kWh], powers [kW], temperatures [C]."""

    ts: datetime  # plant time
    cycle: int
    steps: int | None  # None: runs until Ctrl-C
    mode: str
    outcome: str
    reason_code: str | None
    setpoints_c: Mapping[str, float]
    rules_setpoints_c: Mapping[str, float]
    cooling_kw: float
    rules_cooling_kw: float
    pue: float  # over the run so far, facility / IT energy (`db.roles.pue`) [-]
    rules_pue: float
    savings_kwh: float  # cooling energy, rules twin minus CoolPilot
    savings_pct: float  # of the rules twin's cooling energy [%]
    rack_inlet_max_c: float  # hottest rack inlet so far, CoolPilot plant
    rules_rack_inlet_max_c: float
    rack_inlet_limit_c: float
    outcomes: Mapping[str, int] = field(default_factory=dict)
    fallbacks: Mapping[str, int] = field(default_factory=dict)
    model_version: str | None = None
    metrics_url: str | None = None
    note: str = ""  # e.g. a rejected config reload: shown until the next good one
    savings_ci_pct: float = float("nan")  # half-width of the savings share's 95 % interval [percentage points]
    hours: float = float("nan")  # plant hours the savings figure covers [h]


def render(s: LiveStatus) -> list[str]:
    """The view's lines (no colours, no cursor codes)."""
    progress = f"cycle {s.cycle}" + (f"/{s.steps}" if s.steps else "")
    outcome = s.outcome + (f" ({s.reason_code})" if s.reason_code else "")
    sp = "  ".join(f"{_SHORT[r]} {_f(s.setpoints_c.get(r))}" for r in SETPOINT_ROLES)
    rules_sp = " / ".join(_f(s.rules_setpoints_c.get(r)) for r in SETPOINT_ROLES)
    total = sum(s.outcomes.values())
    fallback_n = sum(s.fallbacks.values())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.fallbacks.items(), key=lambda kv: -kv[1]) if v)
    counts = ", ".join(f"{k} {v}" for k, v in s.outcomes.items() if v)
    lines = [
        f"CoolPilot demo  {s.ts:%Y-%m-%d %H:%M} UTC (plant time)  {progress}  mode {s.mode}  last: {outcome}",
        f"  setpoints [C]   {sp}   (rules twin: {rules_sp})",
        f"  cooling power   {_f(s.cooling_kw)} kW   (rules twin {_f(s.rules_cooling_kw)} kW)",
        f"  PUE so far      {_f(s.pue, 3)}   (rules twin {_f(s.rules_pue, 3)})",
        f"  savings so far  {_f(s.savings_kwh)} kWh of cooling energy = {savings_share(s)} of the rules twin's",
        f"  decisions       {total}: {counts or '-'}",
        f"  fallbacks       {fallback_n}" + (f" ({reasons})" if reasons else ""),
        f"  rack inlet max  {_f(s.rack_inlet_max_c)} C (rules twin {_f(s.rules_rack_inlet_max_c)} C, "
        f"limit {_f(s.rack_inlet_limit_c)} C)",
        f"  model {s.model_version or 'none'}" + (f"   metrics {s.metrics_url}" if s.metrics_url else ""),
    ]
    if s.note:
        lines.append(f"  {s.note}")
    return lines


def one_line(s: LiveStatus) -> str:
    """A compact line for logs and pipes."""
    sp = "/".join(_f(s.setpoints_c.get(r)) for r in SETPOINT_ROLES)
    fallback_n = sum(s.fallbacks.values())
    return (f"{s.ts:%Y-%m-%d %H:%M} cycle {s.cycle}: {s.outcome}{f' ({s.reason_code})' if s.reason_code else ''} "
            f"setpoints {sp} C, cooling {_f(s.cooling_kw)} kW (rules {_f(s.rules_cooling_kw)}), "
            f"PUE {_f(s.pue, 3)} (rules {_f(s.rules_pue, 3)}), saved {_f(s.savings_kwh)} kWh "
            f"({savings_share(s)}), fallbacks {fallback_n}" + (f"; {s.note}" if s.note else ""))


def savings_share(s: LiveStatus) -> str:
    """The savings share with its 95 % interval and the hours behind it: early figures swing."""
    text = f"{_f(s.savings_pct)} %"
    if math.isfinite(s.savings_ci_pct):
        text += f" \u00b1 {_f(s.savings_ci_pct)}"
    elif math.isfinite(s.savings_pct):
        text += " (no interval yet)"
    if math.isfinite(s.hours):
        text += f" after {s.hours:.1f} h" if s.hours < 10 else f" after {s.hours:.0f} h"
    return text


class LiveView:
    """Draws `LiveStatus` frames on ``stream``: in place on a terminal, else one line every ``every`` frames."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, every: int = 12) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every = max(every, 1)
        self._drawn = 0
        self._frames = 0

    def show(self, status: LiveStatus, *, final: bool = False) -> None:
        self._frames += 1
        if self.tty:
            width = shutil.get_terminal_size((120, 24)).columns  # a wrapped line would break the redraw
            lines = [line[: max(width - 1, 20)] for line in render(status)]
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "\x1b[J" + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        elif final or self._frames % self.every == 1 or self.every == 1:
            self.stream.write(one_line(status) + "\n")
        self.stream.flush()

    def release(self) -> None:
        """Leave the last frame on screen; later output starts below it."""
        self._drawn = 0
