"""A completed prior-authorization QuestionnaireResponse, read as evidence.

The questionnaire (DTR, `mappings/prior-auth.yaml`) asks one question per criterion or
documentation element; each answer becomes evidence the rules already read: a size or a
count an Observation (LOINC tumor size, with the segment as its bodySite), a statement a
sentence of a plain-text DocumentReference. Each derived resource says where it comes
from (`derivedFrom` / `relatesTo` the QuestionnaireResponse) and points where the
QuestionnaireResponse's `context` points (the order or the Claim), so the case of a
Procedure based on that order, or the payer's case of that Claim, gathers it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fhir_adapter.errors import InputError
from fhir_adapter.fhir.references import reference_string
from fhir_adapter.yaml_errors import yaml_error_line

PRIOR_AUTH_YAML = Path(__file__).resolve().parent.parent.parent / "mappings" / "prior-auth.yaml"
if not PRIOR_AUTH_YAML.is_file():  # installed from a wheel
    PRIOR_AUTH_YAML = (
        Path(__file__).resolve().parent.parent / "_data" / "mappings" / "prior-auth.yaml"
    )

QR_CONTEXT = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
TUMOR_SIZE_LOINC = "33728-7"  # Size.maximum dimension in Tumor
SEGMENT_SNOMED = {  # Couinaud segment number -> SNOMED CT (the pack's couinaud-segment set)
    "1": "71133005",
    "2": "277956007",
    "3": "277957003",
    "4": "277958008",
    "5": "277959000",
    "6": "277960005",
    "7": "277961009",
    "8": "277962002",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Code(_Strict):
    system: str
    code: str
    display: str | None = None

    def coding(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


class Option(_Strict):
    code: str
    display: str
    sentence: str | None = None


class EnableWhen(_Strict):
    question: str
    answer: bool | str


class Question(_Strict):
    link_id: str
    finding: str
    text: str
    type: Literal["choice", "decimal", "integer", "boolean", "string"]
    unit: str | None = None
    options: list[Option] = []
    sentence: str | None = None  # what a `true` boolean answer states
    enable_when: EnableWhen | None = None


class QuestionnaireConfig(_Strict):
    url: str
    version: str
    title: str
    items: list[Question]


class PasConfig(_Strict):
    service_category: Code
    request_type: Code
    certification_type: Code
    level_of_service: Code
    submitter_trn: str
    report_type: Code
    authorization_days: int


class DecisionConfig(_Strict):
    pend: list[str]
    not_before_service: list[str]


class PriorAuth(_Strict):
    pas: PasConfig
    decision: DecisionConfig
    questionnaire: QuestionnaireConfig

    def question(self, link_id: str) -> Question | None:
        return next((q for q in self.questionnaire.items if q.link_id == link_id), None)


@cache
def prior_auth(path: str | None = None) -> PriorAuth:
    """`mappings/prior-auth.yaml`, checked strictly (an unknown key names file and key)."""
    where = Path(path) if path else PRIOR_AUTH_YAML
    try:
        raw = yaml.safe_load(where.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror})", source=str(where)) from None
    except yaml.YAMLError as exc:
        raise InputError(yaml_error_line(str(where), exc)) from None
    try:
        config = PriorAuth.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{at}: {first['msg']}", source=str(where)) from None
    links = [q.link_id for q in config.questionnaire.items]
    for q in config.questionnaire.items:
        if q.enable_when and q.enable_when.question not in links:
            raise InputError(
                f"questionnaire item {q.link_id}: enable_when names no item "
                f"{q.enable_when.question!r}",
                source=str(where),
            )
    return config


# -- reading answers ------------------------------------------------------------------


def answer_value(answer: dict[str, Any]) -> Any:
    """The one `value[x]` of a QuestionnaireResponse answer (a Coding's code)."""
    for key, value in answer.items():
        if key.startswith("value"):
            return value.get("code") if key == "valueCoding" and isinstance(value, dict) else value
    return None


def answers(qr: dict[str, Any]) -> dict[str, list[Any]]:
    """linkId -> the answer values, nested groups flattened."""
    out: dict[str, list[Any]] = {}
    stack = list(qr.get("item") or [])
    while stack:
        item = stack.pop()
        if not isinstance(item, dict):
            continue
        stack.extend(item.get("item") or [])
        values = [answer_value(a) for a in item.get("answer") or [] if isinstance(a, dict)]
        values = [v for v in values if v is not None]
        if values and isinstance(item.get("linkId"), str):
            out.setdefault(item["linkId"], []).extend(values)
    return out


def context_references(qr: dict[str, Any]) -> list[dict[str, Any]]:
    """What the QuestionnaireResponse is about (DTR `qr-context`: the order, the Claim)."""
    out = []
    for ext in qr.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == QR_CONTEXT:
            ref = ext.get("valueReference")
            if reference_string(ref):
                out.append({"reference": reference_string(ref)})
    return out


def is_ours(qr: dict[str, Any], config: PriorAuth) -> bool:
    url = qr.get("questionnaire")
    return isinstance(url, str) and url.split("|", 1)[0] == config.questionnaire.url


def evidence_from(
    qr: dict[str, Any],
    qr_ref: str,
    config: PriorAuth | None = None,
    anchors: Iterable[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The evidence resources one completed QuestionnaireResponse stands for (none when it is
    not completed, or not of the prior-authorization questionnaire)."""
    config = config or prior_auth()
    if qr.get("status") not in ("completed", "amended") or not is_ours(qr, config):
        return []
    about = [*context_references(qr), *anchors]
    if not about:
        return []
    given = answers(qr)
    base_id = "qr-" + hashlib.sha256(qr_ref.encode()).hexdigest()[:16]
    subject = qr.get("subject")
    out: list[dict[str, Any]] = []
    size = _number(given.get("tumor-size"))
    segment = next(
        (str(v) for v in given.get("tumor-location", []) if str(v) in SEGMENT_SNOMED), None
    )
    if size is not None:
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{base_id}-size",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": TUMOR_SIZE_LOINC}]},
            "focus": about,
            "derivedFrom": [{"reference": qr_ref}],
            "valueQuantity": {
                "value": size,
                "unit": "cm",
                "system": "http://unitsofmeasure.org",
                "code": "cm",
            },
        }
        if segment is not None:
            obs["bodySite"] = {"coding": [{"system": SNOMED, "code": SEGMENT_SNOMED[segment]}]}
        if subject:
            obs["subject"] = subject
        out.append(obs)
    sentences = _sentences(config, given, segment)
    if sentences:
        text = " ".join(sentences)
        doc: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "id": f"{base_id}-answers",
            "status": "current",
            "docStatus": "final",
            "description": f"Answers of {qr_ref}",
            "relatesTo": [{"code": "transforms", "target": {"reference": qr_ref}}],
            "content": [
                {
                    "attachment": {
                        "contentType": "text/plain",
                        "data": base64.b64encode(text.encode()).decode("ascii"),
                    }
                }
            ],
            "context": {"related": about},
        }
        if subject:
            doc["subject"] = subject
        out.append(doc)
    return out


def _number(values: list[Any] | None) -> float | None:
    for v in values or []:
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


def _sentences(config: PriorAuth, given: dict[str, list[Any]], segment: str | None) -> list[str]:
    """The statements the answers make, in words the pack's text patterns read."""
    out: list[str] = []
    count = given.get("tumor-count")
    if count and isinstance(count[0], int) and not isinstance(count[0], bool) and count[0] > 0:
        n = count[0]
        out.append(f"{n} liver tumor{'s' if n > 1 else ''} to be ablated.")
    size = _number(given.get("tumor-size"))
    if size is not None:
        out.append(f"The largest tumor measures {size:g} cm.")
    if segment is not None:
        roman = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")[int(segment) - 1]
        out.append(f"The tumor is in segment {roman} of the liver.")
    for question in config.questionnaire.items:
        for value in given.get(question.link_id, []):
            if question.type == "boolean" and value is True and question.sentence:
                out.append(question.sentence)
            for option in question.options:
                if option.code == value and option.sentence:
                    out.append(option.sentence)
    return out


def add_questionnaire_evidence(store: Any, config: PriorAuth | None = None) -> int:
    """Add the evidence of every completed prior-authorization QuestionnaireResponse in
    `store` (a ResourceStore); the number of resources added."""
    added = 0
    for qr in list(store.of_type("QuestionnaireResponse")):
        for resource in evidence_from(qr, store.key_of(qr), config):
            store.add(resource)
            added += 1
    return added
