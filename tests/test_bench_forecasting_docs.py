"""The forecasting benchmark's docs section: rendered from its JSON summary alone, no training.

`benchmarks/bench_forecasting.py` writes its accuracy and speed tables into
docs/performance.md between the ``forecasting`` markers; these checks use a synthetic
summary and a temporary copy of the page, never the real one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import bench_forecasting as bf
from benchmarks.bench_closed_loop import write_marked_section

COOL, RACK, IT = "cooling_power_kw", "rack_inlet_max_c", "it_power_kw"


def _summary() -> dict[str, Any]:
    def pm(mae_cool: float, mape: float, mae_rack: float, mae_it: float) -> dict[str, dict[str, float]]:
        return {COOL: {"mae": mae_cool, "mape_pct": mape}, RACK: {"mae": mae_rack, "mape_pct": 0.3},
                IT: {"mae": mae_it, "mape_pct": 0.5}}

    ens = pm(2.4912, 1.5834, 0.08191, 1.234)
    for t, cov in ((COOL, 0.923), (RACK, 0.891), (IT, 0.9047)):
        ens[t].update(coverage=cov, interval_width=1.0)
    models = {"ensemble": ens, "persistence": pm(13.01, 8.26, 0.6204, 3.5), "ridge": pm(6.07, 3.85, 0.3111, 2.25),
              "hist_gradient_boosting": pm(3.2049, 2.02, 0.0817, 1.5)}
    checks = {"cooling_mape": True, "rack_mae": True, "coverage": True, "beats_hgb": False,
              "train_time": True, "score_time": True}
    details = {
        "cooling_mape": {"value": 1.5834, "unit": "%", "threshold": "<= 2 %", "met": True},
        "rack_mae": {"value": 0.08191, "unit": "K", "threshold": "<= 0.3 K", "met": True},
        "coverage": {"value": [0.923, 0.891], "unit": "", "threshold": "in [0.87, 0.93]", "met": True},
        "beats_hgb": {"value": [2.4912, 0.08191], "unit": ["kW", "K"], "threshold": "< 3.20 kW / 0.0817 K",
                      "met": False},
        "train_time": {"value": 41.2, "unit": "s", "threshold": "<= 120 s", "met": True},
        "score_time": {"value": 41.7, "unit": "ms", "threshold": "<= 50 ms", "met": True},
    }
    summary = {
        "bench": "forecasting", "device": "cpu (1 threads)", "days": 365, "test_days": 30, "train_rows": 105120,
        "train_samples": 74867, "test_samples": 7768, "epochs_run": 56, "train_s_median": 41.2,
        "train_s_runs": [43.2, 41.2, 39.2], "pipeline_s_median": 43.9, "pipeline_s_runs": [47.0, 43.9, 42.0],
        "predict_10k_ms_median": 41.7, "predict_10k_ms_runs": [32.7, 41.7, 45.1], "ensemble_10k_ms_median": 11.2,
        "targets": [COOL, RACK, IT], "models": models, "model_order": list(models),
        "machine": {"cpu_count": 2, "torch": "2.11.0", "torch_threads": 2},
        "checks": checks, "check_details": details,
    }
    # as printed and read back: keys sorted (the ensemble no longer first in "models")
    return json.loads(json.dumps(summary, sort_keys=True))


def test_section_has_commit_command_machine_and_each_model_row() -> None:
    text = bf.docs_section(_summary(), "python benchmarks/bench_forecasting.py --days 60", "abc1234+dirty",
                           "2026-12-06 08:30")
    assert "`abc1234+dirty`" in text and "2026-12-06 08:30 UTC" in text
    assert "python benchmarks/bench_forecasting.py --days 60" in text
    assert "2 cores" in text and "torch 2.11.0" in text and "cpu (1 threads)" in text and "2 torch threads" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | " in line]
    model_rows = [r for r in rows if r.split(" | ")[0][2:] in
                  ("**ensemble**", "persistence", "ridge", "HistGradientBoosting")]
    # the ensemble first, then the baselines in the run's order ("model_order"), not the sorted JSON keys
    assert [r.split(" | ")[0] for r in model_rows] == ["| **ensemble**", "| persistence", "| ridge",
                                                       "| HistGradientBoosting"]
    assert model_rows[0] == "| **ensemble** | 2.49 | 1.58 | 0.0819 | 1.23 | 0.923 / 0.891 / 0.905 |"
    assert model_rows[3] == "| HistGradientBoosting | 3.20 | 2.02 | 0.0817 | 1.50 | - |"
    assert "| persistence | 13.01 | 8.26 | 0.6204 | 3.50 | - |" in text
    assert "| ridge | 6.07 | 3.85 | 0.3111 | 2.25 | - |" in text
    assert "90 % coverage (cooling / rack inlet / IT power)" in text


def test_checks_show_value_threshold_and_missed() -> None:
    text = bf.docs_section(_summary(), "cmd", "abc1234", "2026-12-06 08:30")
    lines = text.splitlines()
    missed = [line for line in lines if "HistGradientBoosting, cooling / rack inlet" in line]
    assert missed == ["| ensemble MAE below HistGradientBoosting, cooling / rack inlet | 2.49 kW / 0.0819 K | "
                      "< 3.20 kW / 0.0817 K | **missed** |"]
    assert "| cooling MAPE (ensemble) | 1.58 % | <= 2 % | met |" in lines
    assert "| 90 % interval coverage, cooling / rack inlet | 0.923 / 0.891 | in [0.87, 0.93] | met |" in lines
    assert sum("**missed**" in line for line in lines) == 1


def test_speed_table_has_medians_runs_and_range() -> None:
    text = bf.docs_section(_summary(), "cmd", "abc1234", "2026-12-06 08:30")
    assert "**41.2 s** | 43.2, 41.2, 39.2 | <= 120 s |" in text
    assert "| 43.9 s | 47.0, 43.9, 42.0 |" in text
    assert "**41.7 ms** | 3 runs, 32.7 to 45.1 | <= 50 ms |" in text
    assert "| same, ensemble forward pass and mixture only | CPU, 2 torch threads | 11.2 ms |" in text


def test_model_without_it_power_gets_a_dash() -> None:
    summary = _summary()
    for m in summary["models"].values():
        m.pop(IT)
    summary["targets"] = [COOL, RACK]
    text = bf.docs_section(summary, "cmd", "abc1234", "2026-12-06 08:30")
    assert "| **ensemble** | 2.49 | 1.58 | 0.0819 | - | 0.923 / 0.891 |" in text
    assert "90 % coverage (cooling / rack inlet) |" in text


def test_section_goes_between_the_forecasting_markers_of_the_page(tmp_path: Path) -> None:
    """The real page has the marker pair once; writing there leaves the other written sections alone."""
    real = Path(bf.PERFORMANCE_MD).read_text(encoding="utf-8")
    assert real.count("<!-- forecasting:begin -->") == 1 and real.count("<!-- forecasting:end -->") == 1
    page = tmp_path / "performance.md"
    page.write_text(real, encoding="utf-8")
    section = bf.docs_section(_summary(), "cmd", "abc1234", "2026-12-06 08:30")
    write_marked_section(page, bf.MARKER, section)
    text = page.read_text(encoding="utf-8")
    assert "Not yet run at this commit" not in text and text.count("| **ensemble** |") == 1
    start, end = text.index("<!-- forecasting:begin -->"), text.index("<!-- forecasting:end -->")
    assert "`abc1234`" in text[start:end]
    for marker in ("fleet-db", "ray"):
        b, e = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
        assert text[text.index(b):text.index(e)] == real[real.index(b):real.index(e)]
