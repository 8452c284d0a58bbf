"""What the HTML and CSV reports read from a report row when a field is not in it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_adapter import CaseOutput, read_paths
from fhir_adapter.report.model import NO_COVERAGE, UNKNOWN_PAYER, case_view, evidence_dicts

from .conftest import CASES


@pytest.fixture(scope="module")
def outputs(fixture_outputs: list[CaseOutput]) -> list[CaseOutput]:
    return copy.deepcopy(fixture_outputs)


def _claim(output: CaseOutput) -> dict[str, Any] | None:
    return next((r for r in output.resources if r["resourceType"] == "Claim"), None)


def _ref(reference: dict[str, Any]) -> str:
    """A Reference as the report shows it: `Type/id`, else `system|value` of its identifier."""
    if "reference" in reference:
        return str(reference["reference"])
    return f"{reference['identifier']['system']}|{reference['identifier']['value']}"


def _payer_name(resources: dict[str, dict[str, Any]], reference: str) -> str:
    """The payer as the worklist names it: the payor Organization's name, else its reference
    (a `urn:uuid:` one found by its entry's fullUrl in the fixture Bundles)."""
    found = resources.get(reference) or _by_full_url().get(reference, {})
    return str(found.get("name") or reference)


def _by_full_url() -> dict[str, dict[str, Any]]:
    bundles = (json.loads(p.read_text()) for p in CASES.glob("*.json"))
    return {
        e["fullUrl"]: e["resource"] for b in bundles for e in b.get("entry", []) if "fullUrl" in e
    }


def test_claim_gives_date_payer_and_rendering_performer(outputs: list[CaseOutput]) -> None:
    resources = _fixture_resources()
    for i, out in enumerate(outputs):
        claim = _claim(out)
        view = case_view(i, out.report())
        if claim is None:
            assert view["claim"] is None
            continue
        assert view["date"] == claim["item"][0]["servicedDate"]
        assert view["payer"] == _payer_name(resources, _ref(claim["insurer"]))
        rendering = [
            _ref(m["provider"])
            for m in claim.get("careTeam", [])
            if m["role"]["coding"][0]["code"] in ("rendering", "primary")
        ]
        assert view["performer"] == (rendering or [_ref(claim["provider"])])[0]
        assert [ln["code"] for ln in view["claim"]["lines"]] == [
            item["productOrService"]["coding"][0]["code"] for item in claim["item"]
        ]


def _fixture_resources() -> dict[str, dict[str, Any]]:
    found = (x.resource for x in read_paths([CASES]))
    return {f"{r['resourceType']}/{r['id']}": r for r in found if "id" in r}


def test_blocked_cases_show_the_date_and_payer_of_the_case(outputs: list[CaseOutput]) -> None:
    """No Claim to read them from: the procedure's date and its patient's active
    Coverage's payor, worked out here from the fixture files themselves."""
    resources = _fixture_resources()
    blocked = [o for o in outputs if _claim(o) is None]
    assert len(blocked) >= 10
    payers_seen = set()
    for out in blocked:
        view = case_view(0, out.report())
        procedure = resources[out.evaluation.procedure]
        performed = procedure.get("performedDateTime") or procedure["performedPeriod"]["start"]
        assert view["date"] == performed[:10]
        payors = [
            r["payor"][0]["reference"]
            for r in resources.values()
            if r["resourceType"] == "Coverage"
            and r["beneficiary"]["reference"] == procedure["subject"]["reference"]
            and r.get("status") == "active"
            and r["period"].get("start", "") <= performed[:10] <= r["period"].get("end", "9999")
        ]
        no_coverage = any(f.code == "coverage-missing" for f in out.evaluation.findings)
        assert view["payer"] == (NO_COVERAGE if no_coverage else _payer_name(resources, payors[0]))
        payers_seen.add(view["payer"])
    assert {NO_COVERAGE, "Acme Health Plan", "Aetna Better Health"} <= payers_seen


def test_rows_without_date_or_payer_say_they_are_unknown(outputs: list[CaseOutput]) -> None:
    """A row written without them (by an older version, or by hand) still reads."""
    blocked = [o for o in outputs if _claim(o) is None]
    for out in blocked:
        older = ("date_of_service", "payer", "payer_policy")
        row = {k: v for k, v in out.report().items() if k not in older}
        view = case_view(0, row)
        no_coverage = any(f.code == "coverage-missing" for f in out.evaluation.findings)
        assert view["date"] == ""
        assert view["payer"] == (NO_COVERAGE if no_coverage else UNKNOWN_PAYER)


def test_fields_a_row_carries_win_over_derived_ones(outputs: list[CaseOutput]) -> None:
    row = copy.deepcopy(outputs[0].report())
    row.pop("payer_policy")
    row.update(date_of_service="2026-01-02", performer="Practitioner/p", payer="Organization/o")
    view = case_view(0, row)
    assert (view["date"], view["performer"], view["payer"]) == (
        "2026-01-02",
        "Practitioner/p",
        "Organization/o",
    )
    # the payer overlays' match names the payor Organization: its name wins over the reference
    row["payer_policy"] = {"id": "generic", "payer": "Organization O Health Plan"}
    assert case_view(0, row)["payer"] == "Organization O Health Plan"


@pytest.mark.parametrize(
    ("span", "kept"),
    [
        ([0, 3], True),
        ([2, 11], True),
        ([3, 3], False),
        ([5, 12], False),
        ([-1, 2], False),
        (["0", "3"], False),
        ([0, 1, 2], False),
        (None, False),
    ],
)
def test_only_spans_inside_their_snippet_are_highlighted(span: Any, kept: bool) -> None:
    (ev,) = evidence_dicts(
        [{"reference": "R/1", "path": "R.x", "snippet": "not a tumor", "span": span}]
    )
    assert ("span" in ev) is kept
