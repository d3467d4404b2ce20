"""Load that does not repeat: the plant's utilisation is a seeded perturbation of the weekly trace."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from simulator.config import LoadVariation, PlantConfig
from simulator.drivers import load_workload
from simulator.load import HOURS_PER_WEEK, perturb_utilisation
from simulator.plant_sim import make_plant

TRACE = load_workload()
WEEKS = len(TRACE) // HOURS_PER_WEEK


def test_the_shipped_trace_repeats_itself_exactly() -> None:
    # Why the perturbation exists: hour i and hour i + 168 of the trace are identical.
    assert np.abs(TRACE[HOURS_PER_WEEK:] - TRACE[:-HOURS_PER_WEEK]).max() == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_perturbed_weeks_differ_and_the_level_stays_within_its_documented_bounds(seed: int) -> None:
    v = LoadVariation()
    u = perturb_utilisation(TRACE, seed, v)
    assert u.shape == TRACE.shape
    assert ((u >= 0.0) & (u <= 1.0)).all()
    week_apart = np.abs(u[HOURS_PER_WEEK:] - u[:-HOURS_PER_WEEK])
    assert (week_apart > 1e-6).mean() > 0.99  # (almost) every hour differs from the same hour a week later
    assert abs(u.mean() / TRACE.mean() - 1.0) < 0.06  # the year's mean level: within 6 %
    weekly = u[: WEEKS * HOURS_PER_WEEK].reshape(WEEKS, -1).mean(axis=1)
    trace_weekly = TRACE[: WEEKS * HOURS_PER_WEEK].reshape(WEEKS, -1).mean(axis=1)
    ratio = weekly / trace_weekly
    # Every week within the level bound (1 +/- max_level_change, noise averaged out) ...
    assert ratio.min() > 1.0 - v.max_level_change - 0.02 and ratio.max() < 1.0 + v.max_level_change + 0.02
    # ... and the weeks really move: day-to-day levels and deployments of a realistic size.
    assert 0.02 < ratio.std() < 0.12
    assert 0.01 < float(np.abs(u - TRACE).mean()) < 0.06


def test_same_seed_same_series_other_seed_other_series_and_disabled_is_the_trace() -> None:
    v = LoadVariation()
    assert np.array_equal(perturb_utilisation(TRACE, 7, v), perturb_utilisation(TRACE, 7, v))
    assert not np.allclose(perturb_utilisation(TRACE, 7, v), perturb_utilisation(TRACE, 8, v))
    assert np.array_equal(perturb_utilisation(TRACE, 7, replace(v, enabled=False)), TRACE)


def test_the_plant_is_driven_by_the_perturbed_trace_seeded_by_its_seed() -> None:
    start = datetime(2023, 3, 1, tzinfo=UTC)
    plant = make_plant(start=start, seed=0)
    hours = [start + timedelta(hours=h) for h in range(HOURS_PER_WEEK)]
    now = np.array([plant.utilisation_at(t) for t in hours])
    later = np.array([plant.utilisation_at(t + timedelta(hours=HOURS_PER_WEEK)) for t in hours])
    assert (np.abs(now - later) > 1e-6).all()
    again = make_plant(start=start, seed=0)
    other = make_plant(start=start, seed=1)
    assert [again.utilisation_at(t) for t in hours] == now.tolist()
    assert [other.utilisation_at(t) for t in hours] != now.tolist()
    steady = make_plant(start=start, seed=0, config=PlantConfig(load=LoadVariation(enabled=False)))
    assert steady.utilisation_at(hours[5]) == steady.utilisation_at(hours[5] + timedelta(hours=HOURS_PER_WEEK))


def test_a_bad_load_variation_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"load\.hourly_noise_correlation"):
        PlantConfig(load=LoadVariation(hourly_noise_correlation=1.0))
    with pytest.raises(ValueError, match=r"load\.deployment_step_min"):
        PlantConfig(load=LoadVariation(deployment_step_min=0.2, deployment_step_max=0.1))
