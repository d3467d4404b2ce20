"""The unfamiliar-state watch: when a retraining is asked for, and how often."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from controller.decision import Decision
from controller.service.unfamiliar import UnfamiliarWatch, held_unfamiliar


def test_it_asks_once_the_model_fell_back_as_ood_in_enough_of_its_recent_cycles() -> None:
    watch = UnfamiliarWatch()
    cycles = [False, True, False, True, False, False]  # 2 held ood fallbacks of the last 6: not yet
    assert [watch.observe("v1", c, after=3) for c in cycles] == [None] * 6
    why = watch.observe("v1", True, after=3)  # 3 of the last 6
    assert why is not None and "model v1" in why and "3 of the last 6 cycles" in why
    assert watch.observe("v1", True, after=3) is None  # once per model version


def test_old_ood_cycles_leave_the_window_and_a_new_model_starts_a_fresh_count() -> None:
    watch = UnfamiliarWatch()
    for held in [True, True, False, False, False, False]:
        assert watch.observe("v1", held, after=3) is None
    assert watch.observe("v1", True, after=3) is None  # the first two have left the last 6
    for _ in range(2):
        assert watch.observe("v2", True, after=3) is None  # v1's cycles do not count for v2
    assert watch.observe("v2", True, after=3) is not None


def test_off_and_without_a_model_it_never_asks() -> None:
    watch = UnfamiliarWatch()
    assert all(watch.observe("v1", True, after=0) is None for _ in range(20))
    assert all(watch.observe(None, True, after=3) is None for _ in range(20))


def test_only_an_ood_fallback_that_held_setpoints_counts() -> None:
    base = Decision(ts=datetime(2024, 7, 1, tzinfo=UTC), site_id="s", mode="auto", outcome="fallback",
                    reason="rules (tuned): ...", previous={}, new={}, reason_code="ood")
    assert not held_unfamiliar(base)  # the rules in full take the plant back toward known ground
    assert held_unfamiliar(replace(base, fallback_held=("supply_air_sp_c",)))
    assert not held_unfamiliar(replace(base, reason_code="uncertain", fallback_held=("supply_air_sp_c",)))


@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=1, max_value=8))
def test_it_asks_at_most_once_per_model_and_only_with_enough_held_ood_cycles_in_the_window(
        cycles: list[bool], after: int) -> None:
    watch = UnfamiliarWatch()
    asked = [n for n, c in enumerate(cycles) if watch.observe("v1", c, after) is not None]
    assert len(asked) <= 1
    for n in asked:
        assert cycles[max(0, n + 1 - 2 * after): n + 1].count(True) >= after and cycles[n]
    if not asked:  # never enough in any window
        assert all(cycles[max(0, n + 1 - 2 * after): n + 1].count(True) < after for n in range(len(cycles)))


def test_a_champion_that_stays_unfamiliar_is_asked_for_again_only_after_the_retry_wait() -> None:
    watch = UnfamiliarWatch()
    asked = [n for n in range(40) if watch.observe("v1", True, after=3, retry=10) is not None]
    assert asked == [2, 12, 22, 32]  # first at the third held cycle, then every 10 cycles
    assert "again" in (watch.observe("v1", True, after=3, retry=1) or "")
    watch = UnfamiliarWatch()
    for n in range(12):  # asked once, then the plant came back to familiar ground
        watch.observe("v1", n < 3, after=3, retry=5)
    assert watch.observe("v1", False, after=3, retry=5) is None  # waited, but not unfamiliar now


@given(st.lists(st.booleans(), max_size=80), st.integers(min_value=1, max_value=6),
       st.integers(min_value=1, max_value=20))
def test_requests_for_one_model_are_at_least_the_retry_wait_apart(cycles: list[bool], after: int,
                                                                  retry: int) -> None:
    watch = UnfamiliarWatch()
    asked = [n for n, c in enumerate(cycles) if watch.observe("v1", c, after, retry) is not None]
    assert all(b - a >= retry for a, b in itertools.pairwise(asked))
    for n in asked:
        assert cycles[max(0, n + 1 - 2 * after): n + 1].count(True) >= after
