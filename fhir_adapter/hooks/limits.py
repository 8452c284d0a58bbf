"""The connection limits `serve` enforces itself, whatever stands in front of it.

uvicorn bounds concurrent connections (`limit_concurrency`: beyond it, 503), idle
keep-alive connections and the size of a request head; it has no deadline for a
request head that trickles in, so the HTTP protocol here adds one: a connection
that has not sent a complete request head within `header_timeout` seconds of
opening, or of its previous response, is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ServeLimits:
    """Defaults sized for a few EHRs calling a service on two cores."""

    limit_concurrency: int = 64  # connections and tasks at once; beyond: 503
    header_timeout: float = 10.0  # seconds for a complete request head
    body_timeout: float = 30.0  # seconds for a whole request body (then 408)
    keep_alive: int = 5  # seconds an idle keep-alive connection stays open
    max_header_bytes: int = 16 * 1024  # request line and headers


class _HeadDeadline(H11Protocol):
    """h11 with a deadline for each request head (see the module docstring)."""

    header_timeout = ServeLimits.header_timeout
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        waiting_after = self.cycle
        if self._head_deadline is not None:
            self._head_deadline.cancel()

        def overdue() -> None:
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()  # no (new) request head in time

        self._head_deadline = self.loop.call_later(self.header_timeout, overdue)


def uvicorn_options(limits: ServeLimits) -> dict[str, Any]:
    """uvicorn's settings for `limits` (for `uvicorn.run` or `uvicorn.Config`)."""
    protocol = type(
        "H11WithHeadDeadline", (_HeadDeadline,), {"header_timeout": limits.header_timeout}
    )
    return {
        "http": protocol,
        "limit_concurrency": limits.limit_concurrency,
        "timeout_keep_alive": limits.keep_alive,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "server_header": False,
    }


def uvicorn_config(
    app: Any, host: str, port: int, limits: ServeLimits, **kw: Any
) -> uvicorn.Config:
    """What `serve` runs, as a Config (the tests run the service this way)."""
    return uvicorn.Config(app, host=host, port=port, **uvicorn_options(limits), **kw)
