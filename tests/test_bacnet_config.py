"""The ``[bacnet]`` point map: validated on load, errors name the line and field (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import ConfigError, parse_config
from controller.config_bacnet import BacnetPoint, BacnetSettings, check_address
from coolpilot.cli import main

GOOD = """
[actuator]
kind = "bacnet"
[bacnet]
local_address = "10.0.0.9/24:47808"
priority = 12
[bacnet.devices]
1001 = "10.0.0.5:47808"
[bacnet.points.chw_supply_sp_c]
device = 1001
instance = 1
[bacnet.points.supply_air_sp_c]
device = 1001
object = "analog-output"
instance = 2
[bacnet.points.cw_supply_sp_c]
device = 1001
instance = 3
[bacnet.points.it_power_kw]
device = 1001
object = "analog-input"
instance = 7
[bacnet.heartbeat]
device = 1001
instance = 100
"""


def test_a_full_point_map_loads() -> None:
    cfg = parse_config(GOOD)
    assert cfg.actuator.kind == "bacnet" and cfg.bacnet is not None
    assert cfg.bacnet.points["supply_air_sp_c"] == BacnetPoint(device=1001, object="analog-output", instance=2)
    assert cfg.bacnet.points["it_power_kw"].object_id == "analog-input,7"
    assert cfg.bacnet.address(cfg.bacnet.points["chw_supply_sp_c"]) == "10.0.0.5:47808"


@pytest.mark.parametrize(("old", "new", "field", "words"), [
    ("[bacnet.points.it_power_kw]", "[bacnet.points.it_power_mw]", "bacnet.points", "it_power_mw: unknown role"),
    ('object = "analog-output"', 'object = "analog-input"', "bacnet.points", "commandable"),
    ("priority = 12", "priority = 8", "bacnet.priority", "8 is not in 9..16: priorities 1..8 belong"),
    ('1001 = "10.0.0.5:47808"', '1002 = "10.0.0.5:47808"', "bacnet", "device 1001 has no address"),
    ('1001 = "10.0.0.5:47808"', '1001 = "10.0.0.500:47808"', "bacnet.devices", "devices.1001"),
    ('local_address = "10.0.0.9/24:47808"', 'local_address = "bms.local"', "bacnet.local_address",
     "not an IPv4 BACnet/IP address"),
    ("instance = 3", "instance = 4194303", "bacnet.points.cw_supply_sp_c.instance", "less than or equal"),
])
def test_a_bad_point_map_names_the_field(old: str, new: str, field: str, words: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as err:
        parse_config(GOOD.replace(old, new), "site.toml")
    assert err.value.field == field
    assert words in str(err.value)
    assert str(err.value).startswith("site.toml:")


def test_kind_bacnet_needs_a_point_for_every_controlled_setpoint() -> None:
    text = GOOD.replace("[bacnet.points.cw_supply_sp_c]\ndevice = 1001\ninstance = 3\n", "")
    with pytest.raises(ConfigError, match="no BACnet object for the controlled setpoint cw_supply_sp_c"):
        parse_config(text)
    with pytest.raises(ConfigError, match="needs a \\[bacnet\\] section"):
        parse_config('[actuator]\nkind = "bacnet"\n')
    only_two = text + '[control]\nsetpoints = ["chw_supply_sp_c", "supply_air_sp_c"]\n'
    assert parse_config(only_two).bacnet is not None


def test_addresses() -> None:
    for good in ("127.0.0.1", "127.0.0.1:47808", "10.1.2.3/24:47809"):
        assert check_address(good) == good
    for bad in ("127.0.0.1:0", "127.0.0.1/33:47808", "1.2.3:4", "[::1]:47808"):
        with pytest.raises(ValueError) as err:
            check_address(bad)
        assert repr(bad) in str(err.value)
    with pytest.raises(ValueError, match="priority"):
        BacnetSettings(priority=17)


def test_config_check_validates_the_point_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("priority = 12", "priority = 5"))
    for p in (good, bad):
        p.chmod(0o600)
    assert main(["config", "check", str(good)]) == 0
    assert main(["config", "check", str(bad)]) == 2
    assert f"{bad}:6: bacnet.priority: 5 is not in 9..16" in capsys.readouterr().err


def test_the_example_config_block_is_valid() -> None:
    """The commented ``[bacnet]`` example in deploy/config, uncommented, loads as it reads."""
    text = (Path(__file__).resolve().parents[1] / "deploy" / "config" / "coolpilot.example.toml").read_text()
    start = text.index("# [bacnet]")
    block = [line[2:] for line in text[start:].splitlines()]
    block = block[:next(i for i, line in enumerate(block) if line.startswith("instance = 100")) + 1]
    cfg = parse_config("\n".join(block) + "\n")
    assert cfg.bacnet is not None and cfg.bacnet.priority == 12
    assert cfg.bacnet.points["it_power_kw"].object == "analog-input"
    assert cfg.bacnet.heartbeat == BacnetPoint(device=1001, instance=100)
