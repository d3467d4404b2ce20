"""What the daemon's metrics say about health and energy, as an operator reads them.

Health timestamps are wall-clock time even when the plant's clock is elsewhere (the
demo runs in 2023, accelerated); a training run done before the daemon started
counts as one; PUE follows the facility meter where the site has one; the savings
estimate is signed and carries an interval.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.service.cycle_metrics import SavingsEstimate
from controller.service.daemon import PacedTrigger
from controller.service.retraining import TrainingOutcome
from tests._ctl_support import PhysicsForecaster
from tests._fault_rig import Rig, make_rig


@pytest.fixture
def rig(sqlite_engine: sa.Engine, tmp_path: Path) -> Rig:
    return make_rig(sqlite_engine, tmp_path)


def test_health_is_wall_clock_start_up_training_counts_and_pue_uses_the_meter(rig: Rig) -> None:
    daemon = rig.daemon(PacedTrigger(cycles_per_s=0, max_cycles=3), forecaster=PhysicsForecaster())
    daemon.record_training(TrainingOutcome(ok=True, duration_s=4.0, finished_ts_s=1_800_000_000.0, version="v1",
                                           promoted=True, cooling_power_mae_kw=2.5, rack_inlet_mae_c=0.12))
    before = time.time()
    assert daemon.run(install_signals=False) == 0
    after = time.time()
    last_cycle = rig.value("coolpilot_last_cycle_success_timestamp_seconds")
    assert before <= last_cycle <= after  # wall clock ...
    assert abs(last_cycle - rig.plant.now.timestamp()) > 86_400  # ... not the plant's clock
    assert rig.value("coolpilot_training_runs_total", result="success") == 1
    assert rig.value("coolpilot_last_training_success_timestamp_seconds") == 1_800_000_000.0
    assert rig.value("coolpilot_model_validation_cooling_power_mae_watts") == pytest.approx(2500.0)
    reading = rig.plant.read()
    it, cooling, facility = (reading[k] for k in ("it_power_kw", "cooling_power_kw", "facility_power_kw"))
    assert facility > it + cooling  # the twin meters other losses too
    assert rig.value("coolpilot_facility_power_metered") == 1
    pue = rig.value("coolpilot_pue_ratio")
    assert pue > (rig.value("coolpilot_it_power_watts") + rig.value("coolpilot_cooling_power_watts")) / rig.value(
        "coolpilot_it_power_watts")
    assert pue == pytest.approx(rig.value("coolpilot_facility_power_watts") / rig.value("coolpilot_it_power_watts"))


def test_savings_interval_holds_the_estimate_and_widens_with_both_forecasts() -> None:
    est = SavingsEstimate.of(100.0, 94.0, 107.0, 90.0, 82.0, 96.0)
    assert est.kw == pytest.approx(10.0)
    assert est.lo_kw == pytest.approx(10.0 - math.hypot(6.0, 6.0))
    assert est.hi_kw == pytest.approx(10.0 + math.hypot(7.0, 8.0))
    narrow = SavingsEstimate.of(100.0, 99.0, 101.0, 90.0, 89.0, 91.0)
    assert est.lo_kw < narrow.lo_kw < narrow.kw < narrow.hi_kw < est.hi_kw
    worse = SavingsEstimate.of(90.0, 85.0, 95.0, 100.0, 95.0, 105.0)
    assert worse.kw == pytest.approx(-10.0) and worse.lo_kw < -10.0 < worse.hi_kw  # negative, not clamped
