"""The provider's side of Da Vinci PAS: an order for the procedure, as a PAS request Bundle.

The order (a ServiceRequest) is evaluated as the Procedure it asks for, by the same
assembly and rules as a recorded one; the request Bundle carries what the payer needs to
decide the same way: the `profile-claim` first (use preauthorization, the item with the
CPT code, X12 category, request and certification types, the place of service), then
every resource it references, transitively, exactly once, and the completed
questionnaire or documents as `supportingInfo[AdditionalInformation]`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.billing.decide import claim_diagnoses, rendering
from fhir_adapter.case import Case, assemble
from fhir_adapter.errors import AdapterError
from fhir_adapter.fhir.codings import has_coding
from fhir_adapter.fhir.references import reference_string, tail_key
from fhir_adapter.findings import Evaluation
from fhir_adapter.pack import Pack
from fhir_adapter.rules import evaluate_case
from fhir_adapter.sources.questionnaire import PriorAuth, evidence_from, prior_auth
from fhir_adapter.sources.store import ResourceStore

PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
PROFILE_CLAIM = PAS + "profile-claim"
PROFILE_REQUEST_BUNDLE = PAS + "profile-pas-request-bundle"
PROFILE_CLAIMRESPONSE = PAS + "profile-claimresponse"
PROFILE_RESPONSE_BUNDLE = PAS + "profile-pas-response-bundle"
EXT_REQUEST_TYPE = PAS + "extension-serviceItemRequestType"
EXT_CERTIFICATION_TYPE = PAS + "extension-certificationType"
EXT_LEVEL_OF_SERVICE = PAS + "extension-levelOfServiceCode"
EXT_CARE_TEAM_SCOPE = PAS + "extension-careTeamClaimScope"
EXT_DOCUMENT_INFORMATION = PAS + "extension-documentInformation"
PAS_TEMP_CODES = "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
REQUESTED_SETTING = "http://fhir-adapter.org/fhir/StructureDefinition/requested-setting"
NO_SERVER = "http://fhir-adapter.invalid/fhir/"  # fullUrl base for resources read from files
PLANNED_PREFIX = "order-"


class PreauthError(AdapterError):
    """An order that cannot become a PAS request (the message names what is missing)."""


def planned_procedure(order: dict[str, Any], pack: Pack) -> dict[str, Any]:
    """The Procedure a ServiceRequest for the pack's code asks for (status preparation,
    `basedOn` the order, so the order's documents and answers are its evidence)."""
    oid = order.get("id")
    if order.get("resourceType") != "ServiceRequest" or not isinstance(oid, str):
        raise PreauthError("the order is not a ServiceRequest with an id")
    if not has_coding(order, ("code",), pack.procedure_systems, pack.procedure_code):
        raise PreauthError(
            f"ServiceRequest/{oid} does not order CPT {pack.procedure_code} "
            f"({pack.procedure_system})"
        )
    proc: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": f"{PLANNED_PREFIX}{oid}",
        "status": "preparation",
        "basedOn": [{"reference": f"ServiceRequest/{oid}"}],
        "code": order["code"],
        "subject": order.get("subject"),
        "encounter": order.get("encounter"),
        "performer": [{"actor": p} for p in order.get("performer") or [] if isinstance(p, dict)],
        "location": next(iter(order.get("locationReference") or []), None),
        "extension": [
            {"url": REQUESTED_SETTING, "valueCodeableConcept": cc}
            for cc in order.get("locationCode") or []
            if isinstance(cc, dict)
        ],
        "performedDateTime": requested_date(order),
    }
    for name in ("reasonCode", "reasonReference", "bodySite", "note"):
        if order.get(name):
            proc[name] = order[name]
    if not proc["performer"] and isinstance(order.get("requester"), dict):
        proc["performer"] = [{"actor": order["requester"]}]
    return {k: v for k, v in proc.items() if v not in ([], None)}


def requested_date(order: dict[str, Any]) -> str:
    """When the service is to happen: the order's occurrence, else when it was ordered,
    else today."""
    for value in (
        order.get("occurrenceDateTime"),
        (order.get("occurrencePeriod") or {}).get("start"),
        order.get("authoredOn"),
    ):
        if isinstance(value, str) and len(value) >= 10:
            return value[:10]
    return dt.datetime.now(dt.UTC).date().isoformat()


@dataclass
class OrderCase:
    """An order evaluated as the procedure it asks for, with the store it was read from."""

    order: dict[str, Any]
    procedure: dict[str, Any]
    case: Case
    evaluation: Evaluation
    store: ResourceStore
    base: str = NO_SERVER
    supporting: list[dict[str, Any]] = field(default_factory=list)


def evaluate_order(
    pack: Pack,
    store: ResourceStore,
    order: dict[str, Any],
    *,
    block_on: str | None = None,
    base: str = NO_SERVER,
    supporting: Sequence[dict[str, Any]] = (),
) -> OrderCase:
    """Evaluate `order` over `store`; `supporting` (QuestionnaireResponses, documents) is
    added to the store as evidence and goes to the payer as AdditionalInformation."""
    procedure = planned_procedure(order, pack)
    store.add(order)
    store.add(procedure)
    order_ref = {"reference": f"ServiceRequest/{order['id']}"}
    for resource in supporting:
        store.add(resource)
        if resource.get("resourceType") == "QuestionnaireResponse":
            for derived in evidence_from(resource, store.key_of(resource), anchors=[order_ref]):
                store.add(derived)
    case = assemble(store, procedure, pack.procedure_systems, pack.procedure_code)
    evaluation = evaluate_case(pack, case, block_on)
    return OrderCase(order, procedure, case, evaluation, store, base, list(supporting))


def trn(order_key: str, base: str) -> str:
    """The Claim's trace number: stable for one order at one source (a resubmission is
    recognised as the same request), never the order id itself."""
    return hashlib.sha256(f"{base}|{order_key}".encode()).hexdigest()[:20]


def request_bundle(
    oc: OrderCase,
    pack: Pack,
    *,
    now: str,
    config: PriorAuth | None = None,
    certification: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The PAS request Bundle for an evaluated order (PreauthError when a required element
    cannot be filled: no Coverage, no member id, no provider)."""
    config = config or prior_auth()
    pas = config.pas
    case, order = oc.case, oc.order
    order_key = f"ServiceRequest/{order['id']}"
    if not case.coverage:
        raise PreauthError(f"{order_key}: the patient has no active Coverage to authorize under")
    coverage = dict(case.coverage[0])
    member = _member_identifier(coverage)
    if member is None:
        raise PreauthError(
            f"{case.ref(case.coverage[0])}: no member id (Coverage.identifier or subscriberId)"
        )
    coverage["identifier"] = [member, *[i for i in coverage.get("identifier") or [] if i != member]]
    if not case.insurer_ref:
        raise PreauthError(f"{case.ref(case.coverage[0])}: no payor to send the request to")
    chosen = rendering(pack, case).performer
    provider_ref = chosen.ref if chosen is not None else case.provider_ref
    if provider_ref is None:
        raise PreauthError(f"{order_key}: no performer or requester to name as the provider")
    if case.patient_ref is None or case.patient is None:
        raise PreauthError(f"{order_key}: its subject (the patient) cannot be read")
    trace = trn(order_key, oc.base)
    claim_id = f"pa-{trace}"
    diagnoses = claim_diagnoses(pack, case).billable[:12]
    supporting = [r for r in [*oc.supporting, *_documents(case)] if r.get("id")]
    claim: dict[str, Any] = {
        "resourceType": "Claim",
        "id": claim_id,
        "meta": {"profile": [PROFILE_CLAIM]},
        "extension": [
            {
                "url": EXT_LEVEL_OF_SERVICE,
                "valueCodeableConcept": {"coding": [pas.level_of_service.coding()]},
            }
        ],
        "identifier": [{"system": pas.submitter_trn, "value": trace}],
        "status": "active",
        "type": {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]},
        "use": "preauthorization",
        "patient": {"reference": case.patient_ref},
        "created": now,
        "insurer": {"reference": case.insurer_ref},
        "provider": {"reference": provider_ref},
        "priority": {"coding": [{"system": PRIORITY, "code": "normal"}]},
        "careTeam": [
            {
                "extension": [{"url": EXT_CARE_TEAM_SCOPE, "valueBoolean": True}],
                "sequence": 1,
                "provider": {"reference": provider_ref},
            }
        ],
        "supportingInfo": [
            {
                "extension": [
                    {
                        "url": EXT_DOCUMENT_INFORMATION,
                        "extension": [
                            {
                                "url": "reportTypeCode",
                                "valueCodeableConcept": {"coding": [pas.report_type.coding()]},
                            }
                        ],
                    }
                ],
                "sequence": i,
                "category": {
                    "coding": [{"system": PAS_TEMP_CODES, "code": "additionalInformation"}]
                },
                "valueReference": {"reference": f"{r['resourceType']}/{r['id']}"},
            }
            for i, r in enumerate(supporting, 1)
        ],
        "diagnosis": [
            {
                "sequence": i,
                "diagnosisCodeableConcept": {
                    "coding": [
                        {
                            "system": ICD10CM,
                            "code": d.code,
                            **({"display": d.display} if d.display else {}),
                        }
                    ]
                },
            }
            for i, d in enumerate(diagnoses, 1)
        ],
        "insurance": [
            {"sequence": 1, "focal": True, "coverage": {"reference": case.ref(case.coverage[0])}}
        ],
        "item": [
            {
                "extension": [
                    {
                        "url": EXT_REQUEST_TYPE,
                        "valueCodeableConcept": {"coding": [pas.request_type.coding()]},
                    },
                    {
                        "url": EXT_CERTIFICATION_TYPE,
                        "valueCodeableConcept": {
                            "coding": [certification or pas.certification_type.coding()]
                        },
                    },
                ],
                "sequence": 1,
                "careTeamSequence": [1],
                "diagnosisSequence": list(range(1, min(len(diagnoses), 4) + 1)),
                "informationSequence": list(range(1, len(supporting) + 1)),
                "category": {"coding": [pas.service_category.coding()]},
                "productOrService": {
                    "coding": [{"system": pack.procedure_system, "code": pack.procedure_code}]
                },
                "servicedDate": requested_date(order),
                "locationCodeableConcept": _place_of_service(oc.evaluation),
                "quantity": {"value": 1},
            }
        ],
    }
    claim = _drop_empty(claim)
    if "locationCodeableConcept" not in claim["item"][0]:
        raise PreauthError(
            f"{order_key}: no place of service is known (ServiceRequest.locationCode or "
            "locationReference): PAS requires one on the item"
        )
    entries = _referenced(oc, claim, coverage, supporting)
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [PROFILE_REQUEST_BUNDLE]},
        "identifier": {"system": pas.submitter_trn, "value": trace},
        "type": "collection",
        "timestamp": now,
        "entry": [
            {"fullUrl": oc.base + key, "resource": resource}
            for key, resource in [(f"Claim/{claim_id}", claim), *entries]
        ],
    }


def _documents(case: Case) -> list[dict[str, Any]]:
    """The case's documents the payer reads as the rules did (not those standing for a
    questionnaire's answers: the QuestionnaireResponse itself goes)."""
    return [
        d
        for d in case.documents
        if d.get("resourceType") == "DocumentReference"
        and not any(r.get("code") == "transforms" for r in d.get("relatesTo") or [])
    ]


def _place_of_service(evaluation: Evaluation) -> dict[str, Any] | None:
    pos = evaluation.place_of_service
    return {"coding": [{"system": POS, "code": pos}]} if pos else None


def _member_identifier(coverage: dict[str, Any]) -> dict[str, Any] | None:
    """Coverage.identifier[memberid] (type MB), from an identifier so typed, else the
    subscriberId, else the only identifier."""
    idents = [i for i in coverage.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    for ident in idents:
        if any(c.get("code") == "MB" for c in (ident.get("type") or {}).get("coding") or []):
            return ident
    value = coverage.get("subscriberId") or (idents[0]["value"] if len(idents) == 1 else None)
    if not isinstance(value, str) or not value:
        return None
    out = {"type": {"coding": [{"system": V2_0203, "code": "MB"}]}, "value": value}
    if len(idents) == 1 and idents[0].get("system"):
        out["system"] = idents[0]["system"]
    return out


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def _references(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        ref = reference_string(value) if set(value) & {"reference"} else None
        if ref:
            yield ref
        for v in value.values():
            yield from _references(v)
    elif isinstance(value, list):
        for v in value:
            yield from _references(v)


def _referenced(
    oc: OrderCase,
    claim: dict[str, Any],
    coverage: dict[str, Any],
    supporting: list[dict[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    """Every resource the Claim references, transitively, once each (the Coverage as sent,
    with its member id); a reference the store cannot resolve is left for the payer."""
    store = oc.store
    replaced = {oc.case.ref(oc.case.coverage[0]): coverage}
    for resource in supporting:
        replaced[f"{resource['resourceType']}/{resource['id']}"] = resource
    out: dict[str, dict[str, Any]] = {}
    queue = list(_references(claim))
    while queue:
        ref = queue.pop(0)
        key = store.canonical(ref) or tail_key(ref)
        if not key or key in out or key.startswith("Claim/"):
            continue
        found = replaced.get(key) or store.get(key)
        if found is None:
            continue
        out[key] = found
        queue.extend(_references(resource))
    return list(out.items())
