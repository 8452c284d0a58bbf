"""The prior-authorization loop on loopback, every part real: the EHR is the Medplum test
server, `serve` (CDS Hooks, DTR and the PAS payer in one process, real uvicorn) answers, and
`preauth` asks. CRD says authorization is needed -> `$questionnaire-package` pre-populates
the answers -> the nurse completes them -> `preauth` -> A1 / A3 / A4 then A1 by
notification. Every resource of the loop passes the IG checker."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapter.cli import main
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.conformance import check, check_element
from fhir_adapter.pas.dtr import answer
from fhir_adapter.pas.record import PreauthRecords

from .fhir_server.harness import TestServer
from .test_hooks_harness import EHR_ISS, HookServer, SigningKey, inline_service
from .test_pas import review_action as _action
from .test_pas import write_pem

pytestmark = pytest.mark.server

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "prior-auth"
CRD_INFO = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
ORDER_SIGN = "/cds-services/cpt-47382-order-sign"
PACKAGE = "/fhir/Questionnaire/$questionnaire-package"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("ES384")


@pytest.fixture(scope="module")
def loop(
    tmp_path_factory: pytest.TempPathFactory, key: SigningKey, fhir_server: TestServer
) -> Iterator[tuple[HookServer, TestServer, Path]]:
    root = tmp_path_factory.mktemp("loop")
    fhir_server.reset()
    with FhirClient(fhir_server.base) as client:
        for name in ("pa-met", "pa-not-met", "pa-pended"):
            bundle = json.loads((FIXTURES / f"{name}.json").read_text())
            entries = [
                {
                    "resource": e["resource"],
                    "request": {
                        "method": "PUT",
                        "url": f"{e['resource']['resourceType']}/{e['resource']['id']}",
                    },
                }
                for e in bundle["entry"]
            ]
            client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    write_pem(key, root / "ehr-key.pem")
    service = inline_service(
        root / "feedback.sqlite3",
        (EHR_ISS, key),
        payer_db=root / "payer.sqlite3",
        preauth_db=root / "preauth.sqlite3",
    )
    yield service, fhir_server, root
    service.stop()


def _post(service: HookServer, key: SigningKey, path: str, body: Any) -> requests.Response:
    url = service.base + path
    headers = {"Authorization": f"Bearer {key.sign(url)}", "Content-Type": "application/json"}
    return requests.post(url, data=json.dumps(body), headers=headers, timeout=60)


def _order_sign(service: HookServer, key: SigningKey, ehr: TestServer, name: str) -> dict[str, Any]:
    with FhirClient(ehr.base) as client:
        order = client.read("ServiceRequest", f"{name}-sr")
    order = {k: v for k, v in order.items() if k != "meta"} | {"status": "draft"}
    body = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": ehr.base,
        "fhirAuthorization": {
            "access_token": "unused-on-loopback",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.rs",
            "subject": "fhir-adapter",
        },
        "context": {
            "userId": f"Practitioner/{name}-dr",
            "patientId": f"{name}-pt",
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": order}],
            },
        },
    }
    answer_ = _post(service, key, ORDER_SIGN, body)
    assert answer_.status_code == 200, answer_.text
    return dict(answer_.json())


def _preauth(
    service: HookServer, ehr: TestServer, root: Path, key: SigningKey, name: str, *extra: str
) -> int:
    return main(
        [
            "preauth",
            "--base-url",
            ehr.base,
            "--service-request",
            f"{name}-sr",
            "--payer",
            f"{service.base}/fhir",
            "--payer-auth",
            "jwt",
            "--payer-iss",
            EHR_ISS,
            "--payer-private-key",
            str(root / "ehr-key.pem"),
            "--payer-kid",
            key.kid,
            "--preauth-db",
            str(root / "preauth.sqlite3"),
            *extra,
        ]
    )


def _claim_responses(ehr: TestServer, name: str) -> list[dict[str, Any]]:
    with FhirClient(ehr.base) as client:
        found = list(client.search("ClaimResponse", [("patient", f"Patient/{name}-pt")]))
    return [r for r in found if r.get("resourceType") == "ClaimResponse"]


def test_the_whole_loop(
    loop: tuple[HookServer, TestServer, Path],
    key: SigningKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service, ehr, root = loop
    name = "pa-pended"
    # 1. CRD: the order-sign answer says authorization is needed, and which questionnaire
    cds = _order_sign(service, key, ehr, name)
    (action,) = cds["systemActions"]
    info = next(e for e in action["resource"]["extension"] if e["url"] == CRD_INFO)
    parts = {p["url"]: p for p in info["extension"]}
    assert parts["pa-needed"]["valueCode"] == "auth-needed"
    assert parts["questionnaire"]["valueCanonical"].endswith("cpt-47382-prior-auth")
    assert check_element(info, CRD_INFO).ok, check_element(info, CRD_INFO).text()
    assertion = parts["coverage-assertion-id"]["valueString"]

    # 2. DTR: the package for that assertion, the answers the evidence gives pre-populated
    with FhirClient(ehr.base) as client:
        coverage = client.read("Coverage", f"{name}-cov")
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "coverage", "resource": coverage},
            {"name": "order", "resource": action["resource"]},
            {"name": "context", "valueString": assertion},
        ],
    }
    got = _post(service, key, PACKAGE, params)
    assert got.status_code == 200, got.text
    package = got.json()
    assert check(package).ok, check(package).text()
    bundle = package["parameter"][0]["resource"]
    questionnaire, response = (e["resource"] for e in bundle["entry"])
    assert check(questionnaire).ok and check(response).ok, check(response).text()
    assert [i for i in questionnaire["item"] if i.get("enableWhen")]  # the policy branches
    answered = {i["linkId"]: i["answer"][0] for i in response["item"] if i.get("answer")}
    assert answered["diagnosis"]["valueCoding"]["code"] == "C22.0"
    origin = answered["diagnosis"]["extension"][0]["extension"][0]
    assert origin == {"url": "source", "valueCode": "auto"}
    assert "tumor-size" not in answered  # not in the record: the nurse is asked

    # 3. asked before the answers are in: pended, with a Subscription for the final word
    first = root / "first"
    subscribe = f"{service.base}/pas/notifications"
    assert (
        _preauth(service, ehr, root, key, name, "--out", str(first), "--subscribe", subscribe) == 1
    )
    assert "A4" in capsys.readouterr().out
    (request,) = [json.loads(p.read_text()) for p in first.glob("PAS-request-*.json")]
    assert check(request).ok, check(request).text()

    # 4. the nurse completes the questionnaire; the DTR client stores it on the EHR
    nurse = {"reference": f"Practitioner/{name}-dr"}
    typed = {
        "tumor-size": {"valueDecimal": 3.1},
        "tumor-count": {"valueInteger": 1},
        "tumor-location": {
            "valueCoding": {
                "system": "http://fhir-adapter.org/fhir/CodeSystem/couinaud-segment",
                "code": "8",
            }
        },
    }
    for item in response["item"]:
        if item["linkId"] in typed:
            item["answer"] = [answer(typed[item["linkId"]], "manual", author=nurse)]
    response["status"] = "completed"
    assert check(response).ok, check(response).text()
    with FhirClient(ehr.base) as client:
        client.transaction(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": response,
                        "request": {
                            "method": "PUT",
                            "url": f"QuestionnaireResponse/{response['id']}",
                        },
                    }
                ],
            }
        )

    # 5. asked again: certified; recorded on the EHR, and by the notification where the
    # pended request was recorded
    assert _preauth(service, ehr, root, key, name) == 0
    assert "A1" in capsys.readouterr().out
    (stored,) = _claim_responses(ehr, name)
    assert _action(stored) == "A1" and stored["preAuthRef"].startswith("PA")
    deadline = time.monotonic() + 10
    notified: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not notified:
        notified = [
            r
            for r in (json.loads(p.read_text()) for p in first.glob("ClaimResponse-*.json"))
            if _action(r) == "A1"
        ]
        time.sleep(0.05)
    assert notified and notified[0]["preAuthRef"] == stored["preAuthRef"]
    assert check(notified[0]).ok

    # 6. the other two orders: A1 (criteria met), A3 (not met, the criterion named)
    assert _preauth(service, ehr, root, key, "pa-met") == 0
    assert _preauth(service, ehr, root, key, "pa-not-met") == 1
    out = capsys.readouterr().out
    assert "A1" in out and "A3" in out and "liver-tumor diagnosis" in out
    # asking again replaces the decision on the EHR, never duplicates it
    assert _preauth(service, ehr, root, key, "pa-met") == 0
    capsys.readouterr()
    (met,) = _claim_responses(ehr, "pa-met")
    with FhirClient(ehr.base) as client:
        claims = list(client.search("Claim", [("patient", "Patient/pa-met-pt")]))
    assert len(claims) == 1 and claims[0]["use"] == "preauthorization"
    (not_met,) = _claim_responses(ehr, "pa-not-met")
    assert _action(met) == "A1" and _action(not_met) == "A3"
    for resource in (met, not_met, stored):
        assert check(resource).ok, check(resource).text()

    records = PreauthRecords(root / "preauth.sqlite3")
    try:
        trace = request["entry"][0]["resource"]["identifier"][0]["value"]
        got_record = records.get(trace)
        assert got_record is not None and got_record["action"] == "A1"
    finally:
        records.close()


def test_the_authorization_number_goes_on_the_claim_evaluate_writes(
    loop: tuple[HookServer, TestServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """After the loop: the procedure done, the Claim carries the authorization (the
    approved ClaimResponse clears prior-auth-missing, a payer-criteria finding)."""
    _, ehr, root = loop
    stored = [r for r in _claim_responses(ehr, "pa-pended") if _action(r) == "A1"]
    assert stored, "run with test_the_whole_loop first (it makes the decision)"
    with FhirClient(ehr.base) as client:  # the request the answer refers to, as recorded
        request = client.read(*stored[0]["request"]["reference"].split("/"))
    claim = _evaluated_claim("pa-pended", [stored[0], request], root, capsys)
    assert claim["insurance"][0]["preAuthRef"] == [stored[0]["preAuthRef"]]


def _done(name: str, based_on: bool) -> dict[str, Any]:
    """The ordered procedure as recorded once done (`basedOn` the order, or not)."""
    done: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": f"{name}-rfa",
        "status": "completed",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "47382"}]},
        "subject": {"reference": f"Patient/{name}-pt"},
        "performedDateTime": "2026-12-15T09:30:00Z",
        "performer": [{"actor": {"reference": f"Practitioner/{name}-dr"}}],
        "location": {"reference": f"Location/{name}-loc"},
        "reasonReference": [{"reference": f"Condition/{name}-dx"}],
    }
    if based_on:
        done["basedOn"] = [{"reference": f"ServiceRequest/{name}-sr"}]
    return done


def _evaluated_claim(
    name: str, stored: list[dict[str, Any]], root: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """The Claim `evaluate` writes once the ordered procedure is recorded as done, with the
    `stored` resources of the EHR beside it."""
    bundle = json.loads((FIXTURES / f"{name}.json").read_text())
    done = _done(name, based_on=True)
    bundle["entry"] += [{"resource": done}] + [
        {"resource": {k: v for k, v in r.items() if k != "meta"}} for r in stored
    ]
    for entry in bundle["entry"]:
        entry.pop("fullUrl", None)
    path = root / f"{name}-done.json"
    path.write_text(json.dumps(bundle))
    main(["evaluate", str(path), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    (case,) = report["cases"]
    claims = [r for r in case["resources"] if r["resourceType"] == "Claim"]
    assert claims, case["findings"]
    return dict(claims[0])


def test_run_reads_the_completed_questionnaire_as_evidence(
    loop: tuple[HookServer, TestServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` on the EHR: the procedure done on the pended order, whose note lacks the size,
    count and segment; the nurse's completed answers (stored in the loop) document them."""
    _, ehr, _ = loop
    name = "pa-pended"
    documented = {"doc-tumor-size", "doc-tumor-count", "doc-tumor-location"}
    for based_on, expected_missing in ((False, documented), (True, set())):
        resource = _done(name, based_on)
        with FhirClient(ehr.base) as client:
            client.transaction(
                {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {
                            "resource": resource,
                            "request": {"method": "PUT", "url": f"Procedure/{name}-rfa"},
                        }
                    ],
                }
            )
        argv = [
            "run",
            "--base-url",
            ehr.base,
            "--procedure",
            f"{name}-rfa",
            "--dry-run",
            "--format",
            "json",
        ]
        main(argv)
        (case,) = json.loads(capsys.readouterr().out)["cases"]
        assert documented & {f["code"] for f in case["findings"]} == expected_missing
