"""The evaluation's plots: what a data-centre engineer asks of a run, one figure each.

How much was saved (facility and cooling energy per day, the saving in the title),
whether the hall stayed safe (hottest rack inlet against the limit), when CoolPilot
was in control (setpoints against the operator's bounds; shaded where it fell back
to the rules) and how good its forecasts were (each forecast drawn at the time it is
for, with its interval). Matplotlib's Agg backend (files only), UTC time axes.

A forecast made at decision time t is of the mean over the next ``horizon_rows``
records (t + 1 .. t + h, the model's own target, `coolpilot.evaluation.kpis`): it is
drawn at t + h, against the realised mean over the same records, so that a late
forecast shows as late rather than being hidden by drawing both at t.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from coolpilot.evaluation import kpis as ev
from coolpilot.evaluation.run import EvaluationResult
from db.roles import SETPOINT_ROLES

COLOURS = {"legacy": "tab:gray", "tuned": "tab:blue", "own_controls": "tab:orange", "coolpilot": "tab:green",
           "oracle": "tab:purple"}
LABELS = {"legacy": "legacy rules", "tuned": "tuned rules", "own_controls": "model's own controls",
          "coolpilot": "CoolPilot (auto)", "oracle": "oracle"}
#: Line styles and widths so that no line hides another: baselines thin and drawn first,
#: CoolPilot thick and last (on top), the oracle dashed.
STYLES = {"legacy": ("-", 0.9, 0.8), "tuned": ("-", 1.0, 0.9), "own_controls": ("-.", 1.0, 0.9),
          "oracle": ("--", 1.0, 0.9), "coolpilot": ("-", 1.6, 1.0)}
DRAW_ORDER = ("legacy", "own_controls", "tuned", "oracle", "coolpilot")
FALLBACK_COLOUR = "tab:red"
DPI = 80
#: Legends below the axes, so that they never cover a line or a bar.
BELOW: dict[str, Any] = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.3), "fontsize": 8, "frameon": False}


@dataclass(frozen=True)
class PlotContext:
    """What every figure needs: the run, where it ran, the limit and when CoolPilot fell back."""

    result: EvaluationResult
    suffix: str  # " (climate or model)" or ""
    limit_c: float
    fallback: pd.Series | None  # True at records where CoolPilot fell back; None when it never did
    interval_s: float

    @classmethod
    def of(cls, result: EvaluationResult) -> PlotContext:
        s = result.summary.get("settings", {})
        where = s.get("energyplus_model") or s.get("climate") or s.get("weather_source") or ""
        return cls(result, f" ({where})" if where else "", float(s.get("rack_inlet_limit_c", 27.0)),
                   fallback_mask(result), float(s.get("record_interval_s", 300.0)))


def fallback_mask(result: EvaluationResult) -> pd.Series | None:
    """True at the records where CoolPilot's cycle fell back to the rules (None without any)."""
    cp = result.runs.get("coolpilot")
    if cp is None or cp.decisions is None or "outcome" not in cp.decisions:
        return None
    mask = (cp.decisions["outcome"] == "fallback").reindex(cp.frame.index, fill_value=False)
    return mask.astype(bool) if bool(mask.any()) else None


def forecast_at_target_time(decisions: pd.DataFrame, actual: pd.Series, column: str, horizon_rows: int,
                            interval_s: float) -> pd.DataFrame:
    """Each forecast of ``column`` at the time it is for, beside what happened [kW].

    Row index: decision time + ``horizon_rows`` records (the end of the forecast's window).
    Columns: ``predicted_kw``, ``lo_kw``, ``hi_kw`` (the interval, NaN where absent) and
    ``actual_kw``, the realised mean over the same window.
    """
    key = f"predicted_{column}"
    lo, hi = decisions.get(f"{key[:-3]}_lo_kw"), decisions.get(f"{key[:-3]}_hi_kw")
    pairs = ev.prediction_pairs(decisions[key].dropna(), actual, horizon_rows, lo_kw=lo, hi_kw=hi)
    if "lo_kw" not in pairs:
        pairs = pairs.assign(lo_kw=math.nan, hi_kw=math.nan)
    pairs.index = pairs.index + pd.Timedelta(seconds=horizon_rows * interval_s)
    pairs.index.name = "for_time"
    return pairs[["predicted_kw", "lo_kw", "hi_kw", "actual_kw"]]


def best_lag_rows(pairs: pd.DataFrame, max_lag: int) -> int:
    """The shift of the forecast (in records) that best matches what happened: 0 when on time,
    > 0 when the forecast trails the actuals (a persistence-like model)."""
    errors = {lag: float((pairs["predicted_kw"].shift(-lag) - pairs["actual_kw"]).abs().mean())
              for lag in range(-max_lag, max_lag + 1)}
    return min(errors, key=lambda k: (errors[k], abs(k)))


def saving_headline(summary: Mapping[str, Any], baseline: str = "tuned") -> str:
    """How much CoolPilot saved against ``baseline``: facility kWh and the net saving (README), cooling kWh and %."""
    c = summary["controllers"]
    if "coolpilot" not in c or baseline not in c:
        return ""
    cp, b = c["coolpilot"], c[baseline]
    facility = b["facility_kwh"] - cp["facility_kwh"]
    cooling = b["cooling_kwh"] - cp["cooling_kwh"]
    net = ev.net_saving_pct(b["facility_kwh"], cp["facility_kwh"], b["cooling_kwh"])
    cooling_pct = ev.savings_pct(b["cooling_kwh"], cp["cooling_kwh"])
    return (f"CoolPilot vs {LABELS.get(baseline, baseline)}: facility {facility:+,.0f} kWh saved "
            f"(net saving {net:+.1f} % of their cooling energy), cooling {cooling:+,.0f} kWh ({cooling_pct:+.1f} %)")


def write_plots(result: EvaluationResult, plots_dir: Path) -> list[Path]:
    """Daily facility and cooling energy, setpoints, rack inlet against the limit, forecasts against actuals."""
    import matplotlib

    matplotlib.use("Agg")
    plots_dir.mkdir(parents=True, exist_ok=True)
    ctx = PlotContext.of(result)
    figures = [daily_energy_figure(ctx, "facility"), daily_energy_figure(ctx, "cooling"), setpoints_figure(ctx),
               rack_inlet_figure(ctx), forecast_figure(ctx)]
    written = []
    for item in figures:
        if item is not None:
            fig, name = item
            written.append(save_figure(fig, plots_dir / name))
    return written


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG, as RGB where it is opaque (a quarter smaller, the same image)."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    opaque_rgb(path)
    return path


def opaque_rgb(path: Path) -> None:
    """Re-encode a PNG without its alpha channel where every pixel is opaque (lossless)."""
    from PIL import Image

    with Image.open(path) as im:
        alpha = im.getchannel("A") if im.mode == "RGBA" else None
        if alpha is None or alpha.getextrema() != (255, 255):
            return
        rgb = im.convert("RGB")
    rgb.save(path, optimize=True)


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz="UTC", maxticks=8))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d\n%H:%M", tz="UTC"))  # type: ignore[no-untyped-call]
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)


def _shade(ax: Any, mask: pd.Series | None) -> None:
    """Shade the records in which CoolPilot fell back, along the full height of the axes."""
    if mask is None:
        return
    ax.fill_between(mask.index, 0, 1, where=mask.to_numpy(), step="post", color=FALLBACK_COLOUR, alpha=0.12,
                    transform=ax.get_xaxis_transform(), linewidth=0, label="CoolPilot fell back to the rules")


def _ordered(names: Any) -> list[str]:
    return sorted(names, key=lambda n: DRAW_ORDER.index(n) if n in DRAW_ORDER else -1)


def _line(ax: Any, name: str, series: pd.Series) -> None:
    style, width, alpha = STYLES.get(name, ("-", 1.0, 0.9))
    ax.plot(series.index, series, label=LABELS.get(name, name), color=COLOURS.get(name), ls=style, lw=width,
            alpha=alpha, zorder=3 if name == "coolpilot" else 2)


def daily_energy_figure(ctx: PlotContext, what: str) -> tuple[Any, str] | None:
    """Energy per UTC day per controller (grouped bars: none hides another), the saving in the title."""
    import matplotlib.pyplot as plt

    summary = ctx.result.summary
    names = _ordered(ctx.result.runs)
    daily = pd.DataFrame({n: pd.Series(summary["controllers"][n].get(f"daily_{what}_kwh", {}), dtype=float)
                          for n in names})
    if daily.empty or daily.isna().all().all():
        return None
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / max(len(daily.columns), 1)
    for i, name in enumerate(daily.columns):
        total = summary["controllers"][name][f"{what}_kwh"]
        ax.bar([x + i * width for x in range(len(daily))], daily[name], width, color=COLOURS.get(name),
               label=f"{LABELS.get(name, name)}: {total:,.0f} kWh")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(daily))], list(daily.index), fontsize=8)
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel(f"{what} energy per day [kWh]")
    low = float(daily.min().min())
    ax.set_ylim(bottom=max(0.0, low - 0.15 * (float(daily.max().max()) - low) - 1.0))  # the differences show
    ax.set_title(f"{what.capitalize()} energy per UTC day{ctx.suffix}\n{saving_headline(summary)}", fontsize=9)
    ax.legend(**{**BELOW, "bbox_to_anchor": (0.5, -0.22)}, ncol=min(len(daily.columns), 4))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig, f"daily_{what}_energy.png"


def _bounds(summary: Mapping[str, Any], role: str) -> tuple[float | None, float | None]:
    """The operator's bounds of a setpoint in CoolPilot's config [C], where the summary has them."""
    b = summary.get("settings", {}).get("controller_config", {}).get("setpoints", {}).get(role, {})
    lo, hi = b.get("min_c"), b.get("max_c")
    return (float(lo) if isinstance(lo, int | float) else None, float(hi) if isinstance(hi, int | float) else None)


def setpoints_figure(ctx: PlotContext) -> tuple[Any, str] | None:
    """Each setpoint per controller against the operator's bounds; shaded where CoolPilot fell back."""
    import matplotlib.pyplot as plt

    runs = ctx.result.runs
    roles = [r for r in SETPOINT_ROLES if any(r in run.frame for run in runs.values())]
    if not roles:
        return None
    fig, axes = plt.subplots(len(roles), 1, figsize=(10, 2.3 * len(roles) + 1.4), sharex=True, squeeze=False)
    for ax, role in zip(axes[:, 0], roles, strict=True):
        for name in _ordered(runs):
            if role in runs[name].frame:
                _line(ax, name, runs[name].frame[role])
        lo, hi = _bounds(ctx.result.summary, role)
        for value, label in ((lo, "operator's bounds"), (hi, None)):
            if value is not None:
                ax.axhline(value, color="tab:red", ls=":", lw=1.2, alpha=0.8, label=label, zorder=1)
        _shade(ax, ctx.fallback)
        ax.set_ylabel(f"{role}\n[C]", fontsize=8)
        ax.grid(alpha=0.3)
    _time_axis(axes[-1, 0])
    share = ctx.result.summary["controllers"].get("coolpilot", {}).get("fallback_share_pct")
    fell = f"; shaded: CoolPilot fell back to the rules ({share:.1f} % of cycles)" if share else ""
    fig.suptitle(f"Setpoints in force{ctx.suffix}{fell}", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=8, bbox_to_anchor=(0.5, 0.96),
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig, "setpoints.png"


def rack_inlet_figure(ctx: PlotContext) -> tuple[Any, str]:
    """The hottest rack inlet per controller against the limit: was the hall safe."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    for name in _ordered(ctx.result.runs):
        _line(ax, name, ctx.result.runs[name].frame["rack_inlet_max_c"])
    _shade(ax, ctx.fallback)
    ax.axhline(ctx.limit_c, color="tab:red", ls="--", lw=1.2, label=f"limit {ctx.limit_c:g} C")
    ax.axhline(ev.ALLOWABLE_INLET_C, color="darkred", ls=":", lw=1, label=f"allowable {ev.ALLOWABLE_INLET_C:g} C")
    ax.set_ylabel("hottest rack inlet [C]")
    controllers = ctx.result.summary["controllers"]
    safe = "; ".join(f"{LABELS.get(n, n)}: max {c['rack_inlet_max_c']:.2f} C, {c['minutes_above_limit']:.0f} min "
                     f"above {ctx.limit_c:g} C" for n, c in controllers.items()
                     if n in ("coolpilot", "tuned") and "rack_inlet_max_c" in c)
    ax.set_title(f"Hottest rack inlet against the limit{ctx.suffix}\n{safe}", fontsize=9)
    _time_axis(ax)
    ax.legend(**BELOW, ncol=4)
    fig.tight_layout()
    return fig, "rack_inlet_max.png"


def forecast_figure(ctx: PlotContext) -> tuple[Any, str] | None:
    """CoolPilot's forecasts at the time they are for, with their interval, against what happened."""
    import matplotlib.pyplot as plt

    cp = ctx.result.runs.get("coolpilot")
    if cp is None or cp.decisions is None:
        return None
    panels = [(label, col) for label, col in (("cooling", "cooling_power_kw"), ("IT", "it_power_kw"))
              if f"predicted_{col}" in cp.decisions and cp.decisions[f"predicted_{col}"].notna().any()
              and col in cp.frame]
    if not panels:
        return None
    h = ctx.result.horizon_rows
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.6 * len(panels) + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [2.6, 1]})
    for (label, col), (ax1, ax2) in zip(panels, axes, strict=True):
        f = forecast_at_target_time(cp.decisions, cp.frame[col], col, h, ctx.interval_s)
        if f.empty:
            continue
        ax1.fill_between(f.index, f["lo_kw"], f["hi_kw"], color=COLOURS["coolpilot"], alpha=0.2, lw=0,
                         label=f"{_level(cp.decisions)} interval")
        ax1.plot(f.index, f["actual_kw"], color="black", lw=1.0, label="actual (mean over the hour ending here)")
        ax1.plot(f.index, f["predicted_kw"], color=COLOURS["coolpilot"], lw=1.0, ls="--",
                 label="forecast made an hour earlier")
        _shade(ax1, ctx.fallback)
        ax1.set_ylabel(f"{label} power [kW]")
        fig_stats = ev.prediction_figures(f)
        cover = fig_stats["coverage_pct"]
        lag = best_lag_rows(f, h) * ctx.interval_s / 60.0
        ax1.set_title(f"CoolPilot's {label} power forecast (closed loop, each drawn at the time it is for)\n"
                      f"MAE {fig_stats['mae_kw']:.1f} kW, bias {fig_stats['bias_kw']:+.1f} kW"
                      + (f", {cover:.0f} % inside the interval" if math.isfinite(cover) else "")
                      + f"; it matches best shifted by {lag:+.0f} min (+: it trails the actuals)", fontsize=9)
        _time_axis(ax1)
        ax1.legend(**{**BELOW, "bbox_to_anchor": (0.5, -0.28), "fontsize": 7}, ncol=4)
        ax2.scatter(f["actual_kw"], f["predicted_kw"], s=4, color=COLOURS["coolpilot"], alpha=0.6)
        values = pd.concat([f["actual_kw"], f["predicted_kw"]]).dropna()
        lo, hi = float(values.min()), float(values.max())
        ax2.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax2.set_xlabel("actual [kW]")
        ax2.set_ylabel("forecast [kW]")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig, "predicted_vs_actual_cooling_power.png"


def _level(decisions: pd.DataFrame) -> str:
    level = decisions["interval_level"].dropna() if "interval_level" in decisions else pd.Series(dtype=float)
    return f"{100 * float(level.iloc[0]):.0f} %" if len(level) else "predictive"
