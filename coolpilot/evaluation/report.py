"""The evaluation's outputs: ``evaluation.json`` (every figure), ``report.md`` and its plots.

Why a separate module: the figures (``coolpilot.evaluation.kpis``) and the runs
(``coolpilot.evaluation.run``) are what is checked; this turns them into something a
person reads, facility energy first, including, for every missed target, by how much
and the likely reasons that the data itself shows (how often CoolPilot fell back or
held, what the oracle could have saved, how far the forecasts were off, which baseline
ran coldest). The plots are `coolpilot.evaluation.plots`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coolpilot.evaluation import kpis as ev
from coolpilot.evaluation.plots import LABELS, write_plots
from coolpilot.evaluation.run import EvaluationResult
from db.jsonable import jsonable
from db.roles import SETPOINT_ROLES

JSON_NAME = "evaluation.json"
REPORT_NAME = "report.md"
PLOTS_DIR = "plots"
REASON_HINTS = {
    "ood": "the model judged the plant's state (weather, load, setpoints) unlike its training history; longer or "
           "more varied history (--train-days, --explore, or a window in the season the history covers) widens "
           "what it knows.",
    "model_error": "the model could not score the state, typically because a sensor gap left the recent window "
                   "it needs incomplete.",
    "bad_data": "the data-quality checks rejected the recent window (sensor spikes, dropouts or stuck values).",
    "uncertain": "the forecast intervals were too wide for the thresholds in the controller config.",
}
CAVEATS = {
    "twin": (
        "These figures come from the project's digital twin, not from a site. The simulator has the physics "
        "listed in the reference (chiller curves, tower approach, pumps and fans by the affinity laws, server "
        "fans, the waterside economiser, first-order dynamics, sensor noise and defects), but its coefficients "
        "are generic, its load is one public trace and its weather a typical year. A real plant has effects the "
        "twin lacks (staging logic, fouling, mis-calibrated sensors, operators), so the savings here say that "
        "the method works on a credible plant with the same information a site would give it, not what a given "
        "site will save. The oracle searches the twin's own noise-free steady-state model one step at a time; "
        "it is a yardstick of what setpoints alone can do within the same bounds and rate limits, not a bound "
        "on every possible controller."
    ),
    "energyplus": (
        "These figures come from an EnergyPlus building model (an EnergyPlus example file, run by EnergyPlus "
        "itself), not from a site, and not from the project's own twin. The model has only a supply-air "
        "setpoint, no sensor noise, and its own IT load schedule; its servers follow EnergyPlus's shipped curve "
        "(server power rises about 6-7 % of design per K of inlet air, far steeper than real servers), so "
        "facility energy, not cooling energy, is the figure to judge, and colder supply air tends to win. "
        "There is no oracle (EnergyPlus has no steady-state model to search); the model's own setpoint "
        "managers, run untouched, are a baseline."
    ),
}
CAVEAT = CAVEATS["twin"]


def write_outputs(result: EvaluationResult, out_dir: Path, command: str | None = None) -> dict[str, Any]:
    """Write the plots, ``report.md`` and ``evaluation.json``; returns the summary with file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = dict(result.summary)
    if command is not None:
        summary["command"] = command
    plots = write_plots(result, out_dir / PLOTS_DIR)
    summary["files"] = {"json": JSON_NAME, "report": REPORT_NAME, "database": "evaluation.db", "models": "models/",
                        "plots": [f"{PLOTS_DIR}/{p.name}" for p in plots]}
    summary["diagnosis"] = diagnose(summary)
    (out_dir / REPORT_NAME).write_text(markdown(summary), encoding="utf-8")
    (out_dir / JSON_NAME).write_text(json.dumps(jsonable(summary), indent=1, sort_keys=True) + "\n",
                                     encoding="utf-8")
    return summary


# --- text ---------------------------------------------------------------------------


def _f(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{float(value):.{digits}f}{unit}"


def diagnose(summary: Mapping[str, Any]) -> list[str]:
    """For each missed target: by how much, and what the run's own figures say about why (plus caveats)."""
    controllers = summary["controllers"]
    cp = controllers["coolpilot"]
    oracle = controllers.get("oracle")
    best = summary.get("best_baseline")
    missed = [t for t in summary["targets"] if not t["met"] and t["value"] is not None
              and math.isfinite(t["value"])]
    notes: list[str] = []
    for t in missed:
        gap_unit = "percentage points" if t["unit"] == "%" else t["unit"]
        op = (">" if t.get("strict") else ">=") if t["higher_is_better"] else ("<" if t.get("strict") else "<=")
        notes.append(f"{t['name']}: {_f(t['value'], 2)} {t['unit']} against a target of "
                     f"{op} {_f(t['threshold'], 1)} {t['unit']}: missed by {_f(t['shortfall'], 2)} {gap_unit}"
                     + (f" ({t['what']})." if t.get("what") else "."))
    names = {t["name"] for t in missed}
    saving_missed = bool(names & {"net_saving_vs_tuned_pct", "net_saving_vs_tuned_never_negative",
                                  "net_saving_vs_best_pct"})
    if saving_missed and best is not None and best in controllers:
        b = controllers[best]
        notes.append(f"CoolPilot used {_f(cp['facility_kwh'] - b['facility_kwh'], 0)} kWh more facility energy "
                     f"than the best baseline ({LABELS.get(best, best)}, {_f(b['facility_kwh'], 0)} kWh): cooling "
                     f"{_f(cp['cooling_kwh'] - b['cooling_kwh'], 0)} kWh, IT {_f(cp['it_kwh'] - b['it_kwh'], 0)} kWh "
                     "of the difference.")
        means = {n: c.get("setpoint_mean_c", {}).get("supply_air_sp_c") for n, c in controllers.items()}
        bounds = summary.get("settings", {}).get("controller_config", {}).get("setpoints", {}).get(
            "supply_air_sp_c", {})
        if means.get(best) is not None and means.get("coolpilot") is not None:
            text = (f"Mean supply-air setpoint: {LABELS.get(best, best)} {_f(means[best], 1)} C, CoolPilot "
                    f"{_f(means['coolpilot'], 1)} C")
            low = bounds.get("min_c")
            if isinstance(low, int | float) and means[best] < low - 0.05:
                text += (f"; the best baseline ran below the bottom of CoolPilot's supply-air envelope "
                         f"({low:g} C), where CoolPilot may not follow it")
            notes.append(text + ".")
    if saving_missed and oracle is not None:
        possible = oracle.get("net_saving_vs_tuned_pct", math.nan)
        if math.isfinite(possible) and possible < ev.TARGET_NET_SAVING_VS_TUNED_PCT:
            notes.append(f"Even the oracle (the best setpoints step by step on the plant's true model) saves only "
                         f"{possible:.1f} % net against tuned in this window: the "
                         f"{ev.TARGET_NET_SAVING_VS_TUNED_PCT:.0f} % target needs more headroom than setpoint "
                         "choice within these bounds and rate limits gives here.")
    decisions = cp.get("decisions")
    if (saving_missed or "fallback_share_pct" in names) and decisions:
        outcomes = decisions["outcomes"]
        n = max(decisions["cycles"], 1)
        held = 100.0 * outcomes.get("hold", 0) / n
        reasons = ", ".join(f"{k} {v}" for k, v in decisions["fallback_reasons"].items()) or "none"
        notes.append(f"CoolPilot optimised in {100.0 * outcomes.get('optimised', 0) / n:.1f} % of cycles, held "
                     f"in {held:.1f} % (no sure candidate saved enough over holding) and ran the rules in "
                     f"{decisions['fallback_share_pct']:.1f} % (reasons: {reasons}).")
        top = next(iter(decisions["fallback_reasons"]), None)
        if top in REASON_HINTS and decisions["fallback_share_pct"] >= 10.0:
            notes.append(f"Most fallbacks were {top}: {REASON_HINTS[top]}")
    pred = cp.get("prediction")
    if saving_missed and pred and pred.get("n"):
        notes.append(f"Its forecasts of the next hour's cooling power were off by {pred['mae_kw']:.1f} kW on "
                     f"average (bias {pred['bias_kw']:+.1f} kW, MAPE {pred['mape_pct']:.1f} %): a biased or "
                     "uncertain model leaves savings on the table, because candidates must beat holding "
                     "with confidence.")
    if names & {"excess_minutes_above_limit_vs_tuned", "minutes_above_limit"}:
        notes.append(f"Hottest rack inlet under CoolPilot {_f(cp['rack_inlet_max_c'], 2)} C; minutes above the "
                     f"limit {_f(cp['minutes_above_limit'], 0)} (tuned rules "
                     f"{_f(controllers.get('tuned', {}).get('minutes_above_limit'), 0)}).")
    bound = summary.get("oracle_bound") or {}
    if oracle is not None and cp["cooling_kwh"] < oracle["cooling_kwh"]:
        within = bound.get("ok", False)
        notes.append(f"CoolPilot used less cooling energy than the oracle ({cp['cooling_kwh']:.0f} against "
                     f"{oracle['cooling_kwh']:.0f} kWh), "
                     + ("within the oracle's tolerance: the bound holds, and the share of its saving says little."
                        if within else "beyond the oracle's tolerance: the oracle is not a bound in this window "
                        "(see its daily energy), so the share of its saving exceeds 100 % and says little."))
    if summary.get("consistency_problems"):
        notes.append("Inconsistent figures: " + "; ".join(summary["consistency_problems"]))
    if not summary.get("identical_start", True):
        notes.append("The plants did not start the window in the same state (the plant is not deterministic): "
                     "differences include more than the controller.")
    return notes


def _bases(controllers: Mapping[str, Any]) -> list[str]:
    return [b for b in ev.BASELINES if b in controllers]


def _results_table(controllers: Mapping[str, Mapping[str, Any]], limit_c: float, best: str | None) -> list[str]:
    bases = _bases(controllers)
    best_head = f"net saving vs best ({LABELS.get(best, best)}) %" if best else "net saving vs best %"
    lines = [
        "| controller | facility energy kWh | cooling energy kWh | IT energy kWh | PUE | " + best_head + " | "
        + " | ".join(f"net saving vs {b} %" for b in bases)
        + f" | cooling saving vs tuned % | minutes > {limit_c:g} C | max inlet C | worst inlet change C/h "
          "| fallback % | setpoint moves |",
        "|---|" + "---:|" * (12 + len(bases) - 1),
    ]
    for name, c in controllers.items():
        lines.append(
            f"| {LABELS.get(name, name)} | {_f(c['facility_kwh'], 0)} | {_f(c['cooling_kwh'], 0)} | "
            f"{_f(c['it_kwh'], 0)} | {_f(c['pue'], 3)} | {_f(c.get('net_saving_vs_best_pct'))} | "
            + "".join(f"{_f(c.get(f'net_saving_vs_{b}_pct'))} | " for b in bases)
            + f"{_f(c.get('savings_vs_tuned_pct'))} | {_f(c['minutes_above_limit'], 0)} | "
              f"{_f(c['rack_inlet_max_c'], 2)} | {_f(c['change_max_c_per_h'], 2)} | "
              f"{_f(c.get('fallback_share_pct'))} | {c['setpoint_moves']['moves']} |")
    return lines


def _moves_table(controllers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    roles = [r for r in SETPOINT_ROLES if any(r in c["setpoint_moves"]["roles"] for c in controllers.values())]
    lines = ["| controller | " + " | ".join(f"{r} moves / mean K / travel K / mean C" for r in roles) + " |",
             "|---|" + "---:|" * len(roles)]
    for name, c in controllers.items():
        moves = c["setpoint_moves"]["roles"]
        means = c.get("setpoint_mean_c", {})
        cells = [f"{moves[r]['moves']} / {_f(moves[r]['mean_k'], 2)} / {_f(moves[r]['travel_k'], 1)} / "
                 f"{_f(means.get(r), 1)}" if r in moves else "n/a" for r in roles]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def _forecast_line(label: str, pred: Mapping[str, Any]) -> str:
    coverage = pred.get("coverage_pct")
    level = pred.get("interval_level_pct")
    cover = (f"; {_f(coverage)} % of outcomes inside the {_f(level, 0)} % interval"
             if isinstance(coverage, int | float) and math.isfinite(coverage) else "")
    return (f"Forecast of the next hour's mean {label} against what followed: MAE {_f(pred.get('mae_kw'))} kW, "
            f"bias {_f(pred.get('bias_kw'))} kW, MAPE {_f(pred.get('mape_pct'))} % over {pred.get('n', 0)} "
            f"decisions{cover}.")


def markdown(summary: Mapping[str, Any]) -> str:
    """The human-readable report (Markdown, plots linked relative to the report), facility energy first."""
    s, tr = summary["settings"], summary["training"]
    controllers = summary["controllers"]
    cp = controllers["coolpilot"]
    family = str(summary.get("family", s.get("family", "twin")))
    best = summary.get("best_baseline")
    where = (f"EnergyPlus model `{s.get('energyplus_model') or s.get('point_map')}`" if family == "energyplus"
             else f"plant `{s['plant']}`")
    out = [
        "# CoolPilot closed-loop evaluation", "",
        f"Window {s['start']} to {s['end']} (UTC; {s['days']:g} days, {s['records']} records of "
        f"{s['record_interval_s']:g} s); {where}; weather "
        f"{s.get('weather_source') or s.get('climate') or 'plant default'}; workload "
        f"{s.get('workload') or 'plant default'}; seed {s['seed']}.",
    ]
    if s.get("plant_setpoints"):
        out.append(f"Setpoints: the plant has {', '.join(s['plant_setpoints'])}; CoolPilot controls "
                   f"{', '.join(s.get('controlled_setpoints') or s['plant_setpoints'])}; the tuned rules (baseline "
                   f"and CoolPilot's fallback) use a design IT load of {_f(s.get('design_it_kw'), 1)} kW.")
    out += [
        f"Training: {s['train_days']:g} days of history before the window (tuned rules, "
        f"{100 * s['explore_share']:.0f} % safe exploration over the whole envelope), model {tr['version']} "
        f"trained in {tr['seconds']:.0f} s (test-window MAE: cooling power {_f(tr['cooling_power_mae_kw'], 1)} kW, "
        f"rack inlet {_f(tr['rack_inlet_mae_c'], 2)} K).", "",
    ]
    if summary.get("command"):
        out += ["Reproduce with:", "", "```", str(summary["command"]), "```", ""]
    out += ["## Results", "", *_results_table(controllers, s["rack_inlet_limit_c"], best), ""]
    if best is not None and best in controllers:
        b = controllers[best]
        below = cp.get("facility_kwh_below_best")
        out += [f"Best baseline (lowest facility energy): {LABELS.get(best, best)}, {_f(b['facility_kwh'], 0)} kWh. "
                f"CoolPilot's facility energy is {_f(abs(below) if below is not None else None, 0)} kWh "
                f"{'below' if (below or 0) > 0 else 'above'} it. Net saving = (baseline facility energy - "
                "facility energy) / baseline cooling energy: the facility energy saved, as a share of what the "
                "baseline spent on cooling (IT energy that warmer air adds counts against the saving).", ""]
    if "oracle" in controllers:
        out += [f"CoolPilot achieved {_f(cp.get('oracle_share_vs_tuned_pct'))} % of the oracle's cooling saving "
                f"against the tuned rules ({_f(cp.get('oracle_share_vs_legacy_pct'))} % against legacy; n/a where "
                f"the oracle saves less than {ev.ORACLE_SHARE_MIN_SAVING_PCT:g} %).", ""]
        bound = summary.get("oracle_bound") or {}
        if bound:
            beaten = ", ".join(f"{LABELS.get(n, n)} {v:.1f} %" for n, v in bound["beaten_by"].items()) or "none"
            below = bound["coolpilot_below_oracle_pct"]
            more = isinstance(below, int | float) and below < 0
            out += [f"Oracle bound: {'holds' if bound['ok'] else '**fails**'} (CoolPilot used "
                    f"{_f(abs(below) if more else below)} % {'more' if more else 'less'} cooling energy than the "
                    f"oracle; tolerance {bound['tolerance_pct']:g} % less; beyond it: {beaten}).", ""]
    out += [f"Minutes above {s['rack_inlet_limit_c']:g} C that the tuned rules did not also have: "
            f"{_f(cp.get('excess_minutes_above_limit_vs_tuned'), 0)}. Inlet change limit: "
            f"{s['inlet_change_limit_c_per_h']:g} C within any hour (ASHRAE).", ""]
    out += [f"## Targets ({'EnergyPlus model' if family == 'energyplus' else 'digital twin'})", "",
            "| target | what | value | threshold | met | shortfall |", "|---|---|---:|---:|---|---:|"]
    for t in summary["targets"]:
        strict = bool(t.get("strict"))
        op = (">" if strict else ">=") if t["higher_is_better"] else ("<" if strict else "<=")
        known = isinstance(t["value"], int | float) and math.isfinite(t["value"])
        verdict = "yes" if t["met"] else "**no**" if known else "not measured"
        out.append(f"| {t['name']} | {t.get('what', '')} | {_f(t['value'], 2)} {t['unit']} | "
                   f"{op} {_f(t['threshold'], 1)} {t['unit']} | {verdict} | {_f(t['shortfall'], 2)} |")
    out += [""]
    if summary.get("diagnosis"):
        out += ["Where targets were missed, by how much and why (from this run's own figures):", ""]
        out += [f"- {note}" for note in summary["diagnosis"]] + [""]
    if summary.get("skipped"):
        out += [f"Not run: {name} ({why})." for name, why in summary["skipped"].items()] + [""]
    decisions = cp.get("decisions")
    if decisions:
        outcomes = ", ".join(f"{k} {v}" for k, v in decisions["outcomes"].items())
        reasons = ", ".join(f"{k} {v}" for k, v in decisions["fallback_reasons"].items()) or "none"
        objectives = ", ".join(f"{k} {v}" for k, v in decisions.get("objectives", {}).items())
        out += ["## CoolPilot's decisions", "",
                f"{decisions['cycles']} cycles: {outcomes}. Fallback reasons: {reasons}. "
                + (f"Objective minimised: {objectives}. " if objectives else "")
                + f"Median cycle {_f(cp.get('cycle_median_ms'), 0)} ms.", ""]
        for key, label in (("prediction", "cooling power"), ("prediction_it", "IT power")):
            if cp.get(key):
                out += [_forecast_line(label, cp[key]), ""]
        coverage = cp.get("decisions", {}).get("interval_coverage")
        if coverage:
            out += ["Online-calibrated intervals: share of the last week's matured forecasts inside the interval "
                    "they were issued with: " + ", ".join(f"{t} {_f(100.0 * c, 1)} %" for t, c in coverage.items())
                    + ".", ""]
        out += ["Every decision is in `evaluation.db` (try `coolpilot explain --db sqlite:///evaluation.db "
                "--site eval`).", ""]
    out += ["## Setpoint moves", "", *_moves_table(controllers), ""]
    out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in summary.get("files", {}).get("plots", [])] + [""]
    out += ["## What these figures do and do not show", "", CAVEATS.get(family, CAVEAT), ""]
    return "\n".join(out)
