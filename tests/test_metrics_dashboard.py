"""The Grafana dashboard: one unit per panel, and measured kept apart from estimated.

A panel whose series have different units (kW beside C, seconds beside a count) puts
them on one axis with at best one of the units right. Each target's unit is read from
the metric names (their unit suffix, `controller.service.metric_series`) and the few
PromQL shapes the dashboard uses; every panel's targets must share one, matching the
panel's unit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

DASHBOARDS = sorted((Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards").glob("*.json"))
NAME = re.compile(r"\b(coolpilot_[a-z0-9_]+|up)\b")
#: Grafana unit -> the quantities it can show ("none": a plain number, a count or a ratio).
PANEL_UNITS = {"watt": {"power"}, "kwatth": {"energy"}, "celsius": {"temperature"}, "s": {"time"},
               "none": {"ratio", "count"}, "percentunit": {"ratio"}, "short": {"count"}}


def metric_unit(name: str) -> str:
    """The quantity of one series, from its unit suffix (histogram and counter suffixes stripped)."""
    if name.endswith(("_count", "_bucket_count")) or name == "up":
        return "count"
    base = re.sub(r"_(total|sum|bucket)$", "", name)
    for suffix, unit in (("_timestamp_seconds", "timestamp"), ("_seconds", "time"), ("_watts", "power"),
                         ("_joules", "energy"), ("_celsius", "temperature"), ("_ratio", "ratio")):
        if base.endswith(suffix):
            return unit
    return "ratio" if base.endswith("_score") else "count"


def target_unit(expr: str) -> str:
    """The quantity a PromQL expression shows: time since a timestamp, a ratio of two series, or its series'."""
    names = NAME.findall(expr)
    assert names, f"no metric in {expr!r}"
    units = [metric_unit(n) for n in names]
    if "time()" in expr and units[0] == "timestamp":
        return "time"
    if len(names) == 2 and " / " in expr:  # a rate of one series per another: errors per forecast, misses per forecast
        return "ratio"
    assert len(set(units)) == 1, f"{expr!r} mixes {units}"
    return units[0]


def panels() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in DASHBOARDS:
        for p in json.loads(path.read_text())["panels"]:
            if p["type"] in ("timeseries", "stat", "gauge", "bargauge") and p.get("targets"):
                out.append((f"{path.name}: {p['title']}", p))
    return out


@pytest.mark.parametrize(("title", "panel"), panels(), ids=[t for t, _ in panels()])
def test_every_panel_shows_one_unit_and_says_which(title: str, panel: dict[str, Any]) -> None:
    units = {target_unit(t["expr"]) for t in panel["targets"]}
    assert len(units) == 1, f"{title}: targets in {sorted(units)} share one axis"
    field_config = panel.get("fieldConfig", {})
    overridden = [p for o in field_config.get("overrides", []) for p in o["properties"] if p["id"] == "unit"]
    assert not overridden, f"{title}: per-series units put several units on one panel"
    if panel["type"] == "timeseries":
        unit = field_config.get("defaults", {}).get("unit")
        assert unit in PANEL_UNITS, f"{title}: unit {unit!r} not set (or unknown)"
        assert units.pop() in PANEL_UNITS[unit], f"{title}: panel unit {unit} against its series"


def test_the_unit_reader_sees_mixed_units() -> None:
    assert target_unit('coolpilot_model_validation_rack_inlet_mae_celsius{site=~"$site"}') == "temperature"
    assert target_unit("time() - coolpilot_last_cycle_success_timestamp_seconds") == "time"
    mixed = [target_unit("coolpilot_training_duration_seconds"),
             target_unit("coolpilot_training_consecutive_failures")]
    assert mixed == ["time", "count"]


def test_measured_and_estimated_are_apart_and_named() -> None:
    main = json.loads((DASHBOARDS[0].parent / "coolpilot.json").read_text())["panels"]
    for p in main:
        exprs = " ".join(t["expr"] for t in p.get("targets", []))
        if "savings_estimated" in exprs:
            assert "estimat" in p["title"].lower(), p["title"]
            assert "_total" not in exprs  # the signed estimate is a gauge, not a clamped counter
        if re.search(r"coolpilot_pue_ratio\b", exprs):
            assert "facility meter" in p["description"] and "IT + cooling" in p["description"], p["title"]
    titles = [p["title"] for p in main if p["type"] == "row"]
    assert "Measured energy" in titles and any(t.startswith("Estimated by the model") for t in titles)
