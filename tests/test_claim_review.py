"""What a certified coder's review of the written Claims found (issue 19), each checked on a
fixture whose expected outcome is written by hand in tools/make_fixtures.py."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_adapter import evaluate_paths, evaluate_store
from fhir_adapter.billing import decide, tables
from fhir_adapter.findings import Finding
from fhir_adapter.pack import Pack

from .conftest import CASES, by_id, load_bundle, store_of

NOW = "2026-11-27T12:00:00+00:00"
CPT = "http://www.ama-assn.org/go/cpt"
VERIFY = "verify against the current CMS release"


def outputs(name: str, pack: Pack) -> dict[str, Any]:
    return {
        o.evaluation.procedure: o for o in evaluate_paths([CASES / f"{name}.json"], pack, now=NOW)
    }


def finding(output: Any, code: str) -> Finding:
    [found] = [f for f in output.evaluation.findings if f.code == code]
    return found


def claim_lines(output: Any) -> list[tuple[str, list[str]]]:
    [claim] = [r for r in output.resources if r["resourceType"] == "Claim"]
    return [
        (
            i["productOrService"]["coding"][0]["code"],
            [m["coding"][0]["code"] for m in i.get("modifier", [])],
        )
        for i in claim["item"]
    ]


# 1. PTP only between codes on the Claim; one finding per problem


def test_a_biopsy_not_billed_raises_no_ptp_edit(pack: Pack) -> None:
    """v24: 47000 of the ablated tumor is column 2 and not on the Claim: nothing to edit."""
    out = outputs("v24-ptp-biopsy", pack)["Procedure/v24-ptp-biopsy-rfa"]
    assert out.evaluation.findings == []
    assert claim_lines(out) == [("47382", []), ("77013", ["26"])]


def test_needle_guidance_is_one_problem_one_finding(pack: Pack) -> None:
    """v23: 76942 with 47382 is reported once, as guidance-code-conflict (moderate)."""
    out = outputs("v23-needle-guidance", pack)["Procedure/v23-needle-guidance-rfa"]
    assert [(f.code, f.severity) for f in out.evaluation.findings] == [
        ("guidance-code-conflict", "moderate")
    ]
    assert claim_lines(out) == [("47382", [])]  # 76942 is not billed


# 2. 77013/77022 only with monitoring documented


def _needle_only(good_case: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    guide = by_id(good_case, "ex1-hcc-ct-guide")
    guide["code"] = {"coding": [{"system": CPT, "code": "77012"}]}
    by_id(good_case, "ex1-hcc-ct-rfa")["note"] = [{"text": note}]
    return good_case


def test_needle_placement_alone_is_not_77013(pack: Pack, good_case: list[dict[str, Any]]) -> None:
    """set-2/issue-11: "CT guidance for needle placement" and no monitoring: suggesting 77013
    would be upcoding."""
    note = (
        "Single 2.1 cm HCC in segment VI, unresectable. CT guidance for needle placement; RF "
        "energy at 150 W for 12 minutes. Post-ablation CT: complete ablation."
    )
    [out] = evaluate_store(store_of(_needle_only(good_case, note)), pack, now=NOW)
    [evidence] = finding(out, "guidance-code-conflict").evidence
    assert evidence.note is not None
    assert "report 77013" not in evidence.note
    assert "no monitoring of the ablation is documented" in evidence.note


def test_documented_monitoring_points_at_77013(pack: Pack, good_case: list[dict[str, Any]]) -> None:
    note = (
        "Single 2.1 cm HCC in segment VI, unresectable. CT guidance for needle placement and "
        "CT monitoring of the ablation zone; RF energy at 150 W. Post-ablation CT: complete ablation."
    )
    [out] = evaluate_store(store_of(_needle_only(good_case, note)), pack, now=NOW)
    [evidence] = finding(out, "guidance-code-conflict").evidence
    assert evidence.note is not None and "report 77013" in evidence.note


# 3. global period: unknown global days, group scope, repeat ablation for residual tumor


def test_a_prior_surgery_of_unknown_global_days_is_reported(pack: Pack) -> None:
    """v34 (set-3/b3): 50592 four days earlier by the same radiologist, not in the tables."""
    out = outputs("v41-global-unknown", pack)["Procedure/v41-global-unknown-rfa"]
    found = finding(out, "global-period-unknown")
    assert found.severity == "low"
    assert found.evidence[0].reference == "Procedure/v41-global-unknown-prior"
    assert "50592 on 2026-10-10" in str(found.evidence[0].note)
    assert out.evaluation.outcome == "claim"


def test_the_global_period_scope_is_the_group_and_specialty(pack: Pack) -> None:
    """v33: a colleague of the same group NPI and specialty did 47382 six days before."""
    out = outputs("v40-global-group", pack)["Procedure/v40-global-group-rfa"]
    found = finding(out, "global-period")
    assert found.evidence[0].reference == "Procedure/v40-global-group-prior"
    assert "same group (NPI) and specialty" in str(found.evidence[0].note)


def test_a_colleague_of_another_group_is_outside_the_global_period(pack: Pack) -> None:
    bundle = load_bundle("v40-global-group")
    resources = [copy.deepcopy(e["resource"]) for e in bundle["entry"]]
    other = copy.deepcopy(by_id(resources, "v40-global-group-group"))
    other.update(
        id="v40-other-group",
        identifier=[{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1245319599"}],
    )
    resources.append(other)
    by_id(resources, "v40-global-group-role2")["organization"] = {
        "reference": "Organization/v40-other-group"
    }
    prior = by_id(resources, "v40-global-group-prior")
    prior["performer"][0]["onBehalfOf"] = {"reference": "Organization/v40-other-group"}
    outs = {o.evaluation.procedure: o for o in evaluate_store(store_of(resources), pack, now=NOW)}
    codes = {f.code for f in outs["Procedure/v40-global-group-rfa"].evaluation.findings}
    assert "global-period" not in codes


def test_repeat_ablation_for_residual_tumor_takes_58(pack: Pack) -> None:
    """v26: the same tumor ablated again for residual enhancement, inside the 10-day global."""
    out = outputs("v26-global-period", pack)["Procedure/v26-global-period-rfa"]
    assert out.evaluation.outcome == "claim"
    assert claim_lines(out) == [("47382", ["58"]), ("77013", ["26"])]


# 9. office


def test_an_office_is_moderate_and_its_guidance_is_billed_global(pack: Pack) -> None:
    out = outputs("v09-office", pack)["Procedure/v09-office-rfa"]
    assert finding(out, "place-of-service-not-covered").severity == "moderate"
    assert claim_lines(out) == [("47382", []), ("77013", [])]  # global: no 26 in an office
    [claim] = [r for r in out.resources if r["resourceType"] == "Claim"]
    assert "facility" not in claim  # box 32 is for POS other than 11 and 12


# 11. blocking findings only on verified ground


def _tables(tmp_path: Path, row: str, *, verified: bool) -> tables.PaymentTables:
    """The shipped tables plus one PTP row, its file marked verified (as `tables import`
    does) or not."""
    dst = tmp_path / "tables"
    shutil.copytree(tables.default_directory(), dst)
    ptp = next(dst.glob("ptp-*.txt"))
    ptp.write_text(ptp.read_text() + row + "\n")
    sources = dst / "SOURCES.yaml"
    doc = yaml.safe_load(sources.read_text())
    doc["files"][ptp.name]["verified"] = verified
    sources.write_text(yaml.safe_dump(doc, sort_keys=False))
    return tables.load_tables(dst)


@pytest.mark.parametrize(("verified", "severity"), [(False, "moderate"), (True, "high")])
def test_a_ptp_edit_blocks_only_on_a_verified_row(
    pack: Pack,
    good_case: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    verified: bool,
    severity: str,
) -> None:
    loaded = _tables(
        tmp_path, "47382\t77013\t\t20020101\t*\t0\tMutually exclusive", verified=verified
    )
    monkeypatch.setattr(decide, "payment_tables", lambda: loaded)
    [out] = evaluate_store(store_of(good_case), pack, now=NOW)
    found = finding(out, "coding-edit-ptp")
    assert found.severity == severity
    assert (VERIFY in found.message) is not verified
    assert out.evaluation.outcome == ("issues" if verified else "claim")


def test_units_across_sessions_rest_on_the_unverified_mue_row(pack: Pack) -> None:
    """v29: once per *date* is the MUE's (a shipped row nobody verified); v06: once per
    *session* is the CPT descriptor's ("1 or more"), verified ground that blocks."""
    day = outputs("v29-same-day-two-encounters", pack)["Procedure/v29-same-day-two-encounters-rfa2"]
    found = finding(day, "units-exceeded")
    assert found.severity == "moderate" and VERIFY in found.message
    session = outputs("v06-two-in-session", pack)["Procedure/v06-two-in-session-rfa2"]
    assert finding(session, "units-exceeded").severity == "high"
    assert session.evaluation.outcome == "issues"


def test_the_global_period_on_an_unverified_row_does_not_block(pack: Pack) -> None:
    out = outputs("v40-global-group", pack)["Procedure/v40-global-group-rfa"]
    found = finding(out, "global-period")
    assert found.severity == "moderate" and VERIFY in found.message
    assert "GLOB DAYS row not verified" in str(found.evidence[0].note)


# 10. ICD-10-CM by the fiscal year of the date of service


@pytest.mark.parametrize(
    ("day", "year"),
    [("2024-12-03", 2025), ("2025-09-30", 2025), ("2025-10-01", 2026), ("2026-09-30", 2026)],
)
def test_fiscal_years_run_from_october(day: str, year: int) -> None:
    import datetime

    from fhir_adapter.billing import icd10cm

    assert icd10cm.fiscal_year(datetime.date.fromisoformat(day)) == year


def test_a_code_is_judged_by_the_release_of_its_date_of_service(pack: Pack) -> None:
    """v35: E11.A was added in FY2026; on 3 December 2024 (FY2025) it is not a code."""
    out = outputs("v42-code-set-year", pack)["Procedure/v42-code-set-year-rfa"]
    [evidence] = finding(out, "diagnosis-code-invalid").evidence
    assert "E11.A is not an ICD-10-CM code in ICD-10-CM FY2025" in str(evidence.note)
    assert out.evaluation.code_sets["icd10cm"].startswith("ICD-10-CM FY2025 (April 2025 tabular")
    assert out.report()["code_sets"] == out.evaluation.code_sets  # the JSON report's row


def test_a_year_without_a_code_set_is_checked_against_the_nearest_and_says_so(
    pack: Pack,
) -> None:
    out = outputs("v42-code-set-year", pack)["Procedure/v42-code-set-year-2021-rfa"]
    checked = out.evaluation.code_sets["icd10cm"]
    assert checked.startswith("ICD-10-CM FY2025 (April 2025 tabular")
    assert "2021-05-04 is in FY2021, for which no code set is at hand" in checked
    assert "checked against the nearest, FY2025" in checked
    # the principal diagnosis that satisfied diagnosis-unsupported says so too
    [principal] = [
        e for c in out.evaluation.criteria if c.rule == "diagnosis-unsupported" for e in c.evidence
    ]
    assert str(principal.note).startswith("principal: C22.0 (checked against ICD-10-CM FY2025")


def test_this_years_case_names_the_release_it_was_checked_against(pack: Pack) -> None:
    """The fixtures' date, 14 October 2026, is in FY2027: the nearest, FY2026, says so."""
    out = outputs("ex1-hcc-ct", pack)["Procedure/ex1-hcc-ct-rfa"]
    checked = out.evaluation.code_sets["icd10cm"]
    assert checked.startswith("ICD-10-CM FY2026 (April 1, 2026")
    assert "is in FY2027" in checked
