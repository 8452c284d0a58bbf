"""The REST client shares no lock across requests: a slow exchange never holds up another."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fhir_adapter.client.rest import FhirClient

RELEASE = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/Patient/slow"):
            RELEASE.wait(10)  # held until the fast request has been answered
        body = (
            {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
            if self.path.startswith("/metadata")
            else {"resourceType": "Patient", "id": self.path.rsplit("/", 1)[-1]}
        )
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        RELEASE.set()
        httpd.shutdown()


def test_a_slow_request_does_not_block_another_thread(base_url: str) -> None:
    RELEASE.clear()
    client = FhirClient(base_url)
    order: list[str] = []

    def slow() -> None:
        client.read("Patient", "slow")
        order.append("slow")

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.2)  # the slow request is now in flight
    assert client.read("Patient", "fast")["id"] == "fast"
    order.append("fast")
    RELEASE.set()
    worker.join(10)
    client.close()
    assert order == ["fast", "slow"]


def test_no_private_header_reaches_the_server(base_url: str) -> None:
    client = FhirClient(base_url)
    sent: list[str] = []
    client.idempotent_session.hooks["response"].append(
        lambda r, **kw: sent.extend(k.lower() for k in r.request.headers)
    )
    client.session.hooks["response"].append(
        lambda r, **kw: sent.extend(k.lower() for k in r.request.headers)
    )
    client.read("Patient", "a")
    client.close()
    assert sent and not any(k.startswith("x-fhir-adapter") for k in sent)
