"""The runtime service: daemon, scheduler, systemd notify, config watch, actuators, recorder, retraining, forecast check, metrics."""
