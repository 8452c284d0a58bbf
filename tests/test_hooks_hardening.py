"""`serve` against hostile and malformed input: bodies past the limit whatever their
framing, malformed FHIR data, ids that carry markup or control characters, and the
Host header. Service under uvicorn on loopback, called over real HTTP."""

from __future__ import annotations

import http.server
import json
import logging
import re
import socket
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapter.cli import main
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.errors import HookError, ServerError
from fhir_adapter.findings import Evidence, Finding
from fhir_adapter.hooks import cards
from fhir_adapter.hooks.app import MAX_BODY
from fhir_adapter.hooks.feedback import FeedbackStore, parse_feedback
from fhir_adapter.hooks.limits import ServeLimits
from fhir_adapter.pack import Pack

from .test_hooks_harness import EHR_ISS, Ehr, HookServer, SigningKey, hook_body, inline_service

ORDER_SIGN = "cpt-47382-order-sign"
CPT = {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "47382"}]}
ORDER = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "status": "draft",
    "intent": "order",
    "subject": {"reference": "Patient/p"},
    "code": CPT,
}


def _searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    entries = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


COVERAGE = {
    "resourceType": "Coverage",
    "id": "cov",
    "status": "active",
    "beneficiary": {"reference": "Patient/p"},
    "payor": [{"reference": "Organization/o"}],
}


def order_sign(order: dict[str, Any] = ORDER, **prefetch: Any) -> dict[str, Any]:
    """An order-sign call for one draft 47382 order, its prefetch complete unless overridden."""
    orders = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}
    given: dict[str, Any] = {
        "patient": {"resourceType": "Patient", "id": "p"},
        "coverage": _searchset(COVERAGE),
        "conditions": _searchset(),
        "encounter": None,
        **prefetch,
    }
    context = {"userId": "Practitioner/u", "patientId": "p", "encounterId": "e"}
    return hook_body("order-sign", {**context, "draftOrders": orders}, prefetch=given)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("ES384")


OTHER_ISS = "https://other-ehr.example.org"


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey("ES384")


@pytest.fixture(scope="module")
def service(
    key: SigningKey, other_key: SigningKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HookServer]:
    db = tmp_path_factory.mktemp("hardening") / "feedback.sqlite3"
    server = inline_service(db, (EHR_ISS, key), (OTHER_ISS, other_key))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ehr(service: HookServer, key: SigningKey) -> Ehr:
    return Ehr(service, key)


def recorded(service: HookServer, hook_instance: str) -> int:
    with sqlite3.connect(service.app.state.service.config.feedback_db) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM cards WHERE hook_instance = ?", (hook_instance,)
        ).fetchone()
    return int(count)


def test_a_well_formed_order_gets_cards(ehr: Ehr, service: HookServer) -> None:
    body = order_sign()
    resp = ehr.hook(ORDER_SIGN, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["cards"] and recorded(service, body["hookInstance"]) > 0


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"url": "http://example.org/x", "valueString": "deep"}
    for _ in range(levels):
        value = {"url": "http://example.org/x", "extension": [value]}
    return value


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (
            order_sign(
                encounter=_searchset(
                    {"resourceType": "Encounter", "id": "e", "status": "finished", "period": 5}
                )
            ),
            422,
            "Encounter.period",
        ),
        (
            order_sign(
                conditions=_searchset(
                    {
                        "resourceType": "Condition",
                        "id": "c",
                        "subject": {"reference": "Patient/p"},
                        "code": {"coding": [{"system": "http://snomed.info/sct", "code": {}}]},
                    }
                )
            ),
            422,
            "Condition.code.coding",
        ),
        (order_sign({**ORDER, "extension": [_nested(260)]}), 400, "nested deeper than 64"),
        (order_sign({**ORDER, "id": "sr-1<b>bold</b>"}), 422, "ServiceRequest.id"),
        (order_sign({**ORDER, "id": "sr\u202e-1"}), 422, "ServiceRequest.id"),
        (
            order_sign(patient={"resourceType": "Patient", "id": "p\x1b[31m"}),
            422,
            "prefetch.patient: Patient.id",
        ),
    ],
)
def test_malformed_fhir_data_is_the_callers_error_with_nothing_recorded(
    ehr: Ehr,
    service: HookServer,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, Any],
    status: int,
    names: str,
) -> None:
    caplog.set_level(logging.INFO)
    resp = ehr.hook(ORDER_SIGN, body)
    assert resp.status_code == status, resp.text
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert names in outcome["issue"][0]["diagnostics"]
    assert recorded(service, body["hookInstance"]) == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_an_internal_error_is_logged_once_with_its_traceback(
    ehr: Ehr,
    service: HookServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service.app.state.service, "_run", broken)
    uvicorn_log = logging.getLogger("uvicorn.error")  # does not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    try:
        resp = ehr.hook(ORDER_SIGN, order_sign())
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert resp.status_code == 500
    assert resp.json()["issue"][0]["diagnostics"] == "internal error (logged on the service)"
    assert len([r for r in caplog.records if r.exc_info]) == 1


def _controls(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c)[0] == "C" and c != "\n"]


def test_cards_show_no_control_or_bidi_characters(pack: Pack) -> None:
    """Whatever reaches a card from the record (a server's id, a note's text) is shown
    with every control and format character neutralised."""
    hostile = "x\u202eevil\x1b[31m\u200b\u2028<b>"
    finding = Finding(
        "doc-energy",
        "high",
        f"message {hostile}",
        evidence=(Evidence(f"Procedure/{hostile}", "note", snippet=hostile, note=hostile),),
        source=hostile,
    )
    card = cards.finding_card(pack, finding, f"Procedure/{hostile}")
    for text in (card["summary"], card["detail"]):
        assert _controls(text) == [], text
    # markdown: no HTML outside code spans, which show their text literally
    assert "<" not in re.sub(r"`+[^`]*`+", "", card["detail"])
    assert _controls(cards.plain(f"Create the draft Claim for Procedure/{hostile}")) == []


def test_a_chunked_body_is_refused_once_past_the_limit(ehr: Ehr) -> None:
    """No Content-Length to refuse on: the body is read as it comes and the call ends at
    the limit, not after the whole upload."""
    chunk = b" " * (1024 * 1024)
    total = 4 * MAX_BODY
    sent = 0

    def upload() -> Iterator[bytes]:
        nonlocal sent
        while sent < total:
            sent += len(chunk)
            yield chunk

    path = f"/cds-services/{ORDER_SIGN}"
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {ehr.key.sign(ehr.url(path))}",
    }
    try:
        resp = ehr.http.post(ehr.url(path), data=upload(), headers=headers, timeout=60)
    except requests.ConnectionError:
        pass  # the service answered and closed while the upload was still going
    else:
        assert resp.status_code == 413, resp.text
    assert sent < total // 2, f"{sent // 2**20} MB sent before the service stopped reading"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_redirect_built_from_the_host_header(ehr: Ehr, method: str) -> None:
    resp = ehr.http.request(
        method,
        ehr.url("/cds-services/"),
        headers={"Host": "evil.example"},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 404
    assert "location" not in resp.headers
    assert resp.json()["resourceType"] == "OperationOutcome"


# -- feedback -------------------------------------------------------------------------


class OtherEhr(Ehr):
    """A second trusted CDS client, signing as its own issuer."""

    def post(
        self, path: str, body: Any, token: str | None = "sign", **kw: Any
    ) -> requests.Response:
        if token == "sign":
            token = self.key.sign(self.url(path), iss=OTHER_ISS)
        return super().post(path, body, token, **kw)


def _feedback(card: str, outcome: str, at: str, reason: str = "will-document") -> dict[str, Any]:
    item: dict[str, Any] = {"card": card, "outcome": outcome, "outcomeTimestamp": at}
    if outcome == "accepted":
        item["acceptedSuggestions"] = []
    else:
        item["overrideReason"] = {"reason": {"system": cards.OVERRIDE_SYSTEM, "code": reason}}
    return {"feedback": [item]}


def _summary(service: HookServer, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    db = service.app.state.service.config.feedback_db
    assert main(["feedback", "--feedback-db", str(db), "--format", "json"]) == 0
    topics = json.loads(capsys.readouterr().out)["topics"]
    return {(r["service"], r["topic"]): r for r in topics}


def test_feedback_only_from_the_client_the_card_went_to_and_once_per_card(
    ehr: Ehr,
    other_key: SigningKey,
    service: HookServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issued = ehr.hook(ORDER_SIGN, order_sign()).json()["cards"]
    card = next(c for c in issued if c.get("overrideReasons"))
    topic = card["source"]["topic"]["code"]
    path = f"/cds-services/{ORDER_SIGN}/feedback"
    before = _summary(service, capsys)[(ORDER_SIGN, topic)]
    other = OtherEhr(service, other_key)
    refused = [
        other.post(path, _feedback(card["uuid"], "accepted", "2026-11-27T10:00:00Z")),
        ehr.post(path, _feedback(str(uuid.uuid4()), "accepted", "2026-11-27T10:00:00Z")),
        ehr.post(
            "/cds-services/cpt-47382-appointment-book/feedback",
            _feedback(card["uuid"], "accepted", "2026-11-27T10:00:00Z"),
        ),
    ]
    for resp in refused:
        assert resp.status_code == 422, resp.text
        assert "no such card" in resp.json()["issue"][0]["diagnostics"]
    assert _summary(service, capsys)[(ORDER_SIGN, topic)] == before
    # accepted, then overridden a minute later (sent twice), then a stale resend: one card
    for outcome, at in (
        ("accepted", "2026-11-27T10:00:00Z"),
        ("overridden", "2026-11-27T11:01:00+01:00"),
        ("overridden", "2026-11-27T10:01:00Z"),
        ("accepted", "2026-11-27T09:59:00Z"),
    ):
        resp = ehr.post(path, _feedback(card["uuid"], outcome, at))
        assert resp.status_code == 200, resp.text
    after = _summary(service, capsys)[(ORDER_SIGN, topic)]
    assert after["accepted"] == before["accepted"]
    assert after["overridden"] == before["overridden"] + 1


def test_the_feedback_table_prints_no_terminal_control_codes(
    ehr: Ehr, service: HookServer, capsys: pytest.CaptureFixture[str]
) -> None:
    issued = ehr.hook(ORDER_SIGN, order_sign()).json()["cards"]
    card = next(c for c in issued if c.get("overrideReasons"))
    hostile = "x\x1b[2J\x1b]0;pwned\x07\u202eevil\r\nforged line"
    path = f"/cds-services/{ORDER_SIGN}/feedback"
    resp = ehr.post(path, _feedback(card["uuid"], "overridden", "2026-11-27T10:00:00Z", hostile))
    assert resp.status_code == 200, resp.text
    db = service.app.state.service.config.feedback_db
    assert main(["feedback", "--feedback-db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "\\x1b[2J" in out  # shown, escaped
    assert not [c for c in out if unicodedata.category(c)[0] == "C" and c != "\n"]
    assert "forged line" not in "".join(line for line in out.splitlines() if "x1b" not in line)


def test_a_feedback_file_of_the_earlier_layout_is_carried_over(tmp_path: Path) -> None:
    """Files written before feedback was kept per card: the latest outcome of each card
    is kept, and cards without a recorded client take no new feedback."""
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            """
            CREATE TABLE cards (uuid TEXT PRIMARY KEY, service TEXT NOT NULL,
              hook_instance TEXT NOT NULL, topic_system TEXT, topic_code TEXT,
              indicator TEXT NOT NULL, issued_at TEXT NOT NULL);
            CREATE TABLE feedback (service TEXT NOT NULL, card TEXT NOT NULL,
              outcome TEXT NOT NULL, outcome_at TEXT NOT NULL, accepted TEXT,
              reason_system TEXT, reason_code TEXT, reason_display TEXT, comment TEXT,
              received_at TEXT NOT NULL, PRIMARY KEY (service, card, outcome, outcome_at));
            INSERT INTO cards VALUES ('c1', 's', 'h', 'sys', 'topic', 'info', '2026-01-01');
            INSERT INTO feedback VALUES ('s', 'c1', 'accepted', '2026-01-01T10:00:00Z',
              NULL, NULL, NULL, NULL, NULL, '2026-01-01');
            INSERT INTO feedback VALUES ('s', 'c1', 'overridden', '2026-01-01T11:00:00Z',
              NULL, NULL, 'will-document', NULL, NULL, '2026-01-01');
            """
        )
    store = FeedbackStore(db)
    try:
        [row] = store.summary()
        assert (row["shown"], row["accepted"], row["overridden"]) == (1, 0, 1)
        item = parse_feedback(_feedback("c1", "accepted", "2026-01-02T10:00:00Z"))
        with pytest.raises(HookError, match="no such card"):
            store.record_feedback("s", EHR_ISS, item)
    finally:
        store.close()


# -- connection limits -----------------------------------------------------------------


@pytest.fixture
def tight(key: SigningKey, tmp_path: Path) -> Iterator[HookServer]:
    """The service with small limits, so that tests reach them quickly."""
    limits = ServeLimits(limit_concurrency=3, header_timeout=0.5, body_timeout=0.5)
    server = inline_service(tmp_path / "fb.sqlite3", (EHR_ISS, key), limits=limits)
    yield server
    server.stop()


def _connect(server: HookServer) -> socket.socket:
    host, port = server.base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_a_request_head_that_never_ends_is_cut_off(tight: HookServer) -> None:
    with _connect(tight) as sock:
        sock.sendall(b"POST /cds-services/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert sock.recv(1024) == b""  # closed by the service, not by our 5 s timeout


def test_connections_beyond_the_limit_get_503(tight: HookServer) -> None:
    idle = [_connect(tight) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5  # the service may take a moment to accept them all
        while True:
            resp = requests.get(f"{tight.base}/cds-services", timeout=5)
            if resp.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert resp.status_code == 503
    finally:
        for sock in idle:
            sock.close()


def test_a_body_that_never_ends_is_a_408(tight: HookServer, key: SigningKey) -> None:
    path = f"/cds-services/{ORDER_SIGN}"
    token = key.sign(f"{tight.base}{path}")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    answer = b""
    with _connect(tight) as sock:
        sock.sendall(head.encode())
        while chunk := sock.recv(65536):  # until the service closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"within 0.5 s" in answer


class _Slow(http.server.BaseHTTPRequestHandler):
    """A FHIR server that answers its metadata, then trickles or floods every other GET."""

    def do_GET(self) -> None:
        if self.path.endswith("/metadata"):
            body = json.dumps(
                {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.end_headers()
        try:
            if "flood" in self.path:
                self.wfile.write(b'{"resourceType": "Patient", "x": "' + b"a" * 3_000_000)
                return
            for _ in range(200):  # one byte every 0.1 s, each well within the read timeout
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


def test_outbound_reads_have_a_deadline_and_a_size_cap() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        client = FhirClient(
            base, timeout=(2, 2), retries=0, deadline=1.0, max_response_bytes=1_000_000
        )
        with pytest.raises(ServerError, match="no complete answer within 1 s"):
            client.read("Patient", "trickle")
        with pytest.raises(ServerError, match="larger than 1000000 bytes"):
            client.read("Patient", "flood")
        client.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
