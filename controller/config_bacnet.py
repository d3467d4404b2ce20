"""The ``[bacnet]`` config section: the site's BACnet/IP network, point map and priority.

Why its own module: the point map (role -> device, object type, instance) is checked
when the config loads (``coolpilot config check``), so that a typo in an object
instance stops the daemon with file, line and field instead of writing a setpoint to
the wrong object. The command priority is limited to 9..16 so that an operator at
priority 8 (manual operator) and everything above always wins over CoolPilot.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from controller.config_base import StrictSettings as _Strict
from db.roles import ROLES, SETPOINT_ROLES

#: The highest device/object instance BACnet allows (22 bits, 4194303 means "unset").
MAX_INSTANCE = 4194302
#: Object types CoolPilot reads; the first two are commandable (have a priority array).
ObjectType = Literal["analog-value", "analog-output", "analog-input"]
COMMANDABLE: tuple[str, ...] = ("analog-value", "analog-output")

_ADDRESS_RE = re.compile(r"^(?P<host>\d{1,3}(?:\.\d{1,3}){3})(?:/(?P<prefix>\d{1,2}))?(?::(?P<port>\d{1,5}))?$")


def check_address(value: str) -> str:
    """An IPv4 BACnet/IP address ``a.b.c.d[/prefix][:port]``; a clear error otherwise."""
    m = _ADDRESS_RE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not an IPv4 BACnet/IP address like 10.0.0.5:47808 or 10.0.0.9/24:47808")
    try:
        ipaddress.IPv4Address(m.group("host"))
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if m.group("prefix") is not None and not 0 <= int(m.group("prefix")) <= 32:
        raise ValueError(f"{value!r}: prefix length must be 0..32")
    if m.group("port") is not None and not 1 <= int(m.group("port")) <= 65535:
        raise ValueError(f"{value!r}: UDP port must be 1..65535")
    return value


def host_port(value: str, default_port: int = 47808) -> tuple[str, int]:
    """The IPv4 host and UDP port of a checked address (BACnet's 47808 when none is given)."""
    m = _ADDRESS_RE.match(check_address(value))
    assert m is not None  # check_address raised otherwise
    return m.group("host"), int(m.group("port") or default_port)




class BacnetPoint(_Strict):
    """One BACnet object: ``device`` instance, ``object`` type and ``instance``."""

    device: int = Field(ge=0, le=MAX_INSTANCE)
    object: ObjectType = "analog-value"
    instance: int = Field(ge=0, le=MAX_INSTANCE)

    @property
    def object_id(self) -> str:
        """bacpypes3's spelling, e.g. ``analog-value,3``."""
        return f"{self.object},{self.instance}"

    def __str__(self) -> str:
        return f"device {self.device} {self.object} {self.instance}"


class BacnetSettings(_Strict):
    """How CoolPilot talks to the site's BMS over BACnet/IP (see docs/deploy.md).

    ``local_address``: where CoolPilot's own BACnet device binds (loopback by default;
    a site names its BMS-facing interface, e.g. ``10.0.0.9/24:47808``).
    ``devices``: device instance (a TOML key, as text) -> its address.
    ``points``: role -> object; setpoint roles are written, every role is polled.
    ``heartbeat``: an analog value written every cycle with a rising counter.
    """

    local_address: str = "127.0.0.1:47808"
    local_device_instance: int = Field(default=4194300, ge=0, le=MAX_INSTANCE)
    apdu_timeout_ms: int = Field(default=3000, ge=50, le=60000)
    apdu_retries: int = Field(default=1, ge=0, le=5)
    priority: int = 12
    devices: dict[str, str] = Field(default_factory=dict)
    points: dict[str, BacnetPoint] = Field(default_factory=dict)
    heartbeat: BacnetPoint | None = None
    poll: bool = True
    poll_retries: int = Field(default=2, ge=0, le=10)
    poll_backoff_s: float = Field(default=0.5, ge=0.0, le=60.0)

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: int) -> int:
        if not 9 <= value <= 16:
            raise ValueError(f"{value} is not in 9..16: priorities 1..8 belong to life safety, critical equipment "
                             "and the manual operator, who must always win over a supervisory optimiser")
        return value

    @field_validator("local_address")
    @classmethod
    def _local(cls, value: str) -> str:
        return check_address(value)

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: dict[str, str]) -> dict[str, str]:
        for key, address in value.items():
            if not key.isdigit() or int(key) > MAX_INSTANCE:
                raise ValueError(f"devices.{key}: the key must be a device instance 0..{MAX_INSTANCE}")
            try:
                check_address(address)
            except ValueError as exc:
                raise ValueError(f"devices.{key}: {exc}") from None
        return value

    @field_validator("points")
    @classmethod
    def _points(cls, value: dict[str, BacnetPoint]) -> dict[str, BacnetPoint]:
        unknown = sorted(r for r in value if r not in ROLES)
        if unknown:
            raise ValueError(f"points.{unknown[0]}: unknown role; known: {', '.join(ROLES)}")
        for role, point in value.items():
            if role in SETPOINT_ROLES and point.object not in COMMANDABLE:
                raise ValueError(f"points.{role}.object: a setpoint needs a commandable object "
                                 f"({' or '.join(COMMANDABLE)}), not {point.object}")
        return value

    @model_validator(mode="after")
    def _known_devices(self) -> BacnetSettings:
        named = [(f"points.{r}", p) for r, p in self.points.items()]
        if self.heartbeat is not None:
            named.append(("heartbeat", self.heartbeat))
            if self.heartbeat.object not in COMMANDABLE:
                raise ValueError(f"heartbeat.object: must be {' or '.join(COMMANDABLE)}")
        for where, point in named:
            if str(point.device) not in self.devices:
                raise ValueError(f"{where}.device: device {point.device} has no address in [bacnet.devices]")
        return self

    def address(self, point: BacnetPoint) -> str:
        """The address of the device that holds ``point``."""
        return self.devices[str(point.device)]

    def measured(self) -> dict[str, BacnetPoint]:
        """Every mapped role, setpoints included (their presentValue is the applied setpoint)."""
        return dict(self.points)


def check_controlled(settings: BacnetSettings | None, controlled: Iterable[str]) -> None:
    """With ``actuator.kind = "bacnet"`` every controlled setpoint needs a point (raises ValueError)."""
    if settings is None:
        raise ValueError("actuator.kind: 'bacnet' needs a [bacnet] section (devices, points)")
    missing = [r for r in controlled if r not in settings.points]
    if missing:
        raise ValueError(f"bacnet.points: no BACnet object for the controlled setpoint {missing[0]}")
