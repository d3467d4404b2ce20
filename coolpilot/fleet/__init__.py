"""A fleet of halls: heavy work (retraining, evaluation sweeps) fanned out on Ray or run in turn."""
