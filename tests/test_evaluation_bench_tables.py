"""The benchmarks' tables: medians and spreads over seeds, targets over all runs, the docs marker section.

`benchmarks/bench_closed_loop.py` and `benchmarks/bench_energyplus.py` write their
tables into docs/results.md between markers; these checks use synthetic run lines and
a temporary page, never the real one.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_closed_loop as bcl
from benchmarks import bench_energyplus as bep


def test_marked_section_is_replaced_in_place_or_appended(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nintro\n\n<!-- energyplus:begin -->\nold table\n<!-- energyplus:end -->\n\nafter\n",
                    encoding="utf-8")
    bcl.write_marked_section(page, "energyplus", "new table\n")
    text = page.read_text(encoding="utf-8")
    assert "old table" not in text and "<!-- energyplus:begin -->\nnew table\n<!-- energyplus:end -->" in text
    assert text.startswith("# Results\n\nintro\n") and text.endswith("\nafter\n")
    bcl.write_marked_section(page, "closed-loop", "twin table")  # no markers yet: appended at the end
    text = page.read_text(encoding="utf-8")
    assert text.endswith("after\n\n<!-- closed-loop:begin -->\ntwin table\n<!-- closed-loop:end -->\n")
    assert text.count("new table") == 1


def test_spread_is_median_min_max_of_the_finite_values() -> None:
    s = bcl.spread([3.0, None, 1.0, math.nan, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert bcl.fmt_spread(s) == "2.0 [1.0 to 3.0]"
    assert bcl.fmt_spread(bcl.spread([4.0])) == "4.0"
    assert bcl.fmt_spread(bcl.spread([])) == "n/a"
    with pytest.raises(argparse.ArgumentTypeError):
        bcl.seed_list("0,0")


def _ep_line(model: str, seed: int, below_kwh: float, fallback: float, minutes: float = 0.0) -> dict[str, Any]:
    facility = {"legacy": 1000.0, "tuned": 1200.0, "own_controls": 1100.0, "coolpilot": 1000.0 - below_kwh}
    return {"model": model, "season": "summer", "seed": seed, "facility_kwh": facility,
            "best_baseline": "legacy", "net_saving_vs_best_pct": below_kwh / 2.0, "facility_kwh_below_best": below_kwh,
            "net_saving_vs_legacy_pct": below_kwh / 2.0, "net_saving_vs_tuned_pct": 50.0,
            "net_saving_vs_own_controls_pct": 40.0,
            "supply_air_mean_c": {"legacy": 18.0, "coolpilot": 18.5}, "fallback_share_pct": fallback,
            "minutes_above_limit": {"coolpilot": minutes}, "targets_met": below_kwh > 0 and fallback <= 20.0}


def test_energyplus_targets_need_facility_below_the_best_in_every_run() -> None:
    lines = [_ep_line("crac", 0, 12.0, 5.0), _ep_line("crac", 1, 4.0, 8.0), _ep_line("crac", 2, 30.0, 19.0)]
    agg = bep.aggregate(lines)
    row = agg["rows"][0]
    assert row["facility_kwh"]["coolpilot"] == {"median": 988.0, "min": 970.0, "max": 996.0, "n": 3}
    assert row["runs_below_best"] == 3 and row["runs_meeting_all_targets"] == 3
    assert all(t["met"] for t in agg["targets"].values())
    assert agg["n_runs"] == 3 and "runs" not in agg  # the JSON line keeps the run lines under "runs"
    lines.append(_ep_line("2zone", 0, -25.0, 30.0, minutes=10.0))  # one run above the best baseline
    agg = bep.aggregate(lines)
    t = agg["targets"]
    assert not t["facility_kwh_below_best_min"]["met"] and t["facility_kwh_below_best_min"]["shortfall"] == 25.0
    assert not t["fallback_share_pct_max"]["met"] and t["fallback_share_pct_max"]["shortfall"] == 10.0
    assert not t["minutes_above_limit_max"]["met"]
    tie = bep.aggregate([_ep_line("crac", 0, 0.0, 5.0)])  # equal to the best is not below it
    assert not tie["targets"]["facility_kwh_below_best_min"]["met"]


def _twin_line(seed: int, net: float, excess: float = 0.0, fallback: float = 10.0) -> dict[str, Any]:
    return {"climate": "leesburg", "season": "summer", "seed": seed,
            "facility_kwh": {"legacy": 3.0, "tuned": 2.0, "coolpilot": 1.0, "oracle": 0.5},
            "net_saving_vs_tuned_pct": net, "net_saving_vs_legacy_pct": 30.0, "oracle_net_saving_vs_tuned_pct": 12.0,
            "fallback_share_pct": fallback,
            "minutes_above_limit": {"legacy": 0.0, "coolpilot": excess, "tuned": 0.0, "oracle": 2.0 * seed},
            "rack_inlet_max_c": {"legacy": 24.0, "tuned": 25.0, "coolpilot": 25.5 + seed, "oracle": 26.0},
            "interval_coverage": {"cooling_power_kw": 0.88 + 0.01 * seed, "rack_inlet_max_c": 0.91},
            "excess_minutes_above_limit_vs_tuned": excess, "targets_met": net >= 10.0}


def test_twin_targets_average_the_net_saving_and_forbid_a_negative_run() -> None:
    agg = bcl.aggregate([_twin_line(0, 14.0), _twin_line(1, 9.0), _twin_line(2, 10.0)])
    t = agg["targets"]
    assert t["net_saving_vs_tuned_pct_mean"]["value"] == pytest.approx(11.0) and t["net_saving_vs_tuned_pct_mean"]["met"]
    assert t["net_saving_vs_tuned_pct_min"]["met"] and t["fallback_share_pct_max"]["met"]
    assert agg["rows"][0]["net_saving_vs_tuned_pct"]["median"] == 10.0
    agg = bcl.aggregate([_twin_line(0, 25.0), _twin_line(1, -1.0, excess=5.0, fallback=16.0)])
    t = agg["targets"]
    assert t["net_saving_vs_tuned_pct_mean"]["met"]  # 12 % on average ...
    assert not t["net_saving_vs_tuned_pct_min"]["met"]  # ... but one run negative
    assert t["net_saving_vs_tuned_pct_min"]["shortfall"] == 1.0
    assert not t["excess_minutes_above_limit_vs_tuned_max"]["met"] and not t["fallback_share_pct_max"]["met"]
    text = bcl.docs_section(agg, "python benchmarks/bench_closed_loop.py", "abc1234", "today", 14, 42)
    assert "Commit `abc1234`" in text and "| leesburg | summer | 0, 1 | 3 / 2 / 1 / 0 |" in text
    assert "net saving vs tuned, worst run >= 0 % (never negative): -1.00 (**missed** by 1.00)" in text
    # minutes above 27 C and the hottest inlet of every controller, and the coverage range over all targets
    assert "| 0 / 0 / 5 / 2 | 24.0 / 25.0 / 26.5 / 26.0 | 5 | 0.88 to 0.91 |" in text


def test_resume_reuses_a_run_only_from_the_same_commit(tmp_path: Path) -> None:
    line = _twin_line(0, 12.0)
    bcl.save_line(str(tmp_path), "abc1234", line)
    assert bcl.load_line(str(tmp_path), "abc1234") == line
    assert bcl.load_line(str(tmp_path), "def5678") is None  # another commit's run is run again
    assert bcl.load_line(str(tmp_path / "missing"), "abc1234") is None
    (tmp_path / bcl.LINE_FILE).write_text("{not json", encoding="utf-8")
    assert bcl.load_line(str(tmp_path), "abc1234") is None
