"""DTR: the prior-authorization questionnaire, generated from the pack and
`mappings/prior-auth.yaml`, and a QuestionnaireResponse pre-populated from the evidence.

One question per criterion or documentation element (typed: a size in cm, a count, coded
diagnosis and segment), `enableWhen` where the policy branches (a transplant bridge needs
no other rationale). Each pre-populated answer says where it came from: DTR's
`information-origin` (`auto`: the adapter found it) and the evidence (resource and quoted
text) it rests on.
"""

from __future__ import annotations

import html
import re
from typing import Any

from fhir_adapter.billing.decide import claim_diagnoses
from fhir_adapter.case import Case
from fhir_adapter.findings import Evaluation, Evidence
from fhir_adapter.pack import Pack
from fhir_adapter.rules.facts import tumor_count, tumor_max_size_cm
from fhir_adapter.sources.questionnaire import QR_CONTEXT, PriorAuth, Question, prior_auth
from fhir_adapter.text.index import text_index

DTR = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/"
STD_QUESTIONNAIRE = DTR + "dtr-std-questionnaire"
DTR_QR = DTR + "dtr-questionnaireresponse"
QPACKAGE_BUNDLE = DTR + "DTR-QPackageBundle"
INFORMATION_ORIGIN = DTR + "information-origin"
INTENDED_USE = DTR + "intendedUse"
CRD_TEMP = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
ANSWER_EVIDENCE = "http://fhir-adapter.org/fhir/StructureDefinition/answer-evidence"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SEGMENT_SYSTEM = "http://fhir-adapter.org/fhir/CodeSystem/couinaud-segment"
OPTION_SYSTEM = "http://fhir-adapter.org/fhir/CodeSystem/prior-auth-answer"
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8"}
_SEGMENT = re.compile(r"\bsegments?\s+(viii|vii|vi|iv|v|iii|ii|i|[1-8])\b", re.IGNORECASE)


def _option_system(question: Question) -> str:
    if question.link_id == "diagnosis":
        return ICD10CM
    if question.link_id == "tumor-location":
        return SEGMENT_SYSTEM
    return OPTION_SYSTEM


def questionnaire(config: PriorAuth | None = None) -> dict[str, Any]:
    """The dtr-std-questionnaire for the pack's procedure."""
    config = config or prior_auth()
    q = config.questionnaire
    items = []
    for question in q.items:
        item: dict[str, Any] = {
            "linkId": question.link_id,
            "code": [
                {
                    "system": "http://fhir-adapter.org/fhir/CodeSystem/cpt-47382-finding",
                    "code": question.finding,
                }
            ],
            "text": question.text,
            "type": question.type,
        }
        if question.unit:
            item["extension"] = [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/questionnaire-unit",
                    "valueCoding": {"system": "http://unitsofmeasure.org", "code": question.unit},
                }
            ]
        if question.enable_when is not None:
            answer = question.enable_when.answer
            key = "answerBoolean" if isinstance(answer, bool) else "answerCoding"
            value: Any = answer if isinstance(answer, bool) else {"code": answer}
            item["enableWhen"] = [
                {"question": question.enable_when.question, "operator": "=", key: value}
            ]
        if question.options:
            item["answerOption"] = [
                {
                    "valueCoding": {
                        "system": _option_system(question),
                        "code": o.code,
                        "display": o.display,
                    }
                }
                for o in question.options
            ]
        items.append(item)
    rows = "".join(f"<li>{html.escape(i.text)}</li>" for i in q.items)
    return {
        "resourceType": "Questionnaire",
        "id": "cpt-47382-prior-auth",
        "meta": {"profile": [STD_QUESTIONNAIRE]},
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(q.title)}</p><ul>{rows}</ul></div>',
        },
        "url": q.url,
        "version": q.version,
        "name": "Cpt47382PriorAuth",
        "title": q.title,
        "status": "active",
        "subjectType": ["Patient"],
        "item": items,
    }


def _evidence_ext(evidence: Evidence | None) -> list[dict[str, Any]]:
    if evidence is None:
        return []
    ref: dict[str, Any] = {"reference": evidence.reference}
    shown = evidence.snippet or evidence.note
    if shown:
        ref["display"] = shown[:200]
    return [{"url": ANSWER_EVIDENCE, "valueReference": ref}]


def _origin(source: str, author: dict[str, Any] | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "source", "valueCode": source}]
    if author is not None:
        parts.append(
            {
                "url": "author",
                "extension": [
                    {
                        "url": "role",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                                    "code": "nurse",
                                }
                            ]
                        },
                    },
                    {"url": "practitioner", "valueReference": author},
                ],
            }
        )
    return {"url": INFORMATION_ORIGIN, "extension": parts}


def answer(
    value: dict[str, Any],
    source: str,
    evidence: Evidence | None = None,
    author: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One QuestionnaireResponse answer with its information-origin (and evidence)."""
    return {"extension": [_origin(source, author), *_evidence_ext(evidence)], **value}


def _criterion(evaluation: Evaluation, rule: str) -> tuple[bool, Evidence | None]:
    for criterion in evaluation.criteria:
        if criterion.rule == rule and criterion.passed:
            return True, next(iter(criterion.evidence), None)
    return False, None


def prepopulated(
    pack: Pack,
    case: Case,
    evaluation: Evaluation,
    *,
    order_ref: str,
    coverage_ref: str | None,
    now: str,
    config: PriorAuth | None = None,
) -> dict[str, Any]:
    """The QuestionnaireResponse (in-progress) with every answer the evidence gives."""
    config = config or prior_auth()
    found: dict[str, dict[str, Any]] = {}
    options = {q.link_id: {o.code for o in q.options} for q in config.questionnaire.items}
    dx = next((d for d in claim_diagnoses(pack, case).billable if d.primary), None)
    if dx is not None and dx.code in options.get("diagnosis", set()):
        found["diagnosis"] = answer(
            {"valueCoding": {"system": ICD10CM, "code": dx.code}},
            "auto",
            Evidence(dx.reference, dx.path),
        )
    text = text_index(case, pack.engine)
    size = tumor_max_size_cm(pack, case, text)
    if isinstance(size.value, int | float):
        found["tumor-size"] = answer(
            {"valueDecimal": round(float(size.value), 2)}, "auto", next(iter(size.evidence), None)
        )
    count = tumor_count(pack, case, text)
    if isinstance(count.value, int) and count.value > 0:
        found["tumor-count"] = answer(
            {"valueInteger": count.value}, "auto", next(iter(count.evidence), None)
        )
    located, where = _criterion(evaluation, "doc-tumor-location")
    segment = _segment(where) if located else None
    if segment is not None:
        found["tumor-location"] = answer(
            {"valueCoding": {"system": SEGMENT_SYSTEM, "code": segment}}, "auto", where
        )
    reasoned, why = _criterion(evaluation, "necessity-rationale-missing")
    if reasoned:
        bridge = "transplant" in ((why.snippet or why.note or "") if why else "").lower()
        found["transplant-bridge"] = answer({"valueBoolean": bridge}, "auto", why)
        if not bridge and "documented" in options.get("rationale", set()):
            found["rationale"] = answer(
                {"valueCoding": {"system": OPTION_SYSTEM, "code": "documented"}}, "auto", why
            )
    items = []
    for question in config.questionnaire.items:
        item: dict[str, Any] = {"linkId": question.link_id, "text": question.text}
        if question.link_id in found:
            item["answer"] = [found[question.link_id]]
        items.append(item)
    context = [{"url": QR_CONTEXT, "valueReference": {"reference": order_ref}}]
    if coverage_ref:
        context.append({"url": QR_CONTEXT, "valueReference": {"reference": coverage_ref}})
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": "pa-" + order_ref.replace("/", "-").lower(),
        "meta": {"profile": [DTR_QR]},
        "extension": [
            *context,
            {
                "url": INTENDED_USE,
                "valueCodeableConcept": {"coding": [{"system": CRD_TEMP, "code": "withpa"}]},
            },
        ],
        "questionnaire": f"{config.questionnaire.url}|{config.questionnaire.version}",
        "status": "in-progress",
        "subject": {"reference": case.patient_ref} if case.patient_ref else None,
        "authored": now,
        "item": items,
    }
    return {k: v for k, v in response.items() if v is not None}


def _segment(evidence: Evidence | None) -> str | None:
    if evidence is None:
        return None
    m = _SEGMENT.search(evidence.snippet or evidence.note or "")
    if m is None:
        return None
    token = m.group(1).lower()
    return _ROMAN.get(token, token)


def package(
    questionnaire_resource: dict[str, Any], response: dict[str, Any] | None, base: str
) -> dict[str, Any]:
    """The $questionnaire-package output: a DTR-QPackageBundle (the Questionnaire first,
    then the pre-populated QuestionnaireResponse) in Parameters."""
    entries = [
        {
            "fullUrl": base + "Questionnaire/" + questionnaire_resource["id"],
            "resource": questionnaire_resource,
        }
    ]
    if response is not None:
        entries.append(
            {"fullUrl": base + "QuestionnaireResponse/" + response["id"], "resource": response}
        )
    bundle = {
        "resourceType": "Bundle",
        "meta": {"profile": [QPACKAGE_BUNDLE]},
        "type": "collection",
        "entry": entries,
    }
    return {
        "resourceType": "Parameters",
        "meta": {"profile": [DTR + "dtr-qpackage-output-parameters"]},
        "parameter": [{"name": "PackageBundle", "resource": bundle}],
    }
