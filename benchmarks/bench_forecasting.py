"""Benchmark the forecaster: accuracy on a held-out last month, training and scoring speed.

History comes from the simulator (default climate, with exploration): ``--days`` of
training history followed by ``--test-days`` held out. Prints a table and, last, one
JSON line with medians. ``--device`` and ``--days`` allow a short run (e.g. on a GPU):

    python benchmarks/bench_forecasting.py                      # full: 365 + 30 days, CPU/auto
    python benchmarks/bench_forecasting.py --days 60 --device cuda --train-repeats 1

``--save-history FILE.npz`` / ``--history FILE.npz`` store and reuse the simulated
history (plain arrays, loaded without pickle), so a second machine needs no simulator.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from controller.bounds import SetpointEnvelope
from db.roles import SETPOINT_ROLES
from forecasting.ensemble import mixture
from forecasting.evaluate import COOLING_MAPE_TARGET_PCT, RACK_MAE_TARGET_K, ensemble_metrics, point_metrics
from forecasting.features import TARGETS, build_samples, candidate_block, current_setpoints, state_vector
from forecasting.train import TrainConfig, TrainResult, fit_forecaster

COVERAGE_BAND = (0.87, 0.93)
TRAIN_BUDGET_S = 120.0
SCORE_BUDGET_MS = 50.0


def simulate(days: int, explore_share: float, seed: int) -> pd.DataFrame:
    """Closed-loop simulated history of the default plant and climate, with exploration."""
    from coolpilot.harness.history import generate_history
    from simulator.plant_sim import make_plant

    return generate_history(make_plant(), days=days, explore_share=explore_share, seed=seed)


def save_history(frame: pd.DataFrame, path: Path) -> None:
    np.savez_compressed(path, values=frame.to_numpy(np.float64), ts_ns=pd.DatetimeIndex(frame.index).as_unit("ns").asi8,
                        columns=np.array([str(c) for c in frame.columns]))


def load_history(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as data:
        index = pd.DatetimeIndex(pd.to_datetime(data["ts_ns"], unit="ns", utc=True))
        return pd.DataFrame(data["values"], index=index, columns=[str(c) for c in data["columns"]])


def _median_ms(fn: Any, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs), runs


def candidates(n: int, seed: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """n random setpoint vectors inside the default operator envelope [C]."""
    env = SetpointEnvelope()
    rng = np.random.default_rng(seed)
    cols = [rng.uniform(env.bounds(r).min_c, env.bounds(r).max_c, n) for r in SETPOINT_ROLES]
    return np.column_stack(cols)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=365, help="days of training history (default 365)")
    p.add_argument("--test-days", type=int, default=30, help="held-out days at the end (default 30)")
    p.add_argument("--explore", type=float, default=0.3, help="share of time spent exploring (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--train-repeats", type=int, default=3, help="training runs timed (median reported)")
    p.add_argument("--score-repeats", type=int, default=20, help="10k-candidate scoring runs timed")
    p.add_argument("--max-epochs", type=int, default=TrainConfig.max_epochs)
    p.add_argument("--history", type=Path, help="load simulated history from this .npz instead of simulating")
    p.add_argument("--save-history", type=Path, help="save the simulated history to this .npz")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    frame = load_history(args.history) if args.history else simulate(args.days + args.test_days, args.explore, args.seed)
    sim_s = time.perf_counter() - t0
    if args.save_history:
        save_history(frame, args.save_history)
    cut = frame.index[-1] - pd.Timedelta(days=args.test_days)
    train_frame = frame.loc[:cut]
    print(f"history: {len(frame)} rows ({sim_s:.1f} s to {'load' if args.history else 'simulate'}); "
          f"training on {len(train_frame)} rows, testing on the last {args.test_days} days", file=sys.stderr)

    results: list[TrainResult] = []
    pipeline_s: list[float] = []
    for r in range(args.train_repeats):
        config = TrainConfig(max_epochs=args.max_epochs, seed=args.seed, baselines=(r == 0))
        t0 = time.perf_counter()
        results.append(fit_forecaster(train_frame, config=config, device=args.device))
        pipeline_s.append(time.perf_counter() - t0)
        rep = results[-1].report
        print(f"run {r + 1}: ensemble {rep['train_seconds']:.1f} s ({rep['epochs_run']} epochs, best "
              f"{rep['best_epoch']}) on {rep['device']}; whole pipeline {pipeline_s[-1]:.1f} s", file=sys.stderr)
    train_s = [res.report["train_seconds"] for res in results]
    first = results[0]
    model = first.forecaster

    fs = build_samples(frame, model.spec)
    test = fs.index > cut
    x_test, y_test = fs.x[test], fs.y[test]
    ens = ensemble_metrics(model, x_test, y_test)
    rows: dict[str, dict[str, Any]] = {"ensemble": ens}
    for name, fitted in first.baselines.items():
        rows[name] = point_metrics(y_test, fitted.model.predict(x_test))

    state = frame.iloc[-model.history_needed():]
    cand = candidates(10_000, args.seed)
    predict_ms, predict_runs = _median_ms(lambda: model.predict(state, cand), args.score_repeats)
    z_state = torch.from_numpy((state_vector(state, model.spec) - model.x_scaler.mean[: model.n_state])
                               / model.x_scaler.std[: model.n_state]).float()
    z_cand = torch.from_numpy((candidate_block(current_setpoints(state), cand) - model.x_scaler.mean[model.n_state:])
                              / model.x_scaler.std[model.n_state:]).float()

    def ensemble_only() -> None:
        with torch.inference_mode():
            raw = model.module.forward_broadcast(z_state, z_cand)
        mixture(raw.numpy(), model.module.config.n_outputs)

    net_ms, _ = _median_ms(ensemble_only, args.score_repeats)

    hgb = rows.get("hist_gradient_boosting")
    print(f"\n{'model':<24} {'cool MAE kW':>11} {'cool MAPE %':>11} {'rack MAE C':>10} {'coverage cool/rack':>19}")
    for name, m in rows.items():
        cov = f"{m[TARGETS[0]]['coverage']:.3f}/{m[TARGETS[1]]['coverage']:.3f}" if "coverage" in m[TARGETS[0]] else "-"
        print(f"{name:<24} {m[TARGETS[0]]['mae']:>11.2f} {m[TARGETS[0]]['mape_pct']:>11.3f} "
              f"{m[TARGETS[1]]['mae']:>10.3f} {cov:>19}")
    print(f"\ntraining (ensemble only) median {statistics.median(train_s):.1f} s over {len(train_s)} runs "
          f"{[round(s, 1) for s in train_s]} on {first.report['device']}; whole pipeline median "
          f"{statistics.median(pipeline_s):.1f} s")
    print(f"scoring 10,000 candidates: predict() median {predict_ms:.1f} ms (features, ensemble, intervals, OOD); "
          f"ensemble alone {net_ms:.1f} ms; CPU, {torch.get_num_threads()} threads")

    cool, rack = ens[TARGETS[0]], ens[TARGETS[1]]
    checks = {
        "cooling_mape": cool["mape_pct"] <= COOLING_MAPE_TARGET_PCT,
        "rack_mae": rack["mae"] <= RACK_MAE_TARGET_K,
        "coverage": all(COVERAGE_BAND[0] <= m["coverage"] <= COVERAGE_BAND[1] for m in (cool, rack)),
        "beats_hgb": hgb is None or (cool["mae"] < hgb[TARGETS[0]]["mae"] and rack["mae"] < hgb[TARGETS[1]]["mae"]),
        "train_time": statistics.median(train_s) <= TRAIN_BUDGET_S,
        "score_time": predict_ms <= SCORE_BUDGET_MS,
    }
    summary = {
        "bench": "forecasting", "device": first.report["device"], "days": args.days, "test_days": args.test_days,
        "train_rows": len(train_frame), "train_samples": first.report["samples"]["train"],
        "test_samples": int(test.sum()), "epochs_run": first.report["epochs_run"],
        "train_s_median": statistics.median(train_s), "train_s_runs": train_s,
        "pipeline_s_median": statistics.median(pipeline_s),
        "predict_10k_ms_median": predict_ms, "predict_10k_ms_runs": predict_runs, "ensemble_10k_ms_median": net_ms,
        "cooling_mape_pct": cool["mape_pct"], "cooling_mae_kw": cool["mae"], "rack_mae_c": rack["mae"],
        "coverage_cooling": cool["coverage"], "coverage_rack": rack["coverage"],
        "baselines": {n: {t: m[t] for t in TARGETS} for n, m in rows.items() if n != "ensemble"},
        "checks": checks,
    }
    print(json.dumps(summary, sort_keys=True, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
