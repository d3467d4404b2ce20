"""BACnet/IP: client thread, actuator (priority write, read-back, relinquish), poller, heartbeat, discovery."""
