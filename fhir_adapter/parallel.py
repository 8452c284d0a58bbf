"""Forked worker processes that share the parent's data copy-on-write.

Both parallel stages (screening an export's chunks, evaluating cases) hand each
worker one job object through the pool's initializer: with the `fork` start
method it is inherited, never pickled, so a store of a whole export costs nothing
to share. Only the items and the results cross process boundaries.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

J = TypeVar("J")
T = TypeVar("T")
R = TypeVar("R")


class _Task(Generic[J, T, R]):
    """The function and job a worker runs; set once per process by the initializer."""

    current: Any = None

    def __init__(self, fn: Callable[[J, T], R], job: J) -> None:
        self.fn = fn
        self.job = job


def _start(task: _Task[Any, Any, Any]) -> None:
    _Task.current = task


def _run(item: Any) -> Any:
    task = _Task.current
    assert task is not None, "worker started without its task"
    return task.fn(task.job, item)


def fork_map(fn: Callable[[J, T], R], job: J, items: Sequence[T], workers: int) -> Iterator[R]:
    """`fn(job, item)` for every item, in order, on `workers` forked processes (in this
    process when one worker is asked for or there is a single item)."""
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield fn(job, item)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(min(workers, len(items)), initializer=_start, initargs=(_Task(fn, job),)) as pool:
        yield from pool.imap(_run, items, chunksize=1)
