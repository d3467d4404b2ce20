"""The evaluation on a plant with the `Plant` seam only: the oracle is skipped, with a note.

The oracle searches the plant's own steady-state model (``simulator.plant.SteadyStatePlant``);
a plant that offers none still gets the rule presets and CoolPilot, and the summary and the
report say why the oracle did not run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.bounds import SetpointEnvelope
from coolpilot.evaluation.loops import baseline_control
from coolpilot.evaluation.report import write_outputs
from coolpilot.evaluation.run import EvaluationOptions, evaluate
from simulator.plant_sim import make_plant
from tests._plain_plant import make_plain_plant

START = datetime(2023, 7, 12, tzinfo=UTC)
PLAIN = "tests._plain_plant:make_plain_plant"


def test_baseline_control_refuses_the_oracle_on_a_plant_without_a_model() -> None:
    env = SetpointEnvelope()
    note = baseline_control("oracle", make_plain_plant(start=START), env, 27.0)
    assert isinstance(note, str)
    assert "PlainPlant" in note and "SteadyStatePlant" in note and "steady_state()" in note
    assert callable(baseline_control("oracle", make_plant(start=START), env, 27.0))
    for preset in ("legacy", "tuned"):  # the rules need only the Plant seam
        assert callable(baseline_control(preset, make_plain_plant(start=START), env, 27.0))


@pytest.mark.slow
def test_evaluation_skips_the_oracle_and_says_why(tmp_path: Path) -> None:
    from forecasting.train import TrainConfig

    tiny = TrainConfig(members=1, hidden=(16,), max_epochs=2, min_samples=1000, baselines=False)
    opts = EvaluationOptions(start=START, days=0.05, train_days=8.0, plant=PLAIN, train_config=tiny,
                             controllers=("tuned", "coolpilot", "oracle"))
    said: list[str] = []
    result = evaluate(opts, tmp_path, say=said.append)
    summary = result.summary
    assert set(summary["controllers"]) == {"tuned", "coolpilot"}
    note = summary["skipped"]["oracle"]
    assert "SteadyStatePlant" in note and "steady_state()" in note
    assert any(line.startswith("not running oracle: ") for line in said)
    write_outputs(result, tmp_path, command="test")
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert f"Not run: oracle ({note})." in report
