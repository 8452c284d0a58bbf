"""A completed prior-authorization QuestionnaireResponse is evidence for `evaluate`: its
answers satisfy the findings they answer (sources.questionnaire)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter import evaluate_paths
from fhir_adapter.errors import InputError
from fhir_adapter.sources.questionnaire import prior_auth

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cases"
QUESTIONNAIRE = "http://fhir-adapter.org/fhir/Questionnaire/cpt-47382-prior-auth"
CONTEXT = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context"


def _findings(
    tmp_path: Path, name: str, answers: dict[str, Any], status: str = "completed"
) -> list[str]:
    bundle = json.loads((FIXTURES / f"{name}.json").read_text())
    procedure = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Procedure"
        and e["resource"]["code"]["coding"][0]["code"] == "47382"
    )
    procedure["basedOn"] = [{"reference": "ServiceRequest/sr-pa"}]
    subject = procedure["subject"]
    bundle["entry"] += [
        {
            "resource": {
                "resourceType": "ServiceRequest",
                "id": "sr-pa",
                "status": "completed",
                "intent": "order",
                "code": procedure["code"],
                "subject": subject,
            }
        },
        {
            "resource": {
                "resourceType": "QuestionnaireResponse",
                "id": "qr-pa",
                "status": status,
                "questionnaire": QUESTIONNAIRE,
                "subject": subject,
                "extension": [
                    {"url": CONTEXT, "valueReference": {"reference": "ServiceRequest/sr-pa"}}
                ],
                "item": [{"linkId": k, "answer": [v]} for k, v in answers.items()],
            }
        },
    ]
    for entry in bundle["entry"]:
        entry.pop("fullUrl", None)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(bundle))
    (out,) = evaluate_paths([path])
    return [f.code for f in out.evaluation.findings]


def test_measures_answered_settle_the_documentation_findings(tmp_path: Path) -> None:
    assert {"doc-tumor-size", "doc-tumor-count", "doc-tumor-location"} <= set(
        _findings(tmp_path, "v12-doc-gaps", {})
    )
    answered = _findings(
        tmp_path,
        "v12-doc-gaps",
        {
            "tumor-size": {"valueDecimal": 2.5},
            "tumor-count": {"valueInteger": 1},
            "tumor-location": {"valueCoding": {"code": "6"}},
        },
    )
    assert not {"doc-tumor-size", "doc-tumor-count", "doc-tumor-location"} & set(answered)
    # the procedure-note items are not the questionnaire's to settle
    assert {"doc-energy", "doc-ablation-confirmation"} <= set(answered)


@pytest.mark.parametrize(
    "answers",
    [
        {"transplant-bridge": {"valueBoolean": True}},
        {
            "transplant-bridge": {"valueBoolean": False},
            "rationale": {"valueCoding": {"code": "unresectable"}},
        },
        {
            "transplant-bridge": {"valueBoolean": False},
            "rationale": {"valueCoding": {"code": "not-surgical-candidate"}},
        },
        {
            "transplant-bridge": {"valueBoolean": False},
            "rationale": {"valueCoding": {"code": "declined-surgery"}},
        },
    ],
)
def test_every_rationale_answer_documents_the_rationale(
    tmp_path: Path, answers: dict[str, Any]
) -> None:
    assert _findings(tmp_path, "v08-no-rationale", {}) == ["necessity-rationale-missing"]
    assert _findings(tmp_path, "v08-no-rationale", answers) == []


def test_an_unfinished_questionnaire_is_no_evidence(tmp_path: Path) -> None:
    answers = {"transplant-bridge": {"valueBoolean": True}}
    assert _findings(tmp_path, "v08-no-rationale", answers, "in-progress") == [
        "necessity-rationale-missing"
    ]


def test_the_configuration_is_checked_strictly(tmp_path: Path) -> None:
    bad = tmp_path / "prior-auth.yaml"
    bad.write_text("pas: {}\ndecision: {}\nquestionnaire: {}\nextra: 1\n")
    with pytest.raises(InputError, match=r"prior-auth.yaml: "):
        prior_auth(str(bad))
