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

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
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
from fhir_adapter.hooks.limits import ServeLimits
from fhir_adapter.hooks.security import (
    DEFAULT_ALGORITHMS,
    JwksFetcher,
    JwtVerifier,
    TrustedClients,
    Unauthorized,
    loggable,
)
from fhir_adapter.hooks.services import (
    ENCOUNTER_DISCHARGE,
    SERVICES,
    discovery_document,
)
from fhir_adapter.pack import Pack, load_pack
from fhir_adapter.payers import load_payers

log = logging.getLogger("fhir_adapter.hooks")
Endpoint = Callable[[Request], Awaitable[Response]]

MAX_BODY = 16 * 1024 * 1024
JWKS_THREADS = 2  # threads that may fetch JWKS at once, apart from those answering calls
TOO_LARGE = f"the request body is larger than {MAX_BODY // (1024 * 1024)} MB"
MAX_DEPTH = 64  # JSON nesting levels; FHIR resources we read stay well under 20


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (iterative: no recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


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
    # each read from fhirServer: whole answer within this many seconds, at most this size
    fhir_deadline: float = 20.0
    fhir_max_bytes: int = 32 * 1024 * 1024
    limits: ServeLimits = field(default_factory=ServeLimits)
    time_budget: float = DEFAULT_TIME_BUDGET
    pack: Pack | None = field(default=None, repr=False)
    # `serve --payer`: the PAS payer endpoints, their requests and Subscriptions in this file
    payer_db: str | Path | None = None
    # the provider's record of its prior-authorization requests (notifications received)
    preauth_db: str | Path | None = None
    # directories of payer overlays added to the shipped ones (`serve --payers`)
    payer_dirs: tuple[str | Path, ...] = ()


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(value), status_code=status, media_type="application/json", headers=headers
    )


def _outcome(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    code = {
        400: "structure",
        404: "not-found",
        405: "not-supported",
        412: "not-found",
        408: "timeout",
        413: "too-long",
        422: "invalid",
    }.get(status, "exception")
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}],
    }
    return _json(body, status, headers)


def _unauthorized() -> Response:
    return _json({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})


class HookService:
    """The state shared by all requests: pack, verifier, feedback store, known FHIR servers."""

    def __init__(self, config: HookConfig) -> None:
        self.config = config
        self.pack = config.pack or load_pack(config.rules)
        # checked before the service answers anything: a bad overlay is one line at start
        self.payers = load_payers(self.pack, config.payer_dirs) if config.payer_dirs else None
        fetcher = JwksFetcher(verify=config.jwks_ca_bundle or True)
        self.feedback = FeedbackStore(config.feedback_db)
        self.verifier = JwtVerifier(
            config.trusted_clients,
            algorithms=config.algorithms,
            fetcher=fetcher,
            replay_db=config.replay_db or config.feedback_db,
        )
        self.verified_servers = VerifiedServers()
        self._jwks_threads = anyio.CapacityLimiter(JWKS_THREADS)
        self._jwks_fetches: dict[str, asyncio.Future[None]] = {}
        # set by the DTR endpoints (pas.service) when this service also serves DTR
        self.on_coverage: handlers.CoverageHook | None = None
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

    async def authenticate(self, request: Request) -> dict[str, Any]:
        """The verified claims (Unauthorized otherwise). A JWKS still to be fetched is fetched
        first, on `JWKS_THREADS` threads of its own and once per URL however many calls wait
        for it (they wait without a thread): tokens naming a slow or failing JWKS host,
        forged or not, never hold the threads that verify and answer other clients."""
        authorization = request.headers.get("authorization")
        due = self.verifier.jwks_due(authorization)
        if due is not None:
            url, kid = due
            fetch = self._jwks_fetches.get(url)
            if fetch is None:
                fetch = asyncio.ensure_future(
                    anyio.to_thread.run_sync(
                        self.verifier.fetcher.refresh, url, kid, limiter=self._jwks_threads
                    )
                )
                self._jwks_fetches[url] = fetch
                fetch.add_done_callback(lambda _: self._jwks_fetches.pop(url, None))
            await asyncio.shield(fetch)
        audience = self.base_url(request) + request.url.path
        return await run_in_threadpool(self.verifier.verify, authorization, audience)

    async def body(self, request: Request) -> Any:
        """The JSON body, read as it streams in and refused (413) as soon as it passes
        `MAX_BODY`, whatever the framing (Content-Length or chunked); nested at most
        `MAX_DEPTH` levels (deeper is no FHIR we read, and could not be answered)."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise HookError(TOO_LARGE, 413)
        chunks: list[bytes] = []
        size = 0
        timeout = self.config.limits.body_timeout
        try:
            with anyio.fail_after(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise HookError(TOO_LARGE, 413)
                    chunks.append(chunk)
        except TimeoutError:
            raise HookError(f"the request body did not arrive within {timeout:g} s", 408) from None
        try:
            value = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise HookError("the request body is not JSON", 400) from None
        if json_depth(value) > MAX_DEPTH:
            raise HookError(f"the request body is nested deeper than {MAX_DEPTH} levels", 400)
        return value

    # -- endpoints ----------------------------------------------------------------
    async def discovery(self, request: Request) -> Response:
        return _json(discovery_document())

    async def call(self, request: Request) -> Response:
        service = SERVICES.get(request.path_params["service_id"])
        if service is None:
            raise HookError("no such CDS service", 404)
        try:
            claims = await self.authenticate(request)
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
        payload = orjson.dumps(response)  # before anything is recorded: it cannot fail after
        # The cards are logged for the feedback summary before the answer goes out: the
        # EHR may send feedback on them at once (a WAL commit without fsync, ~0.1 ms).
        await run_in_threadpool(
            self.feedback.record_cards,
            service.id,
            hook.hook_instance,
            response["cards"],
            claims["iss"],
        )
        return Response(payload, media_type="application/json")

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
        config = self.config
        with self._running_lock:
            self._running += 1
        data = HookData(
            hook,
            service,
            self.verified_servers,
            config.fhir_timeout,
            config.fhir_deadline,
            config.fhir_max_bytes,
            payers=self.payers,
        )
        try:
            with time_budget(budget):
                if service_id == ENCOUNTER_DISCHARGE:
                    return handlers.encounter_discharge(self.pack, hook, data, self.config.block_on)
                return handlers.order_check(
                    self.pack, hook, data, self.config.block_on, self.on_coverage
                )
        finally:
            data.close()
            with self._running_lock:
                self._running -= 1

    async def feedback_call(self, request: Request) -> Response:
        service = SERVICES.get(request.path_params["service_id"])
        if service is None:
            raise HookError("no such CDS service", 404)
        try:
            claims = await self.authenticate(request)
        except Unauthorized:
            return _unauthorized()
        items = parse_feedback(await self.body(request))
        await run_in_threadpool(self.feedback.record_feedback, service.id, claims["iss"], items)
        return _json({})


async def _hook_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HookError)
    # A body refused part-way (too large, too slow): close the connection rather than
    # read the rest of it to keep the connection open.
    close = {"Connection": "close"} if exc.status in (408, 413) else None
    return _outcome(exc.status, str(exc), close)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _outcome(exc.status_code, str(exc.detail))


def _guarded(endpoint: Endpoint) -> Endpoint:
    """The endpoint with an unexpected exception answered here (a 500, its traceback logged
    once), not re-raised to uvicorn, which would log it a second time."""

    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except (HookError, HTTPException):
            raise
        except Exception as exc:
            return await _internal_error(request, exc)

    return run


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error(
        "internal error on %s: %s", loggable(request.url.path), type(exc).__name__, exc_info=exc
    )
    return _outcome(500, "internal error (logged on the service)")


def _pas_routes(svc: HookService) -> list[Route]:
    """The PAS endpoints (payer, notification receiver) when the service plays either part."""
    config = svc.config
    if config.payer_db is None and config.preauth_db is None:
        return []
    from fhir_adapter.pas.payer import PayerStore
    from fhir_adapter.pas.record import PreauthRecords
    from fhir_adapter.pas.service import PasEndpoints

    endpoints = PasEndpoints(
        svc,
        svc.pack,
        PayerStore(config.payer_db) if config.payer_db is not None else None,
        PreauthRecords(config.preauth_db) if config.preauth_db is not None else None,
        config.block_on,
    )
    if config.payer_db is not None:
        svc.on_coverage = endpoints.on_coverage
    return [Route(path, _guarded(fn), methods=["POST"]) for path, fn in endpoints.routes()]


def create_app(config: HookConfig) -> Starlette:
    """The CDS Hooks service as an ASGI app (with the PAS endpoints when configured)."""
    svc = HookService(config)
    app = Starlette(
        routes=[
            *_pas_routes(svc),
            Route("/cds-services", _guarded(svc.discovery), methods=["GET"]),
            Route("/cds-services/{service_id}", _guarded(svc.call), methods=["POST"]),
            Route(
                "/cds-services/{service_id}/feedback",
                _guarded(svc.feedback_call),
                methods=["POST"],
            ),
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
    # No trailing-slash redirect: Starlette would build it from the Host header, which the
    # caller controls (a 307 to any host it names). A wrong path is a plain 404.
    app.router.redirect_slashes = False
    app.state.service = svc
    return app
