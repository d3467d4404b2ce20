"""The evaluation's outputs: ``evaluation.json`` (every figure), ``report.md`` and its plots.

Why a separate module: the figures (``coolpilot.evaluation.kpis``) and the runs
(``coolpilot.evaluation.run``) are what is checked; this turns them into something a
person reads, including, for every missed target, by how much and the likely reasons
that the data itself shows (how often CoolPilot fell back or held, what the oracle
could have saved, how far the forecasts were off). Plots use matplotlib's Agg backend
(files only, no display).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from coolpilot.evaluation import kpis as ev
from coolpilot.evaluation.run import EvaluationResult
from db.jsonable import jsonable
from db.roles import SETPOINT_ROLES

JSON_NAME = "evaluation.json"
REPORT_NAME = "report.md"
PLOTS_DIR = "plots"
COLOURS = {"legacy": "tab:gray", "tuned": "tab:blue", "coolpilot": "tab:green", "oracle": "tab:purple"}
LABELS = {"legacy": "legacy rules", "tuned": "tuned rules", "coolpilot": "CoolPilot (auto)", "oracle": "oracle"}
REASON_HINTS = {
    "ood": "the model judged the plant's state (weather, load, setpoints) unlike its training history; longer or "
           "more varied history (--train-days, --explore, or a window in the season the history covers) widens "
           "what it knows.",
    "model_error": "the model could not score the state, typically because a sensor gap left the recent window "
                   "it needs incomplete.",
    "bad_data": "the data-quality checks rejected the recent window (sensor spikes, dropouts or stuck values).",
    "uncertain": "the forecast intervals were too wide for the thresholds in the controller config.",
}
CAVEAT = (
    "These figures come from the project's digital twin, not from a site. The simulator has the physics "
    "listed in the reference (chiller curves, tower approach, pumps and fans by the affinity laws, server "
    "fans, the waterside economiser, first-order dynamics, sensor noise and defects), but its coefficients "
    "are generic, its load is one public trace and its weather a typical year. A real plant has effects the "
    "twin lacks (staging logic, fouling, mis-calibrated sensors, operators), so the savings here say that "
    "the method works on a credible plant with the same information a site would give it, not what a given "
    "site will save. The oracle searches the twin's own noise-free steady-state model one step at a time; "
    "it is a yardstick of what setpoints alone can do within the same bounds and rate limits, not a bound "
    "on every possible controller."
)


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
    missed = [t for t in summary["targets"] if not t["met"] and t["value"] is not None
              and math.isfinite(t["value"])]
    notes: list[str] = []
    for t in missed:
        gap_unit = "percentage points" if t["unit"] == "%" else t["unit"]
        notes.append(f"{t['name']}: {_f(t['value'], 2)} {t['unit']} against a target of "
                     f"{'>=' if t['higher_is_better'] else '<='} {_f(t['threshold'], 1)} {t['unit']}: "
                     f"missed by {_f(t['shortfall'], 2)} {gap_unit}.")
    names = {t["name"] for t in missed}
    if names & {"savings_vs_legacy_pct", "savings_vs_tuned_pct"} and oracle is not None:
        for base, target in (("legacy", ev.TARGET_SAVINGS_VS_LEGACY_PCT), ("tuned", ev.TARGET_SAVINGS_VS_TUNED_PCT)):
            possible = oracle.get(f"savings_vs_{base}_pct", math.nan)
            if f"savings_vs_{base}_pct" in names and math.isfinite(possible) and possible < target:
                notes.append(f"Even the oracle (the best setpoints step by step on the plant's true model) saves "
                             f"only {possible:.1f} % against {base} in this window: the {target:.0f} % target needs "
                             "more headroom than setpoint choice within these bounds and rate limits gives here.")
    if names & {"savings_vs_legacy_pct", "savings_vs_tuned_pct", "oracle_share_vs_tuned_pct"}:
        decisions = cp.get("decisions")
        if decisions:
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
        if pred and pred.get("n"):
            notes.append(f"Its forecasts of the next hour's cooling power were off by {pred['mae_kw']:.1f} kW on "
                         f"average (bias {pred['bias_kw']:+.1f} kW, MAPE {pred['mape_pct']:.1f} %): a biased or "
                         "uncertain model leaves savings on the table, because candidates must beat holding "
                         "with confidence.")
    if "excess_minutes_above_limit_vs_tuned" in names or "rack_inlet_max_c" in names:
        notes.append(f"Hottest rack inlet under CoolPilot {_f(cp['rack_inlet_max_c'], 2)} C; minutes above the "
                     f"limit {_f(cp['minutes_above_limit'], 0)} (tuned rules "
                     f"{_f(controllers.get('tuned', {}).get('minutes_above_limit'), 0)}).")
    if oracle is not None and cp["cooling_kwh"] < oracle["cooling_kwh"]:
        notes.append(f"CoolPilot used less cooling energy than the oracle ({cp['cooling_kwh']:.0f} against "
                     f"{oracle['cooling_kwh']:.0f} kWh): the oracle's one-step search on the quasi-steady model is "
                     "not a bound in this window (see its daily energy), so the share of its saving exceeds 100 % "
                     "and says little.")
    if summary.get("consistency_problems"):
        notes.append("Inconsistent figures: " + "; ".join(summary["consistency_problems"]))
    if not summary.get("identical_start", True):
        notes.append("The plants did not start the window in the same state (the plant is not deterministic): "
                     "differences include more than the controller.")
    return notes


def _results_table(controllers: Mapping[str, Mapping[str, Any]], limit_c: float) -> list[str]:
    lines = [
        f"| controller | cooling energy kWh | PUE | saving vs legacy % | saving vs tuned % | minutes > {limit_c:g} C "
        "| max inlet C | worst inlet change C/h | fallback % | setpoint moves |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in controllers.items():
        lines.append(
            f"| {LABELS.get(name, name)} | {_f(c['cooling_kwh'], 0)} | {_f(c['pue'], 3)} | "
            f"{_f(c.get('savings_vs_legacy_pct'))} | {_f(c.get('savings_vs_tuned_pct'))} | "
            f"{_f(c['minutes_above_limit'], 0)} | {_f(c['rack_inlet_max_c'], 2)} | {_f(c['change_max_c_per_h'], 2)} | "
            f"{_f(c.get('fallback_share_pct'))} | {c['setpoint_moves']['moves']} |")
    return lines


def _moves_table(controllers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["| controller | " + " | ".join(f"{r} moves / mean K / travel K" for r in SETPOINT_ROLES) + " |",
             "|---|" + "---:|" * len(SETPOINT_ROLES)]
    for name, c in controllers.items():
        roles = c["setpoint_moves"]["roles"]
        cells = [f"{roles[r]['moves']} / {_f(roles[r]['mean_k'], 2)} / {_f(roles[r]['travel_k'], 1)}"
                 if r in roles else "n/a" for r in SETPOINT_ROLES]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def markdown(summary: Mapping[str, Any]) -> str:
    """The human-readable report (Markdown, plots linked relative to the report)."""
    s, tr = summary["settings"], summary["training"]
    controllers = summary["controllers"]
    cp = controllers["coolpilot"]
    out = [
        "# CoolPilot closed-loop evaluation", "",
        f"Window {s['start']} to {s['end']} ({s['days']:g} days, {s['records']} records of "
        f"{s['record_interval_s']:g} s); weather {s.get('weather_source') or s.get('climate') or 'plant default'}; "
        f"workload {s.get('workload') or 'plant default'}; plant `{s['plant']}`; seed {s['seed']}.",
        f"Training: {s['train_days']:g} days of history before the window (tuned rules, "
        f"{100 * s['explore_share']:.0f} % safe random exploration), model {tr['version']} trained in "
        f"{tr['seconds']:.0f} s (test-window MAE: cooling power {_f(tr['cooling_power_mae_kw'], 1)} kW, rack "
        f"inlet {_f(tr['rack_inlet_mae_c'], 2)} K).", "",
    ]
    if summary.get("command"):
        out += ["Reproduce with:", "", "```", str(summary["command"]), "```", ""]
    out += ["## Results", "", *_results_table(controllers, s["rack_inlet_limit_c"]), ""]
    oracle_share = cp.get("oracle_share_vs_tuned_pct")
    out += [f"CoolPilot achieved {_f(oracle_share)} % of the oracle's saving against the tuned rules "
            f"({_f(cp.get('oracle_share_vs_legacy_pct'))} % against legacy). Minutes above {s['rack_inlet_limit_c']:g} C "
            f"that the tuned rules did not also have: {_f(cp.get('excess_minutes_above_limit_vs_tuned'), 0)}. "
            f"Inlet change limit: {s['inlet_change_limit_c_per_h']:g} C within any hour (ASHRAE).", ""]
    out += ["## Targets", "", "| target | value | threshold | met | shortfall |", "|---|---:|---:|---|---:|"]
    for t in summary["targets"]:
        op = ">=" if t["higher_is_better"] else "<="
        known = isinstance(t["value"], int | float) and math.isfinite(t["value"])
        verdict = "yes" if t["met"] else "**no**" if known else "not measured"
        out.append(f"| {t['name']} | {_f(t['value'], 2)} {t['unit']} | {op} {_f(t['threshold'], 1)} {t['unit']} | "
                   f"{verdict} | {_f(t['shortfall'], 2)} |")
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
        pred = cp.get("prediction", {})
        out += ["## CoolPilot's decisions", "",
                f"{decisions['cycles']} cycles: {outcomes}. Fallback reasons: {reasons}. Median cycle "
                f"{_f(cp.get('cycle_median_ms'), 0)} ms. Forecast of the next hour's mean cooling power against "
                f"what followed: MAE {_f(pred.get('mae_kw'))} kW, bias {_f(pred.get('bias_kw'))} kW, MAPE "
                f"{_f(pred.get('mape_pct'))} % over {pred.get('n', 0)} decisions. Every decision is in "
                "`evaluation.db` (try `coolpilot explain --db sqlite:///evaluation.db --site eval`).", ""]
    out += ["## Setpoint moves", "", *_moves_table(controllers), ""]
    out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in summary.get("files", {}).get("plots", [])] + [""]
    out += ["## What these figures do and do not show", "", CAVEAT, ""]
    return "\n".join(out)


# --- plots --------------------------------------------------------------------------


def write_plots(result: EvaluationResult, plots_dir: Path) -> list[Path]:
    """Daily cooling energy, setpoints, rack inlet against the limit, predicted against actual."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    runs = result.runs
    limit_c = float(result.summary["settings"]["rack_inlet_limit_c"]) if "settings" in result.summary else 27.0
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = plots_dir / name
        if not fig.get_tight_layout() and fig.legends == []:
            fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(9, 4))
    daily = pd.DataFrame({n: pd.Series(result.summary["controllers"][n]["daily_cooling_kwh"]) for n in runs})
    width = 0.8 / max(len(daily.columns), 1)
    for i, name in enumerate(daily.columns):
        ax.bar([x + i * width for x in range(len(daily))], daily[name], width, label=LABELS.get(name, name),
               color=COLOURS.get(name))
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(daily))], list(daily.index), rotation=45, ha="right")
    ax.set_ylabel("cooling energy per day [kWh]")
    ax.legend()
    save(fig, "daily_cooling_energy.png")

    fig, axes = plt.subplots(len(SETPOINT_ROLES), 1, figsize=(10, 7), sharex=True)
    for ax, role in zip(axes, SETPOINT_ROLES, strict=True):
        for name, run in runs.items():
            ax.plot(run.frame.index, run.frame[role], label=LABELS.get(name, name), color=COLOURS.get(name), lw=1)
        ax.set_ylabel(f"{role} [C]", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(runs), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save(fig, "setpoints.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    for name, run in runs.items():
        ax.plot(run.frame.index, run.frame["rack_inlet_max_c"], label=LABELS.get(name, name),
                color=COLOURS.get(name), lw=1)
    ax.axhline(limit_c, color="tab:red", ls="--", lw=1, label=f"limit {limit_c:g} C")
    ax.axhline(ev.ALLOWABLE_INLET_C, color="darkred", ls=":", lw=1, label=f"allowable {ev.ALLOWABLE_INLET_C:g} C")
    ax.set_ylabel("hottest rack inlet [C]")
    ax.legend(fontsize=8, ncol=3)
    save(fig, "rack_inlet_max.png")

    cp = runs.get("coolpilot")
    if cp is not None and cp.decisions is not None:
        pairs = ev.prediction_pairs(cp.decisions["predicted_cooling_power_kw"].dropna(),
                                    cp.frame["cooling_power_kw"], result.horizon_rows)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2.5, 1]})
        ax1.plot(pairs.index, pairs["actual_kw"], color="black", lw=1, label="actual (mean over next hour)")
        ax1.plot(pairs.index, pairs["predicted_kw"], color=COLOURS["coolpilot"], lw=1, label="predicted")
        ax1.set_ylabel("cooling power [kW]")
        ax1.legend(fontsize=8)
        ax2.scatter(pairs["actual_kw"], pairs["predicted_kw"], s=4, color=COLOURS["coolpilot"])
        lo, hi = _span([pairs["actual_kw"], pairs["predicted_kw"]])
        ax2.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax2.set_xlabel("actual [kW]")
        ax2.set_ylabel("predicted [kW]")
        save(fig, "predicted_vs_actual_cooling_power.png")
    return written


def _span(series: Sequence[pd.Series]) -> tuple[float, float]:
    values = pd.concat(list(series)).dropna()
    if values.empty:
        return 0.0, 1.0
    return float(values.min()), float(values.max())
