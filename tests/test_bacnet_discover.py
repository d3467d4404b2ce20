"""``coolpilot bacnet discover`` against a real bacpypes3 device on loopback."""

from __future__ import annotations

import json

import pytest

from coolpilot.cli import main
from tests._bacnet_device import free_udp_port, make_bms


def test_discover_lists_the_devices_objects(capsys: pytest.CaptureFixture[str]) -> None:
    bms = make_bms({"it_power_kw": 500.0})
    try:
        code = main(["bacnet", "discover", "--local", f"127.0.0.1:{free_udp_port()}", "--target", bms.address,
                     "--timeout", "1", "--json"])
    finally:
        bms.close()
    assert code == 0
    found = json.loads(capsys.readouterr().out)["devices"]
    assert [(d["instance"], d["address"], d["error"]) for d in found] == [(1001, bms.address, None)]
    objects = {(o["object"], o["instance"]): o["name"] for o in found[0]["objects"]}
    assert objects == {("analog-value", 1): "chw_supply_sp_c", ("analog-value", 2): "supply_air_sp_c",
                       ("analog-value", 3): "cw_supply_sp_c", ("analog-value", 100): "heartbeat",
                       ("analog-value", 200): "it_power_kw"}


def test_discover_explains_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bacnet", "discover", "--target", "bms.local:47808"]) == 2
    assert "'bms.local:47808' is not an IPv4 BACnet/IP address" in capsys.readouterr().err
    port = free_udp_port()
    assert main(["bacnet", "discover", "--local", f"127.0.0.1:{port}", "--target", f"127.0.0.1:{free_udp_port()}",
                 "--timeout", "0.2"]) == 1  # nobody there: says so, exit 1
    assert "no device answered" in capsys.readouterr().out


def test_an_address_that_is_not_this_hosts_is_refused_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """192.0.2.1 (TEST-NET-1) is never a local address: bacpypes3 would retry binding forever."""
    assert main(["bacnet", "discover", "--local", "192.0.2.1:47808", "--timeout", "0.2"]) == 2
    assert "cannot bind BACnet/IP at 192.0.2.1:47808: cannot bind UDP 192.0.2.1:47808" in capsys.readouterr().err
