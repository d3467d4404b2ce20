"""The CoolPilot application: the command line, the daemon's wiring and the closed-loop harness.

It sits on top of the libraries and may import all of them; none of them imports it:

* `coolpilot.cli` and the ``*_cli`` modules: every ``coolpilot`` subcommand.
* `coolpilot.wiring`: ``build_parts``, the one place the daemon is assembled (``run``,
  ``demo``, the soak).
* `coolpilot.harness`: closed loops around a `simulator.plant.Plant` (history generation
  under rules with exploration, the simulator bridge, the oracle).
* `coolpilot.evaluation`: the closed-loop evaluation (run, KPIs, report).
* `coolpilot.demo` and `coolpilot.live_view`: the demo.
"""
