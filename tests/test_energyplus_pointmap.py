"""EnergyPlus plant, the parts that need no engine: point maps, model preparation, checks, weather, readings."""

from __future__ import annotations

import copy
import math
from datetime import date
from pathlib import Path

import pytest

from db.roles import ROLES
from simulator.energyplus.checks import check_map_against_model
from simulator.energyplus.climate import SHIPPED_WEATHER, read_header, resolve_weather, with_leap_day
from simulator.energyplus.factory import SHIPPED_MODELS, _has_leap_day, resolve_model
from simulator.energyplus.model import load_model, prepare_model, upgrade
from simulator.energyplus.pointmap import load_point_map
from simulator.energyplus.readings import RoleReader, combine

MAPS = Path(__file__).resolve().parents[1] / "simulator" / "energyplus" / "maps"
GOOD_2ZONE = (MAPS / "2zone.toml").read_text(encoding="utf-8")


def _write(tmp_path: Path, text: str, name: str = "map.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_maps_load_and_name_only_real_roles_the_model_has(name: str) -> None:
    label, model_path, pm = resolve_model(name, None)
    assert label == name and model_path.is_file()
    expected = {"it_power_kw", "cooling_power_kw", "facility_power_kw", "crah_fan_power_kw", "outdoor_drybulb_c",
                "outdoor_rh_pct", "outdoor_wetbulb_c", "supply_air_c", "rack_inlet_max_c", "rack_inlet_mean_c",
                "chillers_running"}
    assert expected <= set(pm.measurements)
    assert ("economizer_active" in pm.measurements) == (name == "2zone")
    assert set(pm.setpoints) == {"supply_air_sp_c"}
    assert not {"chw_supply_c", "cw_supply_c", "chw_supply_sp_c", "cw_supply_sp_c"} & set(pm.measurements)
    doc = upgrade(load_model(model_path), label)
    check_map_against_model(doc, pm, label, own_controls=False, known=None)


def test_shipped_models_are_25_2_and_the_crac_coil_field_is_fixed() -> None:
    _, path, _ = resolve_model("crac", None)
    doc = load_model(path)
    assert doc["Version"]["Version 1"]["version_identifier"] == "25.2"
    coil = doc["Coil:Cooling:DX:SingleSpeed"]["Main Cooling Coil 1"]
    assert "zone_name_for_condenser_placement" not in coil
    assert coil["report_ashrae_standard_127_performance_ratings"] == "Yes"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[measurements.outdoor_rh_pct]", "[measurements.outdoor_humidity]",
         "measurement role 'outdoor_humidity': not a measurement role"),
        ('combine = "max"', 'combine = "median"', "field 'combine' must be one of"),
        ('sources = [{ meter = "Fans:Electricity" }]', 'sources = [{ meter = "Fans:Electricity", key = "x" }]',
         "field 'key' goes with 'variable'"),
        ("[measurements.crah_fan_power_kw]   # the air-handler supply fans\nconvert = \"J_per_step_to_kW\"",
         "[measurements.crah_fan_power_kw]\nconvert = \"W_to_kW\"", "a meter reports J per timestep"),
        ("initial_c = 18.0", "initial_c = 80.0", "field 'initial_c' must be a number in [5, 40]"),
        ('{ type = "SetpointManager:SingleZone:Cooling", name = "System Setpoint manager" }',
         '{ type = "Schedule:Compact", name = "System Setpoint manager" }', "must be a SetpointManager:* object"),
        ('other = ["ITE-UPS', 'others = ["ITE-UPS', "energy: unknown field 'others'"),
    ],
)
def test_a_bad_map_is_one_clear_error_naming_file_role_and_field(tmp_path: Path, old: str, new: str,
                                                                 message: str) -> None:
    assert old in GOOD_2ZONE
    path = _write(tmp_path, GOOD_2ZONE.replace(old, new, 1))
    with pytest.raises(ValueError, match=r"point map .*map\.toml: ") as err:
        load_point_map(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_map_without_it_power_or_not_toml_is_refused(tmp_path: Path) -> None:
    start = GOOD_2ZONE.index("[measurements.it_power_kw]")
    end = GOOD_2ZONE.index("[measurements.cooling_power_kw]")
    with pytest.raises(ValueError, match="measurement role 'it_power_kw': missing"):
        load_point_map(_write(tmp_path, GOOD_2ZONE[:start] + GOOD_2ZONE[end:]))
    with pytest.raises(ValueError, match="not valid TOML"):
        load_point_map(_write(tmp_path, "[map\nmodel = 1"))
    with pytest.raises(ValueError, match="no such file"):
        load_point_map(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('key = "EastDataCenter_Equip" }', 'key = "NorthDataCenter_Equip" }',
         "model 2zone: point map role 'rack_inlet_max_c': no output variable 'ITE Air Inlet Dry-Bulb "
         "Temperature' for key 'NorthDataCenter_Equip'"),
        ('other = ["ITE-UPS:', 'other = ["ITE-UPZ:',
         "model 2zone: point map energy 'other': no meter 'ITE-UPZ:InteriorEquipment:Electricity'"),
        ('name = "East System Setpoint manager"', 'name = "North System Setpoint manager"',
         "model 2zone: point map setpoint role 'supply_air_sp_c': no SetpointManager:SingleZone:Cooling named "
         "'North System Setpoint manager'"),
    ],
)
def test_a_map_naming_what_the_model_lacks_fails_before_any_run(tmp_path: Path, old: str, new: str,
                                                                message: str) -> None:
    assert old in GOOD_2ZONE
    pm = load_point_map(_write(tmp_path, GOOD_2ZONE.replace(old, new, 1)))
    _, model_path, _ = resolve_model("2zone", None)
    doc = upgrade(load_model(model_path), "2zone")
    with pytest.raises(ValueError) as err:
        check_map_against_model(doc, pm, "2zone", own_controls=False, known=None)
    assert message in str(err.value)


def test_preparation_replaces_the_supply_air_managers_by_a_scheduled_one_on_the_same_nodes() -> None:
    label, path, pm = resolve_model("2zone", None)
    doc = load_model(path)
    before = copy.deepcopy(doc)
    out = prepare_model(doc, pm, label=label, first_day=date(2023, 12, 31), last_day=date(2024, 1, 2),
                        own_controls=False)
    assert doc == before  # pure: the input is untouched
    assert "SetpointManager:SingleZone:Cooling" not in out
    scheduled = {v["setpoint_node_or_nodelist_name"]: v["schedule_name"]
                 for v in out["SetpointManager:Scheduled"].values()}
    assert scheduled["East Sys Setpoint nodes"] == scheduled["West Sys Setpoint nodes"] == "CoolPilot Supply Air Setpoint"
    assert out["Schedule:Constant"]["CoolPilot Supply Air Setpoint"]["hourly_value"] == 18.0
    assert set(out["SetpointManager:MixedAir"]) == set(doc["SetpointManager:MixedAir"])  # economiser kept
    assert out["Timestep"]["Timestep 1"]["number_of_timesteps_per_hour"] == 12
    (period,) = out["RunPeriod"].values()
    assert (period["begin_year"], period["end_year"], period["end_month"], period["end_day_of_month"]) == (
        2023, 2024, 1, 2)
    assert "day_of_week_for_start_day" not in period
    assert "Output:EnergyManagementSystem" not in out and "Output:SQLite" not in out
    requested = {(v["variable_name"], v["key_value"]) for v in out["Output:Variable"].values()}
    assert ("ITE Air Inlet Dry-Bulb Temperature", "WestDataCenter_Equip") in requested
    own = prepare_model(doc, pm, label=label, first_day=date(2023, 7, 1), last_day=date(2023, 7, 2),
                        own_controls=True)
    assert own["SetpointManager:SingleZone:Cooling"] == doc["SetpointManager:SingleZone:Cooling"]
    assert "CoolPilot Supply Air Setpoint" not in own.get("Schedule:Constant", {})


def test_an_old_model_version_is_refused_with_the_way_out() -> None:
    with pytest.raises(ValueError, match=r"model old: EnergyPlus version 9\.6.*IDFVersionUpdater"):
        upgrade({"Version": {"Version 1": {"version_identifier": "9.6"}}}, "old")


def test_readings_combine_sources_as_the_map_says() -> None:
    _, _, pm = resolve_model("2zone", None)
    rack = pm.measurements["rack_inlet_mean_c"]
    assert combine(rack, [20.0, 30.0], [1.0, 3.0], 300.0) == pytest.approx(27.5)
    assert combine(rack, [20.0, 30.0], [0.0, 0.0], 300.0) == pytest.approx(25.0)  # no flow: plain mean
    assert math.isnan(combine(rack, [20.0, math.nan], [1.0, 1.0], 300.0))
    assert combine(pm.measurements["chillers_running"], [0.0, 812.0], [], 300.0) == 1.0
    assert combine(pm.measurements["it_power_kw"], [3.0e6, 1.5e6], [], 300.0) == pytest.approx(15.0)
    reader = RoleReader(pm)
    raw = [1.0] * reader.width
    out = reader.read(raw, 300.0)
    assert set(out) == set(pm.measurements)
    assert reader.energy_j(raw)["other"] == 3.0  # three meters of 1 J
    for role, value in out.items():
        assert math.isfinite(value), role
        assert ROLES[role].unit in ("kW", "C", "%", "fraction", "count")


def test_weather_names_match_the_twin_and_bad_files_are_one_clear_error(tmp_path: Path) -> None:
    assert set(SHIPPED_WEATHER) == {"leesburg", "dallas", "chicago", "san_jose"}
    header = read_header(resolve_weather("leesburg"))
    assert header.utc_offset_h == -5.0 and "Leesburg" in header.city
    with pytest.raises(ValueError, match=r"weather .*nowhere\.epw: no such file"):
        resolve_weather(tmp_path / "nowhere.epw")
    with pytest.raises(ValueError, match="not a shipped climate"):
        resolve_weather("atlantis")
    junk = _write(tmp_path, "hello,world\n" * 20, "junk.epw")
    with pytest.raises(ValueError, match=r"weather .*junk\.epw: not an EPW file"):
        read_header(junk)


def test_a_leap_day_is_added_to_a_typical_year_when_the_run_needs_it() -> None:
    rows = [f"1999,2,28,{h},60,x\n" for h in range(1, 25)] + [f"1999,3,1,{h},60,x\n" for h in range(1, 25)]
    head = ["LOCATION,a\n", "b\n", "c\n", "d\n", "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0\n", "e\n", "f\n", "g\n"]
    out = with_leap_day(head + rows)
    assert out[4].startswith("HOLIDAYS/DAYLIGHT SAVINGS,Yes,")
    dates = [tuple(r.split(",")[1:4]) for r in out[8:]]
    assert dates[24:48] == [("2", "29", str(h)) for h in range(1, 25)]
    assert len(out) == 8 + 72 and with_leap_day(out) == out
    assert _has_leap_day(date(2024, 2, 28), date(2024, 3, 1))
    assert not _has_leap_day(date(2023, 2, 28), date(2023, 3, 1))
