"""The professional Claim (CMS-1500 / 837P) for a case that nothing blocks.

What goes on it is decided in `billing.decide`, the same functions the rules check,
so a Claim never carries a diagnosis, line or provider the rules did not see.
The README's "Claim mapping" lists which element carries which CMS-1500 box.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_adapter.billing import decide, review, session
from fhir_adapter.case import Case
from fhir_adapter.fhir.systems import NPI
from fhir_adapter.findings import Evaluation
from fhir_adapter.pack.load import Pack
from fhir_adapter.pack.schema import CodingDef
from fhir_adapter.writeback.charges import line_charge


def claim_diagnoses(pack: Pack, case: Case) -> list[dict[str, Any]]:
    """The Claim's ICD-10-CM codings (dotted), principal first, at most the pack's maximum."""
    icd = pack.system(pack.model.claim.diagnosis_system)
    out = []
    for dx in decide.claim_diagnoses(pack, case).billable[: pack.model.claim.max_diagnoses]:
        coding = {"system": icd, "code": dx.code}
        if dx.display:
            coding["display"] = dx.display
        out.append(coding)
    return out


def _coding(pack: Pack, c: CodingDef | None) -> dict[str, Any] | None:
    if c is None:
        return None
    out = {"system": pack.system(c.system), "code": c.code}
    if c.display:
        out["display"] = c.display
    return {"coding": [out]}


def _modifier(pack: Pack, code: str) -> dict[str, Any]:
    """CPT modifiers are numeric; HCPCS Level II ones (XS, ...) carry letters."""
    system = pack.procedure_system if code.isdigit() else pack.system("hcpcs")
    return {"coding": [{"system": system, "code": code}]}


def _money(amount: float, currency: str) -> dict[str, Any]:
    return {"value": round(amount, 2), "currency": currency}


def build_claim(
    pack: Pack,
    case: Case,
    evaluation: Evaluation,
    identifier: dict[str, str],
    created: str,
    charges: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The Claim: 47382 line, at most one guidance line, each with POS, pointers and modifiers."""
    cfg = pack.model.claim
    diagnoses = claim_diagnoses(pack, case)
    pointers = list(range(1, min(len(diagnoses), cfg.max_diagnosis_pointers) + 1))
    pos = evaluation.place_of_service
    facility = decide.is_facility(pack, pos)

    shared: dict[str, Any] = {}
    if pointers:
        shared["diagnosisSequence"] = pointers
    if case.date:
        shared["servicedDate"] = case.date
    if pos:
        pos_coding = {"system": pack.system(cfg.place_of_service_system), "code": pos}
        name = pack.model.place_of_service.names.get(pos)
        if name:
            pos_coding["display"] = name
        shared["locationCodeableConcept"] = {"coding": [pos_coding]}
    if case.encounter_ref:
        shared["encounter"] = [case.reference_json(case.encounter_ref)]

    main_coding = {
        "system": pack.procedure_system,
        "code": pack.procedure_code,
        "display": pack.model.procedure.display,
    }
    parent = [m.code for m in evaluation.modifiers]
    lines: list[tuple[dict[str, Any], list[str]]] = [(main_coding, list(parent))]
    guidance = session.billed_guidance(pack, case)
    if guidance is not None:
        mods = []
        if facility and cfg.professional_component_modifier and _has_pc_tc(guidance):
            mods.append(cfg.professional_component_modifier)
        mods += session.guidance_modifiers(pack, case, parent)
        lines.append((guidance.coding, mods))
    _distinct_modifiers(pack, case, lines)
    teaching = session.teaching_modifier(pack, case)
    for _, mods in lines:
        if teaching and teaching not in mods:
            mods.append(teaching)

    supporting = _supporting_info(pack, case, evaluation, lines)
    items = []
    for seq, (coding, mods) in enumerate(lines, start=1):
        item: dict[str, Any] = {"sequence": seq}
        if seq == 1 and supporting:
            item["informationSequence"] = [s["sequence"] for s in supporting]
        item["productOrService"] = {"coding": [dict(coding)]}
        if mods:
            item["modifier"] = [_modifier(pack, m) for m in mods]
        item["quantity"] = {"value": 1}
        item.update(shared)
        price = line_charge(charges, coding["code"], mods) if charges is not None else None
        if price is not None:
            item["unitPrice"] = _money(price, cfg.currency)
            item["net"] = _money(price, cfg.currency)
        items.append(item)

    claim: dict[str, Any] = {
        "resourceType": "Claim",
        "identifier": [identifier],
        "status": "draft",
        "type": {"coding": [{"system": pack.system("claim-type"), "code": "professional"}]},
        "use": "claim",
        "patient": case.reference_json(case.patient_ref),
        "created": created,
        "provider": case.reference_json(decide.claim_provider_ref(pack, case)),
        "priority": {"coding": [{"system": pack.system("processpriority"), "code": "normal"}]},
    }
    if facility:
        location = decide.facility_location(case)
        if location:
            claim["facility"] = case.reference_json(location)
            npi, _ = review.facility_npi(pack, case)  # box 32a
            if npi and claim["facility"] is not None and "identifier" not in claim["facility"]:
                claim["facility"]["identifier"] = {"system": NPI, "value": npi}
    care_team = _care_team(pack, case)
    if care_team:
        claim["careTeam"] = [care_team]
        for item in items:
            item["careTeamSequence"] = [1]
    if supporting:
        claim["supportingInfo"] = supporting
    if diagnoses:
        claim["diagnosis"] = [
            _diagnosis(pack, i, coding) for i, coding in enumerate(diagnoses, start=1)
        ]
    claim["insurance"] = [
        {"sequence": 1, "focal": True, "coverage": case.reference_json(case.ref(case.coverage[0]))}
    ]
    # the approved prior authorization the payer overlay found (payers.prior_auth)
    authorization = (evaluation.payer_policy or {}).get("authorization")
    if authorization:
        claim["insurance"][0]["preAuthRef"] = [authorization]
    claim["item"] = items
    if charges is not None and all("net" in item for item in items):
        total = sum(item["net"]["value"] for item in items)
        claim["total"] = _money(total, cfg.currency)
    insurer = case.resource(case.insurer_ref)
    if (
        case.insurer_ref
        and (insurer or {}).get("resourceType", case.insurer_ref.split("/")[0]) == "Organization"
    ):
        claim["insurer"] = case.reference_json(case.insurer_ref)
    return claim


def _has_pc_tc(line: decide.GuidanceLine) -> bool:
    """PC/TC indicator 1 (professional and technical component) in the PFS file; a guidance
    code missing from the loaded tables is taken as one (the pack lists only such codes)."""
    row = decide.payment_tables().pfs(line.coding["code"])
    return row is None or str(row.pctc).strip() == "1"


def _distinct_modifiers(
    pack: Pack, case: Case, lines: list[tuple[dict[str, Any], list[str]]]
) -> None:
    """A PTP column-2 line allowed by a documented distinct service gets that modifier."""
    modifier = pack.model.claim.distinct_service_modifier
    if not modifier or len(lines) < 2:
        return
    hits = decide.ptp_hits(pack, case)
    for coding, mods in lines:
        for hit in hits:
            distinct = hit.indicator == "1" and hit.distinct and hit.column2 == coding["code"]
            if distinct and modifier not in mods:
                mods.append(modifier)


def _supporting_info(
    pack: Pack,
    case: Case,
    evaluation: Evaluation,
    lines: list[tuple[dict[str, Any], list[str]]],
) -> list[dict[str, Any]]:
    """The documentation behind every modifier the pack says needs it on the claim (22: the
    statement of increased work, 52/53: why the service was reduced or stopped, XS: the
    distinct service; Medicare asks for the operative report with the claim)."""
    category = _coding(pack, pack.model.claim.supporting_info_category)
    if category is None:
        return []
    wanted = set(pack.model.claim.supporting_info_for)
    evidence = [e for mod in evaluation.modifiers if mod.code in wanted for e in mod.evidence]
    distinct = pack.model.claim.distinct_service_modifier
    if distinct in wanted and any(distinct in mods for _, mods in lines):
        evidence += [e for hit in decide.ptp_hits(pack, case) for e in hit.distinct]
    refs: list[str] = []
    for e in evidence:
        if e.reference not in refs and not e.reference.startswith("#"):
            refs.append(e.reference)
    return [
        {"sequence": i, "category": category, "valueReference": case.reference_json(ref)}
        for i, ref in enumerate(refs, start=1)
    ]


def _care_team(pack: Pack, case: Case) -> dict[str, Any] | None:
    provider = decide.rendering_provider(pack, case)
    if provider is None:
        return None
    member: dict[str, Any] = {
        "sequence": 1,
        "provider": case.reference_json(case.ref(provider)),
        "responsible": True,
    }
    role = _coding(pack, pack.model.claim.care_team_role)
    if role:
        member["role"] = role
    taxonomy = decide.provider_taxonomy(pack, case)
    if taxonomy:
        member["qualification"] = {"coding": [taxonomy]}
    return member


def _diagnosis(pack: Pack, sequence: int, coding: dict[str, Any]) -> dict[str, Any]:
    cfg = pack.model.claim
    kind = _coding(
        pack, cfg.principal_diagnosis_type if sequence == 1 else cfg.secondary_diagnosis_type
    )
    out: dict[str, Any] = {"sequence": sequence, "diagnosisCodeableConcept": {"coding": [coding]}}
    if kind:
        out["type"] = [kind]
    return out
