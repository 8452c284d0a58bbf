"""Prior authorization end to end on loopback: `preauth` (the provider) against `serve
--payer` (the payer, real uvicorn), both deciding with the same engine; every request and
answer checked against the PAS profiles (fhir_adapter.conformance)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization

from fhir_adapter.cli import main
from fhir_adapter.conformance import check
from fhir_adapter.pas.client import PayerClient, PayerRefused
from fhir_adapter.pas.dtr import DTR_QR, answer
from fhir_adapter.pas.record import PreauthRecords
from fhir_adapter.pas.request import PROFILE_REQUEST_BUNDLE

from .test_hooks_harness import EHR_ISS, HookServer, SigningKey, inline_service

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "prior-auth"
QUESTIONNAIRE = "http://fhir-adapter.org/fhir/Questionnaire/cpt-47382-prior-auth"
CONTEXT = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("ES384")


@pytest.fixture(scope="module")
def payer(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Iterator[HookServer]:
    root = tmp_path_factory.mktemp("payer")
    service = inline_service(
        root / "feedback.sqlite3",
        (EHR_ISS, key),
        payer_db=root / "payer.sqlite3",
        preauth_db=root / "preauth.sqlite3",
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Path:
    path = write_pem(key, tmp_path_factory.mktemp("keys") / "ehr-key.pem")
    path.with_suffix(".kid").write_text(key.kid)
    return path


def write_pem(key: SigningKey, path: Path) -> Path:
    """The client's private key as the PEM file `preauth --payer-private-key` reads."""
    path.write_bytes(
        key.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _preauth(payer: HookServer, key_file: Path, name: str, out: Path, *extra: str) -> int:
    return main(
        [
            "preauth",
            str(FIXTURES / f"{name}.json"),
            "--service-request",
            f"{name}-sr",
            "--payer",
            f"{payer.base}/fhir",
            "--payer-auth",
            "jwt",
            "--payer-iss",
            EHR_ISS,
            "--payer-private-key",
            str(key_file),
            "--payer-kid",
            key_file.with_suffix(".kid").read_text(),
            "--preauth-db",
            str(Path(payer_db_dir(payer)) / "preauth.sqlite3"),
            "--out",
            str(out),
            *extra,
        ]
    )


def payer_db_dir(payer: HookServer) -> str:
    return str(Path(str(payer.app.state.service.config.feedback_db)).parent)


def _written(out: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{kind}-*.json"))]


def review_action(response: dict[str, Any]) -> str:
    adjudication = response["item"][0]["adjudication"][0]
    action = adjudication["extension"][0]["extension"]
    codes = [
        e["valueCodeableConcept"]["coding"][0]["code"]
        for e in action
        if "valueCodeableConcept" in e and e["url"].endswith("reviewActionCode")
    ]
    return str(codes[0])


def test_criteria_met_is_certified_with_an_authorization_number(
    payer: HookServer, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _preauth(payer, key_file, "pa-met", tmp_path) == 0
    line = capsys.readouterr().out
    assert "A1" in line and "authorization PA" in line
    (bundle,) = _written(tmp_path, "PAS-request")
    (response,) = _written(tmp_path, "ClaimResponse")
    assert check(bundle, PROFILE_REQUEST_BUNDLE).ok, check(bundle).text()
    assert check(response).ok, check(response).text()
    claim = bundle["entry"][0]["resource"]
    assert claim["use"] == "preauthorization"
    assert claim["item"][0]["productOrService"]["coding"][0]["code"] == "47382"
    assert claim["item"][0]["locationCodeableConcept"]["coding"][0]["code"] == "22"
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} >= {
        "Claim",
        "Patient",
        "Coverage",
        "Organization",
        "Practitioner",
        "DocumentReference",
    }
    keys = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]]
    assert len(keys) == len(set(keys))  # every resource once
    assert review_action(response) == "A1"
    assert response["preAuthRef"].startswith("PA")
    assert response["item"][0]["itemSequence"] == claim["item"][0]["sequence"]


def test_criteria_not_met_is_not_certified_naming_the_criterion(
    payer: HookServer, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _preauth(payer, key_file, "pa-not-met", tmp_path) == 1
    line = capsys.readouterr().out
    assert "A3" in line and "liver-tumor diagnosis" in line
    (response,) = _written(tmp_path, "ClaimResponse")
    assert check(response).ok
    assert review_action(response) == "A3"
    assert "preAuthRef" not in response


def _answers(name: str) -> dict[str, Any]:
    """What the prior-authorization nurse entered (DTR: `manual`, with the author)."""
    nurse = {"reference": f"Practitioner/{name}-dr"}
    return {
        "resourceType": "QuestionnaireResponse",
        "id": f"{name}-answers",
        "meta": {"profile": [DTR_QR]},
        "questionnaire": QUESTIONNAIRE,
        "status": "completed",
        "subject": {"reference": f"Patient/{name}-pt"},
        "authored": "2026-12-02T09:00:00Z",
        "extension": [
            {"url": CONTEXT, "valueReference": {"reference": f"ServiceRequest/{name}-sr"}},
            {"url": CONTEXT, "valueReference": {"reference": f"Coverage/{name}-cov"}},
            {
                "url": "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/intendedUse",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
                            "code": "withpa",
                        }
                    ]
                },
            },
        ],
        "item": [
            {
                "linkId": "tumor-size",
                "answer": [answer({"valueDecimal": 2.8}, "manual", author=nurse)],
            },
            {
                "linkId": "tumor-count",
                "answer": [answer({"valueInteger": 1}, "manual", author=nurse)],
            },
            {
                "linkId": "tumor-location",
                "answer": [answer({"valueCoding": {"code": "7"}}, "manual", author=nurse)],
            },
        ],
    }


def test_pended_then_certified_by_notification_once_the_answers_arrive(
    payer: HookServer, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    subscribe = f"{payer.base}/pas/notifications"
    assert _preauth(payer, key_file, "pa-pended", first, "--subscribe", subscribe) == 1
    line = capsys.readouterr().out
    assert "A4" in line and "doc-tumor-size" not in line  # the message, not the code
    (pended,) = _written(first, "ClaimResponse")
    assert review_action(pended) == "A4" and check(pended).ok
    # the prior-authorization nurse completes the questionnaire; it goes with the request
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(_answers("pa-pended")))
    assert (
        _preauth(payer, key_file, "pa-pended", second, "--questionnaire-response", str(answers))
        == 0
    )
    assert "A1" in capsys.readouterr().out
    (bundle,) = _written(second, "PAS-request")
    infos = bundle["entry"][0]["resource"]["supportingInfo"]
    assert any(
        i["valueReference"]["reference"] == "QuestionnaireResponse/pa-pended-answers" for i in infos
    )
    assert check(bundle).ok, check(bundle).text()
    # the payer notified the subscription: serve recorded the final decision where the
    # request was first recorded
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(_written(first, "ClaimResponse")) < 2:
        time.sleep(0.05)
    final = [r for r in _written(first, "ClaimResponse") if review_action(r) == "A1"]
    assert len(final) == 1 and final[0]["preAuthRef"].startswith("PA")
    records = PreauthRecords(Path(payer_db_dir(payer)) / "preauth.sqlite3")
    try:
        trace = bundle["entry"][0]["resource"]["identifier"][0]["value"]
        got = records.get(trace)
        assert got is not None and got["action"] == "A1" and got["number"] == final[0]["preAuthRef"]
    finally:
        records.close()
    # and `preauth --status` asks again: A1
    assert _preauth(payer, key_file, "pa-pended", tmp_path / "third", "--status") == 0
    assert "A1" in capsys.readouterr().out


def test_a_bad_request_is_a_4xx_outcome_naming_the_element(
    payer: HookServer, key: SigningKey
) -> None:
    url = f"{payer.base}/fhir/Claim/$submit"
    bundle = json.loads((FIXTURES / "pa-met.json").read_text())  # a collection, but no Claim
    bundle.update(identifier={"system": "urn:x", "value": "1"}, timestamp="2026-12-02T10:00:00Z")
    headers = {"Authorization": f"Bearer {key.sign(url)}", "Content-Type": "application/fhir+json"}
    answer = requests.post(url, data=json.dumps(bundle), headers=headers, timeout=30)
    assert answer.status_code == 400
    issue = answer.json()["issue"][0]
    assert issue["expression"] and "ClaimFirst" in issue["diagnostics"]
    unsigned = requests.post(url, data=json.dumps(bundle), timeout=30)
    assert unsigned.status_code == 401


@responses.activate
def test_5xx_is_retried_and_4xx_is_final_with_the_outcome_text() -> None:
    url = "https://payer.example.org/fhir/Claim/$submit"
    answer = {
        "resourceType": "ClaimResponse",
        "outcome": "complete",
        "preAuthRef": "X1",
        "item": [{"itemSequence": 1}],
    }
    responses.add(
        responses.POST, url, status=503, json={"resourceType": "OperationOutcome", "issue": []}
    )
    responses.add(responses.POST, url, status=200, json=answer)
    client = PayerClient("https://payer.example.org/fhir", backoff=0.01)
    decision = client.submit({"resourceType": "Bundle"})
    assert decision.action == "A1" and decision.number == "X1"  # fallback: preAuthRef
    assert len(responses.calls) == 2
    responses.reset()
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "Claim.item[0].category is required",
            }
        ],
    }
    responses.add(responses.POST, url, status=422, json=outcome)
    with pytest.raises(PayerRefused, match=r"Claim.item\[0\].category is required"):
        client.submit({"resourceType": "Bundle"})
    assert len(responses.calls) == 1


def _evaluation(*findings: tuple[str, str]) -> Any:
    from fhir_adapter.findings import Evaluation, Finding

    return Evaluation(
        "Procedure/x",
        None,
        None,
        findings=[Finding(code, sev, f"{code} message") for code, sev in findings],
    )


@pytest.mark.parametrize(
    ("findings", "action"),
    [
        ((), "A1"),
        ((("payer-criteria-not-met", "high"),), "A3"),
        ((("payer-criteria-undocumented", "moderate"),), "A4"),
        ((("doc-tumor-size", "moderate"), ("diagnosis-unsupported", "high")), "A3"),
        ((("prior-auth-missing", "high"), ("doc-energy", "moderate")), "A1"),
        ((("necessity-rationale-missing", "high"),), "A4"),
        ((("place-of-service-not-covered", "moderate"),), "A1"),
    ],
)
def test_the_decision_follows_the_findings(
    findings: tuple[tuple[str, str], ...], action: str
) -> None:
    """Blocking and not documentation: A3; documentation the payer can ask for: A4; what
    cannot be known before the service (or the authorization itself settles): not decided by.
    The payer overlay's findings decide the same way as the pack's."""
    from fhir_adapter.pack import load_pack
    from fhir_adapter.pas.decision import decide

    decision = decide(
        _evaluation(*findings), load_pack(), claim_key="t|1", service_date="2026-12-15"
    )
    assert decision.action == action
    if action == "A1":
        assert decision.number and decision.period == ("2026-12-15", "2027-03-15")
    else:
        assert decision.number is None and decision.reasons


def test_the_payer_takes_tokens_only_for_its_own_url_once(
    payer: HookServer, key: SigningKey
) -> None:
    url = f"{payer.base}/fhir/Claim/$inquire"
    body = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []})
    for token in (
        key.sign(f"{payer.base}/fhir/Claim/$submit"),
        key.sign(url, iss="https://other.example.org"),
    ):
        refused = requests.post(
            url, data=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert refused.status_code == 401
    token = key.sign(url)
    first = requests.post(url, data=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert first.status_code == 400  # accepted, and the inquiry has no Claim
    replay = requests.post(url, data=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert replay.status_code == 401


def test_a_subscription_endpoint_in_plain_http_beyond_loopback_is_refused(
    payer: HookServer, key: SigningKey
) -> None:
    from fhir_adapter.pas.payer import BACKPORT, PAS_TOPIC

    url = f"{payer.base}/fhir/Subscription"
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": PAS_TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://provider.example.org/notify",
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {"url": BACKPORT + "backport-payload-content", "valueCode": "full-resource"}
                ]
            },
        },
    }
    answer_ = requests.post(
        url,
        data=json.dumps(subscription),
        headers={"Authorization": f"Bearer {key.sign(url)}"},
        timeout=30,
    )
    assert answer_.status_code == 422
    assert answer_.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]


def test_the_payers_answers_and_the_subscription_are_pas_conformant(
    payer: HookServer, key: SigningKey, key_file: Path, tmp_path: Path
) -> None:
    from fhir_adapter.pas.client import SignedCallAuth, subscription_resource
    from fhir_adapter.pas.payer import notification

    assert _preauth(payer, key_file, "pa-met", tmp_path) == 0
    (bundle,) = _written(tmp_path, "PAS-request")
    client = PayerClient(
        f"{payer.base}/fhir", SignedCallAuth(EHR_ISS, key_file.read_bytes(), key.kid)
    )
    try:
        answer_ = client.post("Claim/$submit", bundle, expect="Bundle")
    finally:
        client.close()
    assert answer_["meta"]["profile"] == [
        "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-response-bundle"
    ]
    assert check(answer_).ok, check(answer_).text()
    subscription = subscription_resource(f"{payer.base}/pas/notifications", "s3cret", "1245319599")
    assert check(subscription).ok, check(subscription).text()
    note = notification(
        dict(subscription, id="sub-1"), answer_, now="2026-12-02T10:00:00Z", number=1
    )
    assert check(note).ok, check(note).text()
    assert check(note["entry"][1]["resource"]).ok


def test_an_oversized_request_is_refused_before_it_is_checked(
    payer: HookServer, key: SigningKey
) -> None:
    from fhir_adapter.pas.payer import MAX_ENTRIES

    url = f"{payer.base}/fhir/Claim/$submit"
    entry = {"fullUrl": "urn:uuid:0", "resource": {"resourceType": "Basic", "code": {"text": "x"}}}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [entry] * (MAX_ENTRIES + 1)}
    answer_ = requests.post(
        url,
        data=json.dumps(bundle),
        headers={"Authorization": f"Bearer {key.sign(url)}"},
        timeout=30,
    )
    assert answer_.status_code == 413
    assert answer_.json()["issue"][0]["expression"] == ["Bundle.entry"]


@pytest.mark.parametrize(
    ("example", "action", "number", "pend"),
    [
        ("ClaimResponse-PractitionerRequestorResponseExample.json", "A1", "AUTH0001", None),
        ("ClaimResponse-RejectionResponseExample.json", "A3", None, None),
        ("ClaimResponse-PractitionerRequestorPendingResponseExample.json", "A4", None, "PEND0001"),
    ],
)
def test_the_decision_is_read_from_the_guides_own_responses(
    example: str, action: str, number: str | None, pend: str | None
) -> None:
    from fhir_adapter.conformance.packages import PAS, load_package
    from fhir_adapter.pas.decision import read_decision

    decision = read_decision(load_package(PAS).examples[example])
    assert (decision.action, decision.number, decision.pend_reference) == (action, number, pend)


@pytest.mark.parametrize(
    ("response", "action"),
    [
        ({"outcome": "queued", "disposition": "Pending"}, "A4"),  # the PAS RI's pend
        ({"outcome": "complete", "disposition": "Granted", "preAuthRef": "R1"}, "A1"),
        ({"outcome": "complete", "disposition": "Denied"}, "A3"),
        ({"outcome": "error"}, "A3"),
    ],
)
def test_without_a_review_action_disposition_and_preauthref_decide(
    response: dict[str, Any], action: str
) -> None:
    from fhir_adapter.pas.decision import read_decision

    assert read_decision({"resourceType": "ClaimResponse", **response}).action == action
