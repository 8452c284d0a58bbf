"""The CDS Hooks service end to end: uvicorn on loopback, called over HTTP by a signing EHR,
reading from the real test FHIR server (Medplum) through `fhirServer` or from prefetch."""

from __future__ import annotations

import collections
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter import evaluate_paths
from fhir_adapter.cli import main
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.pack import Pack
from fhir_adapter.testing import hooks as calls
from fhir_adapter.testing.catalog import load_fixtures
from fhir_adapter.testing.hooks import discharge_context, draft_order, order_context, ref_id

from .conftest import CASES, findings_of, fixture_names, load_bundle
from .fhir_server.harness import TestServer
from .fhir_server.proxy import LimitedProxy
from .test_hooks_harness import EHR_ISS, Ehr, HookServer, SigningKey, hook_body, inline_service

pytestmark = pytest.mark.server

DISCHARGE = "cpt-47382-encounter-discharge"
ORDER_SIGN = "cpt-47382-order-sign"
APPOINTMENT = "cpt-47382-appointment-book"
CPT = "http://www.ama-assn.org/go/cpt"
ORDER_CHECKS = {"diagnosis-unsupported", "coverage-missing", "place-of-service-not-covered"}
NOW = "2026-11-27T12:00:00+00:00"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("ES384")


@pytest.fixture(scope="module")
def service(key: SigningKey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    # these tests compare findings: a budget a busy machine cannot miss (a 1 MB note read
    # through the test server); the budget itself is tested in test_hooks_budget.py
    server = inline_service(
        tmp_path_factory.mktemp("hooks") / "feedback.sqlite3", (EHR_ISS, key), time_budget=120
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ehr(service: HookServer, key: SigningKey) -> Ehr:
    return Ehr(service, key)


@pytest.fixture(scope="module")
def fhir(fhir_server: TestServer) -> Iterator[TestServer]:
    """The session's FHIR server holding every fixture, for this module's tests."""
    fhir_server.reset()
    with FhirClient(fhir_server.base) as client:
        load_fixtures(client)
    yield fhir_server
    fhir_server.reset()


def _finding_system(pack: Pack) -> str:
    return pack.model.canonical.finding_system


def topics(pack: Pack, response: dict[str, Any]) -> list[str]:
    """The finding codes the cards carry as source.topic (the pack's finding system)."""
    return sorted(
        c["source"]["topic"]["code"]
        for c in response["cards"]
        if (c["source"].get("topic") or {}).get("system") == _finding_system(pack)
    )


def engine_codes(pack: Pack, name: str, drop: str | None = None) -> list[str]:
    """`evaluate`'s finding codes for the fixture, optionally without every resource of a type."""
    resources = [r for r in load_bundle_resources(name) if r["resourceType"] != drop]
    return sorted(c for codes in findings_of(pack, resources).values() for c in codes)


def load_bundle_resources(name: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in load_bundle(name)["entry"]]


def order_codes(pack: Pack, name: str) -> list[str]:
    """The findings an order for that fixture's procedure can already show."""
    return sorted(set(engine_codes(pack, name)) & ORDER_CHECKS)


def expected_codes(pack: Pack, name: str) -> tuple[list[str], int]:
    """What `evaluate` finds in the fixture: all finding codes, and how many cases are billable."""
    outs = evaluate_paths([CASES / f"{name}.json"], pack, now=NOW)
    codes = sorted(f.code for o in outs for f in o.evaluation.findings)
    return codes, sum(not o.evaluation.blocked for o in outs)


def stored_procedures(fhir: TestServer, name: str) -> list[dict[str, Any]]:
    """The fixture's 47382 Procedures as the server holds them (urn:uuid references rewritten)."""
    with FhirClient(fhir.base) as client:
        return calls.stored_procedures(client, [name])


def discharge_contexts(fhir: TestServer, name: str) -> list[dict[str, str]]:
    """One encounter-discharge context per encounter of the fixture's 47382 Procedures."""
    seen = {ref_id(p["encounter"]): discharge_context(p) for p in stored_procedures(fhir, name)}
    return list(seen.values())


def ehr_prefetch(
    fhir: TestServer, ehr: Ehr, service_id: str, context: dict[str, Any]
) -> dict[str, Any]:
    """What an EHR sends as prefetch: each discovery template rendered and run on its server."""
    services = {s["id"]: s for s in ehr.discovery().json()["services"]}
    with FhirClient(fhir.base) as client:
        return calls.ehr_prefetch(client, services[service_id]["prefetch"], context)


def check_response_shape(response: dict[str, Any]) -> None:
    for card in response["cards"]:
        assert len(card["summary"]) < 140
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"]
        assert card["uuid"]
        if card.get("suggestions"):
            assert card["selectionBehavior"] in ("at-most-one", "any")
        for reason in card.get("overrideReasons", []):
            assert reason["system"] and reason["code"] and reason["display"]


# -- discovery -------------------------------------------------------------------


def test_discovery_lists_the_three_services_with_allowed_tokens(ehr: Ehr) -> None:
    resp = ehr.discovery()
    assert resp.status_code == 200
    services = {s["id"]: s for s in resp.json()["services"]}
    assert {k: v["hook"] for k, v in services.items()} == {
        ORDER_SIGN: "order-sign",
        APPOINTMENT: "appointment-book",
        DISCHARGE: "encounter-discharge",
    }
    for s in services.values():
        assert s["description"] and s["title"]
        for template in s["prefetch"].values():
            for token in re.findall(r"\{\{(.*?)\}\}", template):
                # CDS Hooks 2.0: root-level primitive context fields only
                assert token.strip() in ("context.patientId", "context.encounterId"), token
            assert "{{" not in re.sub(r"\{\{.*?\}\}", "", template)


# -- encounter-discharge: every fixture, both ways ---------------------------------


@pytest.mark.parametrize("name", fixture_names())
def test_discharge_via_fhir_server_gives_evaluates_findings(
    name: str, fhir: TestServer, ehr: Ehr, pack: Pack
) -> None:
    responses = []
    for context in discharge_contexts(fhir, name):
        body = hook_body("encounter-discharge", context, fhirServer=fhir.base)
        resp = ehr.hook(DISCHARGE, body)
        assert resp.status_code == 200, resp.text
        responses.append(resp.json())
    want, billable = expected_codes(pack, name)
    assert sorted(t for r in responses for t in topics(pack, r)) == want
    claim_cards = [
        c for r in responses for c in r["cards"] if c["source"]["topic"]["code"] == "claim-ready"
    ]
    assert len(claim_cards) == billable
    for card in claim_cards:
        [action] = card["suggestions"][0]["actions"]
        assert action["type"] == "create" and action["resource"]["resourceType"] == "Claim"
    for r in responses:
        check_response_shape(r)


@pytest.mark.parametrize("name", ["ex1-hcc-ct", "v12-doc-gaps", "v40-global-group"])
def test_discharge_via_a_server_without_batch_or_includes_gives_the_same_findings(
    name: str, fhir: TestServer, ehr: Ehr, pack: Pack, limited_proxy: LimitedProxy
) -> None:
    """The EHR's fhirServer refuses batch and includes (and says so in its
    CapabilityStatement): the service reads the plain way and finds what it finds on a
    server that does everything."""
    limited_proxy.reset()
    found: list[str] = []
    for context in discharge_contexts(fhir, name):
        body = hook_body("encounter-discharge", context, fhirServer=limited_proxy.base)
        resp = ehr.hook(DISCHARGE, body)
        assert resp.status_code == 200, resp.text
        found += topics(pack, resp.json())
    assert sorted(found) == expected_codes(pack, name)[0]
    assert limited_proxy.counts["refused"] == 0, limited_proxy.counts


@pytest.mark.parametrize("name", fixture_names())
def test_discharge_with_full_prefetch_gives_evaluates_findings(
    name: str, fhir: TestServer, ehr: Ehr, pack: Pack
) -> None:
    found: list[str] = []
    for context in discharge_contexts(fhir, name):
        prefetch = ehr_prefetch(fhir, ehr, DISCHARGE, context)
        # no fhirServer: everything must come from the prefetch
        resp = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context, prefetch=prefetch))
        assert resp.status_code == 200, resp.text
        found += topics(pack, resp.json())
    assert sorted(found) == expected_codes(pack, name)[0]


def test_discharge_card_content(fhir: TestServer, ehr: Ehr, pack: Pack) -> None:
    [context] = discharge_contexts(fhir, "v12-doc-gaps")
    resp = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context, fhirServer=fhir.base))
    cards = {c["source"]["topic"]["code"]: c for c in resp.json()["cards"]}
    rules = {r.finding: r for r in pack.rules}
    for code, card in cards.items():
        if code in rules:
            want = {"high": "critical", "moderate": "warning", "low": "info"}[rules[code].severity]
            assert card["indicator"] == want
            assert card["source"]["topic"]["system"] == _finding_system(pack)
            assert "Procedure/v12-doc-gaps-rfa" in card["detail"]
            assert "searched\\:" in card["detail"]  # the evidence of an absence (escaped)
    billable = expected_codes(pack, "v12-doc-gaps")[1]
    assert ("claim-ready" in cards) == bool(billable)


# -- prefetch semantics --------------------------------------------------------------


def test_partial_prefetch_fetches_the_rest(fhir: TestServer, ehr: Ehr, pack: Pack) -> None:
    [context] = discharge_contexts(fhir, "v16-modifier-51")
    prefetch = ehr_prefetch(fhir, ehr, DISCHARGE, context)
    for k in ("procedures", "coverage", "reports"):
        del prefetch[k]
    without = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context, prefetch=prefetch))
    assert without.status_code == 412  # missing keys and nowhere to fetch them
    assert without.json()["resourceType"] == "OperationOutcome"
    body = hook_body("encounter-discharge", context, prefetch=prefetch, fhirServer=fhir.base)
    resp = ehr.hook(DISCHARGE, body)
    assert resp.status_code == 200, resp.text
    assert topics(pack, resp.json()) == expected_codes(pack, "v16-modifier-51")[0]


def test_null_prefetch_means_no_data(fhir: TestServer, ehr: Ehr, pack: Pack) -> None:
    [context] = discharge_contexts(fhir, "ex1-hcc-ct")
    prefetch = ehr_prefetch(fhir, ehr, DISCHARGE, context)
    prefetch["coverage"] = None  # the EHR says: no Coverage (the server has one)
    body = hook_body("encounter-discharge", context, prefetch=prefetch, fhirServer=fhir.base)
    resp = ehr.hook(DISCHARGE, body)
    assert resp.status_code == 200
    want = engine_codes(pack, "ex1-hcc-ct", drop="Coverage")
    assert "coverage-missing" in want
    assert topics(pack, resp.json()) == want


def test_operation_outcome_prefetch_is_fetched_again(
    fhir: TestServer, ehr: Ehr, pack: Pack
) -> None:
    [context] = discharge_contexts(fhir, "ex1-hcc-ct")
    prefetch = ehr_prefetch(fhir, ehr, DISCHARGE, context)
    prefetch["coverage"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "EHR timed out"}],
    }
    resp = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context, prefetch=prefetch))
    assert resp.status_code == 412  # cannot be had: no fhirServer
    body = hook_body("encounter-discharge", context, prefetch=prefetch, fhirServer=fhir.base)
    resp = ehr.hook(DISCHARGE, body)
    assert resp.status_code == 200
    want = engine_codes(pack, "ex1-hcc-ct")
    assert "coverage-missing" not in want
    assert topics(pack, resp.json()) == want  # the Coverage was read from the server
    # an error entry inside a searchset counts as a failure too
    prefetch["coverage"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": prefetch_outcome(), "search": {"mode": "outcome"}}],
    }
    resp = ehr.hook(DISCHARGE, body | {"prefetch": prefetch})
    assert resp.status_code == 200 and topics(pack, resp.json()) == want


def prefetch_outcome() -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "fatal", "code": "exception", "diagnostics": "backend down"}],
    }


def _searchset(*entries: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": list(entries)}


# (prefetch key, malformed value, what the 422 must name)
MALFORMED_PREFETCH: list[tuple[str, Any, str]] = [
    ("coverage", "Coverage?beneficiary=Patient/p", "prefetch.coverage"),
    ("coverage", [{"resourceType": "Coverage", "id": "c"}], "prefetch.coverage"),
    ("coverage", {"id": "c", "status": "active"}, "prefetch.coverage"),
    ("coverage", {"resourceType": 7}, "prefetch.coverage"),
    ("coverage", {"resourceType": "Bundle", "entry": "x"}, "prefetch.coverage.entry"),
    ("coverage", _searchset("x"), "prefetch.coverage.entry[0]"),
    (
        "coverage",
        _searchset({"fullUrl": "urn:uuid:c", "resource": "x"}),
        "prefetch.coverage.entry[0]",
    ),
    ("coverage", _searchset({"resource": {"id": "c"}}), "prefetch.coverage.entry[0]"),
    ("coverage", {"resourceType": "Patient", "id": "p"}, "prefetch.coverage"),
    (
        "coverage",
        _searchset(
            {"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "match"}}
        ),
        "prefetch.coverage.entry[0]",
    ),
    ("patient", {"resourceType": "Coverage", "id": "c"}, "prefetch.patient"),
    ("conditions", {"resourceType": "Encounter", "id": "e"}, "prefetch.conditions"),
    (
        "conditions",
        {"resourceType": "Bundle", "entry": {"resource": {"resourceType": "Condition"}}},
        "prefetch.conditions.entry",
    ),
]


@pytest.mark.parametrize(("prefetch_key", "value", "where"), MALFORMED_PREFETCH)
def test_malformed_prefetch_is_a_422_naming_the_key(
    ehr: Ehr, prefetch_key: str, value: Any, where: str
) -> None:
    """A prefetch value is a FHIR resource (often a searchset Bundle) or null: anything else is
    the client's error, never read as "no data" (which would show misleading cards)."""
    cpt = {"coding": [{"system": CPT, "code": "47382"}]}
    order = {"resourceType": "ServiceRequest", "id": "sr-1", "status": "draft", "code": cpt}
    orders = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}
    calls = [
        (DISCHARGE, "encounter-discharge", {"patientId": "p", "encounterId": "e"}),
        (ORDER_SIGN, "order-sign", {"patientId": "p", "encounterId": "e", "draftOrders": orders}),
    ]
    services = {s["id"]: s for s in ehr.discovery().json()["services"]}
    for service_id, hook, context in calls:
        nothing = dict.fromkeys(services[service_id]["prefetch"])  # every key: null, no data
        assert ehr.hook(service_id, hook_body(hook, context, prefetch=nothing)).status_code == 200
        alone = nothing | {"patient": {"resourceType": "Patient", "id": "p"}}  # not in a Bundle
        assert ehr.hook(service_id, hook_body(hook, context, prefetch=alone)).status_code == 200
        resp = ehr.hook(
            service_id, hook_body(hook, context, prefetch=nothing | {prefetch_key: value})
        )
        assert resp.status_code == 422, (service_id, resp.status_code, resp.text)
        assert resp.headers["content-type"] == "application/json"
        diagnostics = resp.json()["issue"][0]["diagnostics"]
        assert where in diagnostics and "\n" not in diagnostics, diagnostics
        assert "internal error" not in diagnostics


def test_412_when_the_fhir_server_cannot_be_reached(ehr: Ehr) -> None:
    from .test_hooks_harness import free_port

    context = {"patientId": "p", "encounterId": "e", "userId": "Practitioner/x"}
    resp = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context))
    assert resp.status_code == 412
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    resp = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context, fhirServer=dead))
    assert resp.status_code == 412
    assert "cannot connect" in resp.json()["issue"][0]["diagnostics"]


# -- order-sign / order-select / appointment-book -----------------------------------


# The CRD `covered` value for each fixture's 47382 order, written out by hand from the
# domain (not from the service's rule): the setting must be an ASC (POS 24), an outpatient
# (19, 22) or inpatient (21) hospital, and a confirmed, billable liver-tumor diagnosis must
# support it. "covered" when both hold; "conditional" while either is missing or unknown;
# "not-covered" in another setting; None when no Coverage is active on the date (nothing
# to assert). Fixtures without a completed 47382 Procedure (v01, v02, v28, v32) have no row.
ORDER_COVERED: dict[str, str | dict[str, str] | None] = {
    "ex1-hcc-ct": "covered",  # Location POS 22, C22.0
    "ex2-crc-mets-us": "covered",  # Location POS 24, C78.7
    "ex3-large-palliative": "covered",  # no POS coding, inpatient encounter (IMP: 21), C22.0
    "v03-laparoscopic": "covered",  # POS 22, C22.0 (its finding is the approach, after the fact)
    "v04-cryo": "covered",
    "v05-microwave": "covered",
    "v06-two-in-session": "covered",  # both Procedures: POS 22, C22.0
    "v07-no-liver-dx": "conditional",  # only cirrhosis (K74.60); the reason is a missing Condition
    "v08-no-rationale": "covered",
    "v09-office": "not-covered",  # Location POS 11, an office
    "v10-pos-unknown": "conditional",  # a HOSP Location without POS, ambulatory: setting unknown
    "v11-coverage-expired": None,  # the Coverage ended 2025-12-31, the order is for 2026-10-14
    "v12-doc-gaps": "covered",
    "v13-specialty": "covered",
    "v14-no-provider": "covered",
    "v15-messy-transaction": "covered",  # POS 22 through urn:uuid, C22.0 written C220
    "v16-modifier-51": "covered",
    "v17-five-tumors": "covered",
    "v18-history-not-approach": "covered",  # C22.0 confirmed (the C78.7 is refuted)
    "v19-dx-provisional": "conditional",  # C22.0 only provisional: not coded
    "v20-dx-invalid": "covered",  # C22.0 confirmed; the other code is invalid, not missing
    "v21-excludes1": "covered",  # C22.0 and C78.7 both confirmed
    "v22-two-guidance": "covered",
    "v23-needle-guidance": "covered",
    "v24-ptp-biopsy": "covered",  # both Procedures: POS 22, C22.0
    "v25-npi": "covered",  # both Procedures: POS 22, C22.0
    "v26-global-period": "covered",  # both Procedures: POS 22, C22.0
    "v27-modifier-22": "covered",
    "v29-same-day-two-encounters": "covered",  # both at a POS 22 Location (the later one IMP)
    "v30-anesthesiologist-first": "covered",  # both Procedures: POS 22, C22.0
    "v31-facility-missing": "covered",  # no Location; the encounter's serviceType says POS 22
    "v39-long-note": "covered",  # POS 22, C22.0 (its note is longer than the pack reads)
    "v33-billing-group": "covered",  # both Procedures: POS 22, C22.0
    "v35-teaching-physician": "covered",  # both Procedures: POS 22, C22.0
    "v37-facility-npi": "covered",  # both Procedures: POS 22, C22.0
    "v38-coder-queries": "covered",  # all three Procedures: POS 22, C22.0
    "v40-global-group": "covered",  # both Procedures: POS 22, C22.0
    "v41-global-unknown": "covered",  # POS 22, C22.0 (the earlier 50592 is no case)
    "v42-code-set-year": "covered",  # both: POS 22, C22.0, Coverage of their own year
    "v51-documentation-conflicts": "covered",  # both Procedures: POS 22, C22.0
    "v52-attachment-not-read": "covered",  # POS 22, C22.0 (its PDF report is not read)
    # The payer cases: an order-sign request brings the patient, Coverage, Conditions and
    # encounter, no note and no size Observation: what only they state is unknown to the
    # overlay (conditional); the coded histology decides (a lung primary, a NET for Highmark).
    "v43-same-case-aetna": "conditional",  # the 4.5 cm is in an Observation an order does not read
    "v43-same-case-anthem": "conditional",  # an order has no note: not a candidate, extrahepatic disease, foci unknown
    "v43-same-case-bcbsa": "conditional",  # inoperability is in the note only
    "v43-same-case-highmark": "conditional",  # not a surgical candidate: in the note only
    "v43-same-case-medicare": "covered",  # no criteria of its own
    "v44-payer-bcbsa-large": "conditional",  # the 6.5 cm is not known to the order
    "v45-payer-declined-bcbsa": "conditional",
    "v46-payer-declined-anthem": "conditional",  # the refusal is in the note only
    "v47-payer-aetna-criteria-1": {
        "v47-aetna-meets-rfa": "conditional",
        "v47-aetna-lung-primary-rfa": "not-covered",
        "v47-aetna-extrahepatic-rfa": "conditional",
    },
    "v47-payer-aetna-criteria-2": {
        "v47-aetna-no-staging-rfa": "conditional",
        "v47-aetna-foci-unstated-rfa": "conditional",
        "v47-aetna-declined-rfa": "conditional",
    },
    "v47-payer-aetna-criteria-3": {
        "v47-aetna-no-size-rfa": "conditional",
        "v47-aetna-share-60-rfa": "conditional",
        "v47-aetna-share-unstated-rfa": "conditional",
    },
    "v48-payer-bcbsa-criteria-1": {
        "v48-bcbsa-lung-primary-rfa": "not-covered",
        "v48-bcbsa-bridge-rfa": "conditional",
        "v48-bcbsa-no-size-rfa": "conditional",
    },
    "v48-payer-bcbsa-criteria-2": {
        "v48-bcbsa-net-refractory-rfa": "conditional",
        "v48-bcbsa-net-unstated-rfa": "conditional",
    },
    "v49-payer-anthem-criteria-1": {
        "v49-anthem-lung-primary-rfa": "not-covered",
        "v49-anthem-listed-only-rfa": "conditional",
        "v49-anthem-large-rfa": "conditional",
    },
    "v49-payer-anthem-criteria-2": {
        "v49-anthem-extrahepatic-rfa": "conditional",
        "v49-anthem-no-staging-rfa": "conditional",
        "v49-anthem-untreatable-rfa": "conditional",
    },
    "v49-payer-anthem-criteria-3": {
        "v49-anthem-foci-unstated-rfa": "conditional",
        "v49-anthem-net-functioning-rfa": "conditional",
        "v49-anthem-net-nonfunctioning-rfa": "conditional",
    },
    "v49-payer-anthem-criteria-4": {"v49-anthem-net-unstated-rfa": "conditional"},
    "v50-payer-highmark-criteria-1": {
        "v50-highmark-net-rfa": "not-covered",
        "v50-highmark-declined-rfa": "conditional",
        "v50-highmark-bridge-rfa": "conditional",
    },
    "v50-payer-highmark-criteria-2": {
        "v50-highmark-bridge-child-pugh-c-rfa": "conditional",
        "v50-highmark-four-nodules-rfa": "conditional",
        "v50-highmark-crc-rfa": "conditional",
    },
    "v50-payer-highmark-criteria-3": {"v50-highmark-crc-large-rfa": "conditional"},
}


@pytest.mark.parametrize("name", fixture_names())
def test_order_sign_shows_what_would_block_the_claim(
    name: str, fhir: TestServer, ehr: Ehr, pack: Pack
) -> None:
    outs = {o.evaluation.procedure: o for o in evaluate_paths([CASES / f"{name}.json"], pack)}
    for proc in stored_procedures(fhir, name):
        if proc["status"] != "completed":
            continue
        order = draft_order(proc)
        body = hook_body("order-sign", order_context(proc, [order]), fhirServer=fhir.base)
        resp = ehr.hook(ORDER_SIGN, body)
        assert resp.status_code == 200, resp.text
        result = resp.json()
        check_response_shape(result)
        [evaluated] = [o for k, o in outs.items() if k.endswith(proc["id"])] or [
            o for o in outs.values() if o.evaluation.procedure.startswith("urn:")
        ]
        want = sorted({f.code for f in evaluated.evaluation.findings} & ORDER_CHECKS)
        assert topics(pack, result) == want
        doc = [
            c
            for c in result["cards"]
            if c["source"]["topic"]["code"] == "documentation-requirements"
        ]
        assert len(doc) == 1 and "Tumor size" in doc[0]["detail"]
        severity = {f.code: f.severity for f in evaluated.evaluation.findings}
        for card in result["cards"]:
            if card["source"]["topic"]["system"] == _finding_system(pack):
                code = card["source"]["topic"]["code"]
                # an office (POS 11) is moderate since the coding review: a warning
                assert card["indicator"] == ("critical" if severity[code] == "high" else "warning")
                assert f"ServiceRequest/{order['id']}" in card["detail"]
        actions = result.get("systemActions", [])
        expected = ORDER_COVERED[name]
        if isinstance(expected, dict):  # a Bundle of cases under one payer: one each
            expected = expected[proc["id"]]
        if expected is None:
            assert "coverage-missing" in want
            assert actions == []  # no Coverage to name in the CRD extension
            continue
        [action] = actions
        assert action["type"] == "update" and action["resource"]["id"] == order["id"]
        assert {k: v for k, v in action["resource"].items() if k != "extension"} == order
        [ext] = action["resource"]["extension"]
        parts = {e["url"]: e for e in ext["extension"]}
        assert ext["url"] == (
            "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
        )
        assert parts["covered"]["valueCode"] == expected, proc["id"]
        assert ("pa-needed" in parts) == (expected != "not-covered")
        assert parts["coverage"]["valueReference"]["reference"].startswith("Coverage/")
        assert parts["doc-needed"]["valueCode"] == "clinical"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", parts["date"]["valueDate"])
        assert parts["coverage-assertion-id"]["valueString"]


def test_order_sign_clean_and_blocked_from_prefetch(fhir: TestServer, ehr: Ehr, pack: Pack) -> None:
    """The same answers from prefetch alone (the order's location is then not readable;
    the setting comes from the encounter the order names)."""
    assert "diagnosis-unsupported" in order_codes(pack, "v07-no-liver-dx")
    for name in ("ex1-hcc-ct", "v07-no-liver-dx"):
        want = order_codes(pack, name)
        [proc] = stored_procedures(fhir, name)
        order = draft_order(proc)
        context = order_context(proc, [order])
        prefetch = ehr_prefetch(fhir, ehr, ORDER_SIGN, context)
        resp = ehr.hook(ORDER_SIGN, hook_body("order-sign", context, prefetch=prefetch))
        assert resp.status_code == 200, resp.text
        assert topics(pack, resp.json()) == want
        assert len(resp.json()["systemActions"]) == 1


def test_order_sign_ignores_other_orders_and_repeats_nothing(
    fhir: TestServer, ehr: Ehr, pack: Pack
) -> None:
    [proc] = stored_procedures(fhir, "ex1-hcc-ct")
    other = {
        "resourceType": "ServiceRequest",
        "id": "sr-ct",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": CPT, "code": "74177"}]},
        "subject": proc["subject"],
    }
    resp = ehr.hook(ORDER_SIGN, hook_body("order-sign", order_context(proc, [other])))
    assert resp.json() == {"cards": []}  # nothing to say, nothing fetched (no fhirServer needed)
    order = draft_order(proc)
    body = hook_body("order-sign", order_context(proc, [order, other]), fhirServer=fhir.base)
    first = ehr.hook(ORDER_SIGN, body).json()
    [action] = first["systemActions"]
    # the EHR applied the update; signing again asserts nothing new
    body["context"]["draftOrders"]["entry"][0]["resource"] = action["resource"]
    again = ehr.hook(ORDER_SIGN, body).json()
    assert "systemActions" not in again


def test_order_select_looks_at_the_selection_only(fhir: TestServer, ehr: Ehr, pack: Pack) -> None:
    [good] = stored_procedures(fhir, "ex1-hcc-ct")
    a = draft_order(good)
    b = a | {"id": "sr-next-year", "occurrenceDateTime": "2027-03-01"}  # after the Coverage ends
    context = order_context(good, [a, b])
    base = order_codes(pack, "ex1-hcc-ct")
    for selected, want in ((a, base), (b, sorted({*base, "coverage-missing"}))):
        context["selections"] = [f"ServiceRequest/{selected['id']}"]
        resp = ehr.hook(ORDER_SIGN, hook_body("order-select", context, fhirServer=fhir.base))
        assert resp.status_code == 200, resp.text
        assert topics(pack, resp.json()) == want
        # CRD: a secondary hook's coverage information never says doc-needed clinical/admin
        for action in resp.json().get("systemActions", []):
            [ext] = action["resource"]["extension"]
            assert "doc-needed" not in {e["url"] for e in ext["extension"]}


@pytest.mark.parametrize("name", ["ex1-hcc-ct", "v09-office"])
def test_appointment_book(name: str, fhir: TestServer, ehr: Ehr, pack: Pack) -> None:
    want = order_codes(pack, name)
    [proc] = stored_procedures(fhir, name)
    appt = {
        "resourceType": "Appointment",
        "id": f"appt-{proc['id']}",
        "status": "proposed",
        "serviceType": [{"coding": [{"system": CPT, "code": "47382"}]}],
        "reasonReference": proc.get("reasonReference", []),
        "start": proc.get("performedDateTime") or proc["performedPeriod"]["start"],
        "participant": [
            {"actor": proc["subject"], "status": "accepted"},
            *({"actor": p["actor"], "status": "accepted"} for p in proc.get("performer", [])),
            # where it will be done (the setting comes from here, not the booking encounter)
            *([{"actor": proc["location"], "status": "accepted"}] if proc.get("location") else []),
        ],
    }
    context = {
        **discharge_context(proc),
        "appointments": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": appt}],
        },
    }
    resp = ehr.hook(APPOINTMENT, hook_body("appointment-book", context, fhirServer=fhir.base))
    assert resp.status_code == 200, resp.text
    assert topics(pack, resp.json()) == want
    [action] = resp.json()["systemActions"]
    assert action["resource"]["resourceType"] == "Appointment"


# -- bad input -----------------------------------------------------------------------


def test_bad_requests_get_a_status_and_json(ehr: Ehr) -> None:
    context = {"patientId": "p", "encounterId": "e"}
    cases: list[tuple[str, Any, int]] = [
        (DISCHARGE, b"{not json", 400),
        (DISCHARGE, [1, 2], 400),
        (DISCHARGE, {"hook": "encounter-discharge", "context": context}, 422),  # no hookInstance
        (DISCHARGE, hook_body("order-sign", context), 422),  # wrong hook for the service
        (DISCHARGE, hook_body("encounter-discharge", {"patientId": "p"}), 422),
        (DISCHARGE, hook_body("encounter-discharge", {**context, "encounterId": "a/b"}), 400),
        # ids must be FHIR ids: no lists, no query syntax, no over-long values
        (DISCHARGE, hook_body("encounter-discharge", {**context, "patientId": "p1,p2"}), 400),
        (DISCHARGE, hook_body("encounter-discharge", {**context, "patientId": "p&_id=x"}), 400),
        (DISCHARGE, hook_body("encounter-discharge", {**context, "encounterId": "e" * 65}), 400),
        (DISCHARGE, hook_body("encounter-discharge", {**context, "patientId": ""}), 400),
        (DISCHARGE, hook_body("encounter-discharge", {**context, "patientId": 7}), 400),
        (
            DISCHARGE,
            hook_body("encounter-discharge", {**context, "userId": "Practitioner/a,b"}),
            400,
        ),
        (DISCHARGE, hook_body("encounter-discharge", {**context, "userId": "x"}), 400),
        (ORDER_SIGN, hook_body("order-sign", {"patientId": "p1,p2", "draftOrders": {}}), 400),
        (
            DISCHARGE,
            hook_body("encounter-discharge", context, fhirServer="http://ehr.example.org/fhir"),
            422,  # plain http beyond loopback
        ),
        (
            DISCHARGE,
            hook_body("encounter-discharge", context, fhirAuthorization={"access_token": "t"}),
            422,  # a token without a server
        ),
        (ORDER_SIGN, hook_body("order-sign", {"patientId": "p", "draftOrders": []}), 422),
        # an empty token would mean reading without authentication: refused, not sent
        (
            DISCHARGE,
            hook_body(
                "encounter-discharge",
                context,
                fhirServer="https://ehr.example.org/fhir",
                fhirAuthorization={"access_token": "", "token_type": "Bearer"},
            ),
            400,
        ),
        (
            DISCHARGE,
            hook_body(
                "encounter-discharge",
                context,
                fhirServer="https://ehr.example.org/fhir",
                fhirAuthorization={"access_token": " \t", "token_type": "Bearer"},
            ),
            400,
        ),
        ("no-such-service", hook_body("order-sign", context), 404),
    ]
    for service_id, body, status in cases:
        resp = ehr.post(f"/cds-services/{service_id}", body)
        assert resp.status_code == status, (body, resp.text)
        assert resp.headers["content-type"] == "application/json"
        assert "Traceback" not in resp.text
        if status != 401:
            assert resp.json()["resourceType"] == "OperationOutcome"
    resp = ehr.http.get(ehr.url(f"/cds-services/{DISCHARGE}"), timeout=10)
    assert resp.status_code == 405 and resp.json()["resourceType"] == "OperationOutcome"


# -- feedback --------------------------------------------------------------------------


def test_feedback_is_stored_once_and_summarised(
    fhir: TestServer, ehr: Ehr, service: HookServer, capsys: pytest.CaptureFixture[str]
) -> None:
    [context] = discharge_contexts(fhir, "v12-doc-gaps")
    cards = ehr.hook(
        DISCHARGE, hook_body("encounter-discharge", context, fhirServer=fhir.base)
    ).json()["cards"]
    findings = [c for c in cards if c.get("overrideReasons")]
    assert len(findings) >= 2
    first, energy = findings[0], findings[1]
    first_topic, energy_topic = (c["source"]["topic"]["code"] for c in (first, energy))
    feedback = {
        "feedback": [
            {
                "card": first["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": sg["uuid"]} for sg in first.get("suggestions", [])],
                "outcomeTimestamp": "2026-11-27T10:05:31Z",
            },
            {
                "card": energy["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": energy["overrideReasons"][1],
                    "userComment": "will add the generator log",
                },
                "outcomeTimestamp": "2026-11-27T10:06:00Z",
            },
        ]
    }
    path = f"/cds-services/{DISCHARGE}/feedback"
    for _ in range(2):  # sent twice: stored once
        resp = ehr.post(path, feedback)
        assert resp.status_code == 200, resp.text
    assert ehr.post(path, feedback, token=None).status_code == 401
    bad = {"feedback": [{"card": "x", "outcome": "ignored", "outcomeTimestamp": "now"}]}
    assert ehr.post(path, bad).status_code == 422
    odd_reason = copy.deepcopy(feedback)
    odd_reason["feedback"][1]["overrideReason"]["reason"] = {"code": "x", "system": {"a": 1}}
    assert ehr.post(path, odd_reason).status_code == 422  # not a 500 from SQLite
    db = service.app.state.service.config.feedback_db
    assert main(["feedback", "--feedback-db", str(db), "--format", "json"]) == 0
    rows = {(r["service"], r["topic"]): r for r in json.loads(capsys.readouterr().out)["topics"]}
    assert rows[(DISCHARGE, first_topic)]["accepted"] == 1
    energy_row = rows[(DISCHARGE, energy_topic)]
    assert energy_row["overridden"] == 1
    assert energy_row["override_reasons"] == {"will-document": 1}
    assert energy_row["shown"] >= 1
    assert main(["feedback", "--feedback-db", str(db)]) == 0
    assert energy_topic in capsys.readouterr().out


def test_feedback_command_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["feedback", "--feedback-db", str(tmp_path / "none.sqlite3")]) == 2
    assert "no feedback database" in capsys.readouterr().err


# -- the fhirAuthorization token -----------------------------------------------------


def test_fhir_token_goes_to_the_fhir_server_only(
    fhir: TestServer, ehr: Ehr, pack: Pack, caplog: pytest.LogCaptureFixture
) -> None:
    """Absolute references to another origin, and a foreign fullUrl in the prefetch, never
    make the service send the token there; it appears in no response and no log."""
    from .test_hooks_harness import Origin

    foreign = Origin(lambda path: {"resourceType": "Practitioner", "id": "x"})
    token = "tok-" + "s3cr3t" * 6
    try:
        with FhirClient(fhir.base) as client:
            proc = copy.deepcopy(client.read("Procedure", "ex2-crc-mets-us-rfa"))
            proc["id"] = "leak-test-rfa"
            proc["identifier"] = [{"system": "urn:test", "value": "leak-test"}]
            proc["performer"] = [{"actor": {"reference": f"{foreign.base}/fhir/Practitioner/x"}}]
            proc["report"] = [{"reference": f"{foreign.base}/fhir/DiagnosticReport/elsewhere"}]
            client.transaction(
                {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {
                            "resource": proc,
                            "request": {"method": "PUT", "url": "Procedure/leak-test-rfa"},
                        }
                    ],
                }
            )
        fhir.admin("auth", {"required": True})
        fhir.admin("tokens", {"token": token, "expires_in": 300})
        context = discharge_context(proc)
        caplog.set_level("DEBUG")
        auth = {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "x"}
        body = hook_body(
            "encounter-discharge", context, fhirServer=fhir.base, fhirAuthorization=auth
        )
        resp = ehr.hook(DISCHARGE, body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["cards"]
        # partial prefetch with a foreign fullUrl: still only the FHIR server is read
        prefetch = {
            "patient": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [
                    {
                        "fullUrl": f"{foreign.base}/fhir/Patient/{context['patientId']}",
                        "resource": {"resourceType": "Patient", "id": context["patientId"]},
                    }
                ],
            }
        }
        resp = ehr.hook(DISCHARGE, body | {"prefetch": prefetch})
        assert resp.status_code == 200, resp.text
        assert token not in resp.text
        # a token the server refuses: 412, and the message does not repeat it
        wrong = body | {"fhirAuthorization": auth | {"access_token": token + "-wrong"}}
        resp = ehr.hook(DISCHARGE, wrong)
        assert resp.status_code == 412
        assert token not in resp.text
    finally:
        fhir.admin("auth", {"required": False})
        fhir.admin("tokens", {}, method="DELETE")
        foreign.stop()
    assert all(token not in json.dumps(headers) for _, _, headers in foreign.seen)
    assert foreign.seen == []
    assert token not in caplog.text


def test_cards_and_fhir_requests_per_call_are_bounded(fhir: TestServer, ehr: Ehr) -> None:
    """Reading through fhirServer reuses `run`'s gathering: a search page and <= 2 batches per case."""
    [context] = discharge_contexts(fhir, "v06-two-in-session")
    body = hook_body("encounter-discharge", context, fhirServer=fhir.base)
    ehr.hook(DISCHARGE, body)  # the service has checked this server's /metadata now
    before = collections.Counter(fhir.counts())
    resp = ehr.hook(DISCHARGE, body | {"hookInstance": "second"})
    assert resp.status_code == 200
    used = collections.Counter(fhir.counts())
    used.subtract(before)
    requests = {k: v for k, v in used.items() if v}
    cases = 2
    assert requests.get("GET Procedure") == 1  # the search page
    assert requests.get("POST base", 0) <= 2 * cases  # <= 2 batches per case (reads only)
    assert set(requests) <= {"GET Procedure", "POST base"}


def test_the_services_name_findings_the_pack_has(pack: Pack) -> None:
    """A renamed finding code in the pack must not silently empty the order cards."""
    from fhir_adapter.hooks.cards import DOCUMENTATION_RULES
    from fhir_adapter.hooks.handlers import ORDER_CHECKS as SERVICE_CHECKS

    assert set(SERVICE_CHECKS) == ORDER_CHECKS
    assert set(pack.finding_codes()) >= ORDER_CHECKS
    assert set(DOCUMENTATION_RULES) <= set(pack.finding_codes())


def test_malformed_orders_get_422_not_500(ehr: Ehr) -> None:
    """Wrong shapes inside a draft order or appointment are the caller's error, said in an
    OperationOutcome that names the element; never a 500, never a silent empty answer."""
    cpt = {"coding": [{"system": CPT, "code": "47382"}]}
    order = {"resourceType": "ServiceRequest", "id": "sr-1", "status": "draft", "code": cpt}
    appt = {"resourceType": "Appointment", "id": "a-1", "status": "proposed", "serviceType": [cpt]}

    def orders(*resources: Any, entry: Any = None) -> dict[str, Any]:
        bundle = {"resourceType": "Bundle", "type": "collection"}
        bundle["entry"] = [{"resource": r} for r in resources] if entry is None else entry
        return {"patientId": "p", "encounterId": "e", "draftOrders": bundle}

    def appointments(*resources: Any) -> dict[str, Any]:
        bundle = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}
        return {"patientId": "p", "appointments": bundle}

    cases: list[tuple[str, dict[str, Any], str]] = [
        (
            ORDER_SIGN,
            hook_body("order-sign", orders(order | {"occurrencePeriod": "x"})),
            "occurrencePeriod",
        ),
        (ORDER_SIGN, hook_body("order-sign", orders(entry="x")), "entry"),
        (ORDER_SIGN, hook_body("order-sign", orders(entry=["x"])), "entry[0]"),
        (ORDER_SIGN, hook_body("order-sign", orders(entry=[{"resource": "x"}])), "entry[0]"),
        (ORDER_SIGN, hook_body("order-sign", orders(order | {"performer": "x"})), "performer"),
        (
            ORDER_SIGN,
            hook_body("order-sign", orders(order | {"locationReference": ["x"]})),
            "locationReference",
        ),
        (ORDER_SIGN, hook_body("order-sign", orders(order | {"locationCode": {}})), "locationCode"),
        (
            ORDER_SIGN,
            hook_body("order-sign", orders(order | {"reasonReference": [1]})),
            "reasonReference",
        ),
        (
            ORDER_SIGN,
            hook_body("order-sign", orders(order | {"encounter": "Encounter/e"})),
            "encounter",
        ),
        (ORDER_SIGN, hook_body("order-sign", orders(order | {"code": ["x"]})), "code"),
        (ORDER_SIGN, hook_body("order-sign", orders(order | {"id": 5})), "id"),
        (  # once a silent 200 with no cards: the order went unchecked
            ORDER_SIGN,
            hook_body("order-sign", orders({k: v for k, v in order.items() if k != "id"})),
            "context.draftOrders.entry[0].resource.id",
        ),
        (ORDER_SIGN, hook_body("order-sign", orders(order | {"extension": "x"})), "extension"),
        (
            APPOINTMENT,
            hook_body("appointment-book", appointments(appt | {"participant": ["x"]})),
            "participant",
        ),
        (
            APPOINTMENT,
            hook_body("appointment-book", appointments(appt | {"participant": [{"actor": "x"}]})),
            "participant[0].actor",
        ),
        (
            APPOINTMENT,
            hook_body("appointment-book", appointments(appt | {"requestedPeriod": "x"})),
            "requestedPeriod",
        ),
        (
            APPOINTMENT,
            hook_body("appointment-book", appointments(appt | {"serviceType": "x"})),
            "serviceType",
        ),
    ]
    for service_id, body, where in cases:
        resp = ehr.post(f"/cds-services/{service_id}", body)
        assert resp.status_code == 422, (where, resp.status_code, resp.text)
        assert resp.headers["content-type"] == "application/json"
        diagnostics = resp.json()["issue"][0]["diagnostics"]
        assert where in diagnostics, (where, diagnostics)
        assert "Traceback" not in resp.text and "internal error" not in resp.text


POS_SYSTEM = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"


def _ed_encounter(proc: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": "ed-visit-1",
        "status": "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "EMER",
            "display": "emergency",
        },
        "subject": proc["subject"],
        "period": {"start": "2026-11-27T08:00:00Z"},
    }


def _ext_parts(action: dict[str, Any]) -> dict[str, Any]:
    [ext] = action["resource"]["extension"]
    return {e["url"]: e for e in ext["extension"]}


def test_an_order_signed_in_the_ed_is_not_judged_by_the_ed_setting(
    fhir: TestServer, ehr: Ehr, pack: Pack
) -> None:
    """The encounter an order is signed in is where it was ordered, not where the ablation
    will be done: no setting card from it, and coverage stays conditional."""
    [proc] = stored_procedures(fhir, "ex1-hcc-ct")
    assert order_codes(pack, "ex1-hcc-ct") == []
    ed = _ed_encounter(proc)
    order = {
        k: v for k, v in draft_order(proc).items() if k not in ("encounter", "locationReference")
    }
    context = order_context(proc, [order]) | {"encounterId": ed["id"]}
    prefetch = {
        "encounter": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": ed}]}
    }
    body = hook_body("order-sign", context, fhirServer=fhir.base, prefetch=prefetch)
    resp = ehr.hook(ORDER_SIGN, body)
    assert resp.status_code == 200, resp.text
    assert topics(pack, resp.json()) == []  # no place-of-service-not-covered
    [action] = resp.json()["systemActions"]
    assert _ext_parts(action)["covered"]["valueCode"] == "conditional"
    # the order's own setting decides: an ASC is covered, an office is not
    for pos, covered, want in (
        ("24", "covered", []),
        ("11", "not-covered", ["place-of-service-not-covered"]),
    ):
        located = order | {"locationCode": [{"coding": [{"system": POS_SYSTEM, "code": pos}]}]}
        body["context"] = order_context(proc, [located]) | {"encounterId": ed["id"]}
        resp = ehr.hook(ORDER_SIGN, body)
        assert resp.status_code == 200, resp.text
        assert topics(pack, resp.json()) == want, pos
        [action] = resp.json()["systemActions"]
        assert _ext_parts(action)["covered"]["valueCode"] == covered, pos


def test_cards_are_recorded_before_the_answer_goes_out(
    fhir: TestServer, ehr: Ehr, service: HookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feedback may arrive as soon as the EHR has the cards: by then they are in the log
    (not written by a background task that may come later, or never)."""
    import sqlite3
    import time

    store = service.app.state.service.feedback
    record = store.record_cards

    def slow_record(*args: Any) -> None:
        time.sleep(0.5)
        record(*args)

    monkeypatch.setattr(store, "record_cards", slow_record)
    [context] = discharge_contexts(fhir, "v12-doc-gaps")
    resp = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context, fhirServer=fhir.base))
    uuids = {c["uuid"] for c in resp.json()["cards"]}
    assert uuids
    with sqlite3.connect(service.app.state.service.config.feedback_db) as db:
        stored = {u for (u,) in db.execute("SELECT uuid FROM cards")}
    assert uuids <= stored


def test_discharge_ignores_a_procedure_entered_in_error(
    fhir: TestServer, ehr: Ehr, pack: Pack
) -> None:
    """A voided duplicate of the 47382 Procedure in the prefetch gives no cards of its own."""
    [context] = discharge_contexts(fhir, "ex1-hcc-ct")
    prefetch = ehr_prefetch(fhir, ehr, DISCHARGE, context)
    plain = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context, prefetch=prefetch))
    copied = 0
    for bundle in prefetch.values():
        for entry in list((bundle or {}).get("entry") or []):
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "Procedure" and "47382" in str(resource["code"]):
                twin = {**resource, "id": f"{resource['id']}-voided", "status": "entered-in-error"}
                bundle["entry"].append({"fullUrl": f"Procedure/{twin['id']}", "resource": twin})
                copied += 1
    assert copied >= 1
    voided = ehr.hook(DISCHARGE, hook_body("encounter-discharge", context, prefetch=prefetch))
    assert voided.status_code == plain.status_code == 200
    assert topics(pack, voided.json()) == topics(pack, plain.json())
    assert len(voided.json()["cards"]) == len(plain.json()["cards"]) >= 1
