"""The provider's prior-authorization run: order -> PAS request -> payer -> recorded decision.

The order is read from files or the EHR's FHIR server; the decision is recorded in the
provider's record (record.PreauthRecords), as files (`--out`: the request Bundle and the
ClaimResponse) or on the EHR (the Claim and ClaimResponse, conditional on the request's
identifier, so asking again updates them in place). The ClaimResponse's authorization
number (`preAuthRef`) is what the Claim for the service carries later.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fhir_adapter.client.rest import FhirClient
from fhir_adapter.errors import InputError, ServerError
from fhir_adapter.gather import ServerSource
from fhir_adapter.pack import Pack
from fhir_adapter.pas.client import PayerClient
from fhir_adapter.pas.decision import ReadDecision
from fhir_adapter.pas.record import PreauthRecords, write_json
from fhir_adapter.pas.request import (
    NO_SERVER,
    OrderCase,
    PreauthError,
    evaluate_order,
    planned_procedure,
    request_bundle,
)
from fhir_adapter.sources.store import ResourceStore


@dataclass
class PreauthResult:
    decision: ReadDecision
    bundle: dict[str, Any]
    trace: str
    written: list[str]


def read_supporting(paths: Sequence[str]) -> list[dict[str, Any]]:
    """QuestionnaireResponse / DocumentReference JSON files given with --questionnaire-response."""
    out = []
    for path in paths:
        try:
            resource = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise InputError(f"cannot read it ({exc.strerror})", source=path) from None
        except ValueError as exc:
            raise InputError(f"not JSON ({exc})", source=path) from None
        if not isinstance(resource, dict) or resource.get("resourceType") not in (
            "QuestionnaireResponse",
            "DocumentReference",
        ):
            raise InputError("not a QuestionnaireResponse or DocumentReference", source=path)
        if not isinstance(resource.get("id"), str):
            raise InputError(
                "the resource needs an id (it is referenced from the Claim)", source=path
            )
        out.append(resource)
    return out


def order_from_files(store: ResourceStore, order_id: str) -> dict[str, Any]:
    order = store.get(f"ServiceRequest/{order_id}")
    if order is None:
        raise InputError(f"no ServiceRequest/{order_id} in the files given")
    return order


def order_from_server(
    client: FhirClient, pack: Pack, order_id: str
) -> tuple[ResourceStore, dict[str, Any]]:
    """The order and what its case needs, read as `run` reads a case (a search batch, a
    last batch for what is still unresolved), plus the documents and questionnaire
    answers about the order."""
    order = client.read("ServiceRequest", order_id)
    procedure = planned_procedure(order, pack)
    source = ServerSource(client, pack.procedure_systems, pack.procedure_code)
    gathered = source.gather(procedure, [order])
    store = gathered.store
    about = f"ServiceRequest/{order_id}"
    extra = [f"DocumentReference?related={about}"]
    patient = (order.get("subject") or {}).get("reference")
    if isinstance(patient, str) and patient.startswith("Patient/"):
        extra.append(f"QuestionnaireResponse?subject={quote(patient)}&status=completed")
    for result in source.reader.get_many(extra):  # as a batch, or one by one where refused
        for entry in (result or {}).get("entry") or []:
            resource = (entry or {}).get("resource")
            if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
                store.add(resource)
    return store, order


def run_preauth(
    pack: Pack,
    store: ResourceStore,
    order: dict[str, Any],
    payer: PayerClient,
    records: PreauthRecords,
    *,
    payer_url: str,
    now: str,
    base: str = NO_SERVER,
    supporting: Sequence[dict[str, Any]] = (),
    block_on: str | None = None,
    status_only: bool = False,
    subscribe: str | None = None,
    out_dir: str | None = None,
    ehr: FhirClient | None = None,
) -> PreauthResult:
    """Build, send (or ask again), record."""
    from fhir_adapter.sources.questionnaire import evidence_from

    # questionnaire answers already in the store are evidence too (the order's own)
    for qr in store.of_type("QuestionnaireResponse"):
        for derived in evidence_from(qr, store.key_of(qr)):
            store.add(derived)
    answered = [
        qr
        for qr in store.of_type("QuestionnaireResponse")
        if qr.get("status") in ("completed", "amended")
        and any(
            (e.get("valueReference") or {}).get("reference") == f"ServiceRequest/{order['id']}"
            for e in qr.get("extension") or []
        )
    ]
    given = {id(r) for r in supporting}
    oc: OrderCase = evaluate_order(
        pack,
        store,
        order,
        block_on=block_on,
        base=base,
        supporting=[*supporting, *[q for q in answered if id(q) not in given]],
    )
    bundle = request_bundle(oc, pack, now=now)
    claim = bundle["entry"][0]["resource"]
    trace = claim["identifier"][0]["value"]
    records.request(trace, claim, payer_url, out_dir)
    if status_only:
        decision = payer.inquire(claim, oc.case.patient, now)
    else:
        decision = payer.submit(bundle)
        if decision.action == "A4" and subscribe:
            secret = secrets.token_urlsafe(32)
            org = next(
                (
                    i.get("value")
                    for i in (oc.case.resource(claim["provider"]["reference"]) or {}).get(
                        "identifier"
                    )
                    or []
                    if i.get("value")
                ),
                "fhir-adapter",
            )
            sid = payer.subscribe(subscribe, secret, str(org))
            records.subscribed(secret, payer_url, sid)
    records.decided(trace, decision.action, decision.number, decision.claim_response)
    written = _record(bundle, decision, out_dir, ehr, base)
    return PreauthResult(decision, bundle, trace, written)


def _record(
    bundle: dict[str, Any],
    decision: ReadDecision,
    out_dir: str | None,
    ehr: FhirClient | None,
    base: str,
) -> list[str]:
    claim = bundle["entry"][0]["resource"]
    response = decision.claim_response
    written: list[str] = []
    if out_dir:
        written.append(str(write_json(out_dir, f"PAS-request-{claim['id']}.json", bundle)))
        name = f"ClaimResponse-{response.get('id', claim['id'])}.json"
        written.append(str(write_json(out_dir, name, response)))
    elif ehr is not None:
        written += write_to_ehr(ehr, claim, response)
    return written


def write_to_ehr(ehr: FhirClient, claim: dict[str, Any], response: dict[str, Any]) -> list[str]:
    """The Claim and its ClaimResponse on the EHR, each a conditional update on the
    request's identifier (asking again replaces the earlier decision)."""
    ident = claim["identifier"][0]
    query = quote(f"{ident['system']}|{ident['value']}", safe="|:")
    claim_url = "urn:uuid:" + _uuid(ident["value"], "claim")
    stored_claim = {k: v for k, v in claim.items() if k != "id"}
    stored_response = {k: v for k, v in response.items() if k != "id"}
    stored_response["request"] = {"reference": claim_url}
    stored_response["identifier"] = [dict(ident)]
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": claim_url,
                "resource": stored_claim,
                "request": {"method": "PUT", "url": f"Claim?identifier={query}"},
            },
            {
                "fullUrl": "urn:uuid:" + _uuid(ident["value"], "response"),
                "resource": stored_response,
                "request": {"method": "PUT", "url": f"ClaimResponse?identifier={query}"},
            },
        ],
    }
    try:
        answer = ehr.transaction(transaction)
    except ServerError as exc:
        raise ServerError(f"recording the decision on the EHR: {exc}") from None
    return [str((e.get("response") or {}).get("location", "")) for e in answer.get("entry") or []]


def _uuid(value: str, kind: str) -> str:
    import hashlib

    h = hashlib.sha256(f"{kind}|{value}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-8{h[17:20]}-{h[20:32]}"


__all__ = ["PreauthError", "PreauthResult", "order_from_files", "order_from_server", "run_preauth"]
