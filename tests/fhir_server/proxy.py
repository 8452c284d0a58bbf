"""A loopback HTTP proxy in front of the test server that behaves like an EHR's FHIR API.

It removes batch, transaction, `_include` and `_revinclude` from the CapabilityStatement
and refuses them (501 for Bundles posted to the base, 400 `not-supported` for include
parameters), caps `_count` at 10 and sends its searchsets' links relative to the base
URL, adds latency to every answer and, on request, answers
429 with `Retry-After`, or lists no Claim/DetectedIssue writes. With `advertise=True`
the CapabilityStatement keeps listing what the proxy refuses (a server that claims a
feature and then refuses it). Everything else is the real server's answer, over real
HTTP; the Host header is passed on, so links and Locations point back at the proxy.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

COUNT_CAP = 10
INCLUDE_PARAMS = ("_include", "_revinclude")
RELAYED_HEADERS = ("Content-Type", "ETag", "Location", "Content-Location", "Last-Modified")
OUTPUT_TYPES = ("Claim", "DetectedIssue")


def _outcome(text: str) -> bytes:
    return json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-supported", "diagnostics": text}],
        }
    ).encode()


class LimitedProxy:
    """`base` is the FHIR base URL through the proxy; settings may change between tests."""

    __test__ = False

    def __init__(self, upstream_root: str, *, latency: float = 0.0) -> None:
        parts = urlsplit(upstream_root)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.latency = latency
        self.limits = True  # False: latency only (the server's own features, for baselines)
        self.advertise = False  # list what is refused (claims, then refuses)
        self.writes = True  # list Claim/DetectedIssue writes
        self.busy = 0  # `busy` requests are answered 429 ...
        self.busy_after = 0  # ... once this many more have been answered
        self.retry_after = "1"
        self.counts: Counter[str] = Counter()
        self.authorizations: list[str] = []  # Authorization headers that reached the proxy
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, status sent)
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the proxy was answering at once
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.base = f"{self.root}/fhir"

    def reset(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.limits = True
        self.advertise = False
        self.writes = True
        self.busy = 0
        self.busy_after = 0
        self.counts.clear()
        self.authorizations.clear()
        self.arrivals.clear()
        self.max_in_flight = 0

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- one request -------------------------------------------------------------
    def handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._handle(h)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.counts[h.command] += 1
            if h.headers.get("Authorization"):
                self.authorizations.append(h.headers["Authorization"])
            busy = self.busy > 0 and self.busy_after <= 0
            self.busy_after -= 1
            if busy:
                self.busy -= 1
                self.counts["429"] += 1
            self.arrivals.append((time.monotonic(), 429 if busy else 0))
        if busy:
            return self._send(h, 429, _outcome("busy"), {"Retry-After": self.retry_after})
        parts = urlsplit(h.path)
        path = parts.path
        query = parse_qsl(parts.query, keep_blank_values=True)
        refusal = self._refusal(h, path, query, body) if self.limits else None
        if refusal is not None:
            with self._lock:
                self.counts["refused"] += 1
            return self._send(h, refusal[0], _outcome(refusal[1]))
        if self.limits and h.command == "GET" and _is_search(path):
            query = _capped(query)
        target = path + (f"?{urlencode(query)}" if query else "")
        status, headers, data = self._forward(h, target, body)
        if self.limits and h.command == "GET" and path.rstrip("/") == "/fhir/metadata":
            data = json.dumps(self._capabilities(json.loads(data))).encode()
        elif self.limits and h.command == "GET" and status == 200 and _is_search(path):
            data = self._relative_links(data)
        self._send(h, status, data, headers)

    def _refusal(
        self, h: BaseHTTPRequestHandler, path: str, query: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str] | None:
        if h.command == "POST" and path.rstrip("/") == "/fhir":
            return 501, "batch and transaction Bundles are not supported"
        form = query
        if h.command == "POST" and path.endswith("/_search"):
            form = query + parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        if any(k.split(":")[0] in INCLUDE_PARAMS for k, _ in form):
            return 400, "_include and _revinclude are not supported"
        rtype = path.removeprefix("/fhir/").split("/", 1)[0].split("?", 1)[0]
        if not self.writes and rtype in OUTPUT_TYPES and h.command != "GET":
            return 405, f"{rtype} writes are not accepted"
        return None

    def _capabilities(self, cs: dict[str, Any]) -> dict[str, Any]:
        for rest in cs.get("rest") or []:
            if not self.advertise:
                rest["interaction"] = [
                    i
                    for i in rest.get("interaction") or []
                    if i.get("code") not in ("batch", "transaction")
                ]
            for resource in rest.get("resource") or []:
                if not self.advertise:
                    resource.pop("searchInclude", None)
                    resource.pop("searchRevInclude", None)
                if not self.writes and resource.get("type") in OUTPUT_TYPES:
                    resource["interaction"] = [
                        i
                        for i in resource.get("interaction") or []
                        if i.get("code") in ("read", "vread", "search-type", "history-instance")
                    ]
        return cs

    def _relative_links(self, data: bytes) -> bytes:
        """Searchset links relative to the base URL, as some EHRs send them."""
        bundle = json.loads(data)
        for link in bundle.get("link") or []:
            url = str(link.get("url", ""))
            if url.startswith(self.base + "/"):
                link["url"] = url[len(self.base) + 1 :]
        return json.dumps(bundle).encode()

    def _forward(
        self, h: BaseHTTPRequestHandler, target: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {
                k: v
                for k, v in h.headers.items()
                if k.lower() not in ("content-length", "connection", "transfer-encoding")
            }
            conn.request(h.command, target, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            kept = {k: v for k in RELAYED_HEADERS if (v := resp.getheader(k))}
            return resp.status, kept, data
        finally:
            conn.close()

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        h.send_response(status)
        headers = {"Content-Type": "application/fhir+json", **(headers or {})}
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def _is_search(path: str) -> bool:
    rest = path.removeprefix("/fhir/").rstrip("/")
    return bool(rest) and "/" not in rest and rest[0].isupper()


def _capped(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`_count` at most COUNT_CAP (added when absent)."""
    out = [(k, v) for k, v in query if k != "_count"]
    asked = [v for k, v in query if k == "_count"]
    count = COUNT_CAP
    if asked and asked[-1].isdigit():
        count = min(COUNT_CAP, int(asked[-1]))
    return [*out, ("_count", str(count))]
