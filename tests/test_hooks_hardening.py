"""`serve` against hostile and malformed input: bodies past the limit whatever their
framing, malformed FHIR data, ids that carry markup or control characters, and the
Host header. Service under uvicorn on loopback, called over real HTTP."""

from __future__ import annotations

import logging
import re
import sqlite3
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fhir_adapter.findings import Evidence, Finding
from fhir_adapter.hooks import HookConfig, cards
from fhir_adapter.hooks.app import MAX_BODY
from fhir_adapter.hooks.security import TrustedClients
from fhir_adapter.rules import Pack

from .test_hooks_harness import EHR_ISS, Ehr, HookServer, SigningKey, hook_body

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


@pytest.fixture(scope="module")
def service(key: SigningKey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    clients = TrustedClients.from_json({"clients": [{"iss": EHR_ISS, "jwks": {"keys": [key.jwk]}}]})
    db = tmp_path_factory.mktemp("hardening") / "feedback.sqlite3"
    server = HookServer(HookConfig(trusted_clients=clients, feedback_db=db))
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
