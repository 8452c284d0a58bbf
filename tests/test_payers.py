"""Payer overlays: the shipped policies against the fixtures' hand-written verdicts, a new
payer added by one YAML file, prior authorization, and overlays that are refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter import evaluate_paths, evaluate_store
from fhir_adapter.cli import main
from fhir_adapter.errors import PackError
from fhir_adapter.pack import Pack
from fhir_adapter.payers import load_payers
from fhir_adapter.writeback.validate import validate_resource

from .conftest import (
    CASES,
    PA_OVERLAY,
    by_id,
    fixture_names,
    load_bundle,
    load_expected,
    store_of,
)

NOW = "2026-11-27T12:00:00+00:00"

PAYER_FIXTURES = [
    n for n in fixture_names() if any("payer" in c for c in load_expected(n)["cases"])
]


def test_payer_fixtures_exist() -> None:
    assert len(PAYER_FIXTURES) >= 8


@pytest.mark.parametrize("name", PAYER_FIXTURES)
def test_payer_verdict_matches_expected(name: str, pack: Pack) -> None:
    """The policy chosen, its verdict and every criterion's result, as written by hand."""
    want = {c["procedure"]: c["payer"] for c in load_expected(name)["cases"] if "payer" in c}
    got = {}
    for o in evaluate_paths([CASES / f"{name}.json"], pack, now=NOW):
        e = o.evaluation
        assert e.payer_policy is not None
        got[e.procedure] = {
            "policy": e.payer_policy["id"],
            "verdict": e.payer_policy.get("verdict"),
            "criteria": {c["id"]: c["result"] for c in e.payer_criteria},
        }
    assert got == want


def test_same_case_different_payers_different_verdicts(pack: Pack) -> None:
    verdicts = {}
    for name in [n for n in PAYER_FIXTURES if n.startswith("v43-same-case-")]:
        [out] = evaluate_paths([CASES / f"{name}.json"], pack, now=NOW)
        verdicts[out.evaluation.payer_policy["id"]] = out.evaluation.outcome  # type: ignore[index]
    assert verdicts["aetna-cpb-0274"] == "issues"
    assert verdicts["bcbsa-7.01.91"] == verdicts["anthem-cg-surg-78"] == "claim"


def test_payer_finding_names_policy_and_criterion(pack: Pack) -> None:
    """Where prior-authorization answers read them: the finding, the JSON report row and
    the DetectedIssue's codings and identifier."""
    [out] = evaluate_paths([CASES / "v43-same-case-aetna.json"], pack, now=NOW)
    [finding] = [f for f in out.evaluation.findings if f.code == "payer-criteria-not-met"]
    assert (finding.policy, finding.criterion) == ("aetna-cpb-0274", "size")
    assert "4.5" in finding.message and "Aetna CPB 0274" in finding.message
    row = out.report()
    assert row["payer_policy"]["id"] == "aetna-cpb-0274"
    assert row["payer_policy"]["source"] == "[AETNA-0274]"
    assert {"policy": "aetna-cpb-0274", "criterion": "size"}.items() <= row["findings"][0].items()
    [issue] = [r for r in out.resources if r["resourceType"] == "DetectedIssue"]
    codes = {c["system"]: c["code"] for c in issue["code"]["coding"]}
    canonical = pack.model.canonical
    assert codes[canonical.payer_policy_system] == "aetna-cpb-0274"
    assert codes[canonical.payer_criterion_system] == "aetna-cpb-0274#size"
    assert issue["identifier"][0]["value"].endswith("-aetna-cpb-0274-size")
    assert issue["reference"].startswith("http://www.aetna.com/")
    validate_resource(issue)


def test_no_matching_overlay_says_generic(pack: Pack) -> None:
    [out] = evaluate_paths([CASES / "ex1-hcc-ct.json"], pack, now=NOW)
    policy = out.evaluation.payer_policy
    assert policy is not None and policy["id"] == "generic"
    assert policy["matched_by"] == "no payer overlay matches Acme Health Plan"
    assert not out.evaluation.payer_criteria


def _example_health_case() -> list[dict[str, Any]]:
    resources = [copy.deepcopy(e["resource"]) for e in load_bundle("ex1-hcc-ct")["entry"]]
    payer = by_id(resources, "ex1-hcc-ct-payer")
    payer["name"] = "Example Health"
    payer["identifier"] = [{"system": "http://example.org/payer-id", "value": "EXH01"}]
    return resources


def _authorization(code: str, action: str) -> list[dict[str, Any]]:
    """A PAS-shaped request and its answer for the fixture patient's 47382."""
    claim = {
        "resourceType": "Claim",
        "id": "pa-req",
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "professional",
                }
            ]
        },
        "use": "preauthorization",
        "patient": {"reference": "Patient/ex1-hcc-ct-pt"},
        "created": "2026-10-01",
        "provider": {"reference": "Practitioner/ex1-hcc-ct-dr"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [
            {"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/ex1-hcc-ct-cov"}}
        ],
        "item": [
            {
                "sequence": 1,
                "productOrService": {
                    "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]
                },
                "servicedPeriod": {"start": "2026-10-01", "end": "2026-12-31"},
            }
        ],
    }
    response = {
        "resourceType": "ClaimResponse",
        "id": "pa-resp",
        "status": "active",
        "type": claim["type"],
        "use": "preauthorization",
        "patient": {"reference": "Patient/ex1-hcc-ct-pt"},
        "created": "2026-10-02",
        "insurer": {"reference": "Organization/ex1-hcc-ct-payer"},
        "request": {"reference": "Claim/pa-req"},
        "outcome": "complete",
        "item": [
            {
                "itemSequence": 1,
                "adjudication": [
                    {
                        "category": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/adjudication",
                                    "code": "submitted",
                                }
                            ]
                        },
                        "extension": [
                            {
                                "url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewAction",
                                "extension": [
                                    {"url": "number", "valueString": "AUTH-4711"},
                                    {
                                        "url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewActionCode",
                                        "valueCodeableConcept": {
                                            "coding": [
                                                {
                                                    "system": "https://codesystem.x12.org/005010/306",
                                                    "code": action,
                                                }
                                            ]
                                        },
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    return [claim, response]


def test_new_payer_by_one_yaml_requires_prior_auth(tmp_path: Path, pack: Pack) -> None:
    """A payer added by one YAML file: prior-auth-missing until an approved ClaimResponse for
    this patient, code and date is in the data; then its number is on the Claim."""
    (tmp_path / "example-health.yaml").write_text(PA_OVERLAY)
    payers = load_payers(pack, [tmp_path])
    case = _example_health_case()

    def run(resources: list[dict[str, Any]]) -> Any:
        [out] = evaluate_store(store_of(resources), pack, now=NOW, payers=payers)
        return out

    out = run(case)
    assert out.evaluation.payer_policy["id"] == "example-health-ablation"  # type: ignore[index]
    assert out.evaluation.payer_policy["matched_by"] == "identifier EXH01"  # type: ignore[index]
    assert [f.code for f in out.evaluation.findings] == ["prior-auth-missing"]
    assert out.evaluation.outcome == "issues"
    # not certified (A3), or for another code: still missing
    assert run(case + _authorization("47382", "A3")).evaluation.outcome == "issues"
    assert run(case + _authorization("47380", "A1")).evaluation.outcome == "issues"
    approved = run(case + _authorization("47382", "A1"))
    assert approved.evaluation.findings == []
    [claim] = [r for r in approved.resources if r["resourceType"] == "Claim"]
    assert claim["insurance"][0]["preAuthRef"] == ["AUTH-4711"]
    validate_resource(claim)


def test_authorization_outside_its_period_does_not_count(pack: Pack, tmp_path: Path) -> None:
    (tmp_path / "example-health.yaml").write_text(PA_OVERLAY)
    payers = load_payers(pack, [tmp_path])
    request, response = _authorization("47382", "A6")
    request["item"][0]["servicedPeriod"] = {"start": "2026-11-01", "end": "2026-11-30"}
    [out] = evaluate_store(
        store_of([*_example_health_case(), request, response]), pack, now=NOW, payers=payers
    )
    [finding] = out.evaluation.findings
    assert finding.code == "prior-auth-missing"
    assert any("not the date of service 2026-10-14" in (e.note or "") for e in finding.evidence)


def test_payers_option_and_forced_payer_from_cli(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "example-health.yaml").write_text(PA_OVERLAY)
    bundle = str(CASES / "v43-same-case-bcbsa.json")
    assert main(["evaluate", bundle, "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["cases"]
    assert row["payer_policy"]["id"] == "bcbsa-7.01.91"
    forced = ["--payers", str(tmp_path), "--payer", "example-health-ablation"]
    assert main(["evaluate", bundle, *forced, "--format", "json"]) == 1
    [row] = json.loads(capsys.readouterr().out)["cases"]
    assert row["payer_policy"]["matched_by"] == "--payer"
    assert [f["code"] for f in row["findings"]] == ["prior-auth-missing"]
    assert {c["id"]: c["result"] for c in row["payer_criteria"]} == {
        "modality": "met",
        "histology": "met",
    }


def test_bad_overlay_directory_exits_2_naming_the_file(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "broken.yaml").write_text(PA_OVERLAY.replace("modalities:", "modalitys:"))
    bundle = str(CASES / "v43-same-case-bcbsa.json")
    assert main(["evaluate", bundle, "--payers", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "broken.yaml") in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            PA_OVERLAY.replace("prior_authorization: required", "prior_authorization: maybe"),
            "example-health.yaml:7:1: invalid payer overlay: prior_authorization",
        ),
        (
            PA_OVERLAY.replace("name: histology", "name: histologie"),
            "example-health.yaml:10:5: invalid payer overlay: criterion 'histology': unknown fact 'histologie'",
        ),
        (
            PA_OVERLAY.replace('source: "[PAYER-POLICIES]"\n', "", 1),
            "example-health.yaml: invalid payer overlay: source: Field required",
        ),
        (PA_OVERLAY + "extra: 1\n", "example-health.yaml:15:1: invalid payer overlay: extra"),
        (
            PA_OVERLAY.replace("in: [hcc]", "in: [hccc]"),
            "example-health.yaml:14:38: invalid payer overlay: criterion 'histology': fact "
            "histology is never 'hccc'; it takes hcc, colorectal-metastasis, net-metastasis, "
            "other-metastasis",
        ),
        (
            PA_OVERLAY.replace(
                "- fact: {name: histology, in: [hcc]}",
                "- any:\n        - fact: {name: histology, in: [hcc]}\n"
                "        - fact: {name: extrahepatic_disease, in: [absent, none]}",
            ),
            "example-health.yaml:16:59: invalid payer overlay: criterion 'histology': fact "
            "extrahepatic_disease is never 'none'; it takes present, absent",
        ),
    ],
)
def test_bad_overlay_is_named_by_file_and_line(
    tmp_path: Path, pack: Pack, text: str, expected: str
) -> None:
    (tmp_path / "example-health.yaml").write_text(text)
    with pytest.raises(PackError) as err:
        load_payers(pack, [tmp_path])
    assert str(err.value).startswith(str(tmp_path / expected.split(":", 1)[0]))
    assert expected.split("example-health.yaml", 1)[1] in str(err.value)


def test_one_policy_id_in_two_user_files_is_refused(tmp_path: Path, pack: Pack) -> None:
    """Which file wins must not depend on their names: both are named, whichever is read
    first; a user's file with a shipped policy id still replaces the shipped one."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a.yaml").write_text(PA_OVERLAY)
    (first / "b.yaml").write_text(PA_OVERLAY.replace("title: Example", "title: Other"))
    with pytest.raises(PackError) as err:
        load_payers(pack, [first])
    assert str(first / "a.yaml") in str(err.value) and str(first / "b.yaml") in str(err.value)
    (first / "b.yaml").rename(second / "b.yaml")
    with pytest.raises(PackError, match="example-health-ablation"):
        load_payers(pack, [first, second])
    assert len(load_payers(pack, [first, first]).overlays) == len(load_payers(pack).overlays) + 1
    shipped = next(o for o in load_payers(pack).overlays if o.id == "aetna-cpb-0274")
    (second / "b.yaml").write_text(Path(shipped.path).read_text().replace("title:", "title: Mine"))
    [mine] = [o for o in load_payers(pack, [second]).overlays if o.id == "aetna-cpb-0274"]
    assert mine.path == str(second / "b.yaml")


def test_yml_overlays_are_read_too(tmp_path: Path, pack: Pack) -> None:
    (tmp_path / "example-health.yml").write_text(PA_OVERLAY)
    assert "example-health-ablation" in {o.id for o in load_payers(pack, [tmp_path]).overlays}


def test_unknown_forced_payer_is_refused(pack: Pack) -> None:
    with pytest.raises(PackError, match="--payer 'nope': no such payer policy"):
        load_payers(pack, forced="nope")


def _coverage_parts(pack: Pack, out: Any) -> dict[str, Any]:
    """The CRD coverage-information an order-sign hook would record for this evaluation."""
    from types import SimpleNamespace

    from fhir_adapter.hooks import handlers

    e = out.evaluation
    case = SimpleNamespace(
        coverage=[{"resourceType": "Coverage", "id": "cov-1"}],
        ref=lambda r: f"{r['resourceType']}/{r['id']}",
    )
    order = {"resourceType": "ServiceRequest", "id": "sr-1", "status": "draft"}
    shown = {f.code for f in e.findings}
    action = handlers._coverage_action(
        pack, order, case, shown, "order-sign", True, e.payer_policy, e.payer_criteria
    )
    assert action is not None
    [ext] = action["resource"]["extension"]
    return {p["url"]: next(v for k, v in p.items() if k != "url") for p in ext["extension"]}


@pytest.mark.parametrize(
    ("name", "covered", "pa_needed", "reason"),
    [
        ("v43-same-case-bcbsa", "covered", "conditional", None),
        ("v43-same-case-aetna", "not-covered", None, None),
        ("v45-payer-declined-bcbsa", "conditional", "conditional", "inoperable"),
    ],
)
def test_cds_coverage_information_follows_the_payer(
    pack: Pack, name: str, covered: str, pa_needed: str | None, reason: str | None
) -> None:
    [out] = evaluate_paths([CASES / f"{name}.json"], pack, now=NOW)
    parts = _coverage_parts(pack, out)
    assert parts["covered"] == covered
    assert parts.get("pa-needed") == pa_needed
    assert parts["doc-needed"] == "clinical"
    if reason is None:
        assert "reason" not in parts and "info-needed" not in parts
    else:
        assert reason in parts["reason"]["text"] and parts["info-needed"] == "OTH"


def test_cds_prior_auth_needed_then_satisfied(tmp_path: Path, pack: Pack) -> None:
    (tmp_path / "example-health.yaml").write_text(PA_OVERLAY)
    payers = load_payers(pack, [tmp_path])
    case = _example_health_case()
    [missing] = evaluate_store(store_of(case), pack, now=NOW, payers=payers)
    assert _coverage_parts(pack, missing)["pa-needed"] == "auth-needed"
    approved = case + _authorization("47382", "A1")
    [done] = evaluate_store(store_of(approved), pack, now=NOW, payers=payers)
    parts = _coverage_parts(pack, done)
    assert parts["pa-needed"] == "satisfied" and parts["satisfied-pa-id"] == "AUTH-4711"


def test_every_shipped_criterion_cites_its_policy(pack: Pack) -> None:
    for overlay in load_payers(pack).overlays:
        tag = overlay.model.source
        assert all(c.source == tag for c in overlay.model.criteria), overlay.id


@pytest.mark.parametrize(
    ("count", "size", "listed", "verdict"),
    [
        (None, 6.5, "absent", False),  # one tumor over 5 cm fails Milan whatever the count
        (None, 2.0, "absent", None),  # a small tumor, but how many?
        (1, 4.8, "absent", True),
        (3, 2.9, "absent", None),  # three small ones: each one's size is needed (no total)
        (4, 2.0, "absent", False),
        (None, None, "present", True),  # a bridge to transplant settles it
    ],
)
def test_milan_in_three_values(
    pack: Pack, count: int | None, size: float | None, listed: str, verdict: bool | None
) -> None:
    """BCBSA's Milan criterion judged on facts alone: Kleene's logic decides what it can."""
    from types import SimpleNamespace

    from fhir_adapter.pack.context import Context, Fact
    from fhir_adapter.payers.load import Node, judge

    [bcbsa] = [o for o in load_payers(pack).overlays if o.id == "bcbsa-7.01.91"]
    [milan] = [c for c in bcbsa.criteria if c.id == "milan"]
    facts = {
        "tumor_count": Fact(count),
        "tumor_max_size_cm": Fact(size),
        "tumor_total_diameter_cm": Fact(None),
        "transplant_listed": Fact(listed),
    }
    ctx = Context(SimpleNamespace(key="Procedure/p"), None, facts)  # type: ignore[arg-type]
    assert judge(Node("all", milan.met), ctx).verdict is verdict


def test_an_undocumented_criterion_says_what_is_missing(pack: Pack) -> None:
    [out] = evaluate_paths([CASES / "v45-payer-declined-bcbsa.json"], pack, now=NOW)
    [finding] = out.evaluation.findings
    assert (finding.code, finding.criterion) == ("payer-criteria-undocumented", "inoperable")
    assert "A documented refusal of surgery alone" in finding.message  # the overlay's query
    assert [e.note for e in finding.evidence] == ["not_resection_candidate is not documented"]


PLAN_OVERLAY = """\
policy: aetna-medicare-gold
title: Aetna Medicare Advantage Gold liver ablation
source: "[PAYER-POLICIES]"
date: "2026-12-01"
applies_to:
  names: ['\\baetna\\b']
  coverage_class: [{type: plan, value: GOLD-MA}]
prior_authorization: not-required
modalities: ["47382"]
"""


def test_a_plan_limited_overlay_wins_for_its_plan_only(tmp_path: Path, pack: Pack) -> None:
    """Coverage.class decides where a policy differs by plan; other plans of the payer keep
    the payer's own overlay."""
    (tmp_path / "aetna-gold.yaml").write_text(PLAN_OVERLAY)
    payers = load_payers(pack, [tmp_path])
    resources = [copy.deepcopy(e["resource"]) for e in load_bundle("v43-same-case-aetna")["entry"]]
    [plain] = evaluate_store(store_of(resources), pack, now=NOW, payers=payers)
    assert plain.evaluation.payer_policy["id"] == "aetna-cpb-0274"  # type: ignore[index]
    coverage = by_id(resources, "v43-same-case-aetna-cov")
    coverage["class"] = [
        {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                        "code": "plan",
                    }
                ]
            },
            "value": "GOLD-MA",
        }
    ]
    [gold] = evaluate_store(store_of(resources), pack, now=NOW, payers=payers)
    policy = gold.evaluation.payer_policy
    assert policy is not None and policy["id"] == "aetna-medicare-gold"
    assert policy["matched_by"] == "name 'Aetna Better Health', Coverage.class GOLD-MA"
    assert gold.evaluation.outcome == "claim"  # no criteria of its own: the 4 cm limit is Aetna's


@pytest.mark.parametrize("form", ["bundle", "ndjson"])
def test_prior_authorization_read_from_files(tmp_path: Path, pack: Pack, form: str) -> None:
    """The file loader keeps the patient's ClaimResponses and the requests they answer."""
    (tmp_path / "example-health.yaml").write_text(PA_OVERLAY)
    payers = load_payers(pack, [tmp_path])
    resources = [*_example_health_case(), *_authorization("47382", "A1")]
    data = tmp_path / "data"
    data.mkdir()
    if form == "bundle":
        entries = [{"resource": r} for r in resources]
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        (data / "case.json").write_text(json.dumps(bundle))
    else:
        for r in resources:
            with (data / f"{r['resourceType']}.ndjson").open("a") as f:
                f.write(json.dumps(r) + "\n")
    [out] = evaluate_paths([data], pack, now=NOW, payers=payers)
    assert out.evaluation.findings == []
    assert out.evaluation.payer_policy["authorization"] == "AUTH-4711"  # type: ignore[index]


def test_a_listed_comorbidity_is_no_inoperability_a_stated_reason_is(pack: Pack) -> None:
    """COPD on the encounter's list says nothing about resection; as the Procedure's reason
    it documents why not (as necessity-rationale-missing reads it)."""
    resources = [
        copy.deepcopy(e["resource"]) for e in load_bundle("v45-payer-declined-bcbsa")["entry"]
    ]
    dx = copy.deepcopy(by_id(resources, "v45-payer-declined-bcbsa-dx"))
    dx["id"] = "v45-copd"
    dx["code"] = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J44.9"}]}
    encounter = by_id(resources, "v45-payer-declined-bcbsa-enc")
    encounter["diagnosis"].append({"condition": {"reference": "Condition/v45-copd"}, "rank": 2})
    resources.append(dx)

    def inoperable() -> str:
        [out] = evaluate_store(store_of(resources), pack, now=NOW)
        return next(c["result"] for c in out.evaluation.payer_criteria if c["id"] == "inoperable")

    assert inoperable() == "undocumented"
    procedure = by_id(resources, "v45-payer-declined-bcbsa-rfa")
    procedure["reasonReference"].append({"reference": "Condition/v45-copd"})
    assert inoperable() == "met"


def test_the_cds_service_judges_by_the_overlays_of_serve_payers(tmp_path: Path) -> None:
    """`serve --payers DIR`: an order-sign call for a patient of the added payer, which
    requires prior authorization, is answered auth-needed; without the directory the
    payer matches no overlay and authorization stays conditional."""
    from fhir_adapter.testing.hooks import draft_order, order_context

    from .test_hooks_harness import EHR_ISS, Ehr, SigningKey, hook_body, inline_service

    overlays = tmp_path / "payers"
    overlays.mkdir()
    (overlays / "example-health.yaml").write_text(PA_OVERLAY)
    resources = _example_health_case()
    proc = by_id(resources, "ex1-hcc-ct-rfa")
    patient, encounter = by_id(resources, "ex1-hcc-ct-pt"), by_id(resources, "ex1-hcc-ct-enc")

    def searchset(*found: dict[str, Any]) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in found],
        }

    prefetch = {
        "patient": patient,
        "coverage": searchset(
            by_id(resources, "ex1-hcc-ct-cov"), by_id(resources, "ex1-hcc-ct-payer")
        ),
        "conditions": searchset(*[r for r in resources if r["resourceType"] == "Condition"]),
        "encounter": searchset(encounter),
    }
    body = hook_body("order-sign", order_context(proc, [draft_order(proc)]), prefetch=prefetch)
    key = SigningKey("ES384")
    answers = {}
    for name, config in (("with", {"payer_dirs": (overlays,)}), ("without", {})):
        service = inline_service(tmp_path / f"{name}.sqlite3", (EHR_ISS, key), **config)
        try:
            resp = Ehr(service, key).hook("cpt-47382-order-sign", body)
        finally:
            service.stop()
        assert resp.status_code == 200, resp.text
        [action] = [
            a
            for card in resp.json()["cards"]
            for s in card.get("suggestions") or []
            for a in s["actions"]
        ] or resp.json()["systemActions"]
        [ext] = [e for e in action["resource"]["extension"] if "coverage-information" in e["url"]]
        answers[name] = {p["url"]: p.get("valueCode") for p in ext["extension"]}
    assert answers["with"]["pa-needed"] == "auth-needed"
    assert answers["without"]["pa-needed"] == "conditional"
