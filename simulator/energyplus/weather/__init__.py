"""Package data: weather for the EnergyPlus plant (a package so that setuptools ships it)."""
