"""The BACnet series: operator overrides, releases, heartbeat and poll health.

Why separate from ``CoolpilotMetrics``: they exist only where a site talks BACnet, and
their label sets (setpoint roles, a few operations) are bounded here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from db.roles import SETPOINT_ROLES

OPERATIONS: tuple[str, ...] = ("write", "release", "heartbeat", "poll")


class BacnetMetrics:
    """Registered on the caller's ``registry`` (the daemon's, so one scrape shows all)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.override_active = Gauge(
            "coolpilot_bacnet_override_active", "1 while a higher BACnet priority than CoolPilot's holds the point",
            labelnames=("role",), registry=registry)
        self.overrides = Counter(
            "coolpilot_bacnet_overrides", "Writes that found an operator or BMS override at a higher priority",
            labelnames=("role",), registry=registry)
        self.releases = Counter(
            "coolpilot_bacnet_releases", "Hand-backs: CoolPilot's priority relinquished on every setpoint",
            registry=registry)
        self.heartbeat_ts = Gauge(
            "coolpilot_bacnet_heartbeat_timestamp_seconds", "When the heartbeat object was last written [s since epoch]",
            registry=registry)
        self.errors = Counter(
            "coolpilot_bacnet_errors", "BACnet requests that failed after retries, by operation",
            labelnames=("operation",), registry=registry)
        for role in SETPOINT_ROLES:
            self.override_active.labels(role=role).set(0.0)
            self.overrides.labels(role=role)
        for op in OPERATIONS:
            self.errors.labels(operation=op)

    def override(self, role: str, active: bool) -> None:
        """One write's finding for ``role``: held by a higher priority or not."""
        if role not in SETPOINT_ROLES:
            return
        self.override_active.labels(role=role).set(1.0 if active else 0.0)
        if active:
            self.overrides.labels(role=role).inc()

    def error(self, operation: str) -> None:
        if operation in OPERATIONS:
            self.errors.labels(operation=operation).inc()
