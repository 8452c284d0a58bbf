"""The ASGI app: discovery, the three services, feedback (Starlette, served by uvicorn).

Starlette rather than FastAPI: the payloads are free-form JSON with FHIR inside,
parsed with orjson and checked by hand, so FastAPI's models, OpenAPI and
automatic 422s would add weight (and error shapes we do not want) and nothing
we use. Evaluation and FHIR reads are blocking, so they run in the threadpool, each
call within its time budget (`HookConfig.time_budget`): the evaluation checks the
deadline as it reads (fhir_adapter.deadline) and stops, freeing its worker, and the
caller gets a card saying the case was not evaluated; should a step not reach a
check in time, the call is answered anyway one second after the budget.

Errors are JSON (an OperationOutcome), never a traceback; a 401 says nothing
about which check failed. Nothing logged carries a token.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_adapter.deadline import time_budget
from fhir_adapter.errors import HookError, OutOfTime
from fhir_adapter.hooks import cards, handlers
from fhir_adapter.hooks.data import HookData, HookRequest, VerifiedServers
from fhir_adapter.hooks.feedback import FeedbackStore, parse_feedback
from fhir_adapter.hooks.security import (
    DEFAULT_ALGORITHMS,
    JwksFetcher,
    JwtVerifier,
    TrustedClients,
    Unauthorized,
)
from fhir_adapter.hooks.services import (
    ENCOUNTER_DISCHARGE,
    SERVICES,
    discovery_document,
)
from fhir_adapter.rules import Pack, load_pack

log = logging.getLogger("fhir_adapter.hooks")

MAX_BODY = 16 * 1024 * 1024
DEFAULT_TIME_BUDGET = 10.0  # seconds per hook call, FHIR reads and evaluation
_GRACE = 1.0  # after the budget, a call whose evaluation has not stopped is answered anyway


@dataclass
class HookConfig:
    """How the service runs. `public_url` is the base the EHR calls (what `aud` must name);
    without it, the address uvicorn listens on is used (not the Host header, which a caller
    controls)."""

    trusted_clients: TrustedClients
    public_url: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    feedback_db: str | Path = "fhir-adapter-feedback.sqlite3"
    # where spent JWT ids are kept (default: the feedback database)
    replay_db: str | Path | None = None
    rules: str | Path | None = None
    block_on: str | None = None
    jwks_ca_bundle: str | None = None
    fhir_timeout: tuple[float, float] = (3.0, 10.0)
    time_budget: float = DEFAULT_TIME_BUDGET
    pack: Pack | None = field(default=None, repr=False)


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(value), status_code=status, media_type="application/json", headers=headers
    )


def _outcome(status: int, message: str) -> Response:
    code = {
        400: "structure",
        404: "not-found",
        405: "not-supported",
        412: "not-found",
        413: "too-long",
        422: "invalid",
    }.get(status, "exception")
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}],
    }
    return _json(body, status)


def loggable(value: Any, limit: int = 100) -> str:
    """A caller's string for a log line: control and line-separator characters escaped
    (no forged lines, no terminal escapes), cut at `limit` characters."""
    text = str(value)
    cut = text[:limit]
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in cut)
    return out + ("…" if len(text) > limit else "")


def _unauthorized() -> Response:
    return _json({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})


class HookService:
    """The state shared by all requests: pack, verifier, feedback store, known FHIR servers."""

    def __init__(self, config: HookConfig) -> None:
        self.config = config
        self.pack = config.pack or load_pack(config.rules)
        fetcher = JwksFetcher(verify=config.jwks_ca_bundle or True)
        self.feedback = FeedbackStore(config.feedback_db)
        self.verifier = JwtVerifier(
            config.trusted_clients,
            algorithms=config.algorithms,
            fetcher=fetcher,
            replay_db=config.replay_db or config.feedback_db,
        )
        self.verified_servers = VerifiedServers()
        self._running = 0  # evaluations under way in worker threads
        self._running_lock = threading.Lock()

    @property
    def running(self) -> int:
        """Evaluations under way (each holds a worker thread)."""
        return self._running

    def base_url(self, request: Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host, port = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"[{host}]" if ":" in str(host) else str(host)
        return f"{request.url.scheme}://{host}:{port}"

    def authenticate(self, request: Request) -> dict[str, Any]:
        audience = self.base_url(request) + request.url.path
        return self.verifier.verify(request.headers.get("authorization"), audience)

    async def body(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise HookError("the request body is too large", 413)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise HookError("the request body is too large", 413)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise HookError("the request body is not JSON", 400) from None

    # -- endpoints ----------------------------------------------------------------
    async def discovery(self, request: Request) -> Response:
        return _json(discovery_document())

    async def call(self, request: Request) -> Response:
        service = SERVICES.get(request.path_params["service_id"])
        if service is None:
            raise HookError("no such CDS service", 404)
        try:
            claims = await run_in_threadpool(self.authenticate, request)
        except Unauthorized:
            return _unauthorized()
        hook = HookRequest.parse(await self.body(request))
        if not service.accepts(hook.hook):
            raise HookError(f"service {service.id} does not answer the {hook.hook} hook", 422)
        started = time.perf_counter()
        try:
            response = await self._run_in_time(service.id, hook)
        except OutOfTime as exc:
            log.warning(
                "%s %s from %s: %s",
                service.id,
                loggable(hook.hook_instance),
                loggable(claims.get("iss")),
                exc,
            )
            response = {"cards": [cards.out_of_time_card(self.config.time_budget)]}
        log.info(
            "%s %s from %s: %d card(s) in %.0f ms",
            service.id,
            loggable(hook.hook_instance),
            loggable(claims.get("iss")),
            len(response["cards"]),
            (time.perf_counter() - started) * 1000,
        )
        # The cards are logged for the feedback summary before the answer goes out: the
        # EHR may send feedback on them at once (a WAL commit without fsync, ~0.1 ms).
        await run_in_threadpool(
            self.feedback.record_cards, service.id, hook.hook_instance, response["cards"]
        )
        return Response(orjson.dumps(response), media_type="application/json")

    async def _run_in_time(self, service_id: str, hook: HookRequest) -> dict[str, Any]:
        """The call's answer from a worker thread, within the time budget (OutOfTime if not).
        The worker stops at its next deadline check; if it has not by the grace period's
        end, it is left to finish alone (its result unused) and the call answered."""
        budget = self.config.time_budget
        with anyio.move_on_after(budget + _GRACE):
            return await anyio.to_thread.run_sync(
                partial(self._run, service_id, hook, budget), abandon_on_cancel=True
            )
        raise OutOfTime(f"the evaluation did not stop within its {budget:g} s budget")

    def _run(
        self, service_id: str, hook: HookRequest, budget: float | None = None
    ) -> dict[str, Any]:
        service = SERVICES[service_id]
        with self._running_lock:
            self._running += 1
        data = HookData(hook, service, self.verified_servers, self.config.fhir_timeout)
        try:
            with time_budget(budget):
                if service_id == ENCOUNTER_DISCHARGE:
                    return handlers.encounter_discharge(self.pack, hook, data, self.config.block_on)
                return handlers.order_check(self.pack, hook, data, self.config.block_on)
        finally:
            data.close()
            with self._running_lock:
                self._running -= 1

    async def feedback_call(self, request: Request) -> Response:
        service = SERVICES.get(request.path_params["service_id"])
        if service is None:
            raise HookError("no such CDS service", 404)
        try:
            await run_in_threadpool(self.authenticate, request)
        except Unauthorized:
            return _unauthorized()
        items = parse_feedback(await self.body(request))
        await run_in_threadpool(self.feedback.record_feedback, service.id, items)
        return _json({})


async def _hook_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HookError)
    return _outcome(exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _outcome(exc.status_code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error(
        "internal error on %s: %s", loggable(request.url.path), type(exc).__name__, exc_info=exc
    )
    return _outcome(500, "internal error (logged on the service)")


def create_app(config: HookConfig) -> Starlette:
    """The CDS Hooks service as an ASGI app."""
    svc = HookService(config)
    app = Starlette(
        routes=[
            Route("/cds-services", svc.discovery, methods=["GET"]),
            Route("/cds-services/{service_id}", svc.call, methods=["POST"]),
            Route("/cds-services/{service_id}/feedback", svc.feedback_call, methods=["POST"]),
        ],
        middleware=[
            # Browser-based CDS clients call from another origin; the JWT, not cookies,
            # authenticates, so any origin may send it.
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        ],
        exception_handlers={
            HookError: _hook_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.service = svc
    return app
