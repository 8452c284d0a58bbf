"""End to end against a real FHIR server (Medplum's router + memory store, started on loopback)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_adapter import AdapterError
from fhir_adapter.cli import main
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.errors import ServerError
from fhir_adapter.pipeline import run_on_server
from fhir_adapter.testing.catalog import list_fixtures, load_fixtures

from .fhir_server.harness import TestServer

pytestmark = pytest.mark.server

OUTPUT_SYSTEM = "http://fhir-adapter.org/fhir/sid/cpt-47382-evaluation"


def _all(client: FhirClient, rtype: str, **params: str) -> list[dict[str, Any]]:
    return list(client.search(rtype, [*params.items(), ("_count", "200")]))


def _written(client: FhirClient) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """procedure -> Claim, procedure -> codes of its live DetectedIssues."""
    claims = {}
    for claim in _all(client, "Claim"):
        if claim.get("status") != "cancelled":
            ref = claim["item"][0].get("encounter", [{}])[0].get("reference")
            claims[claim["identifier"][1]["value"]] = {**claim, "_enc": ref}
    issues: dict[str, set[str]] = {}
    for issue in _all(client, "DetectedIssue"):
        if issue.get("status") == "final":
            proc = issue["implicated"][0]["reference"]
            issues.setdefault(proc, set()).add(issue["code"]["coding"][0]["code"])
    return claims, issues


def _put(client: FhirClient, resource: dict[str, Any]) -> None:
    """Update a resource on the server (a one-entry transaction)."""
    url = f"{resource['resourceType']}/{resource['id']}"
    client.transaction(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": resource, "request": {"method": "PUT", "url": url}}],
        }
    )


def _expected() -> dict[str, dict[str, Any]]:
    return {c["procedure"]: c for f in list_fixtures() for c in f.expected}


def test_run_writes_what_the_fixtures_expect(
    server: TestServer, read_base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Also through the proxy that does no batch, transaction or includes: read the plain
    way, written entry by entry, the same cases and results."""
    assert main(["fixtures", "load", "--base-url", server.base]) == 0
    assert main(["run", "--base-url", read_base, "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    expected = _expected()
    assert {c["procedure"] for c in report["cases"]} == set(expected)
    reads = [c["reads"] for c in report["cases"]]
    if read_base == server.base:
        assert max(reads) <= 2
    else:  # one request per search, read and include, never a batch
        assert min(reads) > 2

    with FhirClient(server.base) as client:
        claims, issues = _written(client)
        by_proc = {c["procedure"]: c for c in report["cases"]}
        for proc, want in expected.items():
            assert issues.get(proc, set()) == set(want["findings"]), proc
            claim = [r for r in by_proc[proc]["resources"] if r["resourceType"] == "Claim"]
            assert bool(claim) == (want["outcome"] == "claim"), proc
            if claim:
                token = claim[0]["identifier"][1]["value"]
                stored = claims[token]
                assert stored["patient"] == claim[0]["patient"]
                mods = {m["coding"][0]["code"] for m in stored["item"][0].get("modifier", [])}
                # the 47382 line as written by hand (GC is a line modifier, not the case's)
                assert mods == set(want["claim"]["lines"][0]["modifiers"]), proc
        assert len(claims) == sum(1 for w in expected.values() if w["outcome"] == "claim")


def test_rerun_writes_nothing_and_duplicates_nothing(server: TestServer, read_base: str) -> None:
    """Through the proxy the writes go entry by entry (conditional creates and updates):
    as idempotent as one transaction per case."""
    # through the proxy, a few cases (claims, blocks, several findings) keep it quick
    names = (
        None if read_base == server.base else ["ex1-hcc-ct", "v06-two-in-session", "v12-doc-gaps"]
    )
    with FhirClient(server.base) as client, FhirClient(read_base) as target:
        load_fixtures(client, names)
        first = run_on_server(target, concurrency=4)
        counts = (len(_all(client, "Claim")), len(_all(client, "DetectedIssue")))
        second = run_on_server(target, concurrency=4)
        assert (len(_all(client, "Claim")), len(_all(client, "DetectedIssue"))) == counts
        assert sum(r.written for r in first) == len(first)
        assert sum(r.written for r in second) == 0
        # loading the fixtures again stores no second copy either
        load_fixtures(client, names)
        procedures = _all(client, "Procedure", code="http://www.ama-assn.org/go/cpt|47382")
        assert len(procedures) == len(first)


def test_changed_evaluation_updates_in_place(server: TestServer, read_base: str) -> None:
    with FhirClient(server.base) as client, FhirClient(read_base) as target:
        load_fixtures(client, ["v12-doc-gaps", "ex1-hcc-ct"])
        run_on_server(target)
        before = {i["identifier"][0]["value"]: i for i in _all(client, "DetectedIssue")}
        # Documentation arrives for v12: energy and guidance now documented.
        proc = client.read("Procedure", "v12-doc-gaps-rfa")
        proc["note"][0]["text"] += " Under CT guidance, RF energy was applied at 150 W."
        _put(client, proc)
        # ex1 turns out not completed: its Claim must be cancelled, an issue raised.
        ex1 = client.read("Procedure", "ex1-hcc-ct-rfa")
        ex1["status"] = "in-progress"
        _put(client, ex1)
        # Taken entry by entry (a server without transactions), any prefix of ex1's write
        # is safe: its Claim is withdrawn first, before the issue that blocks it is raised.
        planned = {
            r.output.evaluation.procedure: r.transaction
            for r in run_on_server(target, dry_run=True)
        }
        steps = [
            (e["resource"]["resourceType"], e["resource"]["status"])
            for e in planned["Procedure/ex1-hcc-ct-rfa"]["entry"]
        ]
        assert steps[0] == ("Claim", "cancelled") and steps.count(("Claim", "cancelled")) == 1
        results = run_on_server(target)
        assert all(r.written for r in results)
        after = {i["identifier"][0]["value"]: i for i in _all(client, "DetectedIssue")}
        cancelled = {v["code"]["text"] for v in after.values() if v["status"] == "cancelled"}
        assert cancelled == {"doc-energy", "doc-imaging-guidance"}
        assert set(before) <= set(after)  # updated in place, never re-created
        # + procedure-not-completed for ex1, + service-not-billed for v12: its note now
        # documents CT guidance and no guidance Procedure bills it
        assert len(after) == len(before) + 2
        claims = {c["identifier"][1]["value"]: c["status"] for c in _all(client, "Claim")}
        assert sorted(claims.values()) == ["cancelled", "draft"]


@pytest.mark.parametrize("from_environment", [False, True])
def test_dry_run_writes_nothing(
    server: TestServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    from_environment: bool,
) -> None:
    """`FHIR_ADAPTER_DRY_RUN=1` is `--dry-run` (it once wrote to the server)."""
    with FhirClient(server.base) as client:
        load_fixtures(client, ["ex1-hcc-ct"])
    if from_environment:
        monkeypatch.setenv("FHIR_ADAPTER_DRY_RUN", "yes")
        monkeypatch.setenv("FHIR_ADAPTER_BASE_URL", server.base)
    flags = [] if from_environment else ["--base-url", server.base, "--dry-run"]
    assert main(["run", *flags]) == 0
    out = capsys.readouterr().out
    assert "would write POST Claim" in out
    with FhirClient(server.base) as client:
        assert _all(client, "Claim") == [] and _all(client, "DetectedIssue") == []


def test_requests_per_case(server: TestServer) -> None:
    with FhirClient(server.base) as client:
        load_fixtures(client)
        client.requests.clear()
        results = run_on_server(client)
        assert max(r.reads for r in results) <= 2  # + the shared search page
        search_pages = client.requests["read"] - sum(r.reads for r in results)
        # one searchset page per 50 cases (the test server's page size, FHIR_PAGE_SIZE)
        assert search_pages == -(-len(results) // 50)
        assert client.requests["write"] == len(results)


def test_procedure_and_patient_selection(server: TestServer, read_base: str) -> None:
    with FhirClient(server.base) as client, FhirClient(read_base) as target:
        load_fixtures(client)
        one = run_on_server(target, procedure_ids=["v09-office-rfa"], dry_run=True)
        assert [r.output.evaluation.procedure for r in one] == ["Procedure/v09-office-rfa"]
        pat = run_on_server(target, patient="v06-two-in-session-pt", dry_run=True)
        assert len(pat) == 2
        with pytest.raises(AdapterError, match="Procedure/nope"):
            run_on_server(target, procedure_ids=["nope"], dry_run=True)


def test_invalid_write_is_rejected_and_nothing_is_half_written(server: TestServer) -> None:
    with FhirClient(server.base) as client:
        good = {"resourceType": "Basic", "id": "half", "code": {"text": "x"}}
        bad = copy.deepcopy(good)
        bad["id"] = "other"
        bad["unknownElement"] = True
        tx = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": good, "request": {"method": "PUT", "url": "Basic/half"}},
                {"resource": bad, "request": {"method": "PUT", "url": "Basic/other"}},
            ],
        }
        with pytest.raises(ServerError) as err:
            client.transaction(tx)
        assert err.value.status == 400
        assert "unknownElement" in str(err.value)
        assert _all(client, "Basic") == []


def test_non_r4_server_is_refused(tmp_path: Any) -> None:
    other = TestServer(env={"FHIR_VERSION": "5.0.0"})
    try:
        with pytest.raises(ServerError, match=r"FHIR 5\.0\.0"):
            FhirClient(other.base)
        assert main(["run", "--base-url", other.base]) == 2
    finally:
        other.stop()


def test_python_api_one_call_each(server: TestServer, read_base: str) -> None:
    import fhir_adapter

    with FhirClient(server.base) as loader:
        load_fixtures(loader, ["v13-specialty"])
    client = fhir_adapter.connect(read_base)
    result = fhir_adapter.evaluate_procedure(client, "v13-specialty-rfa")
    assert result.written is False and _all(client, "Claim") == []
    assert [f.code for f in result.output.evaluation.findings] == ["specialty-unexpected"]
    assert fhir_adapter.write_back(client, result) is True
    assert fhir_adapter.write_back(client, result) is False  # already sent
    assert len(_all(client, "Claim")) == 1 and len(_all(client, "DetectedIssue")) == 1
    again = fhir_adapter.evaluate_procedure(client, "v13-specialty-rfa")
    assert again.transaction is None  # the server is current
    client.close()


def test_a_procedure_entered_in_error_withdraws_what_was_written(
    server: TestServer, read_base: str
) -> None:
    """Voided after a run: its Claim and DetectedIssues are cancelled, nothing new is
    written, and asking for it by id says why it is not a case."""
    with FhirClient(server.base) as client, FhirClient(read_base) as target:
        load_fixtures(client, ["v12-doc-gaps"])
        run_on_server(target)
        live = [i for i in _all(client, "DetectedIssue") if i["status"] != "cancelled"]
        assert live
        proc = client.read("Procedure", "v12-doc-gaps-rfa")
        proc["status"] = "entered-in-error"
        _put(client, proc)
        assert run_on_server(target) == []
        after = _all(client, "DetectedIssue")
        assert len(after) == len(live) and all(i["status"] == "cancelled" for i in after)
        with pytest.raises(AdapterError, match="entered in error, so not a case"):
            run_on_server(target, procedure_ids=["v12-doc-gaps-rfa"])


def test_prior_authorization_on_the_server_reaches_the_claim(
    server: TestServer, tmp_path: Any
) -> None:
    """A payer overlay requiring prior authorization, against the server: prior-auth-missing
    until the approved ClaimResponse (and the request it answers) is stored there; then its
    number is the Claim's preAuthRef."""
    from fhir_adapter import load_pack
    from fhir_adapter.payers import load_payers

    from .test_payers import PA_OVERLAY, _authorization, _example_health_case

    (tmp_path / "example-health.yaml").write_text(PA_OVERLAY)
    pack = load_pack()
    payers = load_payers(pack, [tmp_path])
    with FhirClient(server.base) as client:
        for resource in _example_health_case():
            _put(client, resource)
        [missing] = run_on_server(client, pack, payers=payers)
        assert [f.code for f in missing.output.evaluation.findings] == ["prior-auth-missing"]
        for resource in _authorization("47382", "A1"):
            _put(client, resource)
        [approved] = run_on_server(client, pack, payers=payers)
        assert approved.output.evaluation.findings == []
        [claim] = [c for c in _all(client, "Claim") if c.get("use") == "claim"]
        assert claim["insurance"][0]["preAuthRef"] == ["AUTH-4711"]


def test_a_procedure_coded_with_cpts_oid_is_found_on_the_server(
    server: TestServer, read_base: str
) -> None:
    """CPT written as its OID (documents converted from C-CDA): the search asks for both
    URIs, and the case is the one the URL gives."""
    with FhirClient(server.base) as client, FhirClient(read_base) as target:
        load_fixtures(client, ["ex1-hcc-ct"])
        want = run_on_server(target, dry_run=True)
        assert [r.output.evaluation.outcome for r in want] == ["claim"]
        for pid in ("ex1-hcc-ct-rfa", "ex1-hcc-ct-guide"):
            proc = client.read("Procedure", pid)
            proc["code"]["coding"][0]["system"] = "urn:oid:2.16.840.1.113883.6.12"
            _put(client, proc)
        got = run_on_server(target, dry_run=True)
        assert [r.output.evaluation.procedure for r in got] == ["Procedure/ex1-hcc-ct-rfa"]
        assert [r.output.evaluation.outcome for r in got] == ["claim"]
        claim = next(x for x in got[0].output.resources if x["resourceType"] == "Claim")
        assert [c["system"] for i in claim["item"] for c in i["productOrService"]["coding"]] == [
            "http://www.ama-assn.org/go/cpt"
        ] * 2
