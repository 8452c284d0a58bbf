"""A small FHIR R4 REST client on one `requests.Session`.

Retries come from urllib3's `Retry` (408/429/5xx, `Retry-After` in seconds or
HTTP-date, exponential backoff, a total time budget); a POST is retried only
when the caller marks it idempotent (a transaction of conditional entries, a
batch of reads, a `_search`). Every request has connect and read timeouts, an
overall deadline for its whole answer and a cap on the answer's size.
Server errors become `ServerError` carrying the OperationOutcome's text.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urljoin

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError, InvalidHeader, MaxRetryError, ReadTimeoutError, SSLError
from urllib3.util.retry import Retry

from fhir_adapter.client.auth import FhirAuth, TokenEndpointAuth
from fhir_adapter.client.urls import base_url_problem, origin, redact_url, same_origin
from fhir_adapter.errors import PagingError, ServerError, printable

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
        self, *args: Any, budget: float | None = None, started: float | None = None, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.budget = budget
        self.started = started

    def new(self, **kw: Any) -> BudgetRetry:
        kw.setdefault("budget", self.budget)
        kw.setdefault("started", self.started)
        return super().new(**kw)

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


def retry_policy(retries: int, backoff: float, budget: float, *, post: bool) -> BudgetRetry:
    """408/429/5xx and connection errors with backoff; POST only for idempotent sessions."""
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


def retrying_session(policy: BudgetRetry, auth: FhirAuth | None) -> requests.Session:
    """A Session whose adapters carry `policy`; no proxies or netrc from the environment;
    redirects to another origin refused (a `CrossOriginRedirect`)."""
    session = requests.Session()
    session.trust_env = False
    session.hooks["response"].append(_refuse_cross_origin_redirect)
    session.headers.update({"Accept": FHIR_JSON, "User-Agent": "fhir-adapter"})
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8, max_retries=policy)
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
        # Two sessions, one policy each: a POST is replayed only on the idempotent one.
        self.session = retrying_session(
            retry_policy(retries, backoff, retry_budget, post=False), auth
        )
        self.idempotent_session = retrying_session(
            retry_policy(retries, backoff, retry_budget, post=True), auth
        )
        self.requests: Counter[str] = Counter()
        self._capabilities: dict[str, Any] | None = None
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
    ) -> dict[str, Any]:
        """One HTTP exchange; returns the parsed JSON resource or raises ServerError."""
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        headers = {}
        data: bytes | None = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = FHIR_JSON
        elif form is not None:
            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        session = self.idempotent_session if idempotent else self.session
        self.requests[kind] += 1
        started = time.monotonic()
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
                content = self._read_body(resp, f"{method} {redact_url(url)}", started)
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

    def smart_configuration(self) -> dict[str, Any]:
        url = self.url(".well-known/smart-configuration")
        self.requests["discovery"] += 1
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
        """Searchset pages, following `next` only within the base URL's origin."""
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
        seen: set[str] = set()
        pages = 1
        while True:
            yield page
            nxt = next(
                (
                    link.get("url")
                    for link in page.get("link") or []
                    if link.get("relation") == "next"
                ),
                None,
            )
            if not nxt:
                return
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
        if not urls:
            return []
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": u}} for u in urls],
        }
        reply = self.request("POST", "", body=bundle, idempotent=True, expect="Bundle")
        out: list[dict[str, Any] | None] = []
        for entry in reply.get("entry") or []:
            status = str((entry.get("response") or {}).get("status", ""))
            resource = entry.get("resource")
            out.append(resource if status.startswith("2") and isinstance(resource, dict) else None)
        out.extend([None] * (len(urls) - len(out)))
        return out

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
        self.requests["attachment"] += 1
        started = time.monotonic()
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

    def transaction(self, bundle: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """POST a transaction; retried only when every entry is conditional (idempotent)."""
        return self.request(
            "POST", "", body=bundle, idempotent=idempotent, expect="Bundle", kind="write"
        )


def no_auth(r: requests.PreparedRequest) -> requests.PreparedRequest:
    return r


def check_base_url(base_url: str) -> None:
    """A base URL judged as it will be sent (else requests' message is cryptic, or the
    request goes somewhere the user did not mean)."""
    problem = base_url_problem(base_url)
    if problem is None:
        return
    shown = "" if "\\" in base_url else f" {redact_url(base_url)!r}"
    if problem.startswith("needs"):  # nothing to redact without a scheme: show what was given
        shown = f" {printable(base_url.rsplit('@', 1)[-1])!r}"
    raise ServerError(f"--base-url: the base URL{shown} {problem}")


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
