"""A small simulated BMS: a real bacpypes3 BACnet/IP device on a loopback UDP port.

It serves commandable analog values (priority array, relinquish default) for the
setpoints and the heartbeat and plain analog values for measurements, on its own
event loop in a thread. ``stop`` takes it off the network (the port closes, requests
time out) and ``start`` brings it back on the same port with the same objects and
priority arrays, like a controller that reboots with retained commands.

``operator_write`` commands a slot locally (the BMS's own HMI at priority 8).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from bacpypes3.app import Application
from bacpypes3.basetypes import PriorityValue
from bacpypes3.local.analog import AnalogValueObject, AnalogValueObjectCmd
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject

from controller.config_bacnet import BacnetSettings


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """True when no socket holds 127.0.0.1:``port`` (a probe without SO_REUSEPORT cannot bind it then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout_s`` (no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def _status() -> dict[str, Any]:
    return {"statusFlags": [0, 0, 0, 0], "eventState": "normal", "outOfService": False, "units": "noUnits"}


class SimulatedBms:
    """Device ``instance`` on 127.0.0.1:``port``; ``commandable`` and ``measured``: name -> (instance, value)."""

    def __init__(self, instance: int, port: int, commandable: Mapping[str, tuple[int, float]],
                 measured: Mapping[str, tuple[int, float]]) -> None:
        self.instance, self.port = instance, port
        self.address = f"127.0.0.1:{port}"
        self.objects: dict[str, Any] = {}
        for name, (inst, value) in commandable.items():
            self.objects[name] = AnalogValueObjectCmd(objectIdentifier=("analog-value", inst), objectName=name,
                                                      presentValue=value, relinquishDefault=value, **_status())
        for name, (inst, value) in measured.items():
            self.objects[name] = AnalogValueObject(objectIdentifier=("analog-value", inst), objectName=name,
                                                   presentValue=value, **_status())
        self.device = DeviceObject(objectIdentifier=("device", instance), objectName=f"bms-{instance}",
                                   vendorIdentifier=999)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"bms-{instance}", daemon=True)
        self._thread.start()
        self._app: Any = None

    def _run(self, func: Callable[[], Any]) -> Any:
        """Run ``func`` on the device's loop (bacpypes3 objects belong to it)."""
        done: Future[Any] = Future()

        def call() -> None:
            try:
                done.set_result(func())
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return done.result(timeout=10.0)

    @property
    def online(self) -> bool:
        return self._app is not None

    def start(self) -> None:
        """Bind the port and answer requests (again, after ``stop``)."""
        def build() -> Any:
            port = NetworkPortObject(f"127.0.0.1/32:{self.port}", objectIdentifier=("network-port", 1),
                                     objectName="NetworkPort-1")
            self.device._app = None
            return Application.from_object_list([self.device, port, *self.objects.values()])

        self._app = self._run(build)
        wait_for(lambda: not port_free(self.port), what=f"the BMS to bind 127.0.0.1:{self.port}")  # binds in a task

    def stop(self) -> None:
        """Go off the network: close the socket; objects and priority arrays are kept."""
        app, self._app = self._app, None
        if app is not None:
            self._run(app.close)
            wait_for(lambda: port_free(self.port), what=f"the BMS to free 127.0.0.1:{self.port}")

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        self._loop.close()

    # -- the BMS's side ------------------------------------------------------------------
    def value(self, name: str) -> float:
        return float(self._run(lambda: self.objects[name].presentValue))

    def slot(self, name: str, priority: int) -> float | None:
        """The value at ``priority`` (1..16), None when NULL."""
        def read() -> float | None:
            entry = self.objects[name].priorityArray[priority - 1]
            return None if entry.null is not None else float(getattr(entry, entry._choice))

        return self._run(read)  # type: ignore[no-any-return]

    def operator_write(self, name: str, value: float | None, priority: int = 8) -> None:
        """The operator commands (or, with None, releases) a slot at the BMS itself."""
        def write() -> None:
            entry = PriorityValue(null=()) if value is None else PriorityValue(real=value)
            self.objects[name].priorityArray[priority - 1] = entry

        self._run(write)

    def set_measured(self, values: Mapping[str, float]) -> None:
        """Update measurement objects (the plant's sensors)."""
        def write() -> None:
            for name, v in values.items():
                self.objects[name].presentValue = float(v)

        self._run(write)


def make_bms(measured: Mapping[str, float] | None = None, *, instance: int = 1001,
             setpoints: Mapping[str, float] | None = None) -> SimulatedBms:
    """A started BMS with setpoint objects (instances 1..), a heartbeat (100) and measurements (200..)."""
    sps = dict(setpoints or {"chw_supply_sp_c": 7.0, "supply_air_sp_c": 18.0, "cw_supply_sp_c": 29.0})
    commandable = {name: (i, v) for i, (name, v) in enumerate(sps.items(), start=1)}
    commandable["heartbeat"] = (100, 0.0)
    meas = {name: (200 + i, v) for i, (name, v) in enumerate((measured or {}).items())}
    bms = SimulatedBms(instance, free_udp_port(), commandable, meas)
    bms.start()
    return bms


def bacnet_toml(bms: SimulatedBms, *, local_port: int, measured: tuple[str, ...] = (), priority: int = 12,
                heartbeat: bool = True, setpoints: tuple[str, ...] = ("chw_supply_sp_c", "supply_air_sp_c",
                                                                     "cw_supply_sp_c")) -> str:
    """The ``[bacnet]`` section of a config pointing at ``bms``.

    APDU timeout 0.8 s with one retry: short for the outage tests, long enough for a loaded CI host.
    """
    lines = ["[bacnet]", f'local_address = "127.0.0.1:{local_port}"', "apdu_timeout_ms = 800",
             "apdu_retries = 1", f"priority = {priority}", "poll_retries = 2", "poll_backoff_s = 0.0",
             "[bacnet.devices]", f'{bms.instance} = "{bms.address}"']
    for role in (*setpoints, *measured):
        instance = int(bms.objects[role].objectIdentifier[1])
        lines += [f"[bacnet.points.{role}]", f"device = {bms.instance}", f"instance = {instance}"]
    if heartbeat:
        lines += ["[bacnet.heartbeat]", f"device = {bms.instance}", "instance = 100"]
    return "\n".join(lines) + "\n"


def client_settings(bms: SimulatedBms, measured: tuple[str, ...] = ()) -> BacnetSettings:
    """The ``[bacnet]`` settings of a config that talks to ``bms`` from a free local port."""
    from controller.config import parse_config

    cfg = parse_config(bacnet_toml(bms, local_port=free_udp_port(), measured=measured))
    assert cfg.bacnet is not None
    return cfg.bacnet
