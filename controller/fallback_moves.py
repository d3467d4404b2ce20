"""How a fallback bends the rules when the model is sound but unsure: pure functions on setpoints [C].

The rules decide whenever the model cannot (``controller.cycle``). Two cases let the
model's doubt shape that decision, and only toward more cooling:

* the model predicts that holding may take the rack inlet past the limit
  (``cool_down``, always): the rules judge the measured inlet only and may hold, or
  warm to, the very point the model doubts;
* the model is unsure (``no_warming``, ``cycle.unsure_fallback``): the rules' cooling
  moves are taken, their warming moves are not (of supply air alone, or of every setpoint).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from controller.bounds import COIL_ROLES, SetpointEnvelope


def no_warming(rules: Mapping[str, float], reference: Mapping[str, float],
               roles: Collection[str] | None = None) -> tuple[dict[str, float], list[str]]:
    """The rules' setpoints where they are cooler than the reference, the reference elsewhere; and the held roles.

    ``roles``: only these may be held (None: every role); the others take the rules.
    Holding keeps the coil approach wherever the reference kept it.
    """
    held = [r for r, v in rules.items() if r in reference and v > reference[r] and (roles is None or r in roles)]
    return {r: (reference[r] if r in held else v) for r, v in rules.items()}, held


def cool_down(rules: Mapping[str, float], reference: Mapping[str, float],
              envelope: SetpointEnvelope) -> tuple[dict[str, float], list[str]]:
    """The rules' setpoints with supply air and chilled water at least one rate-limit step below the reference.

    Returns the setpoints and the roles it cooled. Cooling is the safe direction
    whoever is right; the safety gate keeps the step inside the bounds and rate limits.
    """
    out = dict(rules)
    cooled = []
    for role in COIL_ROLES:
        if role in out and role in reference:
            step_down = reference[role] - envelope.bounds(role).max_step_k
            if out[role] > step_down:
                out[role] = step_down
                cooled.append(role)
    return out, cooled
