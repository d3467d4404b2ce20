"""A synchronous BACnet/IP client: one bacpypes3 application on its own event-loop thread.

Why this shape: bacpypes3 is asyncio and the daemon is synchronous (scheduler
threads). One client object owns one loop in one daemon thread; every call submits a
coroutine with ``asyncio.run_coroutine_threadsafe`` and waits with a deadline, and
``close`` stops the loop and frees the UDP port. Every device, network or protocol
problem surfaces as ``BacnetError`` (bacpypes3's own errors derive from
BaseException, so they must never escape into the daemon unconverted).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from controller.config_bacnet import BacnetPoint, check_address, host_port

T = TypeVar("T")


class BacnetError(Exception):
    """A BACnet request failed: no response, an error/reject/abort, or a bad value."""


class BacnetUnreachable(BacnetError):
    """The device did not answer at all (its other objects will not answer either)."""


@dataclass(frozen=True)
class Slot:
    """One occupied slot of a priority array: ``priority`` 1..16 and its ``value``."""

    priority: int
    value: float


@dataclass(frozen=True)
class PointState:
    """A commandable point as read back: presentValue and the occupied priority slots."""

    present_value: float
    slots: tuple[Slot, ...]

    def active(self) -> Slot | None:
        """The slot in control (lowest number wins); None: relinquish default."""
        return min(self.slots, key=lambda s: s.priority, default=None)

    def at(self, priority: int) -> float | None:
        """The value held at ``priority``, or None when that slot is empty (NULL)."""
        return next((s.value for s in self.slots if s.priority == priority), None)


class BacnetClient:
    """CoolPilot's own BACnet device (``device_instance``) bound at ``local_address``.

    ``timeout_s``: the most one request may take end to end [s]; with bacpypes3's
    APDU timeout and retries it bounds how long a dead device stalls a cycle.
    """

    def __init__(self, local_address: str, *, device_instance: int, apdu_timeout_ms: int = 3000,
                 apdu_retries: int = 1, name: str = "coolpilot") -> None:
        check_address(local_address)
        _check_bind(local_address)
        self.local_address = local_address
        self.timeout_s = apdu_timeout_ms / 1000.0 * (apdu_retries + 1) + 1.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bacnet-client", daemon=True)
        self._thread.start()
        self._app: Any = None
        try:
            self._app = self._call(self._start(device_instance, apdu_timeout_ms, apdu_retries, name))
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self, instance: int, timeout_ms: int, retries: int, name: str) -> Any:
        from bacpypes3.app import Application
        from bacpypes3.local.device import DeviceObject
        from bacpypes3.local.networkport import NetworkPortObject

        device = DeviceObject(objectIdentifier=("device", instance), objectName=f"{name}-{instance}",
                              vendorIdentifier=999, apduTimeout=timeout_ms, numberOfApduRetries=retries)
        port = NetworkPortObject(self.local_address, objectIdentifier=("network-port", 1),
                                 objectName="NetworkPort-1")
        return Application.from_object_list([device, port])

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the client's loop; every failure becomes BacnetError."""
        if not self._loop.is_running():
            coro.close()
            raise BacnetError("the BACnet client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout_s or self.timeout_s)
        except FutureTimeout:
            future.cancel()
            raise BacnetUnreachable(f"no answer within {timeout_s or self.timeout_s:.1f} s") from None
        except BacnetError:
            raise
        except (Exception, BaseException) as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            silent = str(getattr(exc, "apduAbortRejectReason", "")) == "no-response"
            raise (BacnetUnreachable if silent else BacnetError)(_describe(exc)) from None

    def close(self) -> None:
        """Close the UDP socket and stop the loop thread (idempotent)."""
        app, self._app = self._app, None
        if app is not None and self._loop.is_running():
            async def _close() -> None:
                app.close()
            with contextlib.suppress(FutureTimeout, OSError, RuntimeError):
                asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=5.0)
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    # -- requests ------------------------------------------------------------------------
    def read(self, address: str, object_id: str, prop: str) -> Any:
        """One ReadProperty; the decoded value (bacpypes3 types)."""
        return self._call(self._read(address, object_id, prop))

    async def _read(self, address: str, object_id: str, prop: str) -> Any:
        from bacpypes3.pdu import Address
        from bacpypes3.primitivedata import ObjectIdentifier

        return await self._app.read_property(Address(address), ObjectIdentifier(object_id), prop)

    def read_value(self, address: str, point: BacnetPoint) -> float:
        """presentValue of ``point`` as a finite float (a NaN or a text is an error)."""
        return _finite(self.read(address, point.object_id, "present-value"), point)

    def read_state(self, address: str, point: BacnetPoint) -> PointState:
        """presentValue and priorityArray of a commandable point."""
        return self._call(self._read_state(address, point))

    async def _read_state(self, address: str, point: BacnetPoint) -> PointState:
        pv = await self._read(address, point.object_id, "present-value")
        array = await self._read(address, point.object_id, "priority-array")
        slots = []
        for number, entry in enumerate(array, start=1):
            if entry.null is None:
                slots.append(Slot(number, _finite(getattr(entry, entry._choice), point)))
        return PointState(_finite(pv, point), tuple(slots))

    def write_value(self, address: str, point: BacnetPoint, value: float | None, priority: int) -> None:
        """Write presentValue at ``priority``; ``None`` writes NULL (relinquishes that slot)."""
        self._call(self._write(address, point, value, priority))

    async def _write(self, address: str, point: BacnetPoint, value: float | None, priority: int) -> None:
        from bacpypes3.pdu import Address
        from bacpypes3.primitivedata import Null, ObjectIdentifier, Real

        data = Null(()) if value is None else Real(value)
        await self._app.write_property(Address(address), ObjectIdentifier(point.object_id), "present-value", data,
                                       priority=priority)

    def who_is(self, address: str | None, timeout_s: float) -> list[tuple[int, str]]:
        """Who-Is (to ``address`` or a global broadcast): (device instance, address) of each I-Am."""
        return self._call(self._who_is(address, timeout_s), timeout_s + self.timeout_s)

    async def _who_is(self, address: str | None, timeout_s: float) -> list[tuple[int, str]]:
        from bacpypes3.pdu import Address

        i_ams = await self._app.who_is(address=None if address is None else Address(address),
                                       timeout=max(1, math.ceil(timeout_s)))
        return sorted({(int(i.iAmDeviceIdentifier[1]), str(i.pduSource)) for i in i_ams})


def _check_bind(address: str) -> None:
    """Fail now, clearly, where the address is not this host's (bacpypes3 would retry forever, silently)."""
    host, port = host_port(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise BacnetError(f"cannot bind UDP {host}:{port}: {exc.strerror or exc}") from None


def _finite(value: Any, point: BacnetPoint) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BacnetError(f"{point}: presentValue {value!r} is not a number") from None
    if not math.isfinite(number):
        raise BacnetError(f"{point}: presentValue {number} is not finite")
    return number


def _describe(exc: BaseException) -> str:
    """A short reason for a failed request (bacpypes3 errors print their class and reason)."""
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
