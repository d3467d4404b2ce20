"""Decisions, safety, fallback rules, config, daemon, metrics and the command line."""
