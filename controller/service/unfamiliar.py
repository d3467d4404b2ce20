"""When an unsure fallback keeps the plant where the model is unfamiliar, retrain on those hours.

Why: the out-of-distribution gate (``thresholds.max_ood_score``) refuses a state far
from what the model trained on. A fallback that follows the rules takes the plant back
toward the rules' ground, which the history knows; a fallback that holds (``cycle.
unsure_fallback``: no warming where warmer air costs IT power) keeps it where it is, so
every cycle falls back until the nightly retraining: on the EnergyPlus development
windows a cold snap (crac) and cold supply air on warm days (2zone) kept the first model
out of distribution for hours. Those hours are real readings of this plant: a retraining
that includes them (the daemon trains on the days it controlled) learns them, and the
champion-challenger check still decides whether the new model takes over. Counting
every ``ood`` fallback instead retrained the twin, whose rules fallbacks need no help,
mid-morning and cost it 260-270 kWh in 4 days (Leesburg, August, two seeds).

After a request, the same champion is asked for again only once ``retry`` more cycles
have passed and the count is reached again (``retry`` 0: once per version): a rejected
challenger had only a few more hours of the new regime, and the next one has more of
them, and more of the held-out controlled hours the champion-challenger check weighs
(`forecasting.split`). On the development window (EnergyPlus crac, 12-19 Aug 2023, seed
0) a challenger asked for an hour after the nightly model was rejected, and the champion
then held 227 `ood` fallbacks until the next night. Pure state, no I/O: the daemon and
the evaluation loop feed it each cycle's decision.
"""

from __future__ import annotations

from collections import deque

from controller.decision import Decision


def held_unfamiliar(decision: Decision) -> bool:
    """Whether ``decision`` is an ``ood`` fallback that held setpoints instead of following the rules."""
    return decision.reason_code == "ood" and bool(decision.fallback_held)


class UnfamiliarWatch:
    """Counts held ``ood`` fallbacks of the current model over its last ``2 * after`` cycles.

    ``observe`` returns why to retrain once ``after`` of them were (``after`` 0: never);
    for the same model version again only after ``retry`` more cycles (0: never again).
    """

    def __init__(self) -> None:
        self._version: str | None = None
        self._recent: deque[bool] = deque()
        self._since_ask: int | None = None  # cycles since this version's last request; None: not asked
        self.requests = 0  # requests made for the current model version (names each one for the daemon)

    def observe(self, model_version: str | None, unfamiliar: bool, after: int, retry: int = 0) -> str | None:
        """Record one cycle (``unfamiliar``: a held ``ood`` fallback); the reason to retrain now, or None."""
        if model_version is None or after <= 0:
            return None
        if model_version != self._version:  # a new champion starts a fresh count
            self._version, self._recent, self._since_ask = model_version, deque(maxlen=2 * after), None
            self.requests = 0
        if self._recent.maxlen != 2 * after:  # the config changed the window
            self._recent = deque(self._recent, maxlen=2 * after)
        self._recent.append(unfamiliar)
        if self._since_ask is not None:
            self._since_ask += 1
        count = sum(self._recent)
        again = self._since_ask is not None and (retry <= 0 or self._since_ask < retry)
        if again or count < after:
            return None
        first = self._since_ask is None
        self._since_ask = 0
        self.requests += 1
        return (f"model {model_version} called the plant's state unfamiliar, and the fallback held it there, in "
                f"{count} of the last {len(self._recent)} cycles: retraining on the hours it has now seen"
                + ("" if first else " (again: the last retraining did not replace it)"))
