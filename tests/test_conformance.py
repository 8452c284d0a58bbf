"""The IG checker (fhir_adapter.conformance): the guides' own examples pass, and each kind of
rule it claims to check fails when an example is broken in that one respect."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from fhir_adapter.conformance import check, iter_examples
from fhir_adapter.conformance.packages import CRD, DTR, PAS, load_package

EXAMPLES = [
    pytest.param(package, name, id=name)
    for package in (PAS, DTR, CRD)
    for name, _ in iter_examples(package)
]


@pytest.mark.parametrize(("package", "name"), EXAMPLES)
def test_the_guides_examples_pass(package: str, name: str) -> None:
    report = check(load_package(package).examples[name])
    assert report.ok, report.text()


def test_every_package_has_examples() -> None:
    assert len(EXAMPLES) > 60
    assert {p.values[0] for p in EXAMPLES} == {PAS, DTR, CRD}


def _surgical() -> dict[str, Any]:
    return copy.deepcopy(load_package(PAS).examples["Bundle-SurgicalRequestBundleExample.json"])


def _claim(bundle: dict[str, Any]) -> dict[str, Any]:
    claim: dict[str, Any] = bundle["entry"][0]["resource"]
    return claim


def _drop_extension(url_end: str) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        item = _claim(bundle)["item"][0]
        item["extension"] = [e for e in item["extension"] if not e["url"].endswith(url_end)]

    return change


BREAKS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("pattern", lambda b: _claim(b).update(use="claim"), "resource.use: must match the pattern"),
    ("invariant ClaimFirst", lambda b: b["entry"].reverse(), "ClaimFirst"),
    (
        "required extension slice",
        _drop_extension("extension-certificationType"),
        "item.extension:certificationType: minimum cardinality 1",
    ),
    (
        "required extension on every careTeam",
        lambda b: _claim(b)["careTeam"][0].pop("extension"),
        "careTeam.extension:careTeamClaimScope: minimum cardinality 1",
    ),
    ("cardinality 1..1", lambda b: _claim(b)["item"][0].pop("category"), "item.category: minimum"),
    (
        "prohibited element (0..0)",
        lambda b: b["entry"][1].update(request={"method": "POST", "url": "Patient"}),
        "entry[1].request: maximum cardinality 0",
    ),
    (
        "invariant on a nested date (FullDateRule)",
        lambda b: _claim(b)["item"][0].update(servicedDate="2019-05"),
        "FullDateRule",
    ),
    ("fixed Bundle.type", lambda b: b.update(type="batch"), "Bundle.type: must match"),
    ("missing identifier", lambda b: b.pop("identifier"), "Bundle.identifier: minimum"),
]


@pytest.mark.parametrize(("rule", "change", "expected"), BREAKS, ids=[b[0] for b in BREAKS])
def test_a_broken_example_fails_naming_the_element(
    rule: str, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    bundle = _surgical()
    assert check(bundle).ok
    change(bundle)
    report = check(bundle)
    assert not report.ok
    assert expected in report.text(), report.text()


def test_what_is_skipped_is_reported() -> None:
    report = check(load_package(PAS).examples["Bundle-SurgicalRequestBundleExample.json"])
    assert "invariant bdl-10 (fhirpathpy cannot evaluate it)" in report.skipped  # hasValue()
    assert any(s.startswith("slice ") and "X12Code" in s for s in report.skipped)
    unknown = check({"resourceType": "Patient", "meta": {"profile": ["http://example.org/p"]}})
    assert unknown.ok and unknown.skipped == {
        "profile http://example.org/p (not in the vendored packages)"
    }


def test_a_resource_of_another_type_than_the_profile_fails() -> None:
    report = check(
        {"resourceType": "Patient"},
        "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-claim",
    )
    assert "not a Claim" in report.text()
