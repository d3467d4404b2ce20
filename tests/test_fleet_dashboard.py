"""The Grafana fleet overview and the hall dashboard's ``site`` variable: only exposed metrics, every
query filtered by the selected halls, per-hall panels grouped by site."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.test_deploy import DASHBOARD, PROMETHEUS_BUILTIN, exposed_series_names, referenced_names

FLEET = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "coolpilot-fleet.json"
SITE = 'site=~"$site"'


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_fleet_dashboard_shows_savings_fallback_share_and_margin_per_hall() -> None:
    d = load(FLEET)
    assert d["uid"] == "coolpilot-fleet" and d["uid"] != load(DASHBOARD)["uid"]
    assert [v["name"] for v in d["templating"]["list"]] == ["datasource", "site"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["targets"] and p.get("description"), p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
    per_hall = {p["title"]: p["targets"][0]["expr"] for p in d["panels"] if "per hall" in p["title"]}
    assert len(per_hall) >= 3 and all("by (site)" in e for e in per_hall.values()), per_hall
    joined = " ".join(per_hall.values())
    for needed in ("coolpilot_savings_estimated_watts", 'coolpilot_decisions_total{outcome="fallback"',
                   "coolpilot_rack_inlet_margin_celsius"):
        assert needed in joined, f"no per-hall panel shows {needed}"


def test_both_dashboards_use_exposed_metrics_filtered_by_site() -> None:
    exposed = exposed_series_names() | PROMETHEUS_BUILTIN
    for path in (FLEET, DASHBOARD):
        d = load(path)
        assert any(v["name"] == "site" for v in d["templating"]["list"]), path.name
        for expr in exprs(d):
            missing = referenced_names(expr) - exposed
            # the hall dashboard's own names are test_deploy's to check
            assert path != FLEET or not missing, f"{path.name}: {expr!r} references {sorted(missing)}"
            selectors = expr.count("{")
            assert expr.count(SITE) == selectors, f"{path.name}: a selector in {expr!r} ignores $site"
