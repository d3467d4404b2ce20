"""Evaluation sweeps: many independent runs (climates x seasons x seeds x plants) through an executor.

Why: one run is a whole closed-loop evaluation (history, training, every controller over
the same window), minutes to hours, and runs share nothing. A sweep hands each run to
an executor (``coolpilot.fleet.executor``: Ray tasks on a local or joined cluster, or
one after another here) and gathers the summaries; both benchmarks and
``coolpilot evaluate --seeds`` use it. A run gets only its spec (options, output
folder, command) and writes its own report; one that fails is reported and the others
go on. Plants that run a process (EnergyPlus) are closed by the run itself, and the
Ray executor stops any child a run leaves behind.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coolpilot.evaluation.run import EvaluationOptions
from coolpilot.fleet.executor import Executor


@dataclass(frozen=True)
class RunSpec:
    """One run: ``tag`` names it in progress lines, ``labels`` (e.g. climate, season) go back with it."""

    tag: str
    options: EvaluationOptions
    out_dir: str
    command: str
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its spec, the summary ``write_outputs`` returned and seconds, or why it failed."""

    spec: RunSpec
    summary: dict[str, Any] | None
    seconds: float
    error: str | None = None


def run_spec(spec: RunSpec) -> tuple[dict[str, Any], float]:
    """Evaluate one spec and write its report; (summary, seconds). Progress to stderr, tagged."""
    from coolpilot.evaluation.report import write_outputs
    from coolpilot.evaluation.run import evaluate

    def say(message: str) -> None:
        print(f"[{spec.tag}] {message}", file=sys.stderr, flush=True)

    say(spec.command)
    t0 = time.perf_counter()
    out = Path(spec.out_dir)
    result = evaluate(spec.options, out, say=say)
    summary = write_outputs(result, out, command=spec.command)
    return summary, time.perf_counter() - t0


def run_sweep(specs: Sequence[RunSpec], executor: Executor,
              on_result: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
    """Every spec through ``executor``; outcomes in the specs' order (``on_result`` as each finishes)."""
    outcomes: list[RunOutcome | None] = [None] * len(specs)
    for done in executor.run(run_spec, specs):
        spec = specs[done.index]
        if done.value is not None:
            outcome = RunOutcome(spec, done.value[0], done.value[1])
        else:
            outcome = RunOutcome(spec, None, float("nan"), done.error or "failed")
        outcomes[done.index] = outcome
        if on_result is not None:
            on_result(outcome)
    return [o for o in outcomes if o is not None]
