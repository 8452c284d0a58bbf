"""A time budget for the work one request asks for, checked where long work loops.

The CDS Hooks service answers within a budget: it sets a deadline around a call's
evaluation, and the loops whose length follows the input (every mention of a
text, every case of an encounter) call `check_deadline`, which raises `OutOfTime`
once it has passed. The worker thread then ends instead of running on after the
caller has been answered. Outside a budget (the CLI, Bulk runs) the check costs
one context-variable read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from fhir_adapter.errors import OutOfTime

_deadline: ContextVar[tuple[float, float] | None] = ContextVar(
    "fhir_adapter_deadline", default=None
)


@contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """Work inside this block must finish within `seconds` (None: no budget)."""
    if seconds is None:
        yield
        return
    token = _deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def check_deadline() -> None:
    """Raise OutOfTime when the current budget is spent."""
    budget = _deadline.get()
    if budget is not None and time.monotonic() > budget[0]:
        raise OutOfTime(f"the evaluation did not finish within its {budget[1]:g} s budget")
