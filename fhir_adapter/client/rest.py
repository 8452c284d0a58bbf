"""A small FHIR R4 REST client on one `requests.Session`.

Retries come from urllib3's `Retry` (408/429/5xx, `Retry-After` in seconds or
HTTP-date, exponential backoff, a total time budget); a POST is retried only
when the caller marks it idempotent (a transaction of conditional entries, a
batch of reads, a `_search`). Every request has connect and read timeouts, an
overall deadline for its whole answer and a cap on the answer's size.
Server errors become `ServerError` carrying the OperationOutcome's text.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    HTTPError,
    InvalidHeader,
    MaxRetryError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)
from urllib3.util.retry import Retry

from fhir_adapter.client.auth import FhirAuth, TokenEndpointAuth
from fhir_adapter.client.capabilities import ServerFeatures, is_refusal
from fhir_adapter.client.gate import BUSY_STATUSES, HostGate
from fhir_adapter.client.urls import base_url_problem, origin, redact_url, same_origin
from fhir_adapter.errors import PagingError, ServerError, printable
from fhir_adapter.fhir.references import with_references

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SUPPORTED_VERSIONS = ("4.0.", "4.3.")
MAX_GET_URL = 1800


class BudgetRetry(Retry):
    """urllib3 Retry that gives up once a per-request time budget is spent.

    The clock starts at a request's first retry (urllib3 hands each request a
    fresh chain of `new()` copies), so one policy object serves every request
    without shared mutable state.
    """

    def __init__(
        self,
        *args: Any,
        budget: float | None = None,
        started: float | None = None,
        gate: HostGate | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.budget = budget
        self.started = started
        self.gate = gate

    def new(self, **kw: Any) -> BudgetRetry:
        kw.setdefault("budget", self.budget)
        kw.setdefault("started", self.started)
        kw.setdefault("gate", self.gate)
        return super().new(**kw)

    def sleep(self, response: Any = None) -> None:
        """429/503 pause every request to the host together (the gate's shared backoff);
        other retries back off on their own."""
        status = getattr(response, "status", None)
        if self.gate is None or status not in BUSY_STATUSES:
            super().sleep(response)
            return
        retry_after = self.get_retry_after(response) if self.respect_retry_after_header else None
        self.gate.busy(retry_after)
        deadline = None
        if self.budget is not None and self.started is not None:
            deadline = self.started + self.budget
        try:
            self.gate.wait_out(deadline, "retry")
        except ServerError:
            busy = ResponseError("busy past the retry budget")
            raise MaxRetryError(None, "", busy) from None  # type: ignore[arg-type]

    def parse_retry_after(self, retry_after: str) -> float:
        """A garbled `Retry-After` falls back to the backoff instead of escaping as an error."""
        try:
            return super().parse_retry_after(retry_after)
        except InvalidHeader:
            return 0.0

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if isinstance(error, SSLError):  # a TLS handshake that failed fails the same way again
            raise MaxRetryError(_pool, url or "", error) from error
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.budget is None:
            return new
        now = time.monotonic()
        started = self.started if self.started is not None else now
        assert isinstance(new, BudgetRetry)
        new.started = started
        wait = new.get_backoff_time()
        if response is not None:
            wait = max(wait, self.get_retry_after(response) or 0.0)
        if now + wait > started + self.budget:
            raise MaxRetryError(_pool, url or "", error)
        return new


def retry_policy(
    retries: int, backoff: float, budget: float, *, post: bool, gate: HostGate | None = None
) -> BudgetRetry:
    """408/429/5xx and connection errors with backoff; POST only for idempotent sessions;
    with `gate`, 429/503 wait out one pause shared by every request to the host."""
    methods = set(Retry.DEFAULT_ALLOWED_METHODS) | ({"POST"} if post else set())
    return BudgetRetry(
        total=retries,
        connect=min(retries, 2),  # a refused connection rarely heals in seconds
        read=retries,
        status=retries,
        backoff_factor=backoff,
        backoff_max=30,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset(methods),
        respect_retry_after_header=True,
        raise_on_status=False,
        budget=budget,
        gate=gate,
    )


class CrossOriginRedirect(requests.RequestException):
    """A server answered with a redirect to another origin, which is never followed."""


def _refuse_cross_origin_redirect(
    resp: requests.Response, *args: Any, **kwargs: Any
) -> requests.Response:
    """Response hook: a redirect may stay on the origin it came from, nowhere else (neither
    the token nor the request, nor a body, goes to a host the caller did not name)."""
    if resp.is_redirect:
        target = urljoin(resp.url, resp.headers.get("location", ""))
        if not same_origin(target, resp.url or ""):
            resp.close()
            raise CrossOriginRedirect(target, response=resp)
    return resp


def retrying_session(
    policy: BudgetRetry, auth: FhirAuth | None, pool_size: int = 8
) -> requests.Session:
    """A Session whose adapters carry `policy`; no proxies or netrc from the environment;
    redirects to another origin refused (a `CrossOriginRedirect`)."""
    session = requests.Session()
    session.trust_env = False
    session.hooks["response"].append(_refuse_cross_origin_redirect)
    session.headers.update({"Accept": FHIR_JSON, "User-Agent": "fhir-adapter"})
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if auth is not None:
        session.auth = auth
    return session


def excerpt(text: str, limit: int = 200) -> str:
    """`text` on one line, cut at `limit` characters (a server's message can be a stack trace)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def outcome_text(outcome: Mapping[str, Any]) -> str:
    parts = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = (
            (issue.get("details") or {}).get("text")
            or issue.get("diagnostics")
            or issue.get("code")
        )
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        parts.append(f"{text}{f' at {where}' if where else ''}")
    return "; ".join(str(p) for p in parts) or "no details"


class FhirClient:
    """read / search (with safe paging) / batch / transaction against one FHIR base URL."""

    def __init__(
        self,
        base_url: str,
        auth: FhirAuth | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        retries: int = 5,
        backoff: float = 0.5,
        retry_budget: float = 120.0,
        max_pages: int = 10_000,
        check_version: bool = True,
        deadline: float = 300.0,
        max_response_bytes: int = 512 * 1024 * 1024,
        max_in_flight: int = 8,
        warn: Callable[[str], None] | None = None,
        capabilities: dict[str, Any] | None = None,
    ) -> None:
        check_base_url(base_url)
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.deadline = deadline
        self.max_response_bytes = max_response_bytes
        self.max_pages = max_pages
        self.auth = auth
        if auth is not None:
            auth.bind(self.base_url)
        # one gate for the host: requests in flight capped, 429/503 paused together
        self.gate = HostGate(max_in_flight, backoff)
        self.warn = warn
        # Two sessions, one policy each: a POST is replayed only on the idempotent one.
        self.session = retrying_session(
            retry_policy(retries, backoff, retry_budget, post=False, gate=self.gate),
            auth,
            max_in_flight,
        )
        self.idempotent_session = retrying_session(
            retry_policy(retries, backoff, retry_budget, post=True, gate=self.gate),
            auth,
            max_in_flight,
        )
        self.requests: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._tallies = threading.local()
        # a CapabilityStatement already read from this base (and checked) saves the request
        self._capabilities: dict[str, Any] | None = capabilities
        self._features: ServerFeatures | None = None
        self._features_lock = threading.Lock()
        self.check_version = check_version
        if isinstance(auth, TokenEndpointAuth) and auth.token_endpoint is None:
            auth.configure(self.smart_configuration())
        if check_version:
            self.capabilities()

    def close(self) -> None:
        self.session.close()
        self.idempotent_session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------
    def url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/"))

    @contextlib.contextmanager
    def tally(self) -> Iterator[Counter[str]]:
        """Count the requests this thread makes inside the block (per case, whatever the
        other threads are doing)."""
        counter: Counter[str] = Counter()
        stack: list[Counter[str]] = getattr(self._tallies, "stack", [])
        self._tallies.stack = [*stack, counter]
        try:
            yield counter
        finally:
            self._tallies.stack = stack

    def count(self, kind: str) -> None:
        with self._count_lock:
            self.requests[kind] += 1
        for counter in getattr(self._tallies, "stack", ()):
            counter[kind] += 1

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        body: Any = None,
        form: Sequence[tuple[str, str]] | None = None,
        idempotent: bool = False,
        expect: str | None = None,
        kind: str = "read",
        headers: Mapping[str, str] | None = None,
        answer: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One HTTP exchange; returns the parsed JSON resource or raises ServerError.

        `answer`, when given, receives the status and the Location header (a write that
        answers with no body still says where the resource is)."""
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        headers = dict(headers or {})
        data: bytes | None = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = FHIR_JSON
        elif form is not None:
            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        session = self.idempotent_session if idempotent else self.session
        self.count(kind)
        started = time.monotonic()
        where = f"{method} {redact_url(url)}"
        self.gate.enter(started + self.deadline, where)
        try:
            resp = session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=True,
                stream=True,
            )
            with resp:
                content = self._read_body(resp, where, started)
            if resp.status_code not in BUSY_STATUSES:
                self.gate.answered()
        except CrossOriginRedirect as exc:
            target = redact_url(str(exc)).split("/", 3)[:3]
            raise ServerError(
                f"{method} {redact_url(url)}: redirected to another origin "
                f"({'/'.join(target)}); not followed"
            ) from None
        except requests.exceptions.RetryError:
            raise ServerError(f"{method} {redact_url(url)}: gave up after retries") from None
        except (requests.Timeout, ReadTimeoutError):
            raise ServerError(f"{method} {redact_url(url)}: timed out") from None
        except requests.ConnectionError as exc:
            raise ServerError(f"{method} {redact_url(url)}: {connection_failure(exc)}") from None
        except (HTTPError, OSError) as exc:  # while reading the body
            raise ServerError(
                f"{method} {redact_url(url)}: failed ({type(exc).__name__})"
            ) from None
        finally:
            self.gate.leave()
        if answer is not None:
            answer["status"] = resp.status_code
            answer["location"] = resp.headers.get("Location") or resp.headers.get(
                "Content-Location"
            )
            if not content and resp.status_code < 400:
                return {}
        return self._parse(resp, content, method, url, expect)

    def _read_body(
        self, resp: requests.Response, where: str, started: float, cut_at: int | None = None
    ) -> bytes:
        """The body as it arrives, each socket read bounded by the read timeout; a
        ServerError once the exchange passes `deadline` seconds (a server trickling bytes
        is cut off, not waited for) or the body `max_response_bytes` (with `cut_at`, the
        first `cut_at` bytes are returned instead)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() - started > self.deadline:
                raise ServerError(f"{where}: no complete answer within {self.deadline:g} s")
            chunk = resp.raw.read1(65536, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            chunks.append(chunk)
            if cut_at is not None and size >= cut_at:
                return b"".join(chunks)[:cut_at]
            if size > self.max_response_bytes:
                raise ServerError(
                    f"{where}: the answer is larger than {self.max_response_bytes} bytes"
                )

    def _parse(
        self,
        resp: requests.Response,
        content: bytes,
        method: str,
        url: str,
        expect: str | None,
    ) -> dict[str, Any]:
        where = f"{method} {redact_url(url)}"
        try:
            text = content.decode(resp.encoding or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            text = content.decode("utf-8", errors="replace")
        try:
            value = orjson.loads(content) if content else None
        except orjson.JSONDecodeError:
            value = None
            if resp.status_code < 400:
                raise ServerError(
                    f"{where}: HTTP {resp.status_code} with a body that is not JSON: "
                    f"{excerpt(text)!r}",
                    status=resp.status_code,
                ) from None
        if resp.status_code >= 400:
            if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
                raise ServerError(
                    f"{where}: HTTP {resp.status_code}: {outcome_text(value)}",
                    status=resp.status_code,
                    outcome=value,
                )
            raise ServerError(
                f"{where}: HTTP {resp.status_code}: {excerpt(text) or resp.reason}",
                status=resp.status_code,
            )
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise ServerError(f"{where}: HTTP {resp.status_code}: the body is not a FHIR resource")
        if expect and value["resourceType"] != expect:
            raise ServerError(f"{where}: expected a {expect}, got a {value['resourceType']}")
        return value

    # -- FHIR interactions --------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        """GET [base]/metadata once; refuses servers that are not FHIR R4 (4.0.x / 4.3.x)."""
        if self._capabilities is None:
            cs = self.request("GET", "metadata", expect="CapabilityStatement", kind="metadata")
            version = str(cs.get("fhirVersion", ""))
            if not version.startswith(SUPPORTED_VERSIONS):
                raise ServerError(
                    f"{redact_url(self.base_url)} speaks FHIR {version or 'of unknown version'}; "
                    "this adapter needs FHIR R4 (4.0.x or 4.3.x)"
                )
            self._capabilities = cs
        return self._capabilities

    @property
    def features(self) -> ServerFeatures:
        """What the server's CapabilityStatement lists (and, as the run goes on, what it
        refused of that): shared by every thread of the run."""
        with self._features_lock:  # one object per run: its refusals are everyone's
            if self._features is None:
                if self._capabilities is None and not self.check_version:
                    self._features = ServerFeatures.assume_all(self.warn)
                else:
                    cs = self.capabilities()
                    self._features = ServerFeatures.from_capabilities(cs, self.warn)
            return self._features

    def smart_configuration(self) -> dict[str, Any]:
        url = self.url(".well-known/smart-configuration")
        self.count("discovery")
        try:
            # Discovery happens before there is a token: send it without credentials.
            resp = self.session.get(
                url, headers={"Accept": "application/json"}, timeout=self.timeout, auth=no_auth
            )
        except requests.RequestException as exc:
            raise ServerError(f"GET {redact_url(url)}: {connection_failure(exc)}") from None
        if resp.status_code != 200:
            raise ServerError(
                f"GET {redact_url(url)}: HTTP {resp.status_code}: no SMART configuration"
            )
        try:
            value = resp.json()
        except ValueError:
            raise ServerError(
                f"GET {redact_url(url)}: the SMART configuration is not JSON"
            ) from None
        if not isinstance(value, dict):
            raise ServerError(
                f"GET {redact_url(url)}: the SMART configuration is not a JSON object"
            )
        return value

    def read(self, rtype: str, rid: str) -> dict[str, Any]:
        return self.request("GET", f"{rtype}/{rid}", expect=rtype)

    def search_pages(
        self, rtype: str, params: Sequence[tuple[str, str]] = ()
    ) -> Iterator[dict[str, Any]]:
        """Searchset pages, following `next` (absolute, or relative to the base URL) only
        within the base URL's origin."""
        query = urlencode(list(params))
        if len(query) > MAX_GET_URL:
            page = self.request(
                "POST",
                f"{rtype}/_search",
                form=list(params),
                idempotent=True,
                expect="Bundle",
            )
        else:
            page = self.request("GET", f"{rtype}?{query}" if query else rtype, expect="Bundle")
        yield page
        yield from self.pages_after(page)

    def pages_after(self, page: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The searchset pages after `page` (a search's first page, or a batch entry's),
        following `next` (absolute, or relative to the base URL) only within the base
        URL's origin."""
        seen: set[str] = set()
        pages = 1
        while True:
            nxt = next(
                (
                    link.get("url")
                    for link in page.get("link") or []
                    if isinstance(link, dict) and link.get("relation") == "next"
                ),
                None,
            )
            if not nxt or not isinstance(nxt, str):
                return
            if "://" not in nxt:  # relative (to the base URL, or to its root with a "/")
                nxt = urljoin(self.base_url, nxt)
            if not self.same_origin(nxt):
                sent_to = origin(nxt)
                raise PagingError(
                    "refusing to follow a next link to another origin "
                    f"({sent_to[1] if sent_to else 'a URL that cannot be judged'}); "
                    "the server's paging is misconfigured"
                )
            if nxt in seen:
                raise PagingError(
                    f"paging loop: the server sent the same next link twice ({redact_url(nxt)})"
                )
            seen.add(nxt)
            pages += 1
            if pages > self.max_pages:
                raise PagingError(
                    f"more than {self.max_pages} pages; raise max_pages to read them all"
                )
            page = self.request("GET", nxt, expect="Bundle")
            yield page

    def search(
        self, rtype: str, params: Sequence[tuple[str, str]] = ()
    ) -> Iterator[dict[str, Any]]:
        """Every resource of every page (matches and includes), in server order."""
        for page in self.search_pages(rtype, params):
            for entry in page.get("entry") or []:
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    yield entry["resource"]

    def batch_get(self, urls: Sequence[str]) -> list[dict[str, Any] | None]:
        """Several reads/searches in one batch round trip; None where an entry failed."""
        return [
            resource if status.startswith("2") else None
            for status, resource in self.batch_entries(urls)
        ]

    def batch_entries(self, urls: Sequence[str]) -> list[tuple[str, dict[str, Any] | None]]:
        """(status, resource) of each GET of a batch, in order ("" where none came back)."""
        if not urls:
            return []
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": u}} for u in urls],
        }
        reply = self.request("POST", "", body=bundle, idempotent=True, expect="Bundle")
        out: list[tuple[str, dict[str, Any] | None]] = []
        for url, entry in zip(urls, reply.get("entry") or [], strict=False):
            status = str(((entry or {}).get("response") or {}).get("status", ""))
            resource = (entry or {}).get("resource")
            if not isinstance(resource, dict):
                resource = None
            elif status.startswith("2") and resource.get("type") == "searchset":
                resource = self.whole_searchset(resource, url)
            out.append((status, resource))
        out.extend([("", None)] * (len(urls) - len(out)))
        return out[: len(urls)]

    def whole_searchset(self, first: dict[str, Any], url: str) -> dict[str, Any]:
        """A batch entry's searchset with every page: a batch answers a search with its
        first page, and the rest would be lost without a word. Its `next` link is
        followed; a server that sends none but a `total` above the matches it sent
        (Medplum does) is asked `url` again as a plain, paged search."""
        later = list(self.pages_after(first))
        if later:
            pages = [first, *later]
        elif _more_than_sent(first):
            rtype, _, query = url.partition("?")
            pages = list(self.search_pages(rtype, parse_qsl(query, keep_blank_values=True)))
        else:
            return first
        whole = {k: v for k, v in first.items() if k not in ("link", "entry")}
        whole["entry"] = [
            e for page in pages for e in page.get("entry") or [] if isinstance(e, dict)
        ]
        return whole

    def same_origin(self, url: str) -> bool:
        """Whether an absolute URL goes to the base URL's origin (where the token may go),
        judged as urllib3 will send it."""
        return same_origin(url, self.base_url)

    def fetch_bytes(self, url: str, limit: int) -> tuple[bytes, str] | None:
        """GET a document on the server's own origin: at most `limit` bytes, and its type.

        Another origin is refused without a request (the token is origin-bound anyway,
        but the content would not be the server's). None on any failure: a missing
        attachment is missing evidence, not an error of the run.
        """
        full = url if "://" in url else self.url(url)
        if not self.same_origin(full):
            return None
        self.count("attachment")
        started = time.monotonic()
        try:
            self.gate.enter(started + self.deadline, "attachment")
        except ServerError:
            return None
        try:
            resp = self.session.get(
                full,
                headers={"Accept": "text/plain, text/html, */*"},
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,  # a redirect could lead anywhere: not followed
            )
            with resp:
                if resp.status_code != 200:
                    return None
                body = self._read_body(resp, "attachment", started, cut_at=limit)
                return body, str(resp.headers.get("Content-Type") or "")
        except (requests.RequestException, ServerError, HTTPError, OSError):
            return None
        finally:
            self.gate.leave()

    def transaction(self, bundle: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """POST a transaction; retried only when every entry is conditional (idempotent)."""
        return self.request(
            "POST", "", body=bundle, idempotent=idempotent, expect="Bundle", kind="write"
        )

    def write(self, bundle: dict[str, Any]) -> None:
        """Write a transaction Bundle the way the server takes it: as one transaction where
        its CapabilityStatement lists them, else entry by entry (see `write_entries`). A
        server that lists transactions and then refuses one (501, or 400 `not-supported`)
        is written entry by entry for the rest of the run."""
        features = self.features
        if features.transaction():
            try:
                self.transaction(bundle)
                return
            except ServerError as exc:
                if not is_refusal(exc, strict=True):
                    raise
                features.refuse("transaction", redact_url(self.base_url), exc)
        self.write_entries(bundle)

    def write_entries(self, bundle: dict[str, Any]) -> None:
        """A transaction's entries as single requests, in order, with the same conditions:
        a POST with `ifNoneExist` is a conditional create (`If-None-Exist`), a PUT keeps
        its `If-Match`, a PUT to `Type?query` is a conditional update. A `urn:uuid:`
        fullUrl becomes the `Type/id` the server gave, in the entries after it. Not
        atomic: a failure leaves the entries before it written, which a re-run finds
        by their identifiers and completes without duplicates."""
        mapping: dict[str, str] = {}
        for entry in bundle.get("entry") or []:
            request = entry.get("request") or {}
            method = str(request.get("method", "POST"))
            url = str(request.get("url", ""))
            headers = {}
            if request.get("ifNoneExist"):
                headers["If-None-Exist"] = str(request["ifNoneExist"])
            if request.get("ifMatch"):
                headers["If-Match"] = str(request["ifMatch"])
            resource = with_references(entry.get("resource"), mapping) if mapping else None
            answer: dict[str, Any] = {}
            got = self.request(
                method,
                url,
                body=resource or entry.get("resource"),
                idempotent=method == "PUT" or "If-None-Exist" in headers,
                kind="write",
                headers=headers,
                answer=answer,
            )
            full = entry.get("fullUrl")
            written = _written_key(got, answer.get("location"))
            if isinstance(full, str) and full.startswith("urn:") and written:
                mapping[full] = written


def _written_key(resource: Mapping[str, Any], location: str | None) -> str | None:
    """`Type/id` of a written resource: from the body, else from the Location header."""
    if resource.get("resourceType") and resource.get("id"):
        return f"{resource['resourceType']}/{resource['id']}"
    if location:
        parts = location.split("/_history/", 1)[0].rstrip("/").split("/")
        if len(parts) >= 2:
            return f"{parts[-2]}/{parts[-1]}"
    return None


def no_auth(r: requests.PreparedRequest) -> requests.PreparedRequest:
    return r


def check_base_url(base_url: str, option: str = "--base-url") -> None:
    """A base URL judged as it will be sent (else requests' message is cryptic, or the
    request goes somewhere the user did not mean); the message names `option`."""
    problem = base_url_problem(base_url)
    if problem is None:
        return
    shown = "" if "\\" in base_url else f" {redact_url(base_url)!r}"
    if problem.startswith("needs"):  # nothing to redact without a scheme: show what was given
        shown = f" {printable(base_url.rsplit('@', 1)[-1])!r}"
    raise ServerError(f"{option}: the base URL{shown} {problem}")


def connection_failure(exc: Exception) -> str:
    """What went wrong reaching a server, in words a user can act on (never a secret)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return (
            "the TLS handshake failed (SSLError): the server may not speak TLS at this address "
            "(try http://) or its certificate is not trusted"
        )
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.RetryError):
        return "gave up after retries"
    text = str(exc)
    if "refused" in text.lower():
        return "cannot connect (connection refused)"
    return f"cannot connect ({type(exc).__name__})"


def _more_than_sent(page: dict[str, Any]) -> bool:
    """Whether a searchset's `total` counts more matches than the page holds."""
    total = page.get("total")
    if not isinstance(total, int) or isinstance(total, bool):
        return False
    matches = sum(
        1
        for e in page.get("entry") or []
        if isinstance(e, dict) and ((e.get("search") or {}).get("mode") or "match") == "match"
    )
    return total > matches
