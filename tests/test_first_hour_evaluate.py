"""`coolpilot evaluate` checks its arguments before any work and leaves nothing behind a failure (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coolpilot.cli import main
from coolpilot.evaluate_cli import _leaving_nothing_on_failure
from coolpilot.evaluation.run import DEFAULT_MIN_SAMPLES, min_train_days


def test_too_little_training_history_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    code = main(["evaluate", "--days", "1", "--train-days", "7", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "--train-days 7 is too little history: training needs at least 8 days" in err
    assert "simulating" not in err and "Traceback" not in err  # nothing started
    assert not out.exists()


def test_help_says_the_minimum(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "at least 8" in " ".join(capsys.readouterr().out.split())


def test_the_minimum_follows_trainings_own() -> None:
    from forecasting.train import TrainConfig

    assert TrainConfig().min_samples == DEFAULT_MIN_SAMPLES
    assert min_train_days() == 8.0
    assert min_train_days(TrainConfig(min_samples=1000)) == 5.0


def test_a_failed_run_removes_what_it_wrote_and_keeps_what_was_there(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")

    def failing() -> None:
        (out / "evaluation.db").write_bytes(b"partial")
        (out / "evaluation.db-wal").write_bytes(b"partial")
        (out / "models" / "v1").mkdir(parents=True)
        (out / "models" / "v1" / "weights.safetensors").write_bytes(b"x")
        raise RuntimeError("training failed")

    with pytest.raises(RuntimeError, match="training failed"):
        _leaving_nothing_on_failure(out, failing)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_failed_run_into_a_new_folder_removes_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "new"

    def failing() -> None:
        out.mkdir()
        (out / "evaluation.db").write_bytes(b"partial")
        raise ValueError("too little history")

    with pytest.raises(ValueError):
        _leaving_nothing_on_failure(out, failing)
    assert not out.exists()
    assert _leaving_nothing_on_failure(out, lambda: 5) == 5  # success passes the result through
