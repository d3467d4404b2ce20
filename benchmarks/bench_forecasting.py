"""Benchmark the forecaster: accuracy on a held-out last month, training and scoring speed.

History comes from the simulator (default climate, with exploration): ``--days`` of
training history followed by ``--test-days`` held out. Prints a table and, last, one
JSON line with medians. ``--device`` and ``--days`` allow a short run (e.g. on a GPU):

    python benchmarks/bench_forecasting.py                      # full: 365 + 30 days, CPU/auto
    python benchmarks/bench_forecasting.py --days 60 --device cuda --train-repeats 1

``--save-history FILE.npz`` / ``--history FILE.npz`` store and reuse the simulated
history (plain arrays, loaded without pickle), so a second machine needs no simulator.

The accuracy and speed tables, with the commit, the machine and the exact command, are
written into docs/performance.md between ``<!-- forecasting:begin -->`` and
``<!-- forecasting:end -->`` (``--results PATH``: another page; ``--no-docs``: not written).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_closed_loop import commit_hash, invocation, write_marked_section  # noqa: E402
from controller.bounds import SetpointEnvelope  # noqa: E402
from db.roles import SETPOINT_ROLES  # noqa: E402
from forecasting.ensemble import mixture  # noqa: E402
from forecasting.evaluate import (  # noqa: E402
    COOLING_MAPE_TARGET_PCT,
    RACK_MAE_TARGET_K,
    ensemble_metrics,
    point_metrics,
)
from forecasting.features import (  # noqa: E402
    IT_TARGET,
    TARGETS,
    build_samples,
    candidate_block,
    current_setpoints,
    state_vector,
)
from forecasting.train import TrainConfig, TrainResult, fit_forecaster  # noqa: E402

COVERAGE_BAND = (0.87, 0.93)
TRAIN_BUDGET_S = 120.0
SCORE_BUDGET_MS = 50.0
PERFORMANCE_MD = ROOT / "docs" / "performance.md"
MARKER = "forecasting"
#: How the accuracy table names the models (``first.baselines`` keys; others as they are).
MODEL_NAMES = {"ensemble": "**ensemble**", "persistence": "persistence", "ridge": "ridge",
               "hist_gradient_boosting": "HistGradientBoosting"}
#: The targets' names in the coverage column.
TARGET_NAMES = {TARGETS[0]: "cooling", TARGETS[1]: "rack inlet", IT_TARGET: "IT power"}


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


CHECK_NAMES = {
    "cooling_mape": "cooling MAPE (ensemble)",
    "rack_mae": "rack-inlet MAE (ensemble)",
    "coverage": "90 % interval coverage, cooling / rack inlet",
    "beats_hgb": "ensemble MAE below HistGradientBoosting, cooling / rack inlet",
    "train_time": "training the ensemble, median",
    "score_time": "predict() on 10,000 candidates, median",
}


def _num(v: Any) -> str:
    """A figure with about three significant digits; ``n/a`` for None or non-finite."""
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        return "n/a"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _fixed(v: Any, d: int) -> str:
    return f"{v:.{d}f}" if isinstance(v, int | float) and math.isfinite(v) else "-"


def _check_value(detail: Mapping[str, Any]) -> str:
    """``2.49 kW / 0.0819 K``: the value(s) with their unit(s); ``-`` when there is none."""
    value, unit = detail.get("value"), detail.get("unit", "")
    values = value if isinstance(value, list | tuple) else [value]
    units = unit if isinstance(unit, list | tuple) else [unit] * len(values)
    if all(v is None for v in values):
        return "-"
    return " / ".join(f"{_num(v)} {u}".rstrip() for v, u in zip(values, units, strict=False))


def docs_section(summary: Mapping[str, Any], command: str, commit: str, when: str) -> str:
    """The markdown written between the forecasting markers of docs/performance.md.

    Pure: everything comes from ``summary`` (the JSON line the benchmark prints), the
    exact command, the commit and the time of the run (``YYYY-MM-DD HH:MM``, UTC).
    """
    machine = summary.get("machine", {})
    targets = [str(t) for t in summary.get("targets", TARGETS)]
    models: Mapping[str, Any] = summary["models"]
    order = [str(n) for n in summary.get("model_order", models)]
    order = ["ensemble"] + [n for n in order if n != "ensemble" and n in models] \
        + [n for n in models if n not in order and n != "ensemble"]
    cool_t, rack_t = TARGETS
    cov_names = " / ".join(TARGET_NAMES.get(t, t) for t in targets)
    lines = [
        f"Commit `{commit}`, run {when} UTC on a machine with {machine.get('cpu_count', '?')} cores, "
        f"torch {machine.get('torch', '?')}, training on {summary.get('device', '?')}, scoring with "
        f"{machine.get('torch_threads', '?')} torch threads. Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"History: {summary['days']} + {summary['test_days']} days ({summary['train_rows']:,} training rows, "
        f"{summary['train_samples']:,} training samples, {summary['epochs_run']} epochs); held out: the last "
        f"{summary['test_days']} days ({summary['test_samples']:,} samples).",
        "",
        "Accuracy on the held-out window:",
        "",
        f"| model | cooling MAE [kW] | cooling MAPE [%] | rack-inlet MAE [K] | IT-power MAE [kW] | "
        f"90 % coverage ({cov_names}) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name in order:
        m = models[name]
        cool, rack, it = m.get(cool_t, {}), m.get(rack_t, {}), m.get(IT_TARGET, {})
        covs = [m[t]["coverage"] for t in targets if "coverage" in m.get(t, {})]
        cov = " / ".join(_fixed(c, 3) for c in covs) if covs else "-"
        lines.append(f"| {MODEL_NAMES.get(name, name)} | {_fixed(cool.get('mae'), 2)} | "
                     f"{_fixed(cool.get('mape_pct'), 2)} | {_fixed(rack.get('mae'), 4)} | "
                     f"{_fixed(it.get('mae'), 2)} | {cov} |")
    lines += ["", "Checks:", "", "| check | value | threshold | result |", "| --- | --- | --- | --- |"]
    details: Mapping[str, Any] = summary.get("check_details", {})
    for name, met in summary["checks"].items():
        detail = details.get(name, {})
        lines.append(f"| {CHECK_NAMES.get(name, name)} | {_check_value(detail)} | {detail.get('threshold', '-')} | "
                     f"{'met' if met else '**missed**'} |")
    threads = machine.get("torch_threads", "?")
    train_runs = ", ".join(f"{s:.1f}" for s in summary["train_s_runs"])
    pipe_runs = ", ".join(f"{s:.1f}" for s in summary.get("pipeline_s_runs", []))
    pred_runs = summary["predict_10k_ms_runs"]
    pred_range = f"{len(pred_runs)} runs, {min(pred_runs):.1f} to {max(pred_runs):.1f}" if pred_runs else ""
    lines += [
        "",
        "Speed:",
        "",
        "| what | device | median | runs | target |",
        "| --- | --- | ---: | --- | --- |",
        f"| train the ensemble ({summary['train_samples']:,} training samples, {summary['epochs_run']} epochs) | "
        f"{summary.get('device', '?')} | **{summary['train_s_median']:.1f} s** | {train_runs} | "
        f"<= {TRAIN_BUDGET_S:.0f} s |",
        f"| whole pipeline (features, training, calibration, OOD; the first run also fits the baselines) | "
        f"{summary.get('device', '?')} | {summary['pipeline_s_median']:.1f} s | {pipe_runs} | |",
        f"| score 10,000 candidates: `predict()` (state features, ensemble, intervals, OOD) | CPU, {threads} "
        f"torch threads | **{summary['predict_10k_ms_median']:.1f} ms** | {pred_range} | <= {SCORE_BUDGET_MS:.0f} ms |",
        f"| same, ensemble forward pass and mixture only | CPU, {threads} torch threads | "
        f"{summary['ensemble_10k_ms_median']:.1f} ms | | |",
    ]
    return "\n".join(lines)


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
    p.add_argument("--results", type=Path, default=PERFORMANCE_MD,
                   help="page with the forecasting markers to write the tables into (default docs/performance.md)")
    p.add_argument("--no-docs", action="store_true", help="do not write the tables into --results")
    args = p.parse_args(argv)
    command, commit = invocation(), commit_hash()

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
        rows[name] = point_metrics(y_test, fitted.model.predict(model.x_scaler.impute(x_test)))

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
    targets = [t for t in model.spec.targets if t in ens]
    print(f"\n{'model':<24} {'cool MAE kW':>11} {'cool MAPE %':>11} {'rack MAE C':>10} {'IT MAE kW':>9} "
          f"{'coverage ' + '/'.join(TARGET_NAMES.get(t, t).split()[0] for t in targets):>26}")
    for name, m in rows.items():
        cov = "/".join(f"{m[t]['coverage']:.3f}" for t in targets) if "coverage" in m[TARGETS[0]] else "-"
        it_mae = f"{m[IT_TARGET]['mae']:.2f}" if IT_TARGET in m else "-"
        print(f"{name:<24} {m[TARGETS[0]]['mae']:>11.2f} {m[TARGETS[0]]['mape_pct']:>11.3f} "
              f"{m[TARGETS[1]]['mae']:>10.3f} {it_mae:>9} {cov:>26}")
    print(f"\ntraining (ensemble only) median {statistics.median(train_s):.1f} s over {len(train_s)} runs "
          f"{[round(s, 1) for s in train_s]} on {first.report['device']}; whole pipeline median "
          f"{statistics.median(pipeline_s):.1f} s")
    print(f"scoring 10,000 candidates: predict() median {predict_ms:.1f} ms (features, ensemble, intervals, OOD); "
          f"ensemble alone {net_ms:.1f} ms; CPU, {torch.get_num_threads()} threads")

    cool, rack = ens[TARGETS[0]], ens[TARGETS[1]]
    it_power = ens.get(IT_TARGET)
    checks = {
        "cooling_mape": cool["mape_pct"] <= COOLING_MAPE_TARGET_PCT,
        "rack_mae": rack["mae"] <= RACK_MAE_TARGET_K,
        "coverage": all(COVERAGE_BAND[0] <= m["coverage"] <= COVERAGE_BAND[1] for m in (cool, rack)),
        "beats_hgb": hgb is None or (cool["mae"] < hgb[TARGETS[0]]["mae"] and rack["mae"] < hgb[TARGETS[1]]["mae"]),
        "train_time": statistics.median(train_s) <= TRAIN_BUDGET_S,
        "score_time": predict_ms <= SCORE_BUDGET_MS,
    }
    check_details: dict[str, dict[str, Any]] = {
        "cooling_mape": {"value": cool["mape_pct"], "unit": "%", "threshold": f"<= {COOLING_MAPE_TARGET_PCT:g} %"},
        "rack_mae": {"value": rack["mae"], "unit": "K", "threshold": f"<= {RACK_MAE_TARGET_K:g} K"},
        "coverage": {"value": [cool["coverage"], rack["coverage"]], "unit": "",
                     "threshold": f"in [{COVERAGE_BAND[0]:g}, {COVERAGE_BAND[1]:g}]"},
        "beats_hgb": {"value": [cool["mae"], rack["mae"]], "unit": ["kW", "K"],
                      "threshold": (f"< {_num(hgb[TARGETS[0]]['mae'])} kW / {_num(hgb[TARGETS[1]]['mae'])} K"
                                    if hgb is not None else "no HistGradientBoosting in this run")},
        "train_time": {"value": statistics.median(train_s), "unit": "s", "threshold": f"<= {TRAIN_BUDGET_S:g} s"},
        "score_time": {"value": predict_ms, "unit": "ms", "threshold": f"<= {SCORE_BUDGET_MS:g} ms"},
    }
    for name, met in checks.items():
        check_details[name]["met"] = met
    models = {name: {t: dict(m[t]) for t in model.spec.targets if t in m} for name, m in rows.items()}
    summary = {
        "bench": "forecasting", "device": first.report["device"], "days": args.days, "test_days": args.test_days,
        "train_rows": len(train_frame), "train_samples": first.report["samples"]["train"],
        "test_samples": int(test.sum()), "epochs_run": first.report["epochs_run"],
        "train_s_median": statistics.median(train_s), "train_s_runs": train_s,
        "pipeline_s_median": statistics.median(pipeline_s), "pipeline_s_runs": pipeline_s,
        "predict_10k_ms_median": predict_ms, "predict_10k_ms_runs": predict_runs, "ensemble_10k_ms_median": net_ms,
        "cooling_mape_pct": cool["mape_pct"], "cooling_mae_kw": cool["mae"], "rack_mae_c": rack["mae"],
        "coverage_cooling": cool["coverage"], "coverage_rack": rack["coverage"],
        "it_power_mae_kw": it_power["mae"] if it_power else None,
        "coverage_it_power": it_power["coverage"] if it_power else None,
        "baselines": {n: {t: m[t] for t in TARGETS} for n, m in rows.items() if n != "ensemble"},
        "targets": list(model.spec.targets), "models": models, "model_order": list(rows),
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "checks": checks, "check_details": check_details,
    }
    section = docs_section(summary, command, commit, f"{datetime.now(UTC):%Y-%m-%d %H:%M}")
    if args.no_docs:
        print(f"not written into {args.results} (--no-docs)", file=sys.stderr)
    else:
        write_marked_section(args.results, MARKER, section)
        print(f"wrote the tables into {args.results} ({MARKER} markers)", file=sys.stderr)
    print(json.dumps(summary, sort_keys=True, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
