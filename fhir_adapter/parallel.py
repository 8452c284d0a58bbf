"""Forked worker processes that share the parent's data copy-on-write.

Both parallel stages (screening an export's chunks, evaluating cases) hand the
workers one job object: with the `fork` start method it is inherited, never
pickled, so a store of a whole export costs nothing to share. Only the items'
results cross a process boundary, and only for the items a child did: the parent
is one of the workers. On two cores that halves what is pickled and unpickled
(for a dense export's screen, a third of the pass), and no core idles while
the parent waits.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

J = TypeVar("J")
T = TypeVar("T")
R = TypeVar("R")

_DONE = -1


def fork_map(fn: Callable[[J, T], R], job: J, items: Sequence[T], workers: int) -> Iterator[R]:
    """`fn(job, item)` for every item, yielded in order, on `workers` processes (this one
    and `workers - 1` forked children, each taking the next item when it is free).

    An exception in any worker is raised here, and the children are stopped.
    """
    n = len(items)
    if workers <= 1 or n <= 1:
        for item in items:
            yield fn(job, item)
        return
    ctx = multiprocessing.get_context("fork")
    claimed = ctx.Value("l", 0)  # the next item nobody has taken yet
    results: Any = ctx.Queue()  # children's (index, ok, value); pickled by a feeder thread
    children = [
        ctx.Process(target=_child, args=(fn, job, items, claimed, results), daemon=True)
        for _ in range(min(workers, n) - 1)
    ]
    for child in children:
        child.start()
    done: dict[int, R] = {}
    running = len(children)
    emitted = 0
    try:
        while True:
            i = _claim(claimed, n)
            if i is None:
                break
            done[i] = fn(job, items[i])
            running -= _collect(results, done, block=False)
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1
        while running:
            running -= _collect(results, done, block=True)
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1
        for child in children:
            child.join()
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        results.close()
        results.join_thread()
    while emitted in done:
        yield done.pop(emitted)
        emitted += 1
    if emitted != n:  # a child died without reporting (killed by the OS)
        raise RuntimeError(f"a worker process ended early ({n - emitted} of {n} items lost)")


def _claim(claimed: Any, n: int) -> int | None:
    with claimed.get_lock():
        i = int(claimed.value)
        if i >= n:
            return None
        claimed.value = i + 1
    return i


def _collect(results: Any, done: dict[int, Any], block: bool) -> int:
    """Take the children's finished items; the number of children that said they are done."""
    finished = 0
    while True:
        try:
            i, ok, value = results.get(block=block)
        except queue.Empty:
            return finished
        block = False
        if i == _DONE:
            finished += 1
        elif ok:
            done[i] = value
        else:
            raise value


def _child(
    fn: Callable[[Any, Any], Any], job: Any, items: Sequence[Any], claimed: Any, results: Any
) -> None:
    try:
        while True:
            i = _claim(claimed, len(items))
            if i is None:
                break
            try:
                results.put((i, True, fn(job, items[i])))
            except BaseException as exc:  # handed to the parent, which raises it
                results.put((i, False, _portable(exc)))
                break
    finally:
        results.put((_DONE, True, None))
        results.close()
        results.join_thread()
        os._exit(0)  # no atexit handlers or inherited cleanup of the parent's state


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else one that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any failure means: send a plain description
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
