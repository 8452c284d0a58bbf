"""What a coder's review asks of a Claim, checked on the fixtures' written output: the
evidence each new finding carries, and the service facility's NPI on the Claim."""

from __future__ import annotations

from typing import Any

from fhir_adapter import CaseOutput, evaluate_paths
from fhir_adapter.pack import Pack

from .conftest import CASES

NOW = "2026-11-27T12:00:00+00:00"
NPI = "http://hl7.org/fhir/sid/us-npi"


def output(name: str, procedure: str, pack: Pack) -> CaseOutput:
    outputs = evaluate_paths([CASES / f"{name}.json"], pack, now=NOW)
    return next(o for o in outputs if o.evaluation.procedure == procedure)


def notes(out: CaseOutput, code: str) -> list[tuple[str | None, str | None]]:
    [finding] = [f for f in out.evaluation.findings if f.code == code]
    return [(e.note, e.snippet) for e in finding.evidence]


def claim(out: CaseOutput) -> dict[str, Any]:
    return next(r for r in out.resources if r["resourceType"] == "Claim")


def test_stated_diagnoses_name_the_code_and_quote_the_sentence(pack: Pack) -> None:
    got = notes(
        output("v38-coder-queries", "Procedure/v38-stated-dx-rfa", pack), "diagnosis-not-coded"
    )
    codes = [n for n, _ in got]
    assert any("K74.60" in str(n) for n in codes) and any("K76.6" in str(n) for n in codes)
    assert all("Child-Pugh B cirrhosis with portal hypertension" in str(s) for _, s in got)


def test_additional_code_quotes_the_tabular(pack: Pack) -> None:
    got = notes(
        output("v38-coder-queries", "Procedure/v38-hepatitis-rfa", pack),
        "diagnosis-additional-code",
    )
    assert "C22.0" in str(got[0][0]) and "hepatitis C (B17.1-, B18.2)" in str(got[0][0])
    assert "chronic hepatitis C" in str(got[1][1])


def test_documentation_conflict_holds_both_values_and_does_not_lead(pack: Pack) -> None:
    got = notes(
        output("v27-modifier-22", "Procedure/v27-modifier-22-rfa", pack), "documentation-conflict"
    )
    query, note = got
    assert "segment VI" in str(query[0]) and "segment VII" in str(query[0])
    assert "segment VII" in str(note[1])
    # a compliant query asks for documentation; it names neither value as the answer
    assert "please document the segment(s) treated" in str(query[0])


def test_service_not_billed_names_the_code_and_its_modifier(pack: Pack) -> None:
    got = notes(
        output("v24-ptp-biopsy", "Procedure/v24-ptp-biopsy-distinct-rfa", pack),
        "service-not-billed",
    )
    assert got and got[0][0] is not None and got[0][0].endswith("47000-XS")


def test_the_facility_npi_of_the_managing_organization_goes_on_the_claim(pack: Pack) -> None:
    out = output("v37-facility-npi", "Procedure/v37-facility-npi-managed-rfa", pack)
    facility = claim(out)["facility"]
    assert facility["reference"] == "Location/v37-facility-npi-managed-loc"
    assert facility["identifier"] == {"system": NPI, "value": "1987654328"}
    missing = output("v37-facility-npi", "Procedure/v37-facility-npi-rfa", pack)
    assert "identifier" not in claim(missing)["facility"]


def test_a_role_naming_its_practitioner_by_urn_keeps_the_taxonomy(pack: Pack) -> None:
    """A blind case's collection: every reference a urn:uuid, the role's too."""
    path = (
        CASES.parent.parent
        / "benchmarks/blind-cases/set-2/issue-10-urnuuid-two-47382-same-date.json"
    )
    [member] = next(
        claim(o) for o in evaluate_paths([path], pack, now=NOW) if o.evaluation.outcome == "claim"
    )["careTeam"]
    assert member["qualification"]["coding"][0]["code"] == "2085R0204X"


def test_a_count_the_note_states_against_the_coded_segments(pack: Pack) -> None:
    got = notes(
        output("v51-documentation-conflicts", "Procedure/v51-count-rfa", pack),
        "documentation-conflict",
    )
    query, note = got
    assert "2 segments" in str(query[0]) and "states 1 tumor" in str(query[0])
    assert "single" in str(note[1])
    assert "please document the number of tumors treated" in str(query[0])


def test_a_lobe_the_note_states_against_the_coded_lobe(pack: Pack) -> None:
    got = notes(
        output("v51-documentation-conflicts", "Procedure/v51-lobe-rfa", pack),
        "documentation-conflict",
    )
    query, note = got
    assert "right lobe" in str(query[0]) and "the left lobe" in str(query[0])
    assert "left lobe" in str(note[1])
    assert "please document the location of the tumor(s) treated" in str(query[0])
