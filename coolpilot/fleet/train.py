"""Retraining a fleet: each site's ensemble as one job, each landing in that site's registry.

Why this shape: a site's retraining is the daemon's own (``controller.service.retraining.
Retrainer``: the last N days, the ensemble, champion against challenger on the same
window), so a fleet run decides exactly as each hall's nightly job would. A job gets
only plain data (the database URL, the site, the options) and opens its own engine,
so it can run in a Ray worker on another machine that reaches the same database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from controller.service.retraining import TrainingOutcome
from coolpilot.fleet.executor import Executor
from db.query import latest_timestamp
from db.schema import sites


@dataclass(frozen=True)
class SiteJob:
    """One site's retraining, as plain data. ``train``: TrainConfig fields (e.g. ``members``)."""

    db_url: str
    site: str
    models_dir: str
    days: int = 365
    seed: int = 0
    max_epochs: int | None = None
    device: str = "auto"
    threads: int | None = 1
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteResult(TrainingOutcome):
    """What became of one site: its ``TrainingOutcome`` (promoted or not, the new model's errors,
    or the error) and the site's name."""

    site: str = ""

    @property
    def seconds(self) -> float:
        """How long the site's retraining took [s]."""
        return self.duration_s

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "seconds": self.duration_s,
                **{k: v for k, v in asdict(self).items() if k not in ("site", "duration_s")}}


def sites_with_readings(engine: sa.Engine) -> list[str]:
    """Every site (by name) that has at least one reading, in name order."""
    with engine.connect() as conn:
        names = [str(n) for n in conn.execute(sa.select(sites.c.name).order_by(sites.c.name)).scalars()]
    return [n for n in names if latest_timestamp(engine, n) is not None]


def train_site(job: SiteJob) -> SiteResult:
    """Retrain one site with the daemon's ``Retrainer`` (opens and closes its own engine)."""
    from controller.service.retraining import Retrainer
    from db.engine import make_engine
    from forecasting.train import TrainConfig

    epochs = {} if job.max_epochs is None else {"max_epochs": job.max_epochs}
    # as `evaluate` trains: the ensemble alone; a site's nightly job adds the baselines' comparison
    config = TrainConfig(**{"baselines": False, "seed": job.seed, "cpu_threads": job.threads, **epochs,
                            **job.train})
    engine = make_engine(job.db_url)
    try:
        out = Retrainer(engine, job.site, Path(job.models_dir) / job.site, job.days, train_config=config,
                        device=job.device)()
    finally:
        engine.dispose()
    return SiteResult(**asdict(out), site=job.site)


def train_fleet(jobs: Sequence[SiteJob], executor: Executor,
                on_result: Callable[[SiteResult], None] | None = None) -> list[SiteResult]:
    """Every job through ``executor``; results in the jobs' order (``on_result`` as each finishes).

    A job whose worker fails outright (a crash, not a training error) is reported as a
    failed ``SiteResult``; the other sites still land.
    """
    results: list[SiteResult | None] = [None] * len(jobs)
    for done in executor.run(train_site, jobs):
        result = done.value if done.value is not None else SiteResult(
            ok=False, duration_s=math.nan, finished_ts_s=math.nan, error=done.error, site=jobs[done.index].site)
        results[done.index] = result
        if on_result is not None:
            on_result(result)
    return [r for r in results if r is not None]


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def results_table(results: Iterable[SiteResult]) -> str:
    """One line per site: promoted or not, the new model's errors, seconds, and why."""
    lines = [f"{'site':<20} {'outcome':<10} {'cool MAE kW':>11} {'rack MAE C':>10} {'seconds':>8}  detail"]
    for r in results:
        outcome = "FAILED" if not r.ok else ("promoted" if r.promoted else "kept")
        detail = r.error if not r.ok else f"{r.version}: {r.reason}"
        lines.append(f"{r.site:<20} {outcome:<10} {_num(r.cooling_power_mae_kw, 2):>11} "
                     f"{_num(r.rack_inlet_mae_c, 3):>10} {_num(r.seconds, 1):>8}  {detail}")
    return "\n".join(lines)
