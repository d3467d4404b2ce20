"""Closed loops around a `simulator.plant.Plant`: the simulator bridge, history generation and the oracle."""
