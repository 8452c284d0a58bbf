"""A hook call's request, and the FHIR data behind it: prefetch first, then `fhirServer`.

Prefetch semantics (CDS Hooks 2.0): a key the client left out is fetched, a
`null` means there is no such data, an OperationOutcome (as the value, or as an
error entry of a Bundle) means the client failed and it is fetched too. Any other
value must be a resource of the type its query returns, or a Bundle of well-formed
entries: else the call is the client's error (422 naming the key). Fetching
goes through the project's `FhirClient` (its retries and timeouts) with the
`fhirAuthorization` token as a `BearerAuth`, which attaches it only to requests
for the `fhirServer` origin. When needed data can be had neither way the answer
is 412.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhir_adapter.client.urls import base_url_problem, https_or_loopback
from fhir_adapter.errors import HookError, PreconditionFailed, ServerError
from fhir_adapter.fhir.elements import malformed_element
from fhir_adapter.fhir.references import tail_key
from fhir_adapter.hooks.services import (
    ID_FIELDS,
    Service,
    query_type,
    render,
    valid_context_value,
)
from fhir_adapter.sources.store import ResourceStore

if TYPE_CHECKING:
    from fhir_adapter.case import Case
    from fhir_adapter.client.rest import FhirClient
    from fhir_adapter.payers import Payers


@dataclass
class HookRequest:
    """The parts of a hook call the service uses. The access token is kept out of `repr`."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any] | None
    fhir_server: str | None = None
    access_token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, body: Any) -> HookRequest:
        if not isinstance(body, dict):
            raise HookError("the hook request must be a JSON object")
        hook, instance, context = body.get("hook"), body.get("hookInstance"), body.get("context")
        if not isinstance(hook, str) or not hook:
            raise HookError("'hook' is required (a string)", 422)
        if not isinstance(instance, str) or not instance:
            raise HookError("'hookInstance' is required (a string)", 422)
        if not isinstance(context, dict):
            raise HookError("'context' is required (an object)", 422)
        prefetch = body.get("prefetch")
        if prefetch is not None and not isinstance(prefetch, dict):
            raise HookError("'prefetch' must be an object", 422)
        server = body.get("fhirServer")
        if server is not None and (not isinstance(server, str) or not server):
            raise HookError("'fhirServer' must be a URL", 422)
        token = None
        auth = body.get("fhirAuthorization")
        if auth is not None:
            if not isinstance(auth, dict) or not isinstance(auth.get("access_token"), str):
                raise HookError("'fhirAuthorization' must carry an access_token", 422)
            if str(auth.get("token_type", "Bearer")).lower() != "bearer":
                raise HookError("'fhirAuthorization.token_type' must be Bearer", 422)
            if server is None:
                raise HookError("'fhirAuthorization' needs 'fhirServer'", 422)
            token = auth["access_token"].strip()
            if not token:
                # reading without the token would be reading unauthenticated: not done
                raise HookError("'fhirAuthorization.access_token' is empty", 400)
        if server is not None:
            check_fhir_server(server)
        for name in (*ID_FIELDS, "userId"):
            value = context.get(name)
            if value is not None and not valid_context_value(name, value):
                what = "a reference like Practitioner/123" if name == "userId" else "a FHIR id"
                raise HookError(
                    f"context.{name} must be {what} ([A-Za-z0-9-.], 1-64 characters)", 400
                )
        return cls(hook, instance, context, prefetch, server, token)

    def context_id(self, name: str, required: bool = True) -> str | None:
        value = self.context.get(name)
        if value is None and not required:
            return None
        if value is None:
            raise HookError(f"context.{name} is required (a logical id)", 422)
        if not valid_context_value(name, value):
            raise HookError(f"context.{name} must be a FHIR id ([A-Za-z0-9-.], 1-64)", 400)
        assert isinstance(value, str)
        return value


def check_fhir_server(url: str) -> None:
    """https, or plain http to a loopback address only (a test or a sidecar), judged as
    the request will be sent (no backslash, no userinfo)."""
    if not https_or_loopback(url):
        raise HookError("'fhirServer' must be an https URL", 422)
    problem = base_url_problem(url)  # a query would be dropped from every read
    if problem is not None:
        raise HookError(f"'fhirServer' {problem}", 422)


Entry = tuple[dict[str, Any], str | None]


def bundle_entries(
    value: Any, where: str, status: int = 422, match_type: str | None = None
) -> list[Entry]:
    """A resource, or the `entry[].resource`s of a Bundle, each with its fullUrl (so that
    `urn:uuid` references resolve): the one walk over Bundle entries in the hooks.

    A wrong JSON shape is an error naming `where` (422 by default: the caller's), never read
    as "no data". With `match_type`, a search-match entry must be a resource of that type.
    """
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise HookError(f"{where} must be a FHIR resource (an object with a resourceType)", status)
    if value["resourceType"] != "Bundle":
        _check_elements(value, where, status)
        return [(value, None)]
    entries = value.get("entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise HookError(f"{where}.entry must be an array", status)
    out: list[Entry] = []
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise HookError(f"{where}.entry[{i}] must be an object with a resource", status)
        _check_elements(res, f"{where}.entry[{i}].resource", status)
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if match_type and mode == "match" and res["resourceType"] != match_type:
            raise HookError(
                f"{where}.entry[{i}] is a search match, so a {match_type}, "
                f"not a {res['resourceType']}",
                status,
            )
        url = entry.get("fullUrl")
        out.append((res, url if isinstance(url, str) else None))
    return out


def _check_elements(resource: dict[str, Any], where: str, status: int) -> None:
    """An element of a shape FHIR rules out (an id that is no id, a Coding or Period that is
    not an object of strings) is the sender's error, said before anything is evaluated
    (422 for the caller's own data, 412 for what its fhirServer answered)."""
    problem = malformed_element(resource)
    if problem is not None:
        raise HookError(f"{where}: {problem}", status)


def add_entries(store: ResourceStore, entries: list[Entry]) -> None:
    """Store walked resources under their fullUrls; an OperationOutcome is a message, not data."""
    for res, url in entries:
        if res["resourceType"] != "OperationOutcome":
            store.add(res, url)


def is_error_outcome(value: dict[str, Any], entries: list[Entry]) -> bool:
    """An OperationOutcome in place of prefetched data (the value, or an error entry of a
    Bundle): the client could not fetch it."""
    if value["resourceType"] == "OperationOutcome":
        return True
    return any(
        res["resourceType"] == "OperationOutcome"
        and any(
            i.get("severity") in ("error", "fatal")
            for i in res.get("issue") or []
            if isinstance(i, dict)
        )
        for res, _ in entries
    )


def given_prefetch(service: Service, prefetch: dict[str, Any] | None) -> dict[str, list[Entry]]:
    """The usable prefetched keys of the service, checked once: each value a resource of
    the type its query returns or a Bundle (else 422 naming the key). `null` is kept as no
    data; a key left out or holding an error outcome is not returned, so it is fetched."""
    out: dict[str, list[Entry]] = {}
    for key, template in service.prefetch.items():
        if prefetch is None or key not in prefetch:
            continue
        value = prefetch[key]
        if value is None:
            out[key] = []
            continue
        where, rtype = f"prefetch.{key}", query_type(template)
        entries = bundle_entries(value, where, match_type=rtype)
        if value["resourceType"] not in ("Bundle", "OperationOutcome", rtype):
            raise HookError(
                f"{where} must be a {rtype} or a Bundle, not a {value['resourceType']}", 422
            )
        if not is_error_outcome(value, entries):
            out[key] = entries
    return out


class VerifiedServers:
    """fhirServer base URLs whose /metadata said FHIR R4, with that CapabilityStatement (what
    the reads may use: batch, includes), so each is read once an hour."""

    TTL = 3600.0

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def fresh(self, base: str) -> dict[str, Any] | None:
        with self._lock:
            seen = self._seen.get(base)
        return seen[1] if seen is not None and time.monotonic() - seen[0] < self.TTL else None

    def add(self, base: str, capabilities: dict[str, Any]) -> None:
        with self._lock:
            self._seen[base] = (time.monotonic(), capabilities)


@dataclass
class HookData:
    """Collects a call's data into a ResourceStore; opens the FHIR client only if needed."""

    request: HookRequest
    service: Service
    verified: VerifiedServers
    timeout: tuple[float, float] = (3.0, 10.0)
    deadline: float = 20.0
    max_bytes: int = 32 * 1024 * 1024
    _client: FhirClient | None = None
    fetched_keys: list[str] = field(default_factory=list)
    reads: int = 0
    # the payer overlays cases are judged by (default: the shipped ones)
    payers: Payers | None = None
    given: dict[str, list[Entry]] = field(init=False)

    def __post_init__(self) -> None:
        # checked before any work: a malformed prefetch is a 422 whatever the call needs
        self.given = given_prefetch(self.service, self.request.prefetch)

    @property
    def can_fetch(self) -> bool:
        return self.request.fhir_server is not None

    def client(self, why: str) -> FhirClient:
        if self._client is not None:
            return self._client
        if self.request.fhir_server is None:
            raise PreconditionFailed(f"{why}: not prefetched, and no fhirServer to read it from")
        from fhir_adapter.client.auth import BearerAuth
        from fhir_adapter.client.rest import FhirClient

        token = self.request.access_token
        base = self.request.fhir_server.rstrip("/") + "/"
        known = self.verified.fresh(base)
        client = FhirClient(
            self.request.fhir_server,
            BearerAuth(token) if token else None,
            timeout=self.timeout,
            retries=2,
            backoff=0.2,
            retry_budget=sum(self.timeout),
            check_version=False,  # below, once an hour per server
            deadline=self.deadline,
            max_response_bytes=self.max_bytes,
            capabilities=known,
        )
        if known is None:
            try:
                self.verified.add(client.base_url, client.capabilities())
            except ServerError as exc:
                client.close()
                raise PreconditionFailed(f"{why}: the FHIR server cannot be used: {exc}") from None
        self._client = client
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def prefetched_store(self) -> ResourceStore:
        """The service's prefetch keys, each from the prefetch or else read from fhirServer."""
        store = ResourceStore()
        wanted: list[tuple[str, str]] = []
        for key, template in self.service.prefetch.items():
            query = render(template, self.request.context)
            if query is None:
                continue  # a token without a value: the key does not apply to this call
            if key in self.given:
                add_entries(store, self.given[key])
                continue
            wanted.append((key, query))
        if wanted:
            names = ", ".join(k for k, _ in wanted)
            results = self.fetch([q for _, q in wanted], f"prefetch {names}")
            for (key, _), result in zip(wanted, results, strict=True):
                if result is None:
                    if key in self.service.required:
                        raise PreconditionFailed(
                            f"prefetch {key}: the FHIR server could not answer it"
                        )
                    continue
                add_entries(store, bundle_entries(result, f"fhirServer's prefetch.{key}", 412))
            self.fetched_keys = [k for k, _ in wanted]
        return store

    def fetch(self, urls: list[str], why: str) -> list[dict[str, Any] | None]:
        from fhir_adapter.client.reads import Reader

        client = self.client(why)
        before = sum(client.requests.values())
        try:  # batch and includes where the server's CapabilityStatement lists them
            results = Reader(client).get_many(urls)
        except ServerError as exc:
            raise PreconditionFailed(f"{why}: {exc}") from None
        self.reads += sum(client.requests.values()) - before
        return results

    def resolve_leftovers(self, store: ResourceStore, case: Case) -> bool:
        """Read references the case still cannot resolve (one batch); True if any were found.
        Without a fhirServer they stay dangling, and the findings say so."""
        if not self.can_fetch:
            return False
        dangling = {tail_key(r) for refs in case.unresolved.values() for r in refs}
        leftovers = sorted(k for k in dangling if k and not store.has(k))
        if not leftovers:
            return False
        found = False
        for res in self.fetch(leftovers, "resolving references"):
            if res is not None:
                _check_elements(res, "fhirServer's answer resolving references", 412)
                store.add(res)
                found = True
        return found
