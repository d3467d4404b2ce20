"""Benchmark one full control cycle: the target is median <= 500 ms and p95 <= 1 s.

A cycle here is everything the daemon does every 5 minutes: read the sensor window
from SQLite, run the data-quality checks, score 5,000+ candidates with the model
(a trained ensemble by default), select, verify, write the decision row and the
setpoint-command rows. History is a synthetic plant (``tests/_forecast_synth``) so
that the run needs no simulator; ``--model physics`` uses the test suite's cheap
physics-shaped forecaster to show the controller's own overhead.

    python benchmarks/bench_controller.py                 # 30 cycles, trained ensemble
    python benchmarks/bench_controller.py --model physics --cycles 50

Prints per-stage medians, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controller.config import Config  # noqa: E402
from controller.cycle import run_cycle  # noqa: E402
from controller.service.actuators import DbActuator  # noqa: E402
from controller.service.recorder import DecisionRecorder  # noqa: E402
from db.engine import make_engine  # noqa: E402
from db.historian import InternalSource  # noqa: E402
from db.ingest import write_wide  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from tests._forecast_synth import synthetic_history  # noqa: E402

MEDIAN_TARGET_MS = 500.0
P95_TARGET_MS = 1000.0
SITE = "bench"


def _model(kind: str, history: Any) -> Any:
    if kind == "physics":
        from tests._ctl_support import PhysicsForecaster

        return PhysicsForecaster()
    from forecasting.train import TrainConfig, fit_forecaster

    t0 = time.perf_counter()
    result = fit_forecaster(history, config=TrainConfig(max_epochs=3, baselines=False), device="cpu")
    print(f"trained ensemble {result.forecaster.version} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return result.forecaster


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--model", choices=("ensemble", "physics"), default="ensemble")
    parser.add_argument("--days", type=float, default=14.0, help="days of synthetic history (training + window)")
    args = parser.parse_args(argv)

    history = synthetic_history(days=args.days, seed=3)
    model = _model(args.model, history)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        write_wide(engine, history.iloc[-288:], site=SITE)
        now = history.index[-1].to_pydatetime() + timedelta(minutes=2)
        config = Config.model_validate({"site_id": SITE, "mode": "auto",
                                        "thresholds": {"max_ood_score": 1e9, "max_rack_inlet_std_k": 5.0,
                                                       "max_cooling_power_std_frac": 1.0}})
        source = InternalSource(engine, SITE)
        recorder = DecisionRecorder(engine, SITE)
        actuator = DbActuator(engine, SITE, retries=0)
        last = {r: float(history[r].iloc[-1]) for r in ("chw_supply_sp_c", "supply_air_sp_c", "cw_supply_sp_c")}
        totals_ms: list[float] = []
        scored: list[int] = []
        outcomes: dict[str, int] = {}
        run_cycle(config, source, model, actuator, recorder, lambda: now, last)  # warm-up (imports, caches)
        for _ in range(args.cycles):
            t0 = time.perf_counter()
            d = run_cycle(config, source, model, actuator, recorder, lambda: now, last)
            totals_ms.append((time.perf_counter() - t0) * 1000.0)
            scored.append(d.candidates_scored)
            key = f"{d.outcome}{'/' + d.reason_code if d.reason_code else ''}"
            outcomes[key] = outcomes.get(key, 0) + 1
        engine.dispose()

    median, p95 = statistics.median(totals_ms), _percentile(totals_ms, 95)
    print(f"model: {args.model}; cycles: {args.cycles}; candidates scored per cycle: median {statistics.median(scored):.0f}")
    print(f"outcomes: {outcomes}")
    print(f"full cycle: median {median:.1f} ms (target <= {MEDIAN_TARGET_MS:.0f}), "
          f"p95 {p95:.1f} ms (target <= {P95_TARGET_MS:.0f}), min {min(totals_ms):.1f}, max {max(totals_ms):.1f}")
    result = {
        "benchmark": "controller_cycle", "model": args.model, "cycles": args.cycles,
        "candidates_scored_median": statistics.median(scored), "cycle_median_ms": round(median, 1),
        "cycle_p95_ms": round(p95, 1), "median_target_ms": MEDIAN_TARGET_MS, "p95_target_ms": P95_TARGET_MS,
        "meets_target": median <= MEDIAN_TARGET_MS and p95 <= P95_TARGET_MS, "outcomes": outcomes,
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
