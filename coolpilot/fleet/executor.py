"""Executors for independent jobs: one after another in this process, or as Ray tasks.

Why: retraining a fleet and evaluation sweeps are many independent jobs. Ray
(``coolpilot[ray]``) spreads them over the cores and machines of a cluster; without
Ray, or with ``--executor sequential``, the same jobs run in turn here. Ray is for
scale, never required: it is imported only when a Ray executor opens. Jobs take and
return plain data (dataclasses of strings and numbers), so a worker on another machine
needs nothing from this process but the installed package.

A job that fails is reported (``Done.error``) and the others go on. Interrupted
(Ctrl-C), the Ray executor cancels what is still running, politely first, so that a
job's ``finally`` blocks stop the processes it started (EnergyPlus plants), then by
force; a worker that dies takes its EnergyPlus children with it (they ask Linux for a
signal when their parent dies).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS: tuple[str, ...] = ("ray", "sequential")
#: Seconds a cancelled Ray job gets to run its ``finally`` blocks before it is killed.
CANCEL_GRACE_S = 15.0


@dataclass(frozen=True)
class Done(Generic[R]):
    """One finished job: its position in the list, and its value or why it failed."""

    index: int
    value: R | None = None
    error: str | None = None


class Executor(Protocol):
    """Runs ``fn(item)`` for every item, yielding each result as it finishes (any order)."""

    name: str

    def run(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[Done[R]]: ...


def ray_available() -> bool:
    """Whether Ray is installed (``pip install coolpilot[ray]``), without importing it."""
    return importlib.util.find_spec("ray") is not None


def default_executor() -> str:
    """``ray`` where Ray is installed, else ``sequential``."""
    return "ray" if ray_available() else "sequential"


def set_torch_threads(threads: int | None) -> None:
    """Limit torch's CPU threads in this process (None: leave torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _describe(exc: BaseException) -> str:
    """One line naming the error; a Ray task error is unwrapped to the job's own exception."""
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0] if text else ''}".rstrip(": ")


class SequentialExecutor:
    """Every job in turn, in this process (``threads``: torch CPU threads, None = torch's default)."""

    name = "sequential"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def run(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[Done[R]]:
        set_torch_threads(self.threads)
        for i, item in enumerate(items):
            try:
                value = fn(item)
            except Exception as exc:  # one failed job never stops the others
                log.error("job %d failed: %s", i, _describe(exc))
                yield Done(i, error=_describe(exc))
                continue
            yield Done(i, value=value)


def _reap_children() -> int:
    """Stop child processes a job left running (an unclosed EnergyPlus plant); how many there were."""
    left = multiprocessing.active_children()
    for child in left:
        child.terminate()
        child.join(timeout=5.0)
        if child.is_alive():
            child.kill()
            child.join()
    return len(left)


def run_in_worker(fn: Callable[[T], R], item: T, threads: int | None) -> R:
    """A Ray task's body: the job with ``threads`` torch threads; no child process outlives it."""
    set_torch_threads(threads)
    try:
        return fn(item)
    finally:
        reaped = _reap_children()
        if reaped:
            log.warning("stopped %d child process(es) a job left running", reaped)


class RayExecutor:
    """Jobs as Ray tasks on a cluster: ``address`` joins one, None starts a local one.

    ``threads``: CPUs (and torch threads) per task, default 1. ``gpus``: GPUs per task,
    None = 1 where the cluster has a GPU, else 0. ``num_cpus`` caps a local cluster.
    Use it as a context manager: a local cluster it started is shut down on exit; one it
    joined (or found running in this process) is left alone.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, threads: int = 1, gpus: float | None = None,
                 num_cpus: int | None = None) -> None:
        if threads < 1:
            raise ValueError(f"threads per Ray task must be at least 1, got {threads}")
        self.address, self.threads, self.gpus, self.num_cpus = address, threads, gpus, num_cpus
        self._started = False

    def __enter__(self) -> RayExecutor:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the machine
        import ray

        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
            else:
                try:
                    ray.init(address=self.address, logging_level=logging.WARNING)
                except (ConnectionError, RuntimeError) as exc:
                    raise ValueError(f"cannot join the Ray cluster at {self.address}: {exc}") from None
            self._started = True
        if self.gpus is None:
            resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
            self.gpus = 1.0 if float(resources.get("GPU", 0.0)) >= 1.0 else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def run(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[Done[R]]:
        import ray

        task: Any = ray.remote(num_cpus=self.threads, num_gpus=self.gpus or 0, max_retries=0)(run_in_worker)
        refs: dict[Any, int] = {task.remote(fn, item, self.threads): i for i, item in enumerate(items)}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        value = ray.get(ref)
                    except Exception as exc:  # the job's own error, or its worker died
                        log.error("job %d failed: %s", refs[ref], _describe(exc))
                        yield Done(refs[ref], error=_describe(exc))
                        continue
                    yield Done(refs[ref], value=value)
        finally:
            if pending:
                _cancel(pending)


def _cancel(pending: list[Any]) -> None:
    """Cancel running tasks: an interrupt first (their cleanup runs), then kill what is left."""
    import ray

    for ref in pending:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    _, left = ray.wait(pending, num_returns=len(pending), timeout=CANCEL_GRACE_S)
    for ref in left:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


@contextlib.contextmanager
def open_executor(name: str | None = None, *, address: str | None = None, threads: int | None = None,
                  gpus: float | None = None, num_cpus: int | None = None) -> Iterator[Executor]:
    """The executor called ``name`` (None: Ray where installed), ready to run jobs.

    ``threads``: torch threads per job (Ray: also CPUs per task, default 1; sequential:
    default torch's own). ``address`` (a Ray cluster to join) needs the Ray executor.
    """
    name = name or default_executor()
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    if name == "sequential":
        if address is not None:
            raise ValueError("--ray-address needs --executor ray")
        yield SequentialExecutor(threads)
        return
    if not ray_available():
        raise ValueError("the Ray executor needs Ray: pip install 'coolpilot[ray]' (or use --executor sequential)")
    with RayExecutor(address, threads=threads or 1, gpus=gpus, num_cpus=num_cpus) as ray_executor:
        yield ray_executor
