"""The time-ordered split of training samples into blocks (pure functions on a time index).

Blocks: ``train``; ``val`` (early stopping) and ``cal`` (conformal intervals), interleaved
chunks or the newest blocks before test; ``test`` (reported metrics, champion versus
challenger), the newest block before the controller took charge; ``recent_test``, held-out
chunks of the period the controller ran (champion versus challenger on its own regime).
Every held-out block is an embargo (one horizon) from training, so that no target window
straddles two blocks. `forecasting.train` cuts the samples; `forecasting.registry` reads
the blocks' windows from the training report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    from forecasting.train import TrainConfig

BLOCKS = ("train", "val", "cal", "test", "recent_test")


def split_blocks(index: pd.DatetimeIndex, config: TrainConfig, embargo: pd.Timedelta,
                 recent_from: pd.Timestamp | None = None) -> dict[str, npt.NDArray[np.bool_]]:
    """Boolean masks of the train, val, cal and test samples, each held-out one an embargo from training.

    Test is always the newest block of the history: the honest forward-in-time estimate
    that promotion compares on. Val (early stopping) and cal (conformal intervals) are,
    with ``holdout="interleaved"``, chunks spread evenly over the history before test
    (`_interleaved`); with ``"newest"``, the blocks just before test. Why interleaved:
    with the newest fifth held out, a cold spell in the last week of the history never
    reached training nor the OOD reference, and a cold snap a few days later was
    "unfamiliar" on every cycle (Chicago, January: 45 % fallback).

    With ``recent_from`` (when the controller began to control the plant), every sample
    from then on is trained on too, at most the newest ``max_recent_share`` of them: a
    controller retrained every night must learn from what it did (its own moves reach
    states the history never had). The held-out blocks are cut from the history before it,
    except ``recent_test``: every ``1/recent_test_share``-th complete chunk of
    ``recent_test_chunk_h`` hours since ``recent_from`` (`_recent_test`), on a grid fixed
    by ``recent_from``, so that no model of this deployment trains on it and champion and
    challenger are both judged on the regime the controller runs in.
    """
    n = len(index)
    pos = np.arange(n)
    n_old = n
    if recent_from is not None:
        first = int(index.searchsorted(pd.Timestamp(recent_from)))
        n_old = max(first, round((1.0 - config.max_recent_share) * n))
    test_from = round((1.0 - config.test_share) * n_old)
    held_share = (config.val_share + config.cal_share) / (1.0 - config.test_share)
    cal_of_held = config.cal_share / (config.val_share + config.cal_share)
    label = _newest(index[:test_from], held_share, cal_of_held, embargo)
    if config.holdout == "interleaved":
        spread = _interleaved(index[:test_from], held_share, cal_of_held, config.holdout_chunk_h, embargo)
        if spread is not None:
            label = spread
    masks = {name: np.zeros(n, dtype=bool) for name in BLOCKS}
    for code, name in enumerate(BLOCKS[:3]):
        masks[name][:test_from] = label == code
    if test_from < n:
        before_test = index < index[test_from] - embargo
        for name in BLOCKS[:3]:
            masks[name] &= before_test
    masks["test"] = (pos >= test_from) & (pos < n_old)
    if n_old < n:
        masks["test"] &= index < index[n_old] - embargo
    masks["train"] |= pos >= n_old
    masks["recent_test"] = np.zeros(n, dtype=bool)
    if recent_from is not None and config.recent_test_share > 0 and n:
        label = _recent_test(index, pd.Timestamp(recent_from), config.recent_test_share,
                             config.recent_test_chunk_h, embargo)
        for name in BLOCKS[:4]:
            masks[name] &= label == 0
        masks["recent_test"] = label == 1
    return masks


_PURGED = -1  # a sample within the embargo of another block: in no block


def _newest(index: pd.DatetimeIndex, held_share: float, cal_of_held: float,
            embargo: pd.Timedelta) -> npt.NDArray[np.int64]:
    """Labels (0 train, 1 val, 2 cal, -1 purged): train, then val, then cal, in time order."""
    n = len(index)
    cuts = np.round(np.cumsum([1.0 - held_share, held_share * (1.0 - cal_of_held)]) * n).astype(int)
    label = np.searchsorted(cuts, np.arange(n), side="right").astype(np.int64)
    for cut in cuts:
        if cut < n:
            label[(index < index[cut]) & (index >= index[cut] - embargo) & (label < label[cut])] = _PURGED
    return label


#: Interleaved chunks shorter than this are too like the training hours beside them [h].
MIN_CHUNK_H = 12.0


def _interleaved(index: pd.DatetimeIndex, held_share: float, cal_of_held: float, chunk_h: float,
                 embargo: pd.Timedelta) -> npt.NDArray[np.int64] | None:
    """Labels (0 train, 1 val, 2 cal, -1 purged): held-out chunks spread evenly over time.

    The span is cut into chunks of ``chunk_h`` hours (shorter for short histories, so
    that at least 20 chunks exist); every 1/``held_share``-th chunk is held out, every
    1/``cal_of_held``-th of those as cal. Training samples within ``embargo`` of a
    held-out chunk, on either side, are purged (their targets or lags overlap it).
    None where the history is too short: chunks under `MIN_CHUNK_H` (fewer than 10
    days), or no chunk left for val or cal. Why: a chunk of a few hours is so like the
    hours beside it that early stopping on it runs on into overfitting; on the quick
    start's 9 days (11-hour chunks) the ensemble's rack-inlet error rose from 0.23-0.25
    to 0.28 K, worse than its tree baseline, and it was not promoted.
    """
    if len(index) == 0:
        return None
    t = (index - index[0]) / pd.Timedelta(hours=1)
    span_h = float(t[-1]) + 1e-9
    chunk = max(min(chunk_h, span_h / 20.0), 4.0 * embargo / pd.Timedelta(hours=1))
    if chunk < min(MIN_CHUNK_H, chunk_h):
        return None
    n_chunks = int(np.ceil(span_h / chunk))
    held_rank = _evenly(n_chunks, held_share)  # -1 where the chunk is trained on, else the rank among held-out
    is_cal = _evenly(int((held_rank >= 0).sum()), cal_of_held) >= 0
    chunk_label = np.where(held_rank >= 0, 1 + is_cal[np.maximum(held_rank, 0)], 0).astype(np.int64)

    def label_at(hours: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.asarray(chunk_label[np.clip((hours // chunk).astype(np.int64), 0, n_chunks - 1)])

    e_h = embargo / pd.Timedelta(hours=1)
    hours = np.asarray(t, dtype=np.float64)
    label = label_at(hours)
    if not ((label == 1).any() and (label == 2).any()):
        return None
    near_held = (label_at(hours - e_h) > 0) | (label_at(hours + e_h) > 0)
    return np.where((label == 0) & near_held, _PURGED, label)


def _evenly(n: int, share: float) -> npt.NDArray[np.int64]:
    """For n items, the rank of each of the ~share*n picked evenly (-1 where not picked)."""
    i = np.arange(n)
    picked = np.floor((i + 1) * share + 0.5) > np.floor(i * share + 0.5)
    return np.where(picked, np.cumsum(picked) - 1, -1).astype(np.int64)




def _recent_test(index: pd.DatetimeIndex, since: pd.Timestamp, share: float, chunk_h: float,
                 embargo: pd.Timedelta) -> npt.NDArray[np.int64]:
    """Labels (1 recent test, -1 purged, 0 otherwise) of the controlled period's held-out chunks.

    The grid starts at ``since``; chunk k is held out when k % period == period - 1
    (period = round(1/share); the chunks before it are trained on) and it is complete: the
    chunk still being filled is always trained on, because an early retraining exists to
    learn the newest hours. Samples within ``embargo`` of a held-out chunk are purged.
    Why this exists: judged only on the newest days before control, challengers that had
    learned CoolPilot's own regime (and scored a half to a quarter of the champion's error
    on the following, unseen day) were rejected for days while the champion kept calling
    that regime unfamiliar (EnergyPlus crac, 12-19 Aug 2023, seed 0: 53 % fallback).
    """
    period = max(2, round(1.0 / share))
    hours = np.asarray((index - since) / pd.Timedelta(hours=1), dtype=np.float64)
    last_complete = np.floor(hours[-1] / chunk_h) - 1.0

    def held_at(h: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        k = np.floor(h / chunk_h)
        return np.asarray((k >= 0) & (np.mod(k, period) == period - 1) & (k <= last_complete))

    e_h = embargo / pd.Timedelta(hours=1)
    held = held_at(hours)
    near = held_at(hours - e_h) | held_at(hours + e_h)
    return np.where(held, 1, np.where(near, _PURGED, 0)).astype(np.int64)


def chunk_spans(index: pd.DatetimeIndex, mask: npt.NDArray[np.bool_],
                gap: pd.Timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The [first, last] sample times of each run of ``mask`` whose samples lie within ``gap`` of each other."""
    times = index[mask]
    if not len(times):
        return []
    breaks = np.flatnonzero(np.diff(times.as_unit("ns").asi8) > gap.value)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(times) - 1]])
    return [(times[a], times[b]) for a, b in zip(starts, ends, strict=True)]
