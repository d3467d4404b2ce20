"""The evaluation plots answer an engineer's questions, and forecasts are drawn at the time they are for.

Built on a small synthetic run (one day, two controllers) whose answers are known by
construction: the forecast is perfect or a persistence forecast, CoolPilot falls back
for two hours, the bounds and energies are given.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from coolpilot.evaluation.plots import (
    PlotContext,
    best_lag_rows,
    daily_energy_figure,
    forecast_at_target_time,
    forecast_figure,
    rack_inlet_figure,
    save_figure,
    saving_headline,
    setpoints_figure,
)
from coolpilot.evaluation.run import ControllerRun, EvaluationResult

matplotlib.use("Agg")

H = 12  # records in the forecast horizon (an hour of 5-minute records)
STEP_S = 300.0
INDEX = pd.date_range("2023-07-15", periods=288, freq="5min", tz="UTC", name="time")
BOUNDS = {"chw_supply_sp_c": (7.0, 15.0), "supply_air_sp_c": (17.0, 24.0), "cw_supply_sp_c": (18.0, 32.0)}


def cooling_kw() -> pd.Series:
    hours = np.arange(len(INDEX)) / 12.0
    return pd.Series(150.0 + 30.0 * np.sin(2 * np.pi * hours / 24.0), index=INDEX)


def frame(supply_air_c: float, rack_c: float) -> pd.DataFrame:
    return pd.DataFrame({"chw_supply_sp_c": 10.0, "supply_air_sp_c": supply_air_c, "cw_supply_sp_c": 25.0,
                         "rack_inlet_max_c": rack_c, "cooling_power_kw": cooling_kw(), "it_power_kw": 800.0},
                        index=INDEX)


def decisions(predicted: pd.Series) -> pd.DataFrame:
    outcome = pd.Series("optimised", index=INDEX)
    outcome.iloc[100:124] = "fallback"
    return pd.DataFrame({"outcome": outcome, "predicted_cooling_power_kw": predicted,
                         "predicted_cooling_power_lo_kw": predicted - 5.0,
                         "predicted_cooling_power_hi_kw": predicted + 5.0, "interval_level": 0.9}, index=INDEX)


def perfect() -> pd.Series:
    """The realised mean over the next H records, known at each decision."""
    return cooling_kw().rolling(H).mean().shift(-H)


def persistence() -> pd.Series:
    """The mean over the last H records: a forecast that trails by the horizon."""
    return cooling_kw().rolling(H).mean()


def controller(facility: float, cooling: float, rack: float, **extra: object) -> dict[str, object]:
    return {"facility_kwh": facility, "cooling_kwh": cooling, "it_kwh": facility - cooling,
            "daily_facility_kwh": {"2023-07-15": facility}, "daily_cooling_kwh": {"2023-07-15": cooling},
            "rack_inlet_max_c": rack, "minutes_above_limit": 0.0, **extra}


def result(predicted: pd.Series) -> EvaluationResult:
    summary = {
        "settings": {"rack_inlet_limit_c": 27.0, "record_interval_s": STEP_S, "climate": "leesburg",
                     "controller_config": {"setpoints": {r: {"min_c": lo, "max_c": hi}
                                                         for r, (lo, hi) in BOUNDS.items()}}},
        "controllers": {"tuned": controller(24_000.0, 4_000.0, 23.5),
                        "coolpilot": controller(23_600.0, 3_500.0, 24.9, fallback_share_pct=8.3)},
    }
    runs = {"tuned": ControllerRun("tuned", frame(18.0, 23.5), {}, 1.0),
            "coolpilot": ControllerRun("coolpilot", frame(21.0, 24.9), {}, 1.0, decisions(predicted))}
    return EvaluationResult(summary, runs, H)


def test_a_forecast_made_at_t_for_the_next_hour_is_drawn_at_t_plus_the_horizon() -> None:
    f = forecast_at_target_time(decisions(perfect()), cooling_kw(), "cooling_power_kw", H, STEP_S)
    made_at = perfect().dropna().index
    assert f.index[0] == made_at[0] + pd.Timedelta(hours=1)
    assert np.allclose(f["predicted_kw"], f["actual_kw"])  # drawn where it is for, a perfect forecast sits on the actual
    assert np.allclose(f["hi_kw"] - f["lo_kw"], 10.0)
    assert best_lag_rows(f, H) == 0


def test_a_persistence_forecast_shows_as_an_hour_late() -> None:
    f = forecast_at_target_time(decisions(persistence()), cooling_kw(), "cooling_power_kw", H, STEP_S)
    assert best_lag_rows(f, H) == H  # the shift that matches it to the actuals is the whole horizon


def test_the_saving_headline_follows_the_readme_definition() -> None:
    text = saving_headline(result(perfect()).summary)
    # facility 24 000 - 23 600 = 400 kWh saved; net = 400 / 4 000 cooling = 10 %; cooling 500 kWh = 12.5 %
    assert "facility +400 kWh saved" in text and "net saving +10.0 %" in text
    assert "cooling +500 kWh (+12.5 %)" in text


def test_each_figure_says_what_it_shows_in_utc_with_bounds_fallbacks_and_the_interval(tmp_path: Path) -> None:
    ctx = PlotContext.of(result(perfect()))
    figures = []
    assert ctx.fallback is not None and int(ctx.fallback.sum()) == 24

    fig, _ = daily_energy_figure(ctx, "facility") or (None, "")
    assert fig is not None and "net saving +10.0 %" in fig.axes[0].get_title()
    figures.append(fig)

    fig, _ = setpoints_figure(ctx) or (None, "")
    assert fig is not None and "fell back" in fig._suptitle.get_text()
    for ax, (lo, hi) in zip(fig.axes, BOUNDS.values(), strict=True):
        flat = {float(line.get_ydata()[0]) for line in ax.get_lines() if len(set(line.get_ydata())) == 1
                and line.get_linestyle() == ":"}
        assert {lo, hi} <= flat
        assert any("fell back" in str(c.get_label()) for c in ax.collections)
    assert fig.axes[-1].get_xlabel() == "time (UTC)"
    figures.append(fig)

    fig, _ = rack_inlet_figure(ctx)
    ax = fig.axes[0]
    assert "max 24.90 C" in ax.get_title() and ax.get_xlabel() == "time (UTC)"
    widths = {line.get_label(): line.get_linewidth() for line in ax.get_lines()}
    assert widths["CoolPilot (auto)"] > widths["tuned rules"]  # drawn last and thicker: not hidden
    figures.append(fig)

    fig, _ = forecast_figure(ctx) or (None, "")
    assert fig is not None
    ax = fig.axes[0]
    assert any("90 % interval" in str(c.get_label()) for c in ax.collections)
    forecast_line = next(line for line in ax.get_lines() if "forecast" in str(line.get_label()))
    assert pd.Timestamp(forecast_line.get_xdata()[0]) == INDEX[0] + pd.Timedelta(hours=1)
    figures.append(fig)
    for n, figure in enumerate(figures):  # small enough to keep in the docs
        size = save_figure(figure, tmp_path / f"{n}.png").stat().st_size
        assert 5_000 < size < 150_000, (n, size)
