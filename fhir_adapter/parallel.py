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
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from fhir_adapter.errors import WorkerDied

J = TypeVar("J")
T = TypeVar("T")
R = TypeVar("R")

_DONE = -1
_POLL_SECONDS = 0.2  # how often a waiting parent checks that its children are alive


def fork_map(
    fn: Callable[[J, T], R],
    job: J,
    items: Sequence[T],
    workers: int,
    meanwhile: Callable[[], None] | None = None,
) -> Generator[R, None, None]:
    """`fn(job, item)` for every item, yielded in order, on `workers` processes (this one
    and `workers - 1` forked children, each taking the next item when it is free).

    `meanwhile()` runs here once the children have started, when there are any (work for
    this process only, such as filling caches that later forked workers inherit: the
    children take more of the items meanwhile).

    An exception in any worker is raised here, and the children are stopped; a child
    that dies (the OS killed it) is a WorkerDied, not a hang.
    """
    n = len(items)
    if workers <= 1 or n <= 1:
        for item in items:
            yield fn(job, item)
        return
    ctx = multiprocessing.get_context("fork")
    claimed = ctx.Value("l", 0)  # the next item nobody has taken yet
    results: Any = ctx.Queue()  # children's (index, ok, pickled value); sent by a feeder thread
    children: list[Any] = []
    done: dict[int, Any] = {}
    emitted = 0
    try:
        for _ in range(min(workers, n) - 1):
            child = ctx.Process(target=_child, args=(fn, job, items, claimed, results), daemon=True)
            child.start()
            children.append(child)
        if meanwhile is not None:
            meanwhile()
        finished = 0
        while True:
            i = _claim(claimed, n)
            if i is not None:
                done[i] = fn(job, items[i])
            elif finished == len(children):
                break
            # between its own items the parent takes what arrived; with none left, it waits
            finished += _collect(results, done, children, finished, wait=i is None)
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


def _claim(claimed: Any, n: int) -> int | None:
    with claimed.get_lock():
        i = int(claimed.value)
        if i >= n:
            return None
        claimed.value = i + 1
    return i


def _collect(
    results: Any, done: dict[int, Any], children: list[Any], finished: int, wait: bool
) -> int:
    """Take the children's finished items; the number of children that said they are done.

    Waiting, it polls: a child killed by the OS never says it is done, and once nothing
    arrives for a while and more children have ended than said so, one of them died.
    """
    now_finished = 0
    while True:
        try:
            i, ok, value = results.get(timeout=_POLL_SECONDS) if wait else results.get_nowait()
        except queue.Empty:
            if not wait:
                return now_finished
            ended = [c for c in children if c.exitcode is not None]
            if len(ended) > finished + now_finished:
                codes = ", ".join(str(c.exitcode) for c in ended if c.exitcode != 0) or "0"
                raise WorkerDied(
                    f"a worker process ended before finishing (exit code {codes}; "
                    "a negative code is the signal that stopped it, 9 often means out of memory)"
                ) from None
            continue
        wait = False  # something came: take what else is there, then return
        if i == _DONE:
            now_finished += 1
        elif ok:
            done[i] = pickle.loads(value)
        else:
            raise pickle.loads(value)


def _child(
    fn: Callable[[Any, Any], Any], job: Any, items: Sequence[Any], claimed: Any, results: Any
) -> None:
    try:
        while True:
            i = _claim(claimed, len(items))
            if i is None:
                break
            try:
                # pickled here, not by the queue's feeder thread, which would only log a
                # value it cannot pickle and drop it
                results.put((i, True, pickle.dumps(fn(job, items[i]), pickle.HIGHEST_PROTOCOL)))
            except BaseException as exc:  # handed to the parent, which raises it
                results.put((i, False, pickle.dumps(_portable(exc))))
                break
    finally:
        results.put((_DONE, True, b""))
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
