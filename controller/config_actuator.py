"""Config of how setpoints leave CoolPilot: the ``[actuator]`` section and its ``[actuator.mqtt]`` part.

(``[bacnet]`` has its own module, ``controller.config_bacnet``.)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from controller.config_base import StrictSettings as _Strict


class MqttSettings(_Strict):
    """MQTT actuator: one retained QoS-1 message per setpoint on ``topic`` ({site_id}, {role})."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic: str = "coolpilot/{site_id}/setpoints/{role}"
    qos: int = Field(default=1, ge=0, le=2)  # not Literal[0, 1, 2]: strict mode let `qos = true` pass as 1
    retain: bool = True
    client_id: str = ""
    username: str | None = None
    password_env: str | None = None
    ack_timeout_s: float = Field(default=5.0, gt=0.0, le=120.0)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if "{role}" not in value:
            raise ValueError("topic must contain {role} so that each setpoint has its own topic")
        if any(c in value for c in "#+"):
            raise ValueError("topic must not contain MQTT wildcards # or +")
        try:
            value.format(site_id="s", role="r")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:  # '{site_id.x}': AttributeError
            raise ValueError(f"topic may use only {{site_id}} and {{role}}: {exc}") from None
        return value


class ActuatorSettings(_Strict):
    """How setpoints leave: ``db`` rows in the setpoint-command table, ``mqtt``, ``bacnet`` (``[bacnet]``), or ``none``."""

    kind: Literal["db", "mqtt", "bacnet", "none"] = "db"
    retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_s: float = Field(default=1.0, ge=0.0, le=60.0)
    mqtt: MqttSettings = MqttSettings()
