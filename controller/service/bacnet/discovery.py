"""Discovery: find BACnet devices (Who-Is) and list their objects, to help write a point map.

Why: a site's BMS may hold thousands of objects; the engineer writing ``[bacnet.points]``
needs each object's type, instance and name, read from the device itself rather than
from a points list that may be out of date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from controller.service.bacnet.client import BacnetError


class Discoverer(Protocol):
    def who_is(self, address: str | None, timeout_s: float) -> list[tuple[int, str]]: ...

    def read(self, address: str, object_id: str, prop: str) -> Any: ...


@dataclass(frozen=True)
class FoundObject:
    object: str  # e.g. analog-value
    instance: int
    name: str


@dataclass(frozen=True)
class FoundDevice:
    instance: int
    address: str
    objects: tuple[FoundObject, ...]
    error: str | None = None  # why the object list could not be read (the device still answered)


def discover(client: Discoverer, address: str | None = None, *, timeout_s: float = 3.0) -> list[FoundDevice]:
    """Who-Is to ``address`` (None: broadcast), then each device's object list and names."""
    found = []
    for instance, where in client.who_is(address, timeout_s):
        try:
            objects = tuple(_objects(client, where, instance))
        except BacnetError as exc:
            found.append(FoundDevice(instance, where, (), error=str(exc)))
            continue
        found.append(FoundDevice(instance, where, objects))
    return found


def _objects(client: Discoverer, address: str, instance: int) -> list[FoundObject]:
    listed = client.read(address, f"device,{instance}", "object-list")
    objects = []
    for object_type, number in listed:
        kind = str(object_type)
        if kind in ("device", "network-port"):
            continue
        name = client.read(address, f"{kind},{int(number)}", "object-name")
        objects.append(FoundObject(kind, int(number), str(name)))
    return objects
