"""Faults a real server cannot be made to produce on demand, simulated with `responses`."""

from __future__ import annotations

import email.utils
import http.server
import json
import threading
import time
from typing import Any

import pytest
import requests
import responses

from fhir_adapter.client.auth import BearerAuth
from fhir_adapter.client.export import BulkExport
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.errors import ExportError, PagingError, ServerError

BASE = "https://fhir.example.test/r4"
TOKEN = "s3cr3t-token-value"
CS = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "status": "active"}
BUNDLE = {"resourceType": "Bundle", "type": "searchset", "entry": []}


def _client(**kw: Any) -> FhirClient:
    responses.add(responses.GET, f"{BASE}/metadata", json=CS)
    kw.setdefault("backoff", 0.01)
    return FhirClient(BASE, BearerAuth(TOKEN), **kw)


@responses.activate
def test_429_with_retry_after_seconds_then_success() -> None:
    client = _client()
    responses.add(responses.GET, f"{BASE}/Patient/1", status=429, headers={"Retry-After": "1"})
    responses.add(responses.GET, f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    assert client.read("Patient", "1")["id"] == "1"
    assert len(responses.calls) == 3


def test_retry_after_is_slept_over_real_http() -> None:
    """`responses` does not sleep; a throwaway loopback server shows urllib3 really waits."""
    hits: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(time.monotonic())
            if self.path.endswith("/metadata"):
                body, status, extra = json.dumps(CS).encode(), 200, {}
            elif len(hits) == 2:
                body, status, extra = b"", 429, {"Retry-After": "1"}
            else:
                body, status, extra = (
                    json.dumps({"resourceType": "Patient", "id": "1"}).encode(),
                    200,
                    {},
                )
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        client = FhirClient(f"http://127.0.0.1:{srv.server_address[1]}/fhir")
        assert client.read("Patient", "1")["id"] == "1"
        assert len(hits) == 3 and hits[2] - hits[1] >= 0.9
    finally:
        srv.shutdown()
        srv.server_close()


@responses.activate
def test_429_with_retry_after_http_date() -> None:
    client = _client()
    when = email.utils.formatdate(time.time() + 1, usegmt=True)
    responses.add(responses.GET, f"{BASE}/Patient/1", status=429, headers={"Retry-After": when})
    responses.add(responses.GET, f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    assert client.read("Patient", "1")["id"] == "1"


@responses.activate
def test_retry_after_beyond_the_budget_gives_up_fast() -> None:
    client = _client(retry_budget=2.0)
    responses.add(responses.GET, f"{BASE}/Patient/1", status=429, headers={"Retry-After": "3600"})
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"429|gave up"):
        client.read("Patient", "1")
    assert time.monotonic() - started < 5


@responses.activate
def test_503_burst_then_success() -> None:
    client = _client()
    for _ in range(3):
        responses.add(responses.GET, f"{BASE}/Patient/1", status=503)
    responses.add(responses.GET, f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    assert client.read("Patient", "1")["id"] == "1"


@responses.activate
def test_503_forever_ends_with_a_clear_error() -> None:
    client = _client(retries=2)
    responses.add(
        responses.GET,
        f"{BASE}/Patient/1",
        status=503,
        body="<html><h1>Service Unavailable</h1></html>",
    )
    with pytest.raises(ServerError) as err:
        client.read("Patient", "1")
    assert "503" in str(err.value) and "Service Unavailable" in str(err.value)
    assert TOKEN not in str(err.value)


@responses.activate
def test_plain_post_is_not_retried_but_idempotent_transaction_is() -> None:
    client = _client()
    responses.add(responses.POST, f"{BASE}/", status=503)
    with pytest.raises(ServerError, match="503"):
        client.transaction(
            {"resourceType": "Bundle", "type": "transaction", "entry": []}, idempotent=False
        )
    assert len([c for c in responses.calls if c.request.method == "POST"]) == 1
    responses.replace(responses.POST, f"{BASE}/", status=503)
    responses.add(
        responses.POST, f"{BASE}/", json={"resourceType": "Bundle", "type": "transaction-response"}
    )
    assert client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})[
        "type"
    ]


@responses.activate
def test_timeout_is_a_clear_error() -> None:
    client = _client(retries=1)
    responses.add(responses.GET, f"{BASE}/Patient/1", body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(ServerError, match=r"timed out|gave up"):
        client.read("Patient", "1")


@responses.activate
def test_html_error_page_and_garbage_bodies() -> None:
    client = _client()
    responses.add(
        responses.GET,
        f"{BASE}/Patient/1",
        status=404,
        body="<html><body>Not Found by proxy</body></html>",
        content_type="text/html",
    )
    with pytest.raises(ServerError, match=r"HTTP 404: <html><body>Not Found by proxy"):
        client.read("Patient", "1")
    responses.add(responses.GET, f"{BASE}/Patient/2", status=200, body="{garbage")
    with pytest.raises(ServerError, match="not JSON"):
        client.read("Patient", "2")
    responses.add(responses.GET, f"{BASE}/Patient/3", json={"resourceType": "Observation"})
    with pytest.raises(ServerError, match="expected a Patient, got a Observation"):
        client.read("Patient", "3")
    responses.add(responses.GET, f"{BASE}/Patient/4", json=[1, 2])
    with pytest.raises(ServerError, match="not a FHIR resource"):
        client.read("Patient", "4")


@responses.activate
def test_operation_outcome_becomes_a_typed_error() -> None:
    client = _client()
    oo = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "details": {"text": "Claim.patient is required"},
                "expression": ["Claim.patient"],
            }
        ],
    }
    responses.add(responses.POST, f"{BASE}/", status=422, json=oo)
    with pytest.raises(ServerError) as err:
        client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert err.value.status == 422 and err.value.outcome == oo
    assert "Claim.patient is required at Claim.patient" in str(err.value)


@responses.activate
def test_paging_loop_is_detected() -> None:
    client = _client()
    page = {**BUNDLE, "link": [{"relation": "next", "url": f"{BASE}/Patient?page=2"}]}
    responses.add(responses.GET, f"{BASE}/Patient", json=page)
    with pytest.raises(PagingError, match="same next link twice"):
        list(client.search_pages("Patient"))


@responses.activate
def test_page_cap() -> None:
    client = _client(max_pages=3)
    for i in range(1, 6):
        responses.add(
            responses.GET,
            f"{BASE}/Patient" + ("" if i == 1 else f"?p={i}"),
            json={**BUNDLE, "link": [{"relation": "next", "url": f"{BASE}/Patient?p={i + 1}"}]},
        )
    with pytest.raises(PagingError, match="more than 3 pages"):
        list(client.search_pages("Patient"))


@responses.activate
def test_next_link_to_another_host_is_refused_and_gets_no_token() -> None:
    client = _client()
    evil = "https://evil.example.test/steal?next=1"
    responses.add(
        responses.GET,
        f"{BASE}/Patient",
        json={**BUNDLE, "link": [{"relation": "next", "url": evil}]},
    )
    responses.add(responses.GET, evil, json=BUNDLE)
    with pytest.raises(PagingError, match="another origin"):
        list(client.search_pages("Patient"))
    assert all("evil.example.test" not in c.request.url for c in responses.calls)
    assert responses.calls[-1].request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_token_is_not_sent_to_another_origin_even_if_asked() -> None:
    client = _client()
    responses.add(
        responses.GET, "https://elsewhere.example.test/x", json={"resourceType": "Patient"}
    )
    client.request("GET", "https://elsewhere.example.test/x")
    assert "Authorization" not in responses.calls[-1].request.headers


@responses.activate
def test_redirect_to_another_host_drops_the_token() -> None:
    """(A redirect to another origin is now refused outright: the token, and the request,
    never go there; see the test below.)"""
    client = _client()
    responses.add(
        responses.GET,
        f"{BASE}/Patient/1",
        status=302,
        headers={"Location": "https://cdn.example.test/Patient/1"},
    )
    cdn = responses.add(
        responses.GET,
        "https://cdn.example.test/Patient/1",
        json={"resourceType": "Patient", "id": "1"},
    )
    with pytest.raises(ServerError, match="another origin"):
        client.read("Patient", "1")
    assert cdn.call_count == 0
    assert all("cdn.example.test" not in c.request.url for c in responses.calls)


@responses.activate
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused(status: int) -> None:
    client = _client()
    responses.add(
        responses.POST,
        f"{BASE}/",
        status=status,
        headers={"Location": "https://evil.example.test/fhir/"},
    )
    responses.add(
        responses.GET,
        f"{BASE}/Patient/2",
        status=status,
        headers={"Location": "http://fhir.example.test/Patient/2"},  # scheme differs: other origin
    )
    evil = responses.add(responses.POST, "https://evil.example.test/fhir/", json={})
    with pytest.raises(ServerError) as err:
        client.batch_get(["Patient/1"])
    assert "redirected to another origin" in str(err.value)
    assert "https://evil.example.test" in str(err.value) and TOKEN not in str(err.value)
    with pytest.raises(ServerError, match="another origin"):
        client.read("Patient", "2")
    assert evil.call_count == 0
    assert all(c.request.url.startswith(BASE) for c in responses.calls)


@responses.activate
def test_a_redirect_on_the_same_origin_is_followed() -> None:
    client = _client()
    responses.add(
        responses.GET,
        f"{BASE}/Patient/1",
        status=307,
        headers={"Location": "/r4/Patient/1-moved"},
    )
    responses.add(
        responses.GET, f"{BASE}/Patient/1-moved", json={"resourceType": "Patient", "id": "1"}
    )
    assert client.read("Patient", "1")["id"] == "1"
    assert responses.calls[-1].request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_non_r4_and_non_fhir_metadata() -> None:
    responses.add(responses.GET, f"{BASE}/metadata", json={**CS, "fhirVersion": "3.0.2"})
    with pytest.raises(ServerError, match=r"FHIR 3\.0\.2; this adapter needs FHIR R4"):
        FhirClient(BASE)
    responses.replace(responses.GET, f"{BASE}/metadata", body="<html>login</html>", status=200)
    with pytest.raises(ServerError, match="not JSON"):
        FhirClient(BASE)


@responses.activate
def test_long_queries_use_post_search() -> None:
    client = _client()
    responses.add(responses.POST, f"{BASE}/Procedure/_search", json=BUNDLE)
    ids = [f"procedure-{i:05d}" for i in range(200)]
    list(
        client.search_pages(
            "Procedure",
            [
                ("_id", ",".join(ids)),
                ("_include", "Procedure:subject"),
                ("_include", "Procedure:encounter"),
            ],
        )
    )
    body = responses.calls[-1].request.body.decode()
    assert "procedure-00199" in body and body.count("_include=") == 2


@responses.activate
def test_bearer_401_is_reported_without_the_token() -> None:
    client = _client()
    responses.add(
        responses.GET,
        f"{BASE}/Patient/1",
        status=401,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "login"}],
        },
    )
    with pytest.raises(ServerError) as err:
        client.read("Patient", "1")
    assert (
        "401" in str(err.value) and TOKEN not in str(err.value) and TOKEN not in repr(client.auth)
    )


@responses.activate
def test_a_garbled_retry_after_falls_back_to_backoff() -> None:
    responses.add(responses.GET, "https://fhir.example.test/r4/metadata", json=_CS_FOR_GARBLE)
    responses.add(
        responses.GET,
        "https://fhir.example.test/r4/Patient/p",
        status=503,
        headers={"Retry-After": "soon"},
    )
    responses.add(
        responses.GET,
        "https://fhir.example.test/r4/Patient/p",
        json={"resourceType": "Patient", "id": "p"},
    )
    client = FhirClient("https://fhir.example.test/r4", backoff=0.01)
    assert client.read("Patient", "p")["id"] == "p"


_CS_FOR_GARBLE = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}


@responses.activate
def test_an_export_manifest_type_cannot_write_outside_the_directory(tmp_path: Any) -> None:
    """A hostile manifest's `type` is part of a file name: it must not climb out of --out."""
    client = _client()
    status = f"{BASE}/status/1"
    responses.add(
        responses.GET, f"{BASE}/$export", status=202, headers={"Content-Location": status}
    )
    output = [{"type": "../../escaped", "url": f"{BASE}/files/1"}]
    responses.add(responses.GET, status, json={"output": output, "error": []})
    responses.add(responses.GET, f"{BASE}/files/1", body='{"resourceType":"Patient","id":"1"}\n')
    with pytest.raises(ExportError, match=r"manifest output\[0\] type '\.\./\.\./escaped'"):
        BulkExport(client, tmp_path / "out", sleep=lambda _s: None).run()
    assert list(tmp_path.glob("escaped*")) == []


def _searchset(ids: list[str], nxt: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": i}} for i in ids],
    }
    if nxt:
        page["link"] = [{"relation": "next", "url": nxt}]
    return page


@responses.activate
def test_a_batch_entry_next_link_is_followed_on_the_same_origin_only() -> None:
    """The test server sends no `next` in a batch entry (see test_server_paging); servers
    that do must have it followed, with the same origin rule as a plain search."""
    client = _client()
    first = _searchset(["a", "b"], f"{BASE}/Observation?_page=2")
    reply = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [{"response": {"status": "200 OK"}, "resource": first}],
    }
    responses.add(responses.POST, f"{BASE}/", json=reply)
    responses.add(responses.GET, f"{BASE}/Observation?_page=2", json=_searchset(["c"]))
    [whole] = client.batch_get(["Observation?encounter=Encounter/1"])
    assert whole is not None
    assert [e["resource"]["id"] for e in whole["entry"]] == ["a", "b", "c"]
    assert "link" not in whole

    first["link"] = [{"relation": "next", "url": "https://evil.example.test/Observation"}]
    responses.replace(responses.POST, f"{BASE}/", json=reply)
    evil = responses.add(responses.GET, "https://evil.example.test/Observation", json={})
    with pytest.raises(PagingError, match="another origin"):
        client.batch_get(["Observation?encounter=Encounter/1"])
    assert evil.call_count == 0
