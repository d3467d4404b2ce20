"""Benchmark the digital twin: one simulated year, one-minute step, 5-minute records.

Target: a year (525,600 internal steps, 105,120 records) in at most 30 s, closed loop
under the tuned rules behind the safety gate, default sensor defects, i.e. what
``coolpilot simulate --days 365`` does minus the database writes. Also times one oracle
decision (a grid of candidates on the true model).

    python benchmarks/bench_simulator.py               # 3 runs of a year
    python benchmarks/bench_simulator.py --days 30 --runs 5

Prints each run, the medians, then one JSON line. Wall time is what the target is
about; CPU time is printed too because the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coolpilot.harness.history import rules_decide, run_closed_loop  # noqa: E402
from coolpilot.harness.oracle import oracle_setpoints  # noqa: E402
from simulator.plant_sim import make_plant  # noqa: E402

TARGET_S_PER_YEAR = 30.0


def one_run(days: float, seed: int) -> tuple[float, float, int]:
    """Wall and CPU seconds for ``days`` of closed loop, and the records produced."""
    plant = make_plant(seed=seed)
    decide = rules_decide("tuned")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    frame = run_closed_loop(plant, decide, days)
    return time.perf_counter() - wall0, time.process_time() - cpu0, len(frame)


def oracle_ms(decisions: int = 20) -> float:
    plant = make_plant()
    times = []
    for _ in range(decisions):
        t0 = time.perf_counter()
        plant.apply(oracle_setpoints(plant))
        times.append((time.perf_counter() - t0) * 1000.0)
        plant.advance(plant.record_interval_s)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0, help="simulated days per run (default 365)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    args = parser.parse_args()
    walls, cpus = [], []
    records = 0
    for i in range(args.runs):
        wall, cpu, records = one_run(args.days, seed=i)
        walls.append(wall)
        cpus.append(cpu)
        print(f"run {i + 1}: {args.days:g} days, {records} records in {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)
    steps = args.days * 1440.0
    wall_med, cpu_med = statistics.median(walls), statistics.median(cpus)
    per_year = wall_med * 365.0 / args.days
    oracle = oracle_ms()
    print(f"median: {wall_med:.2f} s wall ({cpu_med:.2f} s CPU) for {args.days:g} days, "
          f"{1e6 * wall_med / steps:.1f} us per one-minute step, {per_year:.1f} s per simulated year "
          f"(target <= {TARGET_S_PER_YEAR:.0f} s); oracle decision {oracle:.1f} ms")
    print(json.dumps({
        "benchmark": "simulator_year",
        "days": args.days,
        "runs": args.runs,
        "records": records,
        "median_wall_s": round(wall_med, 3),
        "median_cpu_s": round(cpu_med, 3),
        "us_per_step": round(1e6 * wall_med / steps, 2),
        "s_per_simulated_year": round(per_year, 2),
        "target_s_per_year": TARGET_S_PER_YEAR,
        "meets_target": per_year <= TARGET_S_PER_YEAR,
        "oracle_decision_ms": round(oracle, 2),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
