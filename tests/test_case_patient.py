"""Which resources a case may use: only the Procedure's own patient's, on a known date."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_adapter import evaluate_store
from fhir_adapter.pack import Pack

from .conftest import by_id, load_bundle, store_of

P = "ex1-hcc-ct"
PROC = f"Procedure/{P}-rfa"
OTHER = "ex2-crc-mets-us"
Resources = list[dict[str, Any]]


def _resources(name: str) -> Resources:
    return [copy.deepcopy(e["resource"]) for e in load_bundle(name)["entry"]]


def _evaluate(pack: Pack, rs: Resources) -> Any:
    [out] = [
        o
        for o in evaluate_store(store_of(rs), pack, now="2026-11-27T00:00:00+00:00")
        if o.evaluation.procedure.endswith("-rfa")
    ]
    return out


def _codes(out: Any) -> set[str]:
    return {f.code for f in out.evaluation.findings}


def _claim(out: Any) -> dict[str, Any] | None:
    return next((r for r in out.resources if r["resourceType"] == "Claim"), None)


def _with_other_patient(mine: str = P) -> Resources:
    """`mine`'s resources beside every one of ex2's but its 47382 Procedure."""
    return _resources(mine) + [r for r in _resources(OTHER) if r.get("id") != f"{OTHER}-rfa"]


def _mismatch(out: Any) -> Any:
    return next(f for f in out.evaluation.findings if f.code == "patient-mismatch")


def test_another_patients_encounter_is_not_the_cases(pack: Pack) -> None:
    """The Procedure names another patient's Encounter and nothing else states a reason:
    neither that Encounter's diagnoses nor its facility may bill this patient."""
    rs = _with_other_patient()
    rfa = by_id(rs, f"{P}-rfa")
    rfa["encounter"] = {"reference": f"Encounter/{OTHER}-enc"}
    del rfa["reasonReference"]
    rfa.pop("location", None)
    by_id(rs, f"{P}-dx").pop("encounter", None)
    by_id(rs, f"{P}-enc")["diagnosis"] = []
    out = _evaluate(pack, rs)
    assert out.evaluation.blocked
    assert _claim(out) is None
    finding = _mismatch(out)
    assert finding.severity == "high"
    refs = {e.reference for e in finding.evidence}
    assert {PROC, f"Encounter/{OTHER}-enc"} <= refs
    assert f"Patient/{OTHER}-pt" in " ".join(e.note or "" for e in finding.evidence)
    assert out.evaluation.encounter is None
    assert out.evaluation.place_of_service != "24"


def test_another_patients_stated_reason_is_not_the_cases(pack: Pack) -> None:
    """A reasonReference to another patient's liver Condition does not support this
    patient's procedure (v07 has no liver diagnosis of its own)."""
    rs = _with_other_patient("v07-no-liver-dx")
    rfa = by_id(rs, "v07-no-liver-dx-rfa")
    rfa["reasonReference"] = [{"reference": f"Condition/{OTHER}-dx"}]
    out = _evaluate(pack, rs)
    assert _claim(out) is None
    assert {"patient-mismatch", "diagnosis-unsupported"} <= _codes(out)
    refs = {e.reference for e in _mismatch(out).evidence}
    assert {"Procedure/v07-no-liver-dx-rfa", f"Condition/{OTHER}-dx"} <= refs


@pytest.mark.parametrize(
    ("rtype", "suffix"),
    [
        ("DocumentReference", "opnote"),
        ("Condition", "primary"),
    ],
)
def test_another_patients_resource_on_the_encounter_is_flagged(
    pack: Pack, rtype: str, suffix: str
) -> None:
    """A resource of another patient that points at this case's Encounter is left out."""
    rs = _with_other_patient()
    other = by_id(rs, f"{OTHER}-{suffix}")
    other.setdefault("context", {})
    if rtype == "DocumentReference":
        other["context"]["encounter"] = [{"reference": f"Encounter/{P}-enc"}]
    else:
        other["encounter"] = {"reference": f"Encounter/{P}-enc"}
    out = _evaluate(pack, rs)
    assert "patient-mismatch" in _codes(out)
    assert f"{rtype}/{OTHER}-{suffix}" in {e.reference for e in _mismatch(out).evidence}
    assert _claim(out) is None


def test_another_patients_report_and_observation_are_flagged(pack: Pack) -> None:
    rs = _resources(P)
    by_id(rs, f"{P}-size")["subject"] = {"reference": f"Patient/{OTHER}-pt"}
    out = _evaluate(pack, rs)
    assert "patient-mismatch" in _codes(out)
    assert f"Observation/{P}-size" in {e.reference for e in _mismatch(out).evidence}


def test_coverage_of_another_beneficiary_is_not_the_patients(pack: Pack) -> None:
    """A Coverage where this patient is the subscriber but another person the beneficiary
    insures that other person: no Claim for this patient names it."""
    rs = _resources(P)
    cov = by_id(rs, f"{P}-cov")
    cov["subscriber"] = {"reference": f"Patient/{P}-pt"}
    cov["beneficiary"] = {"reference": f"Patient/{OTHER}-pt"}
    out = _evaluate(pack, rs)
    assert "coverage-missing" in _codes(out)
    assert _claim(out) is None


def test_same_patient_written_otherwise_is_no_mismatch(pack: Pack) -> None:
    """One patient referenced by a full URL on one resource and `Type/id` on another."""
    rs = _resources(P)
    by_id(rs, f"{P}-dx")["subject"] = {"reference": f"http://example.org/fhir/Patient/{P}-pt"}
    out = _evaluate(pack, rs)
    assert "patient-mismatch" not in _codes(out)
    assert _claim(out) is not None


def _undated(rs: Resources) -> None:
    for r in rs:
        if r["resourceType"] == "Procedure":
            r.pop("performedDateTime", None)
            r.pop("performedPeriod", None)
    by_id(rs, f"{P}-enc").pop("period", None)


@pytest.mark.parametrize(
    "performed",
    [
        {},
        {"performedString": "14 Oct 2026, morning list"},
        {"performedString": "2026-10-14"},
        {"performedDateTime": "2026-10"},  # a month is no date of service
        {"performedPeriod": {"end": "2026-10-14T11:00:00Z"}},
    ],
)
def test_no_date_of_service_no_claim(pack: Pack, performed: dict[str, Any]) -> None:
    rs = _resources(P)
    _undated(rs)
    by_id(rs, f"{P}-rfa").update(performed)
    out = _evaluate(pack, rs)
    assert out.evaluation.blocked
    assert _claim(out) is None
    [finding] = [f for f in out.evaluation.findings if f.code == "date-of-service-missing"]
    assert finding.severity == "high"
    assert finding.source
    assert "date of service" in finding.message


@pytest.mark.parametrize(
    "dated",
    [
        lambda rs: by_id(rs, f"{P}-enc").update(period={"start": "2026-10-14T08:00:00Z"}),
        lambda rs: by_id(rs, f"{P}-rfa").update(
            performedPeriod={"start": "2026-10-14T09:00:00Z", "end": "2026-10-14T10:00:00Z"}
        ),
    ],
)
def test_a_date_on_the_encounter_or_the_period_is_the_date_of_service(
    pack: Pack, dated: Any
) -> None:
    rs = _resources(P)
    _undated(rs)
    dated(rs)
    out = _evaluate(pack, rs)
    assert "date-of-service-missing" not in _codes(out)
    claim = _claim(out)
    assert claim is not None
    assert {i["servicedDate"] for i in claim["item"]} == {"2026-10-14"}


@pytest.mark.parametrize(
    "subject",
    [
        None,
        {"identifier": {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-0042"}},
        {"reference": "Group/g1"},
        {"display": "Jane Doe"},
        {"reference": "Device/pump-1"},
    ],
)
def test_a_procedure_without_a_patient_gets_no_claim(pack: Pack, subject: Any) -> None:
    rs = _resources(P)
    for r in rs:
        if r["resourceType"] == "Procedure":
            r.pop("subject", None)
            if subject is not None:
                r["subject"] = copy.deepcopy(subject)
    rs.append({"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    out = _evaluate(pack, rs)
    assert out.evaluation.blocked
    assert _claim(out) is None
    [finding] = [f for f in out.evaluation.findings if f.code == "patient-unidentified"]
    assert finding.severity == "high"
    assert "patient" in finding.message.lower()


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": f"http://example.org/fhir/Patient/{P}-pt"},
        {"reference": f"Patient/{P}-pt", "display": "Jane Doe"},
    ],
)
def test_a_patient_reference_written_otherwise_identifies_the_patient(
    pack: Pack, subject: Any
) -> None:
    rs = _resources(P)
    by_id(rs, f"{P}-rfa")["subject"] = subject
    out = _evaluate(pack, rs)
    assert "patient-unidentified" not in _codes(out)
    assert _claim(out) is not None
