"""fork_map: the parent is one of the workers; results in order; errors from any worker."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from fhir_adapter.errors import InputError
from fhir_adapter.parallel import fork_map

PARENT = os.getpid()


def _slow_square(job: int, item: int) -> tuple[int, int]:
    time.sleep(0.005)
    return item * item + job, os.getpid()


def test_results_come_in_order_and_both_processes_work() -> None:
    out = list(fork_map(_slow_square, 1, list(range(60)), workers=2))
    assert [v for v, _ in out] == [i * i + 1 for i in range(60)]
    pids = {pid for _, pid in out}
    assert PARENT in pids and len(pids) == 2
    assert multiprocessing.active_children() == []


def test_one_worker_runs_here() -> None:
    out = list(fork_map(_slow_square, 0, [1, 2, 3], workers=1))
    assert out == [(1, PARENT), (4, PARENT), (9, PARENT)]


def test_meanwhile_runs_here_once_while_the_children_work() -> None:
    """The load fills the evaluation's caches there, for the workers forked after it."""
    ran: list[tuple[int, int]] = []

    def meanwhile() -> None:
        ran.append((os.getpid(), len(multiprocessing.active_children())))

    out = list(fork_map(_slow_square, 0, list(range(60)), workers=2, meanwhile=meanwhile))
    assert ran == [(PARENT, 1)]
    assert [v for v, _ in out] == [i * i for i in range(60)]
    list(fork_map(_slow_square, 0, [1, 2, 3], workers=1, meanwhile=meanwhile))
    assert len(ran) == 1  # no workers forked: nothing to fill caches for


def _fails_in_child(job: None, item: int) -> int:
    if os.getpid() != PARENT:
        raise InputError("not a complete JSON object", source="Observation.ndjson", line=item)
    time.sleep(0.01)
    return item


def test_an_error_in_a_child_is_raised_here_as_it_was() -> None:
    with pytest.raises(InputError, match=r"Observation\.ndjson:\d+: not a complete JSON object"):
        list(fork_map(_fails_in_child, None, list(range(40)), workers=2))
    assert multiprocessing.active_children() == []


def _fails_here(job: None, item: int) -> int:
    if os.getpid() == PARENT and item > 2:
        raise ValueError("boom")
    time.sleep(0.01)
    return item


def test_an_error_here_stops_the_children() -> None:
    with pytest.raises(ValueError, match="boom"):
        list(fork_map(_fails_here, None, list(range(200)), workers=2))
    assert multiprocessing.active_children() == []


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickling passes only args: unpickling fails
        super().__init__(f"{a}/{b}")


def _unpicklable_in_child(job: None, item: int) -> int:
    if os.getpid() != PARENT:
        raise _Unpicklable(1, 2)
    time.sleep(0.01)
    return item


def test_an_exception_that_cannot_travel_is_described() -> None:
    with pytest.raises(RuntimeError, match="_Unpicklable: 1/2"):
        list(fork_map(_unpicklable_in_child, None, list(range(40)), workers=2))


def _killed_in_child(job: None, item: int) -> int:
    if os.getpid() != PARENT and item >= 5:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    time.sleep(0.01)
    return item


def test_a_child_killed_by_the_os_is_an_error_not_a_hang() -> None:
    from fhir_adapter.errors import WorkerDied

    started = time.monotonic()
    with pytest.raises(WorkerDied, match="exit code -9"):
        list(fork_map(_killed_in_child, None, list(range(60)), workers=2))
    assert time.monotonic() - started < 30
    assert multiprocessing.active_children() == []


def _unpicklable_result(job: None, item: int) -> object:
    if os.getpid() != PARENT:
        return lambda: item  # a result that cannot cross a process boundary
    time.sleep(0.01)
    return item


def test_a_result_that_cannot_travel_is_an_error_not_a_lost_item() -> None:
    import pickle

    with pytest.raises(
        (pickle.PicklingError, AttributeError, RuntimeError), match=r"lambda|pickle"
    ):
        list(fork_map(_unpicklable_result, None, list(range(40)), workers=2))
