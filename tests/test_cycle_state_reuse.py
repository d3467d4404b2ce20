"""Everything that asks the model about one cycle passes it the same state frame.

Why it matters: the ensemble computes its state features once per distinct state
(a content-keyed cache, ``forecasting.model``). The savings-against-rules metric used
to pass the whole window (every role the cycle read) instead of the model's roles,
which missed the cache and recomputed the features every cycle: about a quarter of
the daemon's cycle time in the soak (``benchmarks/soak.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from prometheus_client import CollectorRegistry

from controller.cycle import run_cycle
from controller.service.cycle_metrics import CyclePublisher, RecordingSource
from controller.service.metrics import CoolpilotMetrics
from forecasting.protocol import FloatArray, Forecast
from tests._ctl_support import NOW, START_SETPOINTS, PhysicsForecaster, config, later, window
from tests.test_ctl_cycle import FrameSource, ListActuator, ListRecorder


@dataclass
class StateLog(PhysicsForecaster):
    """The tests' physics model, noting the columns and rows of every state it is asked about."""

    seen: list[tuple[tuple[str, ...], tuple[int, ...]]] = field(default_factory=list)

    def predict(self, state: pd.DataFrame, candidates: FloatArray) -> Forecast:
        self.seen.append((tuple(map(str, state.columns)), tuple(pd.DatetimeIndex(state.index).asi8)))
        return super().predict(state, candidates)


def test_the_savings_metric_scores_the_same_state_as_the_cycle() -> None:
    model = StateLog()
    source = RecordingSource(FrameSource(window(later(5))))
    cfg = config(mode="auto")
    decision = run_cycle(cfg, source, model, ListActuator(), ListRecorder(), lambda: NOW, START_SETPOINTS)
    assert decision.outcome == "optimised" and model.seen
    calls = len(model.seen)

    publisher = CyclePublisher(CoolpilotMetrics(CollectorRegistry()), source, model, ListRecorder(), 300.0)
    assert publisher.savings_vs_rules(cfg, decision, model) is not None

    assert len(model.seen) == calls + 1  # the metric asked the model once more ...
    assert len(set(model.seen)) == 1  # ... about exactly the state the cycle scored
    columns, rows = model.seen[0]
    assert set(columns) == set(model.required_roles()) and len(rows) == model.history_needed()
