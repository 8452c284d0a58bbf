"""Where text comes from: narrative `text.div`, and attachments given by `url` on a server."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import responses

from fhir_adapter.case import assemble
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.gather import fetch_attachments
from fhir_adapter.pipeline import evaluate_procedure
from fhir_adapter.rules import Pack, evaluate_case
from fhir_adapter.sources.store import ResourceStore

from .fhir_server.harness import TestServer

BASE = "https://fhir.example.org/r4"
RATIONALE = "INDICATION: HCC in segment 7. Not a surgical candidate given severe COPD."
CPT = "http://www.ama-assn.org/go/cpt"


def _procedure(note: str = "Percutaneous RFA of a liver lesion.") -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": "rfa",
        "status": "completed",
        "code": {"coding": [{"system": CPT, "code": "47382"}]},
        "subject": {"reference": "Patient/p"},
        "performedDateTime": "2026-10-15",
        "note": [{"text": note}],
    }


def _doc(rid: str, attachment: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": rid,
        "status": "current",
        "subject": {"reference": "Patient/p"},
        "content": [{"attachment": attachment}],
        "context": {"related": [{"reference": "Procedure/rfa"}]},
    }


def _rationale(pack: Pack, resources: list[dict[str, Any]]) -> set[str]:
    """The paths of the evidence that satisfies the necessity-rationale rule."""
    store = ResourceStore()
    for r in [{"resourceType": "Patient", "id": "p"}, *resources]:
        store.add(r)
    proc = next(r for r in resources if r["resourceType"] == "Procedure")
    case = assemble(store, proc, CPT, "47382")
    crit = next(
        c for c in evaluate_case(pack, case).criteria if c.rule == "necessity-rationale-missing"
    )
    return {e.path for e in crit.evidence if e.status == "affirmed"} if crit.passed else set()


def test_procedure_narrative_div_is_read(pack: Pack) -> None:
    proc = _procedure()
    proc["text"] = {
        "status": "additional",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{RATIONALE}</p>'
        "<!-- cryoablation --></div>",
    }
    assert _rationale(pack, [proc]) == {"Procedure.text.div"}


def test_report_narrative_div_is_read(pack: Pack) -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr",
        "status": "final",
        "code": {"text": "CT abdomen"},
        "subject": {"reference": "Patient/p"},
        "text": {"status": "additional", "div": f"<div><b>Impression</b>: {RATIONALE}</div>"},
    }
    proc = _procedure()
    proc["report"] = [{"reference": "DiagnosticReport/dr"}]
    assert _rationale(pack, [proc, report]) == {"DiagnosticReport.text.div"}
    # generated narrative only repeats the structured elements: not read again
    report["text"]["status"] = "generated"
    assert _rationale(pack, [proc, report]) == set()


def _case(resources: list[dict[str, Any]]) -> Any:
    store = ResourceStore()
    for r in [{"resourceType": "Patient", "id": "p"}, *resources]:
        store.add(r)
    return assemble(store, resources[0], CPT, "47382")


@responses.activate
def test_attachment_urls_same_origin_only_and_cut_at_the_limit(pack: Pack) -> None:
    client = FhirClient(BASE, check_version=False)
    binary = {
        "resourceType": "Binary",
        "id": "b1",
        "contentType": "text/plain",
        "data": base64.b64encode(RATIONALE.encode()).decode(),
    }
    responses.add(
        responses.POST,
        f"{BASE}/",
        json={
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [{"resource": binary, "response": {"status": "200 OK"}}],
        },
    )
    long_note = "Ablation zone covers the lesion. " + "x" * 5000
    responses.add(
        responses.GET,
        "https://fhir.example.org/docs/op-note.txt",
        body=long_note.encode(),
        content_type="text/plain; charset=utf-8",
    )
    foreign = {"contentType": "text/plain", "url": "https://elsewhere.example.com/note.txt"}
    by_binary = {"contentType": "text/plain", "url": "Binary/b1"}
    same_origin = {"url": "https://fhir.example.org/docs/op-note.txt"}
    case = _case(
        [_procedure(), _doc("d1", by_binary), _doc("d2", foreign), _doc("d3", same_origin)]
    )
    fetch_attachments(client, case, limit=100)
    called = [c.request.url for c in responses.calls]
    assert called == [f"{BASE}/", "https://fhir.example.org/docs/op-note.txt"]
    assert base64.b64decode(by_binary["data"]).decode() == RATIONALE
    assert "data" not in foreign
    assert len(base64.b64decode(same_origin["data"])) == 100
    assert same_origin["contentType"].startswith("text/plain")
    assert client.requests["attachment"] == 1
    ev = evaluate_case(pack, case)
    assert "necessity-rationale-missing" not in {f.code for f in ev.findings}
    assert "doc-ablation-confirmation" not in {f.code for f in ev.findings}


@pytest.mark.server
def test_a_binary_attachment_on_the_server_is_read(server: TestServer, pack: Pack) -> None:
    with FhirClient(server.base) as client:
        binary = client.request(
            "POST",
            "Binary",
            body={
                "resourceType": "Binary",
                "contentType": "text/plain",
                "data": base64.b64encode(RATIONALE.encode()).decode(),
            },
            kind="write",
        )
        client.request(
            "PUT", "Patient/p", body={"resourceType": "Patient", "id": "p"}, kind="write"
        )
        client.request("PUT", "Procedure/rfa", body=_procedure(), kind="write")
        doc = _doc("d1", {"contentType": "text/plain", "url": f"Binary/{binary['id']}"})
        client.request("PUT", "DocumentReference/d1", body=doc, kind="write")
        result = evaluate_procedure(client, "rfa", pack)
    ev = result.output.evaluation
    assert "necessity-rationale-missing" not in {f.code for f in ev.findings}
    crit = next(c for c in ev.criteria if c.rule == "necessity-rationale-missing")
    assert {e.reference for e in crit.evidence} == {"DocumentReference/d1"}
    assert result.reads <= 3  # the batch, and the one for the attachment
