"""Bulk Data $export: against the real server's export of its store, and faults via `responses`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import responses

from fhir_adapter import evaluate_paths
from fhir_adapter.cli import main
from fhir_adapter.client.auth import BearerAuth
from fhir_adapter.client.export import BulkExport, retry_after_seconds
from fhir_adapter.client.rest import BudgetRetry, FhirClient
from fhir_adapter.errors import ExportError
from fhir_adapter.testing.catalog import list_fixtures, load_fixtures

from .fhir_server.harness import TestServer

NOW = "2026-11-27T00:00:00+00:00"


def _findings(outputs: list[Any]) -> dict[str, list[str]]:
    return {o.evaluation.procedure: sorted(f.code for f in o.evaluation.findings) for o in outputs}


@pytest.mark.server
def test_export_then_evaluate_equals_the_fixtures(server: TestServer, tmp_path: Path) -> None:
    with FhirClient(server.base) as client:
        load_fixtures(client)
    out = tmp_path / "export"
    assert main(["export", "--base-url", server.base, "--out", str(out)]) == 0
    files = sorted(p.name for p in out.glob("*.ndjson"))
    assert "Procedure.000.ndjson" in files or any(f.startswith("Procedure.") for f in files)
    want = {c["procedure"]: sorted(c["findings"]) for f in list_fixtures() for c in f.expected}
    assert _findings(evaluate_paths([out], now=NOW)) == want
    # a second run resumes: nothing is downloaded again
    with FhirClient(server.base) as client:
        again = BulkExport(client, out, sleep=lambda s: None).run()
    assert again.downloaded == 0 and again.skipped == len(again.files)


@pytest.mark.server
def test_type_filter_group_and_patient_level(server: TestServer, tmp_path: Path) -> None:
    with FhirClient(server.base) as client:
        load_fixtures(client, ["ex1-hcc-ct", "v09-office"])
        client.transaction(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "Group",
                            "id": "g1",
                            "type": "person",
                            "actual": True,
                            "member": [{"entity": {"reference": "Patient/ex1-hcc-ct-pt"}}],
                        },
                        "request": {"method": "PUT", "url": "Group/g1"},
                    }
                ],
            }
        )
        typed = BulkExport(client, tmp_path / "t", types=["Procedure", "Patient"]).run()
        assert {p.name.split(".")[0] for p in typed.files} == {"Procedure", "Patient"}
        group = BulkExport(client, tmp_path / "g", group="g1", types=["Procedure"]).run()
        lines = [json.loads(line) for p in group.files for line in p.read_text().splitlines()]
        assert lines and all(r["subject"]["reference"] == "Patient/ex1-hcc-ct-pt" for r in lines)
        patients = BulkExport(client, tmp_path / "p", patient_level=True, types=["Coverage"]).run()
        assert sum(len(p.read_text().splitlines()) for p in patients.files) == 2


@pytest.mark.server
def test_export_with_auth_sends_the_token_to_the_files(server: TestServer, tmp_path: Path) -> None:
    with FhirClient(server.base) as client:
        load_fixtures(client, ["ex1-hcc-ct"])
    server.admin("auth", {"required": True, "token_endpoint": "http://127.0.0.1:9/none"})
    server.admin("tokens", {"token": "export-token-1", "expires_in": 600})
    try:
        with FhirClient(server.base, BearerAuth("export-token-1")) as client:
            result = BulkExport(client, tmp_path / "a", types=["Procedure"]).run()
        assert result.manifest["requiresAccessToken"] is True and result.files
    finally:
        server.admin("tokens", method="DELETE")


@pytest.mark.server
def test_cancel(server: TestServer, tmp_path: Path) -> None:
    with FhirClient(server.base) as client:
        job = BulkExport(client, tmp_path / "c")
        status = job.kick_off()
        job.out.mkdir(parents=True, exist_ok=True)
        job._save_state({"request": job.request_url(), "status_url": status, "done": {}})
        assert job.cancel() is True
        assert not job.state_path.exists()
        assert job.cancel() is False


# -- faults a real server will not produce on demand ---------------------------------
BASE = "https://fhir.example.test/r4"
CS = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
STATUS = "https://fhir.example.test/r4/_status/1"
FILE = "https://fhir.example.test/r4/_files/1"
LINE = b'{"resourceType":"Patient","id":"p1"}\n'


def _manifest(token: bool = True, count: int = 2) -> dict[str, Any]:
    return {
        "transactionTime": NOW,
        "request": f"{BASE}/$export",
        "requiresAccessToken": token,
        "output": [{"type": "Patient", "url": FILE, "count": count}],
        "error": [{"type": "OperationOutcome", "url": f"{FILE}-err"}],
    }


def _client(token: str = "tok-abc") -> FhirClient:
    responses.add(responses.GET, f"{BASE}/metadata", json=CS)
    return FhirClient(BASE, BearerAuth(token), backoff=0.01)


@responses.activate
def test_429_on_kick_off_then_5xx_while_polling(tmp_path: Path) -> None:
    client = _client()
    responses.add(responses.GET, f"{BASE}/$export", status=429, headers={"Retry-After": "1"})
    responses.add(
        responses.GET, f"{BASE}/$export", status=202, headers={"Content-Location": STATUS}
    )
    responses.add(responses.GET, STATUS, status=503)
    responses.add(
        responses.GET, STATUS, status=202, headers={"X-Progress": "50%", "Retry-After": "2"}
    )
    responses.add(responses.GET, STATUS, json=_manifest())
    responses.add(responses.GET, FILE, body=LINE * 2)
    oo = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "processing",
                "details": {"text": "Observation/9 could not be exported"},
            }
        ],
    }
    responses.add(responses.GET, f"{FILE}-err", body=json.dumps(oo) + "\n")
    slept: list[float] = []
    progress: list[str] = []
    result = BulkExport(client, tmp_path, sleep=slept.append, on_progress=progress.append).run()
    assert slept == [2.0] and "export in progress: 50%" in progress
    assert result.files[0].read_bytes() == LINE * 2
    assert result.error_messages == ["Observation/9 could not be exported"]
    file_call = next(c for c in responses.calls if c.request.url == FILE)
    assert file_call.request.headers["Authorization"] == "Bearer tok-abc"


@responses.activate
def test_no_token_when_the_manifest_does_not_require_it(tmp_path: Path) -> None:
    client = _client()
    responses.add(
        responses.GET, f"{BASE}/$export", status=202, headers={"Content-Location": STATUS}
    )
    manifest = _manifest(token=False)
    manifest["output"][0]["url"] = "https://files.example.test/signed/1?sig=x"
    manifest["error"] = []
    responses.add(responses.GET, STATUS, json=manifest)
    responses.add(responses.GET, "https://files.example.test/signed/1", body=LINE * 2)
    BulkExport(client, tmp_path).run()
    assert "Authorization" not in responses.calls[-1].request.headers


@responses.activate
def test_expired_token_during_download_is_renewed(tmp_path: Path) -> None:
    class Renewing(BearerAuth):
        renewed = 0

        def invalidate(self) -> bool:
            Renewing.renewed += 1
            self._token = "tok-fresh"
            return True

    responses.add(responses.GET, f"{BASE}/metadata", json=CS)
    client = FhirClient(BASE, Renewing("tok-old"))
    responses.add(
        responses.GET, f"{BASE}/$export", status=202, headers={"Content-Location": STATUS}
    )
    manifest = _manifest()
    manifest["error"] = []
    responses.add(responses.GET, STATUS, json=manifest)
    responses.add(responses.GET, FILE, status=401)
    responses.add(responses.GET, FILE, body=LINE * 2)
    result = BulkExport(client, tmp_path).run()
    assert result.files[0].read_bytes() == LINE * 2 and Renewing.renewed >= 1
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer tok-fresh"


def _export_of(body: bytes, count: int) -> FhirClient:
    """A client whose export's one Patient file is `body`, announced with `count` lines."""
    client = _client()
    responses.add(
        responses.GET, f"{BASE}/$export", status=202, headers={"Content-Location": STATUS}
    )
    manifest = _manifest(count=count)
    manifest["error"] = []
    responses.add(responses.GET, STATUS, json=manifest)
    responses.add(responses.GET, FILE, body=body)
    return client


@responses.activate
def test_truncated_file_is_an_error_and_resume_fetches_it(tmp_path: Path) -> None:
    client = _export_of(LINE * 2, 3)  # one line short
    with pytest.raises(ExportError, match="2 lines where the manifest says 3"):
        BulkExport(client, tmp_path).run()
    assert not list(tmp_path.glob("*.ndjson")) and not list(tmp_path.glob("*.part"))
    responses.replace(responses.GET, FILE, body=LINE * 3)
    calls_before = len(responses.calls)
    result = BulkExport(client, tmp_path).run()
    assert len(result.files[0].read_bytes().splitlines()) == 3
    # resumed: no second kick-off, no second poll
    assert [c.request.url for c in responses.calls[calls_before:]] == [FILE]


@responses.activate
def test_kick_off_refused_with_operation_outcome(tmp_path: Path) -> None:
    client = _client()
    responses.add(
        responses.GET,
        f"{BASE}/$export",
        status=400,
        json={
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "not-supported",
                    "details": {"text": "_type Foo is not supported"},
                }
            ],
        },
    )
    with pytest.raises(ExportError, match=r"HTTP 400\): _type Foo is not supported"):
        BulkExport(client, tmp_path).run()


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7", 1.0) == 7.0
    assert retry_after_seconds(None, 3.0) == 3.0
    assert retry_after_seconds("garbage", 2.0) == 2.0
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 5.0) <= 0.001


@responses.activate
def test_last_line_without_newline_matches_the_manifest_count(tmp_path: Path) -> None:
    client = _export_of(LINE + LINE.rstrip(b"\n"), 2)
    result = BulkExport(client, tmp_path).run()
    assert [p.read_bytes().count(b"Patient") for p in result.files] == [2]


@responses.activate
def test_blank_lines_do_not_count_toward_the_manifest(tmp_path: Path) -> None:
    client = _export_of(LINE + b"\n" + LINE + b"\n\n", 2)
    result = BulkExport(client, tmp_path).run()
    assert [p.read_bytes().count(b"Patient") for p in result.files] == [2]


# -- the export directory is owned; --since is checked first --------------------------
@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "2026-02-30", "2026-01-01T08:00"])
def test_a_bad_since_is_refused_before_any_request(
    since: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It exited 0 with an empty export; nothing listens on port 9, so a request would fail."""
    out = tmp_path / "export"
    argv = ["export", "--base-url", "http://127.0.0.1:9/fhir", "--out", str(out)]
    with pytest.raises(SystemExit) as stop:  # argparse's usage error
        main([*argv, "--since", since])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{since!r} is not a FHIR instant" in err and "connect" not in err
    assert not out.exists()


def test_a_day_as_since_means_its_first_moment_anywhere() -> None:
    from fhir_adapter.cli import parse

    args = parse(["export", "--out", "x", "--since", "2026-01-01"])
    assert args.since == "2026-01-01T00:00:00+14:00"
    args = parse(["export", "--out", "x", "--since", "2026-01-01T00:00:00.5Z"])
    assert args.since == "2026-01-01T00:00:00.5Z"
    assert parse(["run", "--since", "2026-01"]).since == "2026-01"


def test_someone_elses_files_refuse_the_export_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "Patient.ndjson").write_bytes(LINE)
    assert main(["export", "--base-url", "http://127.0.0.1:9/fhir", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Patient.ndjson" in err and "--force" in err and "connect" not in err


@pytest.mark.server
def test_a_new_export_replaces_the_earlier_ones_files(server: TestServer, tmp_path: Path) -> None:
    """An earlier job's NDJSON once stayed, and a later evaluate read it."""
    with FhirClient(server.base) as client:
        load_fixtures(client, ["ex1-hcc-ct"])
    out = tmp_path / "export"
    base = ["export", "--base-url", server.base, "--out", str(out)]
    assert main(base) == 0
    assert any(p.name.startswith("Observation.") for p in out.iterdir())
    assert main([*base, "--type", "Procedure,Patient"]) == 0
    assert {p.name.split(".")[0] for p in out.glob("*.ndjson")} == {"Patient", "Procedure"}
    assert not (out / ".fhir-adapter-export.staging").exists()


@pytest.mark.server
def test_export_of_a_group_that_does_not_exist(
    server: TestServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's 500 is one line: the job the user asked for, the status, its words.
    It is retried first (with backoff: the waits are recorded, not slept)."""
    waits: list[float] = []
    monkeypatch.setattr(
        BudgetRetry, "_sleep_backoff", lambda retry: waits.append(retry.get_backoff_time())
    )
    out = tmp_path / "export"
    assert main(["export", "--base-url", server.base, "--out", str(out), "--group", "nope"]) == 2
    assert len(waits) >= 2 and waits == sorted(waits) and waits[-1] > 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("fhir-adapter: error: the export Group/nope/$export failed: ")
    assert "(HTTP 500): " in err and "Not found" in err
    assert "_export-status" not in err and len(err.splitlines()) == 1


@responses.activate
def test_a_job_cut_short_leaves_the_previous_export_in_place(tmp_path: Path) -> None:
    """Files are staged and swapped in only once the whole job is there."""
    client = _client()
    first = BulkExport(client, tmp_path, types=["Patient"])
    responses.add(
        responses.GET, first.request_url(), status=202, headers={"Content-Location": STATUS}
    )
    manifest = _manifest(token=False)
    manifest["error"] = []
    responses.add(responses.GET, STATUS, json=manifest)
    responses.add(responses.GET, FILE, body=LINE * 2)
    first.run()
    assert (tmp_path / "Patient.000.ndjson").read_bytes() == LINE * 2

    second = BulkExport(client, tmp_path, types=["Procedure"])
    status2 = f"{STATUS}-2"
    responses.add(
        responses.GET, second.request_url(), status=202, headers={"Content-Location": status2}
    )
    two = {
        **manifest,
        "output": [
            {"type": "Procedure", "url": f"{FILE}-a", "count": 1},
            {"type": "Procedure", "url": f"{FILE}-b", "count": 1},
        ],
    }
    responses.add(responses.GET, status2, json=two)
    proc = b'{"resourceType":"Procedure","id":"x","status":"completed","subject":{"reference":"Patient/p1"}}\n'
    responses.add(responses.GET, f"{FILE}-a", body=proc)
    responses.add(responses.GET, f"{FILE}-b", body=proc * 2)  # the manifest says 1: an error
    with pytest.raises(ExportError, match="2 lines where the manifest says 1"):
        second.run()
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["Patient.000.ndjson"]  # the earlier export, whole; nothing of the new

    responses.replace(responses.GET, f"{FILE}-b", body=proc)
    result = second.run()  # resumes: only the missing file is fetched, then swapped in
    assert result.downloaded == 1
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["Procedure.000.ndjson", "Procedure.001.ndjson"]
