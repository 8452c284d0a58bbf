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
