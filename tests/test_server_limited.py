"""Servers that support less than Medplum: the proxy of tests/fhir_server/proxy.py in front
of the session's server (no batch, transaction or includes; `_count` at most 10; latency),
and a second Medplum as the server the output is written to (a process of its own: it
starts in about 4 s on the 2-core test machine, once for the module)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.cli import main
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.pipeline import run_on_server
from fhir_adapter.testing.catalog import list_fixtures, load_fixtures

from .fhir_server.harness import TestServer
from .fhir_server.proxy import LimitedProxy

pytestmark = pytest.mark.server

NOW = "2026-11-27T00:00:00+00:00"
FEW = ["ex1-hcc-ct", "v06-two-in-session", "v12-doc-gaps", "v13-specialty"]


@pytest.fixture(scope="module")
def second_server() -> Iterator[TestServer]:
    """Another Medplum process (its own store and port): the --write-base-url target."""
    other = TestServer()
    try:
        yield other
    finally:
        other.stop()


@pytest.fixture
def write_server(second_server: TestServer) -> TestServer:
    second_server.reset()
    return second_server


def _rows(client: FhirClient, **kw: Any) -> list[dict[str, Any]]:
    """The report rows of a dry run (without `reads`, which differ by design)."""
    rows = []
    for result in run_on_server(client, dry_run=True, now=NOW, **kw):
        row = result.output.report()
        row.pop("reads")
        rows.append(row)
    return rows


def _stored(client: FhirClient, rtype: str) -> list[dict[str, Any]]:
    return list(client.search(rtype, [("_count", "200")]))


def test_a_server_that_lists_features_and_refuses_them_is_read_the_plain_way(
    server: TestServer, limited: LimitedProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """The proxy's CapabilityStatement lists batch, transaction and includes, then refuses
    them: one warning each, remembered for the run, the same cases and results. (With N
    cases at once, up to N requests may meet a refusal before it is remembered.)"""
    with FhirClient(server.base) as client:
        load_fixtures(client, FEW)
        direct = _rows(client)
    limited.advertise = True
    argv = ["run", "--base-url", limited.base, "--format", "json", "--concurrency", "1"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 3, warnings  # batch, _include, transaction: once each
    assert all("refused it (HTTP" in w for w in warnings)
    refused = limited.counts["refused"]
    assert refused == 3  # never asked again after the first refusal
    report = json.loads(captured.out)
    assert [c["procedure"] for c in report["cases"]] == [r["procedure"] for r in direct]
    for case, want in zip(report["cases"], direct, strict=True):
        assert [f["code"] for f in case["findings"]] == [f["code"] for f in want["findings"]]
        assert case["outcome"] == want["outcome"]
    with FhirClient(server.base) as client:  # written entry by entry
        assert len(_stored(client, "DetectedIssue")) == sum(len(r["findings"]) for r in direct)


def test_fixtures_load_without_transactions(server: TestServer, limited: LimitedProxy) -> None:
    """Fixtures loaded into a server that takes no transaction Bundle (as `fixtures load`
    does): entry by entry (PUTs by id), and loading again stores no second copy."""
    wanted = {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for case in list_fixtures()
        if case.name in FEW
        for e in case.transaction()["entry"]
    }
    with FhirClient(limited.base) as client:
        assert load_fixtures(client, FEW) == len(FEW)
        assert load_fixtures(client, FEW) == len(FEW)
    assert limited.counts["POST"] == 0  # never a transaction
    with FhirClient(server.base) as client:
        for rtype in ("Procedure", "Observation", "Condition"):
            stored = sorted(r["id"] for r in _stored(client, rtype))
            assert stored == sorted(rid for t, rid in wanted if t == rtype)


def test_concurrency_gives_the_same_output_in_the_same_order(
    server: TestServer, limited: LimitedProxy
) -> None:
    with FhirClient(server.base) as client:
        load_fixtures(client, [*FEW, "v01-not-completed"])
    limited.latency = 0.005
    with FhirClient(limited.base) as client:
        one = _rows(client, concurrency=1)
    assert limited.max_in_flight == 1
    # the per-host cap: eight cases at once, never more than three requests in flight.
    # Each answer is held 0.1 s so that the cases' reads overlap even on a loaded machine
    # (at 5 ms a busy machine could start the third before the first was answered).
    limited.latency = 0.1
    with FhirClient(limited.base, max_in_flight=3) as client:
        eight = _rows(client, concurrency=8)
    assert len(one) == 6 and one == eight
    assert limited.max_in_flight == 3


def test_429_pauses_every_request_together(server: TestServer, limited: LimitedProxy) -> None:
    """One shared backoff: after a 429 with Retry-After, no new request reaches the server
    until the pause is over (only those already sent arrive, within a few milliseconds);
    threads retrying each on its own clock would keep sending."""
    with FhirClient(server.base) as client:
        load_fixtures(client, FEW)
    with FhirClient(limited.base) as client:
        limited.retry_after = "1"
        limited.busy = 2
        limited.busy_after = 12  # in the middle of the run, eight cases under way
        rows = _rows(client, concurrency=8)
        pauses = client.gate.pauses
    assert len(rows) == 5 and limited.counts["429"] == 2
    first_busy = next(t for t, status in limited.arrivals if status == 429)
    after = [t - first_busy for t, status in limited.arrivals if t > first_busy and status != 429]
    assert [t for t in after if 0.3 < t < 0.95] == []
    assert len([t for t in after if t >= 0.95]) > 8
    assert pauses >= 1


def test_writes_go_to_the_write_server_with_its_own_token(
    server: TestServer,
    limited: LimitedProxy,
    write_server: TestServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Read through the proxy with one token, write to another Medplum that wants its own
    (seen through a second proxy): each token goes to its server only, the read server
    gets nothing written, a re-run writes nothing."""
    with FhirClient(server.base) as client:
        load_fixtures(client, FEW)
    token = "write-token-7f3a"
    write_server.admin("auth", {"required": True})
    write_server.admin("tokens", {"token": token})
    monkeypatch.setenv("FHIR_ADAPTER_WRITE_TOKEN", token)
    monkeypatch.setenv("FHIR_ADAPTER_TOKEN", "read-token-5c1e")  # the read server needs none
    watch = LimitedProxy(write_server.root)
    watch.limits = False
    argv = ["run", "--base-url", limited.base, "--auth", "bearer"]
    argv += ["--write-base-url", watch.base, "--write-auth", "bearer", "--format", "json"]
    try:
        assert main(argv) == 1
        captured = capsys.readouterr()
        first = json.loads(captured.out)
    finally:
        watch.stop()
    assert set(limited.authorizations) == {"Bearer read-token-5c1e"}
    assert set(watch.authorizations) == {f"Bearer {token}"}
    said = captured.out + captured.err
    assert token not in said and "read-token" not in said
    argv[argv.index(watch.base)] = write_server.base
    with FhirClient(server.base) as client:
        assert _stored(client, "Claim") == [] and _stored(client, "DetectedIssue") == []
    assert main([*argv, "--concurrency", "1"]) == 1
    assert "wrote 0 transaction(s)" in capsys.readouterr().err
    write_server.admin("auth", {"required": False})
    with FhirClient(write_server.base) as client:
        issues = _stored(client, "DetectedIssue")
        claims = _stored(client, "Claim")
    assert len(issues) == sum(len(c["findings"]) for c in first["cases"])
    assert len(claims) == sum(1 for c in first["cases"] if c["outcome"] == "claim") > 0


def test_out_writes_files_and_nothing_to_any_server(
    server: TestServer, limited: LimitedProxy, tmp_path: Path
) -> None:
    with FhirClient(server.base) as client:
        load_fixtures(client, FEW)
    out = tmp_path / "out"
    assert main(["run", "--base-url", limited.base, "--out", str(out), "--format", "csv"]) == 1
    assert {"GET"} == {k for k in limited.counts if k in ("GET", "POST", "PUT", "DELETE")}
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert "report.html" in files and len(files) == 6  # five cases and the worklist
    bundle = json.loads((out / "Procedure-ex1-hcc-ct-rfa.json").read_text())
    assert bundle["type"] == "transaction" and bundle["entry"][0]["request"]["method"] == "POST"


def test_a_server_without_output_writes_is_refused_before_any_work(
    server: TestServer, limited: LimitedProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    limited.writes = False
    assert main(["run", "--base-url", limited.base]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no Claim or DetectedIssue writes" in err[0]
    assert "--write-base-url" in err[0] and "--out" in err[0]
    assert limited.counts["GET"] == 1  # the CapabilityStatement, nothing else


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--write-base-url", "ftp://coding.example.org/fhir"], "--write-base-url: the base URL"),
        (["--write-auth", "bearer"], "--write-auth goes with --write-base-url"),
        (["--out", "x", "--write-base-url", "http://127.0.0.1:9/fhir"], "not allowed with"),
    ],
)
def test_output_options_are_checked_before_any_request(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Port 9 (discard) on loopback: nothing listens, so any request would fail otherwise."""
    try:
        code = main(["run", "--base-url", "http://127.0.0.1:9/fhir", *argv])
    except SystemExit as exc:  # argparse's own refusal of two exclusive options
        code = int(str(exc.code))
    assert code == 2
    err = capsys.readouterr().err
    assert says in err and "cannot connect" not in err
