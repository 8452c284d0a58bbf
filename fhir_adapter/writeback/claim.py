"""The professional Claim for a case that nothing blocks."""

from __future__ import annotations

from typing import Any

from fhir_adapter.case import Case
from fhir_adapter.fhir.codings import codings, dotted_icd10cm
from fhir_adapter.findings import Evaluation
from fhir_adapter.rules.pack import Pack


def claim_diagnoses(pack: Pack, case: Case) -> list[dict[str, Any]]:
    """ICD-10-CM codings (dotted) of the case, liver-tumor diagnoses first, no repeats."""
    cfg = pack.model.claim
    icd = pack.system(cfg.diagnosis_system)
    primary = pack.valuesets[cfg.primary_diagnoses]
    crosswalk = pack.model.crosswalks.get(cfg.diagnosis_crosswalk or "", {})
    snomed = pack.system("snomed")
    sources: list[Any] = [c.get("code") for c in case.conditions]
    sources.append(case.procedure.get("reasonCode"))
    found: dict[str, dict[str, Any]] = {}
    for cc in sources:
        items = list(codings(cc))
        icd_items = [c for c in items if c.get("system") == icd and isinstance(c.get("code"), str)]
        if not icd_items:
            icd_items = [
                {"system": icd, "code": crosswalk[str(c.get("code")).strip()]}
                for c in items
                if c.get("system") == snomed and str(c.get("code")).strip() in crosswalk
            ]
        for c in icd_items:
            code = dotted_icd10cm(c["code"])
            if code not in found:
                coding = {"system": icd, "code": code}
                if c.get("display"):
                    coding["display"] = c["display"]
                found[code] = coding
    ordered = sorted(found.values(), key=lambda c: not primary.contains(icd, c["code"]))
    return ordered


def build_claim(
    pack: Pack,
    case: Case,
    evaluation: Evaluation,
    identifier: dict[str, str],
    created: str,
) -> dict[str, Any]:
    cfg = pack.model.claim
    diagnoses = claim_diagnoses(pack, case)
    pointers = list(range(1, min(len(diagnoses), cfg.max_diagnosis_pointers) + 1))
    line: dict[str, Any] = {
        "sequence": 1,
        "productOrService": {
            "coding": [
                {
                    "system": pack.procedure_system,
                    "code": pack.procedure_code,
                    "display": pack.model.procedure.display,
                }
            ]
        },
        "quantity": {"value": 1},
    }
    if pointers:
        line["diagnosisSequence"] = pointers
    if evaluation.modifiers:
        line["modifier"] = [
            {"coding": [{"system": pack.procedure_system, "code": m.code}]}
            for m in evaluation.modifiers
        ]
    if case.date:
        line["servicedDate"] = case.date
    if evaluation.place_of_service:
        pos_coding = {
            "system": pack.system(cfg.place_of_service_system),
            "code": evaluation.place_of_service,
        }
        name = pack.model.place_of_service.names.get(evaluation.place_of_service)
        if name:
            pos_coding["display"] = name
        line["locationCodeableConcept"] = {"coding": [pos_coding]}
    if case.encounter_ref:
        line["encounter"] = [case.reference_json(case.encounter_ref)]
    items = [line]
    guidance = pack.valuesets[cfg.guidance_items]
    billed: set[str] = set()
    for proc in case.session_procedures:
        for coding in codings(proc.get("code")):
            code = coding.get("code")
            if guidance.contains(coding.get("system"), code) and code not in billed:
                billed.add(str(code))
                extra = {k: v for k, v in line.items() if k not in ("modifier", "productOrService")}
                extra["sequence"] = len(items) + 1
                extra["productOrService"] = {
                    "coding": [{k: coding[k] for k in ("system", "code", "display") if k in coding}]
                }
                items.append(extra)
    claim: dict[str, Any] = {
        "resourceType": "Claim",
        "identifier": [identifier],
        "status": "draft",
        "type": {"coding": [{"system": pack.system("claim-type"), "code": "professional"}]},
        "use": "claim",
        "patient": case.reference_json(case.patient_ref),
        "created": created,
        "provider": case.reference_json(case.provider_ref),
        "priority": {"coding": [{"system": pack.system("processpriority"), "code": "normal"}]},
        "insurance": [
            {
                "sequence": 1,
                "focal": True,
                "coverage": case.reference_json(case.ref(case.coverage[0])),
            }
        ],
        "item": items,
    }
    insurer = case.resource(case.insurer_ref)
    if (
        case.insurer_ref
        and (insurer or {}).get("resourceType", case.insurer_ref.split("/")[0]) == "Organization"
    ):
        claim["insurer"] = case.reference_json(case.insurer_ref)
    if diagnoses:
        claim["diagnosis"] = [
            {
                "sequence": i,
                "diagnosisCodeableConcept": {"coding": [coding]},
                **(
                    {
                        "type": [
                            {
                                "coding": [
                                    {"system": pack.system("diagnosistype"), "code": "principal"}
                                ]
                            }
                        ]
                    }
                    if i == 1
                    else {}
                ),
            }
            for i, coding in enumerate(diagnoses, start=1)
        ]
    provider = case.resource(case.provider_ref) or {}
    if provider.get("resourceType") in ("Practitioner", "PractitionerRole"):
        claim["careTeam"] = [
            {
                "sequence": 1,
                "provider": case.reference_json(case.provider_ref),
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/claimcareteamrole",
                            "code": "primary",
                        }
                    ]
                },
            }
        ]
        for item in items:
            item["careTeamSequence"] = [1]
    return claim
