"""Packaged driver data (compact weather years and the utilisation trace); see README.md."""
