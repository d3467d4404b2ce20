"""The decision core (pure: quality, candidates, optimiser, selection, safety, rules, decision, explain, cycle); the runtime in `controller.service`."""
