"""Heavy work on a local Ray cluster against the same work in turn: fleet retraining and evaluation sweeps.

`coolpilot train --all-sites`: two halls on the real PostgreSQL, each history its own
(its own seed), and one more site with a single day of readings, too little to train
on, which must fail alone while the others land in their registries. The sequential
path on SQLite must promote the same sites with the same test errors (one torch thread
per job on both paths, so the arithmetic is the same). The evaluation sweep: a tiny
twin evaluation gives identical figures on Ray and in turn; a broken run beside it is
reported and the other still finishes. One Ray cluster serves the whole module.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from controller.config import parse_config
from coolpilot.cli import main
from coolpilot.evaluate_cli import register
from coolpilot.evaluation.run import EvaluationOptions
from coolpilot.evaluation.sweep import RunOutcome, RunSpec, run_sweep
from coolpilot.fleet.executor import SequentialExecutor, open_executor, run_in_worker
from coolpilot.fleet.train import sites_with_readings
from db.engine import make_engine
from db.ingest import write_wide
from forecasting.registry import champion_entry
from forecasting.train import TrainConfig
from tests._forecast_synth import synthetic_history

ray = pytest.importorskip("ray")

HALLS = ("hall-a", "hall-b")
SHORT = "hall-short"  # one day of readings: training must fail for it alone
DAYS = 9
EPOCHS = "2"


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray cluster for the module (the executor finds it running and leaves it up)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def histories() -> dict[str, pd.DataFrame]:
    frames = {site: synthetic_history(days=DAYS, seed=k) for k, site in enumerate(HALLS)}
    frames[SHORT] = synthetic_history(days=1, seed=9)
    return frames


def _fill(url: str, histories: dict[str, pd.DataFrame]) -> None:
    engine = make_engine(url)
    for site, frame in histories.items():
        write_wide(engine, frame, site=site)
    engine.dispose()


def _train(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["train", *argv, "--days", str(DAYS), "--max-epochs", EPOCHS, "--threads", "1", "--json"])
    out, err = capsys.readouterr()
    assert out, err
    return code, json.loads(out)


@pytest.mark.postgres
def test_all_sites_on_ray_then_in_turn_promote_the_same_models(
        pg_url: str, sqlite_url: str, histories: dict[str, pd.DataFrame], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _fill(pg_url, histories)
    assert sites_with_readings(make_engine(pg_url)) == sorted([*HALLS, SHORT])

    code, on_ray = _train(capsys, "--db", pg_url, "--all-sites", "--executor", "ray",
                          "--models-dir", str(tmp_path / "ray"))
    assert code == 1  # one site failed: reported, and the exit status says so
    assert on_ray["executor"] == "ray" and on_ray["failed"] == [SHORT]
    by_site = {r["site"]: r for r in on_ray["sites"]}
    assert set(by_site) == {*HALLS, SHORT}
    assert not by_site[SHORT]["ok"] and "samples" in by_site[SHORT]["error"]
    engine = make_engine(pg_url)
    for site in HALLS:
        r = by_site[site]
        assert r["ok"] and r["promoted"] and r["seconds"] > 0, r
        assert math.isfinite(r["cooling_power_mae_kw"]) and math.isfinite(r["rack_inlet_mae_c"])
        champion = champion_entry(engine, site)
        assert champion is not None and champion.version == r["version"]
        assert Path(champion.artifact_path).parent == tmp_path / "ray" / site
    assert champion_entry(engine, SHORT) is None
    engine.dispose()

    _fill(sqlite_url, {s: histories[s] for s in HALLS})
    code, in_turn = _train(capsys, "--db", sqlite_url, "--sites", ",".join(HALLS), "--executor", "sequential",
                           "--models-dir", str(tmp_path / "seq"))
    assert code == 0 and in_turn["executor"] == "sequential" and in_turn["failed"] == []
    seq = {r["site"]: r for r in in_turn["sites"]}
    assert {s for s, r in seq.items() if r["promoted"]} == set(HALLS)
    for site in HALLS:  # the same data, seed and thread count: the same model, wherever it ran
        assert seq[site]["version"].split("-")[-1] == by_site[site]["version"].split("-")[-1]
        assert seq[site]["cooling_power_mae_kw"] == pytest.approx(by_site[site]["cooling_power_mae_kw"], rel=1e-9)
        assert seq[site]["rack_inlet_mae_c"] == pytest.approx(by_site[site]["rack_inlet_mae_c"], rel=1e-9)

    # a second fleet run keeps or replaces each champion by the usual rule, site by site
    code, again = _train(capsys, "--db", sqlite_url, "--sites", HALLS[0], "--executor", "sequential",
                         "--models-dir", str(tmp_path / "seq"), "--seed", "1")
    assert code == 0 and len(again["sites"]) == 1
    assert "same window" in again["sites"][0]["reason"] or again["sites"][0]["promoted"]


def test_fleet_flags_are_checked(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--db", sqlite_url, "--all-sites", "--executor", "sequential"])
    assert code == 2 and "no site has readings" in capsys.readouterr().err
    code = main(["train", "--db", sqlite_url, "--sites", "x", "--executor", "sequential", "--ray-address", "a:1"])
    assert code == 2 and "--ray-address needs --executor ray" in capsys.readouterr().err
    code = main(["train", "--db", "sqlite://", "--all-sites"])
    assert code == 2 and "in-memory SQLite" in capsys.readouterr().err


# --- evaluation sweeps ------------------------------------------------------------------

# The smallest evaluation that is still the whole path: history, training, the real cycle, the report.
SMALL_SEARCH = """site_id = "eval"
[optimizer]
grid_points_per_role = 3
random_candidates = 50
refine_iterations = 0
"""


def _specs(root: Path, seeds: tuple[int, ...], plant: str = "simulator.plant_sim:make_plant") -> list[RunSpec]:
    config = parse_config(SMALL_SEARCH, "<test>")
    return [RunSpec(f"seed {k}", EvaluationOptions(
        climate="leesburg", start=datetime(2023, 7, 20, tzinfo=UTC), days=2 / 24, train_days=4, seed=k,
        plant=plant, config=config, controllers=("coolpilot",),
        train_config=TrainConfig(baselines=False, seed=k, members=2, hidden=(16,), max_epochs=2, min_samples=500)),
        str(root / f"seed{k}"), f"sweep test seed {k}", {"seed": k}) for k in seeds]


FIGURES = ("facility_kwh", "cooling_kwh", "it_kwh", "rack_inlet_max_c", "minutes_above_limit")


def _figures(o: RunOutcome) -> dict[str, object]:
    assert o.summary is not None, o.error
    cp = o.summary["controllers"]["coolpilot"]
    return {**{k: cp[k] for k in FIGURES}, "outcomes": cp["decisions"]["outcomes"],
            "data_hash": o.summary["training"]["version"].split("-")[-1]}


def test_sweep_on_ray_gives_the_runs_in_turn(tmp_path: Path) -> None:
    broken = _specs(tmp_path / "broken", (0,), plant="simulator.plant_sim:no_such_factory")
    with open_executor("ray", gpus=0) as executor:
        assert executor.name == "ray"
        on_ray = run_sweep([*broken, *_specs(tmp_path / "ray", (1,))], executor)
    in_turn = run_sweep(_specs(tmp_path / "seq", (1,)), SequentialExecutor(threads=1))

    assert [o.spec.tag for o in on_ray] == ["seed 0", "seed 1"]  # the specs' order
    assert on_ray[0].summary is None and "no_such_factory" in str(on_ray[0].error)
    assert _figures(on_ray[1]) == _figures(in_turn[0])  # bit for bit: same seed, one thread
    assert (Path(on_ray[1].spec.out_dir) / "report.md").is_file() and on_ray[1].seconds > 0
    assert in_turn[0].spec.out_dir != on_ray[1].spec.out_dir


def _blocked(conn: object) -> None:
    conn.recv()  # type: ignore[attr-defined]  # blocks until the parent end closes


def _leaves_a_child(n: int) -> int:
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_blocked, args=(child,), daemon=True)
    proc.start()
    _leaves_a_child.last = (proc, parent)  # type: ignore[attr-defined]  # keep it referenced: a real leak
    return n + 1


def test_a_ray_task_stops_the_processes_its_job_left_running() -> None:
    assert run_in_worker(_leaves_a_child, 1, None) == 2
    proc, _ = _leaves_a_child.last  # type: ignore[attr-defined]
    assert not proc.is_alive() and proc.exitcode is not None


def test_help_never_imports_ray() -> None:
    """Ray is for scale, never required: the commands' --help loads neither Ray nor torch."""
    probe = ("import contextlib, io, sys\nfrom coolpilot.cli import main\n"
             "for cmd in ('train', 'evaluate'):\n"
             "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
             "        main([cmd, '--help'])\n"
             "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_evaluate_seeds_gives_each_seed_its_own_run(tmp_path: Path) -> None:
    from coolpilot.evaluate_cli import _command
    from coolpilot.sweep_cli import spec_for_seed

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register(sub)
    args = parser.parse_args(["evaluate", "--seeds", "3,5", "--max-epochs", "2", "--out", str(tmp_path)])
    opts = EvaluationOptions(seed=0, train_config=TrainConfig(baselines=False, seed=0, max_epochs=2))
    specs = [spec_for_seed(args, opts, seed, _command) for seed in args.seeds]
    for spec, seed in zip(specs, (3, 5), strict=True):
        assert spec.options.seed == seed and spec.options.train_config.seed == seed
        assert spec.out_dir == str(tmp_path / f"seed{seed}")
        assert f"--seed {seed} " in spec.command and f"--out {tmp_path / f'seed{seed}'}" in spec.command
    assert args.seed == 0 and args.out == str(tmp_path)  # the parsed flags are left as they were
