"""Assembling the BACnet parts from ``[bacnet]``: one client, the actuator, the cycle hooks.

Why one place: the actuator, the poller and the heartbeat share one client (one UDP
port, one event-loop thread), and whoever closes the actuator closes that client.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from controller.config_bacnet import BacnetSettings
from controller.service.bacnet.actuator import BacnetActuator
from controller.service.bacnet.client import BacnetClient, BacnetError
from controller.service.bacnet.metrics import BacnetMetrics
from controller.service.bacnet.poller import BacnetHeartbeat, BacnetPoller
from controller.service.daemon import CycleHook


def open_client(settings: BacnetSettings) -> BacnetClient:
    """CoolPilot's BACnet device at ``local_address``; binds the UDP port now (OSError if it cannot)."""
    try:
        return BacnetClient(settings.local_address, device_instance=settings.local_device_instance,
                            apdu_timeout_ms=settings.apdu_timeout_ms, apdu_retries=settings.apdu_retries)
    except BacnetError as exc:
        raise OSError(f"bacnet.local_address: cannot bind BACnet/IP at {settings.local_address}: {exc}") from None


def open_bacnet_actuator(settings: BacnetSettings, site: str, *, engine: sa.Engine | None,
                         mode: Callable[[], str] | None = None, registry: CollectorRegistry | None = None,
                         retries: int = 3, backoff_s: float = 1.0) -> BacnetActuator:
    """A ``BacnetActuator`` owning a fresh client; ``close()`` on the actuator closes it."""
    client = open_client(settings)
    return BacnetActuator(client, settings, site, engine=engine,
                          metrics=None if registry is None else BacnetMetrics(registry),
                          mode=mode or (lambda: "auto"), retries=retries, backoff_s=backoff_s, close=client.close)


def cycle_hooks(actuator: BacnetActuator, engine: sa.Engine, site: str, *,
                clock: Callable[[], datetime]) -> tuple[CycleHook, ...]:
    """The poller (when ``poll`` and points are set) and the heartbeat (when configured)."""
    settings = actuator.settings
    if not isinstance(actuator.io, BacnetClient):
        raise TypeError("cycle_hooks needs an actuator built on a BacnetClient")
    hooks: list[CycleHook] = []
    if settings.poll and settings.points:
        hooks.append(BacnetPoller(actuator.io, settings, engine, site, clock=clock, metrics=actuator.metrics))
    if settings.heartbeat is not None:
        hooks.append(BacnetHeartbeat(actuator.io, settings, metrics=actuator.metrics))
    return tuple(hooks)
