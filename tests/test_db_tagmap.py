"""Tag maps: loading TOML/CSV, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.roles import ROLES
from db.tagmap import TagMap, TagMapError, check_unit, normalise_unit

DATA = Path(__file__).resolve().parent / "data"


def test_example_maps_agree() -> None:
    toml_map, csv_map = TagMap.load(DATA / "tagmap.toml"), TagMap.load(DATA / "tagmap.csv")
    assert {t: e.role for t, e in toml_map.entries.items()} == {t: e.role for t, e in csv_map.entries.items()}
    assert toml_map.ignored == csv_map.ignored == {"DC1.AHU01.FILTER_DP"}
    assert toml_map.role_for("DC1.CHW.SUP_T") == "chw_supply_c"
    assert toml_map.role_for("DC1.AHU01.FILTER_DP") is None
    assert toml_map.tags_for("supply_air_c") == ["DC1.AHU01.SAT"]


def test_identity_maps_every_role_to_itself() -> None:
    identity = TagMap.identity()
    assert all(identity.role_for(name) == name for name in ROLES)
    with pytest.raises(KeyError, match="unknown tag 'CHW-ST'"):
        identity.role_for("CHW-ST")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.toml", '[tags]\n"A" = "chw_supply_c"\n"B" = "chw_suply_c"\n', r"m\.toml:3: unknown role 'chw_suply_c'"),
        ("m.toml", '[tags]\n"A" = { role = "chw_supply_c", unit = "F" }\n', r"m\.toml:2: tag 'A': unit 'F' does not match"),
        ("m.toml", '[tags]\nA = "chw_supply_c"\nB = "chw_supply_c"\n', r"m\.toml:3: tag 'B' maps to role chw_supply_c"),
        ("m.toml", "[tags\n", r"m\.toml: invalid TOML"),
        ("m.toml", 'tagz = 1\n', r"m\.toml: unknown key"),
        ("m.csv", "tag,role\nA,chw_supply_c\nA,supply_air_c\n", r"m\.csv:3: field 'tag': tag 'A' is listed twice"),
        ("m.csv", "tag,role\nA,chw_supply_c,C\n", r"m\.csv:2: expected 2 fields"),
        ("m.csv", "name,role\nA,chw_supply_c\n", r"m\.csv:1: header must be"),
        ("m.csv", "tag,role,unit\nA,it_power_kw,MW\n", r"m\.csv:2: tag 'A': unit 'MW' does not match role it_power_kw"),
        ("m.yaml", "A: chw_supply_c\n", r"m\.yaml: tag map must be a \.toml or \.csv file"),
    ],
)
def test_bad_tag_maps_name_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TagMapError, match=message):
        TagMap.load(path)


def test_unit_aliases() -> None:
    assert normalise_unit(" degC ") == "C" and normalise_unit("KW") == "kW" and normalise_unit("pct") == "%"
    assert check_unit("supply_air_c", "°C") is None
    assert "never converts" in (check_unit("supply_air_c", "degF") or "")
