"""The safety layer: the final, model-free gate on every emitted setpoint.

Why it exists: a learned model does not know its limits, and rules or pins can be
misconfigured, so one small piece of code that trusts nothing checks every setpoint
vector in every mode before it leaves. It needs only the envelope (bounds, rate
limits, coil approach), the reference (last applied setpoints) and the measured
hottest rack inlet. Two entry points:

* ``verify``: the independent check of a proposal; any violation is a veto.
* ``gate``: repairs any proposal into a safe vector (clamp to bounds, rate-limit
  against the reference, enforce the coil approach, replace non-finite values by
  holding the reference), so that what leaves is always safe.

Precedence when they conflict: bounds, then rate limits, then the coil approach
(which is approached at the rate limit when the reference itself violates it), then
pins. When the measured rack inlet is near the limit or unknown, no setpoint may rise.

The guard looks ahead, because the rack inlet lags the supply air by minutes: per
role *ceilings* (``look_ahead_ceilings``) cap how far a setpoint may rise this cycle.
Supply air may not rise above the limit minus the measured inlet-over-supply offset
minus the margin (where the inlet will settle), and no setpoint may rise while the
inlet is still climbing near the limit (the last warming move has not settled yet).
Only the site's controlled setpoints (``SetpointEnvelope.setpoint_roles``) are checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from controller.bounds import SetpointEnvelope

CHW = "chw_supply_sp_c"
SUPPLY_AIR = "supply_air_sp_c"
TOLERANCE_K = 1e-6


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def hot_guard_active(rack_inlet_max_c: float | None, rack_inlet_limit_c: float, near_limit_margin_k: float) -> bool:
    """True when only cooling-increasing moves may pass: inlet near the limit, or unknown."""
    if rack_inlet_max_c is None or not math.isfinite(rack_inlet_max_c):
        return True
    return rack_inlet_max_c >= rack_inlet_limit_c - near_limit_margin_k


@dataclass(frozen=True)
class InletOutlook:
    """What the guard measures about where the rack inlet is heading; NaN when unknown.

    ``inlet_over_supply_k``: hottest rack inlet minus supply air [K] (recirculation, hot
    spots), the largest over the recent window; ``inlet_rise_k``: how much the hottest inlet rose over the last
    ``LOOK_BACK_ROWS`` rows [K].
    """

    inlet_over_supply_k: float = math.nan
    inlet_rise_k: float = math.nan


#: Rows (5 min each) over which the inlet's recent rise is measured.
LOOK_BACK_ROWS = 6


def look_ahead_ceilings(
    reference: Mapping[str, float],
    envelope: SetpointEnvelope,
    outlook: InletOutlook,
    *,
    rack_inlet_max_c: float | None,
    rack_inlet_limit_c: float,
    near_limit_margin_k: float,
    rising_band_k: float,
    rising_k: float,
) -> dict[str, float]:
    """Per controlled role, the highest value it may take this cycle [C] (absent: no cap).

    A cap never forces a setpoint down: where the reference is already above it, the
    role may hold or fall, not rise. ``reference`` as from ``clamped_reference``.
    """
    caps: dict[str, float] = {}
    offset = outlook.inlet_over_supply_k
    if SUPPLY_AIR in envelope.roles and math.isfinite(offset):
        settle_cap = rack_inlet_limit_c - max(offset, 0.0) - near_limit_margin_k
        ref = reference.get(SUPPLY_AIR)
        caps[SUPPLY_AIR] = settle_cap if ref is None else max(settle_cap, ref)
    near = (rack_inlet_max_c is not None and math.isfinite(rack_inlet_max_c)
            and rack_inlet_max_c >= rack_inlet_limit_c - rising_band_k)
    if near and math.isfinite(outlook.inlet_rise_k) and outlook.inlet_rise_k > rising_k:
        for role in envelope.setpoint_roles:  # the last warming move has not settled: no further rise
            if role in reference:
                caps[role] = min(caps.get(role, math.inf), reference[role])
    return caps


def clamped_reference(reference: Mapping[str, float] | None, envelope: SetpointEnvelope) -> dict[str, float]:
    """Reference setpoints re-clamped into today's bounds [C]; unknown roles are left out."""
    out: dict[str, float] = {}
    for role in envelope.setpoint_roles:
        value = (reference or {}).get(role)
        if _finite(value):
            b = envelope.bounds(role)
            out[role] = min(max(float(value), b.min_c), b.max_c)  # type: ignore[arg-type]
    return out


def allowed_box(
    reference: Mapping[str, float], envelope: SetpointEnvelope, *, hot_guard: bool = False,
    ceilings: Mapping[str, float] | None = None,
) -> dict[str, tuple[float, float]]:
    """Per role, the interval [C] reachable this cycle: bounds intersected with the rate limit.

    ``reference`` must come from ``clamped_reference``; a role without a reference gets
    its full bounds. Under the hot guard nothing may rise above its reference; a
    look-ahead ceiling caps the top (never below the bottom).
    """
    box: dict[str, tuple[float, float]] = {}
    for role in envelope.setpoint_roles:
        b = envelope.bounds(role)
        if role in reference:
            ref = reference[role]
            lo, hi = max(b.min_c, ref - b.max_step_k), min(b.max_c, ref + b.max_step_k)
            if hot_guard:
                hi = min(hi, ref)
        else:
            lo, hi = b.min_c, b.max_c
            if hot_guard:
                hi = lo
        cap = (ceilings or {}).get(role)
        if cap is not None and math.isfinite(cap):
            hi = max(lo, min(hi, cap))
        box[role] = (lo, hi)
    return box


@dataclass(frozen=True)
class Verification:
    """Outcome of the independent check; ``violations`` name role and rule."""

    ok: bool
    violations: tuple[str, ...] = ()
    hot_guard: bool = False


def verify(
    proposed: Mapping[str, float],
    reference: Mapping[str, float] | None,
    envelope: SetpointEnvelope,
    *,
    rack_inlet_max_c: float | None,
    rack_inlet_limit_c: float,
    near_limit_margin_k: float,
    ceilings: Mapping[str, float] | None = None,
) -> Verification:
    """Check a proposal against bounds, rate limits, coupling, the look-ahead ceilings and the measured state."""
    hot = hot_guard_active(rack_inlet_max_c, rack_inlet_limit_c, near_limit_margin_k)
    ref = clamped_reference(reference, envelope)
    violations: list[str] = []
    for role in envelope.setpoint_roles:
        value = proposed.get(role)
        if not _finite(value):
            violations.append(f"{role}: missing or non-finite value {value!r}")
            continue
        v = float(value)  # type: ignore[arg-type]
        b = envelope.bounds(role)
        if not b.min_c - TOLERANCE_K <= v <= b.max_c + TOLERANCE_K:
            violations.append(f"{role}: {v:.3f} C outside bounds [{b.min_c}, {b.max_c}] C")
        if role in ref:
            step = v - ref[role]
            if abs(step) > b.max_step_k + TOLERANCE_K:
                violations.append(f"{role}: move {step:+.3f} K exceeds rate limit {b.max_step_k} K per cycle")
            if hot and step > TOLERANCE_K:
                violations.append(
                    f"{role}: rises {step:+.3f} K while rack inlet "
                    f"{'is unknown' if rack_inlet_max_c is None or not math.isfinite(rack_inlet_max_c) else f'{rack_inlet_max_c:.2f} C is near the {rack_inlet_limit_c} C limit'}"
                )
        elif hot and v > b.min_c + TOLERANCE_K:
            violations.append(f"{role}: no reference setpoint, so only the lower bound is known to add cooling")
        cap = (ceilings or {}).get(role)
        if cap is not None and v > max(cap, b.min_c) + TOLERANCE_K and v > ref.get(role, -math.inf) + TOLERANCE_K:
            violations.append(f"{role}: rises to {v:.2f} C above its look-ahead ceiling {cap:.2f} C "
                              "(where the rack inlet would settle, or still rising from the last move)")
    chw, sa = proposed.get(CHW), proposed.get(SUPPLY_AIR)
    if envelope.coupled and _finite(chw) and _finite(sa) and float(sa) - float(chw) < envelope.min_coil_approach_k - TOLERANCE_K:  # type: ignore[arg-type]
        violations.append(
            f"coupling: supply air {float(sa):.2f} C is less than chilled water {float(chw):.2f} C "  # type: ignore[arg-type]
            f"+ {envelope.min_coil_approach_k} K coil approach"
        )
    return Verification(ok=not violations, violations=tuple(violations), hot_guard=hot)


@dataclass(frozen=True)
class GateResult:
    """What the gate let out [C] and every change it made to the proposal."""

    setpoints: dict[str, float]
    adjustments: tuple[str, ...]


def gate(
    proposed: Mapping[str, float] | None,
    reference: Mapping[str, float] | None,
    envelope: SetpointEnvelope,
    *,
    pins: Mapping[str, float] | None = None,
    hot_guard: bool = False,
    ceilings: Mapping[str, float] | None = None,
) -> GateResult:
    """Turn any proposal into setpoints that pass ``verify`` whenever the reference is safe.

    Pinned roles take the pin as their proposal. A non-finite or missing value holds the
    reference; with no reference either, the role goes to its lower bound (most cooling).
    """
    ref = clamped_reference(reference, envelope)
    box = allowed_box(ref, envelope, hot_guard=hot_guard, ceilings=ceilings)
    pins = pins or {}
    notes: list[str] = []
    out: dict[str, float] = {}
    for role in envelope.setpoint_roles:
        lo, hi = box[role]
        want = pins.get(role, (proposed or {}).get(role))
        if not _finite(want):
            if role in ref:
                want = ref[role]
                notes.append(f"{role}: no finite proposal ({want!r}); holding {ref[role]:.2f} C")
            else:
                want = lo
                notes.append(f"{role}: no finite proposal and no reference; going to {lo:.2f} C (most cooling)")
        w = float(want)  # type: ignore[arg-type]
        value = min(max(w, lo), hi)
        if abs(value - w) > TOLERANCE_K:
            notes.append(f"{role}: {w:.2f} C limited to {value:.2f} C (bounds, rate limit, hot guard or look-ahead)")
        if role not in ref:
            notes.append(f"{role}: no reference setpoint, rate limit not applied")
        out[role] = value
    if envelope.coupled:
        notes.extend(_keep_coil_approach(out, box, envelope, pins))
    return GateResult(setpoints=out, adjustments=tuple(notes))


def _keep_coil_approach(out: dict[str, float], box: Mapping[str, tuple[float, float]],
                        envelope: SetpointEnvelope, pins: Mapping[str, float]) -> list[str]:
    """Move chilled water down or supply air up (within the box) to restore the coil approach."""
    notes: list[str] = []
    deficit = envelope.min_coil_approach_k - (out[SUPPLY_AIR] - out[CHW])
    if deficit > 0:
        order = (SUPPLY_AIR, CHW) if CHW in pins else (CHW, SUPPLY_AIR)
        for role in order:
            if deficit <= 0:
                break
            lo, hi = box[role]
            if role == CHW:
                moved = min(deficit, out[CHW] - lo)
                out[CHW] -= moved
            else:
                moved = min(deficit, hi - out[SUPPLY_AIR])
                out[SUPPLY_AIR] += moved
            if moved > 0:
                deficit -= moved
                notes.append(f"{role}: moved {moved:.2f} K to keep the {envelope.min_coil_approach_k} K coil approach")
        if deficit > TOLERANCE_K:
            notes.append(f"coupling: {deficit:.2f} K short of the coil approach; closing it at the rate limit")
    return notes
