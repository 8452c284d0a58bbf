"""Each rule on its own: fires on the defect, stays quiet on every other way of documenting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fhir_adapter import evaluate_store
from fhir_adapter.rules import Pack

from .conftest import by_id, findings_of, store_of

P = "ex1-hcc-ct"
PROC = f"Procedure/{P}-rfa"
Resources = list[dict[str, Any]]


def proc(rs: Resources) -> dict[str, Any]:
    return by_id(rs, f"{P}-rfa")


def set_note(text: str) -> Callable[[Resources], None]:
    def edit(rs: Resources) -> None:
        proc(rs)["note"] = [{"text": text}]

    return edit


FULL = (
    "Single 2.1 cm HCC in segment VI, unresectable, ablated under CT guidance at 150 W. "
    "Post-ablation CT: complete ablation."
)


def test_clean_case_has_no_findings(pack: Pack, good_case: Resources) -> None:
    assert findings_of(pack, good_case) == {PROC: set()}


def _drop(rid: str) -> Callable[[Resources], None]:
    def edit(rs: Resources) -> None:
        rs[:] = [r for r in rs if r.get("id") != rid]

    return edit


def _set(rid: str, key: str, value: Any) -> Callable[[Resources], None]:
    def edit(rs: Resources) -> None:
        by_id(rs, rid)[key] = value

    return edit


def _both(*edits: Callable[[Resources], None]) -> Callable[[Resources], None]:
    def edit(rs: Resources) -> None:
        for e in edits:
            e(rs)

    return edit


ICD = "http://hl7.org/fhir/sid/icd-10-cm"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"


@pytest.mark.parametrize(
    ("edit", "fires", "quiet"),
    [
        # status
        (_set(f"{P}-rfa", "status", "preparation"), {"procedure-not-completed"}, set()),
        (_set(f"{P}-rfa", "status", "stopped"), set(), {"procedure-not-completed"}),
        # diagnosis: undotted ICD, reasonCode only, SNOMED only
        (
            _both(_set(f"{P}-dx", "code", {"coding": [{"system": ICD, "code": "C787"}]})),
            set(),
            {"diagnosis-unsupported"},
        ),
        (
            _both(
                _set(f"{P}-dx", "code", {"coding": [{"system": ICD, "code": "K74.60"}]}),
                _set(f"{P}-rfa", "reasonCode", [{"coding": [{"system": ICD, "code": "C22.1"}]}]),
            ),
            set(),
            {"diagnosis-unsupported"},
        ),
        (
            _set(f"{P}-dx", "code", {"coding": [{"system": ICD, "code": "C22"}]}),
            {"diagnosis-unsupported"},
            set(),
        ),
        (
            _set(f"{P}-dx", "verificationStatus", {"coding": [{"code": "entered-in-error"}]}),
            {"diagnosis-unsupported"},
            set(),
        ),
        # rationale from a coded reason (cirrhosis given as reason) with no narrative
        (
            _both(
                set_note(
                    "Single 2.1 cm HCC in segment VI ablated under CT guidance at 150 W. Complete ablation."
                ),
                _set(
                    f"{P}-dx",
                    "code",
                    {
                        "coding": [
                            {"system": ICD, "code": "C22.0"},
                            {"system": ICD, "code": "K76.6"},
                        ]
                    },
                ),
            ),
            set(),
            {"necessity-rationale-missing"},
        ),
        (
            set_note(
                "Single 2.1 cm HCC in segment VI ablated under CT guidance at 150 W. Complete ablation."
            ),
            {"necessity-rationale-missing"},
            set(),
        ),
        # place of service: explicit on Encounter extension; inferred from class; office
        (
            _both(
                _set(f"{P}-loc", "type", []),
                _set(
                    f"{P}-enc",
                    "extension",
                    [
                        {
                            "url": "http://example.org/pos",
                            "valueCoding": {"system": POS, "code": "24"},
                        }
                    ],
                ),
            ),
            set(),
            {"place-of-service-unknown", "place-of-service-not-covered"},
        ),
        (
            _both(
                _set(f"{P}-loc", "type", []),
                _set(
                    f"{P}-enc",
                    "class",
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
                ),
            ),
            {"place-of-service-not-covered"},
            {"place-of-service-unknown"},
        ),
        (
            _set(f"{P}-loc", "type", []),
            {"place-of-service-unknown"},
            {"place-of-service-not-covered"},
        ),
        # coverage: cancelled, or starting after the date of service
        (_set(f"{P}-cov", "status", "cancelled"), {"coverage-missing"}, set()),
        (_set(f"{P}-cov", "period", {"start": "2026-11-01"}), {"coverage-missing"}, set()),
        (_set(f"{P}-cov", "period", {"start": "2026-10-14"}), set(), {"coverage-missing"}),
        # documentation: only in text vs only structured
        (
            _both(
                _drop(f"{P}-size"),
                _drop(f"{P}-guide"),
                _set(f"{P}-rfa", "bodySite", []),
                _set(f"{P}-rfa", "outcome", {"text": "ok"}),
                set_note(FULL),
            ),
            set(),
            {
                "doc-tumor-size",
                "doc-tumor-count",
                "doc-tumor-location",
                "doc-imaging-guidance",
                "doc-energy",
                "doc-ablation-confirmation",
            },
        ),
        (
            set_note("Unresectable."),
            {"doc-energy"},
            {
                "doc-tumor-size",
                "doc-tumor-count",
                "doc-tumor-location",
                "doc-imaging-guidance",
                "doc-ablation-confirmation",
            },
        ),
        (
            _both(_drop(f"{P}-guide"), set_note("Unresectable. 150 W.")),
            {"doc-imaging-guidance"},
            set(),
        ),
        # specialty from a PractitionerRole found through the Practitioner
        (_drop(f"{P}-role"), {"specialty-unexpected"}, set()),
    ],
)
def test_rule_alternatives(
    pack: Pack,
    good_case: Resources,
    edit: Callable[[Resources], None],
    fires: set[str],
    quiet: set[str],
) -> None:
    edit(good_case)
    got = findings_of(pack, good_case)[PROC]
    assert fires <= got
    assert not (quiet & got)


def test_dangling_reason_is_named_in_the_finding(pack: Pack, good_case: Resources) -> None:
    good_case[:] = [r for r in good_case if r.get("id") != f"{P}-dx"]
    by_id(good_case, f"{P}-enc").pop("diagnosis")
    outs = evaluate_store(store_of(good_case), pack)
    finding = next(f for f in outs[0].evaluation.findings if f.code == "diagnosis-unsupported")
    notes = {(e.reference, e.note) for e in finding.evidence}
    assert (f"Condition/{P}-dx", "referenced but not found") in notes
    assert f"Condition/{P}-dx" in outs[0].evaluation.unresolved


def test_block_on_moderate_blocks_documentation_gaps(pack: Pack, good_case: Resources) -> None:
    set_note("Unresectable HCC in segment VI, 2.1 cm, CT guided; complete ablation.")(good_case)
    assert findings_of(pack, good_case)[PROC] == {"doc-energy"}
    high = evaluate_store(store_of(good_case), pack)[0]
    moderate = evaluate_store(store_of(good_case), pack, block_on="moderate")[0]
    assert (high.evaluation.outcome, moderate.evaluation.outcome) == ("claim", "issues")
    assert [r["resourceType"] for r in moderate.resources] == ["DetectedIssue"]


def test_modifier_evidence_and_claim_line(pack: Pack, good_case: Resources) -> None:
    proc(good_case)["status"] = "stopped"
    proc(good_case)["statusReason"] = {"text": "Procedure terminated early."}
    out = evaluate_store(store_of(good_case), pack)[0]
    [mod] = out.evaluation.modifiers
    assert mod.code == "52"
    assert {e.path for e in mod.evidence} >= {"Procedure.status", "Procedure.statusReason.text"}
    claim = out.resources[0]
    assert claim["item"][0]["modifier"][0]["coding"][0]["code"] == "52"
    # the guidance line carries no 47382 modifier
    assert "modifier" not in claim["item"][1]


def test_claim_diagnoses_dotted_liver_first(pack: Pack, good_case: Resources) -> None:
    by_id(good_case, f"{P}-dx")["code"] = {"coding": [{"system": ICD, "code": "K7460"}]}
    extra = dict(
        by_id(good_case, f"{P}-dx"), id="dx2", code={"coding": [{"system": ICD, "code": "c787"}]}
    )
    good_case.append(extra)
    by_id(good_case, f"{P}-enc")["diagnosis"].append({"condition": {"reference": "Condition/dx2"}})
    claim = evaluate_store(store_of(good_case), pack)[0].resources[0]
    codes = [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]]
    assert codes == ["C78.7", "K74.60"]
    assert claim["diagnosis"][0]["type"][0]["coding"][0]["code"] == "principal"
    assert claim["item"][0]["diagnosisSequence"] == [1, 2]


def test_identifiers_are_deterministic_and_independent_of_time(
    pack: Pack, good_case: Resources
) -> None:
    good_case.append(dict(by_id(good_case, f"{P}-size")))  # harmless duplicate
    a = evaluate_store(store_of(good_case), pack, now="2026-01-01T00:00:00+00:00")[0]
    b = evaluate_store(store_of(good_case), pack, now="2026-02-02T00:00:00+00:00")[0]
    assert [r["identifier"] for r in a.resources] == [r["identifier"] for r in b.resources]
    assert [e["fullUrl"] for e in a.bundle()["entry"]] == [
        e["fullUrl"] for e in b.bundle()["entry"]
    ]
    entry = a.bundle()["entry"][0]
    ident = entry["resource"]["identifier"][0]
    assert entry["request"] == {
        "method": "POST",
        "url": "Claim",
        "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
    }
    assert a.bundle("upsert")["entry"][0]["request"]["method"] == "PUT"


def test_detected_issue_points_at_evidence(pack: Pack, good_case: Resources) -> None:
    by_id(good_case, f"{P}-role")["specialty"] = []
    out = evaluate_store(store_of(good_case), pack)[0]
    claim, issue = out.resources
    assert issue["code"]["coding"][0]["code"] == "specialty-unexpected"
    assert issue["severity"] == "low"
    assert {"reference": out.full_urls[0]} in issue["implicated"]
    assert {"reference": PROC} in issue["implicated"]
    assert issue["patient"] == {"reference": f"Patient/{P}-pt"}
    assert claim["resourceType"] == "Claim"


def test_messy_real_world_values_are_accepted(pack: Pack, good_case: Resources) -> None:
    """What the R4B models reject on read (stray spaces, no timezone, vendor elements) still works."""
    by_id(good_case, f"{P}-dx")["code"] = {"coding": [{"system": ICD, "code": " c220 "}]}
    proc(good_case)["performedDateTime"] = "2026-10-14T09:30:00"
    proc(good_case)["vendorElement"] = {"x": 1}
    proc(good_case)["code"]["coding"][0]["code"] = "47382 "
    outs = evaluate_store(store_of(good_case), pack)
    assert [o.evaluation.procedure for o in outs] == [PROC]
    assert outs[0].evaluation.findings == []
    claim = outs[0].resources[0]
    assert claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"] == "C22.0"
    assert claim["item"][0]["servicedDate"] == "2026-10-14"
