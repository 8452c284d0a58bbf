"""One gate per server: a cap on requests in flight and one shared backoff.

With many cases read at once, a server that answers 429 or 503 to one of them is
busy for all of them: every request waits out the same pause (the longest
`Retry-After` or backoff asked for), instead of each retrying on its own clock and
arriving together. The backoff grows with consecutive refusals across all
threads and resets on the first answer that is not one.
"""

from __future__ import annotations

import threading
import time

from fhir_adapter.errors import ServerError

BUSY_STATUSES = frozenset({429, 503})


class HostGate:
    """At most `limit` requests in flight to one host; a shared pause after 429/503."""

    def __init__(self, limit: int = 8, backoff: float = 0.5, backoff_max: float = 30.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._until = 0.0
        self._streak = 0
        self.pauses = 0  # how many times the server asked everyone to wait

    def busy(self, retry_after: float | None) -> float:
        """The server said it is busy: every request waits until the shared pause ends.
        Returns the pause's length from now."""
        now = time.monotonic()
        with self._lock:
            self._streak += 1
            self.pauses += 1
            grown = min(self.backoff_max, self.backoff * (2 ** (self._streak - 1)))
            wait = max(grown, retry_after or 0.0)
            self._until = max(self._until, now + wait)
            return self._until - now

    def answered(self) -> None:
        """An answer that was not 429/503: the backoff starts small again."""
        if self._streak:
            with self._lock:
                self._streak = 0

    def wait_out(self, deadline: float | None = None, where: str = "") -> None:
        """Sleep until the shared pause is over; a ServerError when it outlasts `deadline`
        (a monotonic time)."""
        while True:
            left = self._until - time.monotonic()
            if left <= 0:
                return
            if deadline is not None and time.monotonic() + left > deadline:
                raise ServerError(f"{where}: the server asked to wait past the request's deadline")
            time.sleep(min(left, 1.0))

    def enter(self, deadline: float, where: str) -> None:
        """Wait for the pause to end and for a free slot, both within `deadline`."""
        self.wait_out(deadline, where)
        left = deadline - time.monotonic()
        if left <= 0 or not self._slots.acquire(timeout=left):
            raise ServerError(f"{where}: no free connection to the server before the deadline")

    def leave(self) -> None:
        self._slots.release()
