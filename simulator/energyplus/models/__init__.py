"""Package data: models for the EnergyPlus plant (a package so that setuptools ships it)."""
