"""The PAS endpoints of `fhir-adapter serve`: the payer's (`--payer`) and the provider's
notification receiver (`--preauth-db`).

Payer calls carry the same JWT as CDS Hooks calls (a trusted client, `aud` the exact URL,
`jti` once); the submitter is the token's `iss`, and a submitter sees and is notified of
its own requests only. A bad request is a 4xx OperationOutcome naming the element.
Notifications go out on a thread of their own after the answer, each POST within a
deadline, to an `https` endpoint (plain `http` only on loopback).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import requests
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from fhir_adapter.case import Case
from fhir_adapter.client.urls import is_loopback_host, sent_url
from fhir_adapter.errors import printable
from fhir_adapter.hooks.cards import CRD_COVERAGE_INFO
from fhir_adapter.pack import Pack
from fhir_adapter.pas import dtr, payer
from fhir_adapter.pas.decision import find_claim_response, read_decision
from fhir_adapter.pas.record import PreauthRecords, write_json
from fhir_adapter.sources.questionnaire import prior_auth
from fhir_adapter.writeback import CaseOutput

log = logging.getLogger("fhir_adapter.pas")
PREPOPULATED_MAX = 1000  # pre-populated answers kept, by CRD assertion
NOTIFY_TIMEOUT = (3.0, 10.0)


class Authenticating(Protocol):
    """What the endpoints need of the CDS service: JWT checks and bounded JSON bodies."""

    async def authenticate(self, request: Request) -> dict[str, Any]: ...

    async def body(self, request: Request) -> Any: ...

    def base_url(self, request: Request) -> str: ...


def outcome(status: int, message: str, element: str | None = None) -> Response:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": {
            400: "structure",
            401: "login",
            404: "not-found",
            413: "too-long",
            422: "invalid",
        }.get(status, "exception"),
        "diagnostics": message,
    }
    if element:
        issue["expression"] = [element]
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(orjson.dumps(body), status_code=status, media_type="application/fhir+json")


def fhir(value: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/fhir+json")


def notification_endpoint_problem(url: str) -> str | None:
    """Why a Subscription endpoint is refused (None: fine), judged as urllib3 sends it."""
    parts = sent_url(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.host:
        return "is not an http(s) URL"
    if parts.auth or parts.fragment:
        return "must carry no user, password or fragment"
    if parts.scheme == "http" and not is_loopback_host(parts.host):
        return "must be https (plain http only on loopback)"
    return None


class PasEndpoints:
    """Claim/$submit, Claim/$inquire, Subscription (payer); notifications (provider)."""

    def __init__(
        self,
        service: Authenticating,
        pack: Pack,
        payer_store: payer.PayerStore | None,
        records: PreauthRecords | None,
        block_on: str | None = None,
        now: Callable[[], str] | None = None,
    ) -> None:
        from fhir_adapter.pipeline import now_iso

        self.service = service
        self.pack = pack
        self.payer_store = payer_store
        self.records = records
        self.block_on = block_on
        self.now = now or now_iso
        self._events = 0
        self._events_lock = threading.Lock()
        # pre-populated answers by CRD coverage-assertion-id (the DTR `context`), newest last
        self._prepopulated: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._prepopulated_lock = threading.Lock()

    # -- payer ---------------------------------------------------------------------
    def _guard(
        self, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            if self.payer_store is None:
                return outcome(404, "this service is not a payer (serve --payer)")
            from fhir_adapter.hooks.security import Unauthorized

            try:
                claims = await self.service.authenticate(request)
            except Unauthorized:
                return outcome(401, "unauthorized")
            try:
                return await handler(request, str(claims["iss"]))
            except payer.BadRequest as exc:
                return outcome(exc.status, str(exc), exc.element)

        return run

    def routes(self) -> list[tuple[str, Callable[[Request], Awaitable[Response]]]]:
        return [
            ("/fhir/Claim/$submit", self._guard(self.submit)),
            ("/fhir/Claim/$inquire", self._guard(self.inquire)),
            ("/fhir/Subscription", self._guard(self.subscribe)),
            ("/fhir/Questionnaire/$questionnaire-package", self._guard(self.questionnaire_package)),
            ("/pas/notifications", self.notification),
        ]

    def _base(self, request: Request) -> str:
        return self.service.base_url(request) + "/fhir/"

    async def submit(self, request: Request, submitter: str) -> Response:
        assert self.payer_store is not None
        body = await self.service.body(request)
        result = await run_in_threadpool(
            payer.submit,
            self.pack,
            self.payer_store,
            body,
            submitter,
            now=self.now(),
            base=self._base(request),
            notify=self._notify_later,
            block_on=self.block_on,
        )
        log.info(
            "PAS $submit from %s: %s %s", printable(submitter), result.trace, result.decision.action
        )
        return fhir(result.bundle)

    async def inquire(self, request: Request, submitter: str) -> Response:
        assert self.payer_store is not None
        body = await self.service.body(request)
        found = await run_in_threadpool(payer.inquire, self.payer_store, body, submitter)
        return fhir(found)

    async def subscribe(self, request: Request, submitter: str) -> Response:
        assert self.payer_store is not None
        body = await self.service.body(request)
        resource, org = payer.subscription(body)
        problem = notification_endpoint_problem(resource["channel"]["endpoint"])
        if problem:
            raise payer.BadRequest(
                f"Subscription.channel.endpoint {problem}", "Subscription.channel.endpoint", 422
            )
        created = dict(resource, id=str(uuid.uuid4()), status="active")
        await run_in_threadpool(
            self.payer_store.add_subscription, created["id"], submitter, org, created
        )
        shown = {k: v for k, v in created.items() if k != "channel"}
        shown["channel"] = {k: v for k, v in created["channel"].items() if k != "header"}
        return fhir(shown, 201)

    # -- DTR ------------------------------------------------------------------------------
    def on_coverage(
        self, order: dict[str, Any], case: Case, output: CaseOutput, action: dict[str, Any]
    ) -> None:
        """A CDS order-sign answer about to go out: as the payer, say prior authorization is
        needed and which questionnaire documents it, and keep the answers the evidence gives
        under the assertion's id (what `$questionnaire-package` receives as `context`)."""
        for ext in action["resource"].get("extension") or []:
            if ext.get("url") != CRD_COVERAGE_INFO:
                continue
            parts = ext["extension"]
            covered = next((p.get("valueCode") for p in parts if p.get("url") == "covered"), None)
            if covered == "not-covered":
                return
            for part in parts:
                if part.get("url") == "pa-needed":
                    part["valueCode"] = "auth-needed"
            config = prior_auth()
            parts.append({"url": "questionnaire", "valueCanonical": config.questionnaire.url})
            assertion = next(
                (p.get("valueString") for p in parts if p.get("url") == "coverage-assertion-id"),
                None,
            )
            if not assertion:
                return
            coverage = case.ref(case.coverage[0]) if case.coverage else None
            response = dtr.prepopulated(
                self.pack,
                case,
                output.evaluation,
                order_ref=f"{order['resourceType']}/{order['id']}",
                coverage_ref=coverage,
                now=self.now(),
            )
            with self._prepopulated_lock:
                self._prepopulated[assertion] = response
                while len(self._prepopulated) > PREPOPULATED_MAX:
                    self._prepopulated.popitem(last=False)

    async def questionnaire_package(self, request: Request, submitter: str) -> Response:
        """DTR `$questionnaire-package`: the questionnaire, and the answers pre-populated
        for the order (from the CRD assertion named by `context`, else from the order and
        coverage sent)."""
        body = await self.service.body(request)
        params = _parameters(body)
        coverage = params.get("coverage")
        if not isinstance(coverage, dict) or coverage.get("resourceType") != "Coverage":
            raise payer.BadRequest(
                "the coverage parameter (a Coverage resource) is required",
                "Parameters.parameter:coverage",
            )
        context = params.get("context")
        response = None
        if isinstance(context, str):
            with self._prepopulated_lock:
                response = self._prepopulated.get(context)
        order = params.get("order")
        if response is None and isinstance(order, dict):
            response = await run_in_threadpool(self._from_order, order, coverage)
        return fhir(dtr.package(dtr.questionnaire(), response, self._base(request)))

    def _from_order(self, order: dict[str, Any], coverage: dict[str, Any]) -> dict[str, Any] | None:
        from fhir_adapter.pas.request import PreauthError, evaluate_order
        from fhir_adapter.sources.store import ResourceStore

        store = ResourceStore()
        store.add(coverage)
        try:
            oc = evaluate_order(self.pack, store, order, block_on=self.block_on)
        except PreauthError as exc:
            raise payer.BadRequest(str(exc), "Parameters.parameter:order") from None
        return dtr.prepopulated(
            self.pack,
            oc.case,
            oc.evaluation,
            order_ref=f"ServiceRequest/{order['id']}",
            coverage_ref=store.key_of(coverage),
            now=self.now(),
        )

    def _notify_later(self, subscription: dict[str, Any], response: dict[str, Any]) -> None:
        with self._events_lock:
            self._events += 1
            number = self._events
        bundle = payer.notification(subscription, response, now=self.now(), number=number)
        threading.Thread(
            target=_send, args=(subscription, bundle), name="pas-notify", daemon=True
        ).start()

    # -- provider: notifications ---------------------------------------------------------
    async def notification(self, request: Request) -> Response:
        """A payer's rest-hook notification: its bearer secret names one of our
        subscriptions; the final decision in it is recorded."""
        if self.records is None:
            return outcome(404, "no prior-authorization record here (serve --preauth-db)")
        header = request.headers.get("authorization", "")
        secret = header[7:] if header.lower().startswith("bearer ") else ""
        payer_url = (
            await run_in_threadpool(self.records.subscription_for, secret) if secret else None
        )
        if payer_url is None:
            return outcome(401, "unauthorized")
        body = await self.service.body(request)
        recorded = await run_in_threadpool(self._record, body)
        if not recorded:
            return outcome(422, "the notification holds no ClaimResponse for a request made here")
        return Response(status_code=200)

    def _record(self, body: Any) -> bool:
        assert self.records is not None
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            return False
        for entry in body.get("entry") or []:
            resource = (entry or {}).get("resource") or {}
            response = (
                find_claim_response(resource) if resource.get("resourceType") == "Bundle" else None
            )
            if response is None:
                continue
            trace = next(
                (i.get("value") for i in response.get("identifier") or [] if i.get("value")), None
            )
            known = self.records.get(trace) if isinstance(trace, str) else None
            if known is None or not isinstance(trace, str):
                continue
            decision = read_decision(response)
            self.records.decided(trace, decision.action, decision.number, response)
            if known["out_dir"]:
                write_json(
                    known["out_dir"], f"ClaimResponse-{response.get('id', trace)}.json", response
                )
            log.info("PAS notification: %s is now %s", printable(trace), decision.action)
            return True
        return False


def _parameters(body: Any) -> dict[str, Any]:
    """A Parameters body as name -> resource or value (the first of each name)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise payer.BadRequest("the body must be a Parameters resource", "Parameters")
    out: dict[str, Any] = {}
    for param in body.get("parameter") or []:
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            raise payer.BadRequest("every parameter needs a name", "Parameters.parameter.name")
        value = param.get("resource")
        if value is None:
            value = next((v for k, v in param.items() if k.startswith("value")), None)
        out.setdefault(param["name"], value)
    return out


def _send(subscription: dict[str, Any], bundle: dict[str, Any]) -> None:
    channel = subscription.get("channel") or {}
    endpoint = channel.get("endpoint", "")
    headers = {"Content-Type": "application/fhir+json"}
    for line in channel.get("header") or []:
        name, _, value = str(line).partition(":")
        if name.strip() and value.strip():
            headers[name.strip()] = value.strip()
    session = requests.Session()
    session.trust_env = False
    try:
        resp = session.post(
            endpoint,
            data=orjson.dumps(bundle),
            headers=headers,
            timeout=NOTIFY_TIMEOUT,
            allow_redirects=False,
        )
        log.info("PAS notification to %s: HTTP %d", printable(endpoint), resp.status_code)
    except requests.RequestException as exc:
        log.warning("PAS notification to %s failed (%s)", printable(endpoint), type(exc).__name__)
    finally:
        session.close()
