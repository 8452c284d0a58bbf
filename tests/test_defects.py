"""Defects found in review, each pinned by a test that failed before its fix."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapter import ResourceStore, evaluate_paths, evaluate_store, read_paths
from fhir_adapter.cli import main
from fhir_adapter.fhir.systems import CPT
from fhir_adapter.pack import Pack
from fhir_adapter.testing.catalog import write_fixtures

from .conftest import CASES, findings_of, fixture_names, load_bundle

NOW = "2026-11-27T00:00:00+00:00"
CLEAN = str(CASES / "ex1-hcc-ct.json")


def _reports(paths: list[Path], pack: Pack) -> list[dict[str, Any]]:
    return [orjson.loads(orjson.dumps(o.report())) for o in evaluate_paths(paths, pack, now=NOW)]


@pytest.mark.parametrize("name", fixture_names())
def test_bundle_of_procedures_beside_ndjson_equals_one_bundle(
    name: str, pack: Pack, tmp_path: Path
) -> None:
    """An EHR extract (the Procedures, as a Bundle) beside an export (everything else)."""
    bundle = load_bundle(name)
    resources = [e["resource"] for e in bundle["entry"]]
    if any("id" not in r for r in resources):
        pytest.skip("urn:uuid-only resources cannot be split across files by reference")
    procedures = [r for r in resources if r["resourceType"] == "Procedure"]
    others = [r for r in resources if r["resourceType"] != "Procedure"]
    (tmp_path / "extract.json").write_bytes(
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in procedures],
            }
        )
    )
    export = tmp_path / "export"
    export.mkdir()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in others:
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, items in by_type.items():
        (export / f"{rtype}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in items))
    whole = _reports([CASES / f"{name}.json"], pack)
    assert whole
    assert _reports([tmp_path / "extract.json", export], pack) == whole


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FHIR_ADAPTER_BLOCK_ON", "critical"),
        ("FHIR_ADAPTER_WORKERS", "two"),
        ("FHIR_ADAPTER_FORMAT", "xml"),
        ("FHIR_ADAPTER_WORKERS", "-1"),
        ("FHIR_ADAPTER_ENGINE", "dask"),
    ],
)
def test_bad_environment_defaults_are_usage_errors(variable: str, value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fhir_adapter.cli", "evaluate", CLEAN],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", variable: value},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert value in proc.stderr
    assert proc.stdout == ""


def test_a_flag_overrides_a_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_FORMAT", "xml")
    assert main(["evaluate", CLEAN, "--format", "json"]) == 0


def _export_with_truncated_observation(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    main(["fixtures", "write", str(export), "--as", "ndjson"])
    for meta in export.glob("*.yaml"):
        meta.unlink()
    obs = export / "Observation.ndjson"
    lines = obs.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + b"\n"  # a download cut short mid-line
    obs.write_bytes(b"".join(lines))
    return export


def test_truncated_line_in_any_file_is_exit_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export_with_truncated_observation(tmp_path)
    assert main(["evaluate", str(export)]) == 2
    err = capsys.readouterr().err
    assert "Observation.ndjson:3:" in err and "Traceback" not in err


def test_skip_bad_lines_goes_on_and_counts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export_with_truncated_observation(tmp_path)
    code = main(["evaluate", str(export), "--skip-bad-lines", "--format", "json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["cases"]
    assert code == (1 if any(c["outcome"] == "issues" for c in report["cases"]) else 0)
    assert report["input"]["bad_lines"] == 1
    assert report["input"]["skipped"][0].endswith("Observation.ndjson:3")
    assert "skipped 1 bad NDJSON line" in captured.err


def test_truncated_line_is_found_when_no_case_is_in_the_export(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_bytes(b'{"resourceType":"Patient","id":"p"}\n{"resou\n')
    assert main(["evaluate", str(export)]) == 2


@pytest.mark.parametrize(
    ("code", "finding"),
    [
        ("47370", "approach-mismatch"),
        ("47380", "approach-mismatch"),
        ("47371", "modality-mismatch"),
        ("47381", "modality-mismatch"),
        ("47383", "modality-mismatch"),
    ],
)
def test_session_procedure_codes_alone_raise_the_mismatch(
    code: str, finding: str, pack: Pack, good_case: list[dict[str, Any]]
) -> None:
    """The `codes` branch alone: no note mentions another approach or energy."""
    rfa = next(
        r
        for r in good_case
        if r["resourceType"] == "Procedure" and r["code"]["coding"][0].get("code") == "47382"
    )
    other = copy.deepcopy(rfa)
    other["id"] = "same-session-other"
    other["code"] = {"coding": [{"system": CPT, "code": code}]}
    for key in ("note", "text", "report", "reasonReference", "reasonCode", "bodySite"):
        other.pop(key, None)
    before = findings_of(pack, good_case)
    assert finding not in before[f"Procedure/{rfa['id']}"]
    after = findings_of(pack, [*good_case, other])
    assert finding in after[f"Procedure/{rfa['id']}"]


def test_validate_flag_rejects_an_invalid_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--validate really validates: a Claim broken on purpose is exit 2, not a success."""
    from fhir_adapter.writeback import bundle as bundle_module

    real = bundle_module.CaseOutput.bundle

    def broken(self: Any, *args: Any, **kw: Any) -> dict[str, Any]:
        out = real(self, *args, **kw)
        for entry in out["entry"]:
            if entry["resource"]["resourceType"] == "Claim":
                entry["resource"]["created"] = "yesterday"
        return out

    monkeypatch.setattr(bundle_module.CaseOutput, "bundle", broken)
    assert main(["evaluate", CLEAN]) == 0
    assert main(["evaluate", CLEAN, "--validate"]) == 2
    assert "created" in capsys.readouterr().err


def _export_of_fixtures(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    main(["fixtures", "write", str(export), "--as", "ndjson"])
    for meta in export.glob("*.yaml"):
        meta.unlink()
    return export


def test_a_file_cut_after_a_nested_brace_is_found(tmp_path: Path) -> None:
    export = _export_of_fixtures(tmp_path)
    obs = export / "Observation.ndjson"
    data = obs.read_bytes().rstrip(b"\n")
    cut = data.rfind(b"}", 0, len(data) - 1)  # inside the last object, after a nested }
    obs.write_bytes(data[: cut + 1])
    assert main(["evaluate", str(export)]) == 2


def test_a_byte_order_mark_is_not_a_bad_line(tmp_path: Path, pack: Pack) -> None:
    """A BOM before each file's first line (a case's own resource in each of these
    fixtures): the same reports, no bad line. A few fixtures: it is per file, not per case."""
    export = tmp_path / "export"
    write_fixtures(export, "ndjson", ("ex1-hcc-ct", "v06-two-in-session", "v26-global-period"))
    for meta in export.glob("*.yaml"):
        meta.unlink()
    clean = _reports([export], pack)
    assert len(clean) >= 3
    files = list(export.glob("*.ndjson"))
    assert len(files) >= 5
    for f in files:
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert _reports([export], pack) == clean


@pytest.mark.parametrize("form", ["bundle", "transaction"])
def test_a_byte_order_mark_before_a_json_file_is_accepted_too(
    form: str, tmp_path: Path, pack: Pack
) -> None:
    """As for NDJSON: a BOM (an editor on Windows) before a JSON Bundle, plain or gzipped,
    and before a single resource, gives the same reports."""
    import gzip

    export = tmp_path / "json"
    write_fixtures(export, form, ("ex1-hcc-ct", "v06-two-in-session"))
    for meta in export.glob("*.yaml"):
        meta.unlink()
    clean = _reports([export], pack)
    files = sorted(export.glob("*.json"))
    assert len(clean) >= 2 and len(files) == 2
    files[0].write_bytes(b"\xef\xbb\xbf" + files[0].read_bytes())
    zipped = files[1].with_suffix(".json.gz")
    zipped.write_bytes(gzip.compress(b"\xef\xbb\xbf" + files[1].read_bytes()))
    files[1].unlink()
    assert _reports([export], pack) == clean
    single = tmp_path / "patient.json"
    single.write_bytes(b'\xef\xbb\xbf{"resourceType": "Patient", "id": "p1"}')
    assert [r.resource["id"] for r in read_paths([single])] == ["p1"]


@pytest.mark.parametrize(
    "variable_or_flag", [("FHIR_ADAPTER_TIMEOUT", "-5"), ("--timeout", "0"), ("--timeout", "nan")]
)
def test_bad_timeouts_are_usage_errors(variable_or_flag: tuple[str, str]) -> None:
    name, value = variable_or_flag
    env = {"PATH": "/usr/bin:/bin"}
    args = ["run", "--base-url", "http://127.0.0.1:9/"]
    if name.startswith("--"):
        args += [name, value]
    else:
        env[name] = value
    proc = subprocess.run(
        [sys.executable, "-m", "fhir_adapter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "seconds" in proc.stderr


def test_procedures_in_ndjson_beside_the_rest_in_a_bundle_on_two_workers(
    tmp_path: Path, pack: Pack, pool_always: None
) -> None:
    """The other direction: the export holds the Procedures, the extract everything else."""
    export = _export_of_fixtures(tmp_path)
    whole = _reports([export], pack)
    others = []
    for f in sorted(export.glob("*.ndjson")):
        if not f.name.startswith("Procedure"):
            others += [orjson.loads(line) for line in f.read_bytes().splitlines() if line]
            f.unlink()
    (tmp_path / "extract.json").write_bytes(
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in others],
            }
        )
    )
    mixed = [
        orjson.loads(orjson.dumps(o.report()))
        for o in evaluate_paths([tmp_path / "extract.json", export], pack, now=NOW, workers=2)
    ]

    def by_id(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # urn:uuid references hold only inside the Bundle that declares them (v15)
        return [r for r in reports if not str(r["patient"]).startswith("urn:uuid:")]

    assert len(by_id(whole)) >= 30
    assert by_id(mixed) == by_id(whole)


def test_a_padded_code_is_a_case_when_streamed_as_when_loaded(tmp_path: Path, pack: Pack) -> None:
    """'47382 ' counts as 47382 when a whole file is loaded (codes are compared stripped):
    the streamed export's screens must not skip it for its padding."""
    export = _export_of_fixtures(tmp_path)
    procs = export / "Procedure.ndjson"
    padded = procs.read_bytes().replace(b'"code":"47382"', b'"code":"47382 "')
    assert padded != procs.read_bytes()
    procs.write_bytes(padded)
    streamed = [o.evaluation.procedure for o in evaluate_paths([export], pack, now=NOW)]
    whole = ResourceStore(read_paths([export]))
    loaded = [o.evaluation.procedure for o in evaluate_store(whole, pack, now=NOW)]
    assert streamed == loaded and len(loaded) >= 30


CPT_OID = "urn:oid:2.16.840.1.113883.6.12"


def _summary(outputs: list[Any]) -> list[tuple[Any, ...]]:
    """Each case's outcome, finding codes, and the codings of its Claim's lines."""
    out = []
    for o in outputs:
        report = orjson.loads(orjson.dumps(o.report()))
        claims = [r for r in o.resources if r["resourceType"] == "Claim"]
        lines = [
            (c["system"], c["code"])
            for claim in claims
            for item in claim.get("item", [])
            for c in item["productOrService"]["coding"]
        ]
        codes = sorted(f["code"] for f in report["findings"])
        out.append((report["outcome"], codes, lines))
    return out


def test_cpt_written_as_its_oid_is_cpt(tmp_path: Path, pack: Pack) -> None:
    """Documents converted from C-CDA write CPT as its OID (urn:oid:2.16.840.1.113883.6.12):
    the Procedure is a case, its other CPT codes are checked (PTP, guidance) and the Claim
    is the one the URL gives, whether the file is a Bundle or an NDJSON export."""
    text = Path(CLEAN).read_text()
    assert text.count(CPT) >= 2
    oid = tmp_path / "oid.json"
    oid.write_text(text.replace(CPT, CPT_OID))
    want = _summary(evaluate_paths([CLEAN], pack, now=NOW))
    assert want and want[0][2]
    assert _summary(evaluate_paths([oid], pack, now=NOW)) == want
    export = tmp_path / "export"
    export.mkdir()
    for e in json.loads(oid.read_text())["entry"]:
        with (export / f"{e['resource']['resourceType']}.ndjson").open("a") as fh:
            fh.write(json.dumps(e["resource"]) + "\n")
    assert _summary(evaluate_paths([export], pack, now=NOW)) == want


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda c: c["coding"][0].update(code=47382), "coding[0].code is a number"),
        (lambda c: c.update(coding="bad"), "Procedure.code.coding is a string"),
        (
            lambda c: c["coding"][0].update(system="http://www.ama-assn.org/go/cpt/"),
            "coded 47382 in system 'http://www.ama-assn.org/go/cpt/'",
        ),
    ],
)
def test_a_malformed_procedure_that_may_be_a_case_is_named(
    tmp_path: Path, edit: Any, says: str
) -> None:
    """A Procedure whose code holds 47382 in a form that is not a CPT coding is no case,
    and the run says so, naming the file (and line in NDJSON), not just 'none found'."""
    bundle = json.loads(Path(CLEAN).read_text())
    for e in bundle["entry"]:
        if e["resource"]["id"] == "ex1-hcc-ct-rfa":
            edit(e["resource"]["code"])
    single = tmp_path / "one.json"
    single.write_text(json.dumps(bundle, indent=1))
    export = tmp_path / "export"
    export.mkdir()
    for e in bundle["entry"]:
        with (export / f"{e['resource']['resourceType']}.ndjson").open("a") as fh:
            fh.write(json.dumps(e["resource"]) + "\n")
    line = next(
        n
        for n, text in enumerate((export / "Procedure.ndjson").read_text().splitlines(), 1)
        if "ex1-hcc-ct-rfa" in text
    )
    for path, where in ((single, f"{single}:"), (export, f"Procedure.ndjson:{line}: ")):
        proc = subprocess.run(
            [sys.executable, "-m", "fhir_adapter.cli", "evaluate", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        warned = [x for x in proc.stderr.splitlines() if "Procedure/ex1-hcc-ct-rfa" in x]
        assert len(warned) == 1, proc.stderr
        assert warned[0].startswith("fhir-adapter: warning: ") and where in warned[0]
        assert says in warned[0] and "not read as a case" in warned[0]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda a: a.update(contentType="application/pdf"), "content type application/pdf"),
        (lambda a: a.update(contentType="image/png", size=2048), "content type image/png"),
        (lambda a: a.pop("data"), "no data and no url"),
        (
            lambda a: a.update(url="https://docs.example.org/opnote.txt") or a.pop("data"),
            "by url only (https://docs.example.org/opnote.txt)",
        ),
        (lambda a: a.update(data="%%% not base64 %%%"), "data is not base64"),
    ],
)
def test_an_attachment_not_read_is_named(edit: Any, says: str, pack: Pack) -> None:
    """The note attached with a content type the reader does not read (a PDF, an image),
    or with nothing to read: the case is not documented, and a finding of its own names
    the attachment and why it was not read, so a coder knows where to look."""
    bundle = load_bundle("ex2-crc-mets-us")
    for e in bundle["entry"]:
        if e["resource"]["resourceType"] == "DocumentReference":
            edit(e["resource"]["content"][0]["attachment"])
    store = ResourceStore()
    for e in bundle["entry"]:
        store.add(e["resource"])
    (out,) = evaluate_store(store, pack, now=NOW)
    findings = {f.code: f for f in out.evaluation.findings}
    assert out.evaluation.outcome != "claim"
    unread = findings["attachment-not-read"]
    (ev,) = unread.evidence
    assert ev.reference == "DocumentReference/ex2-crc-mets-us-opnote"
    assert ev.path == "DocumentReference.content[0].attachment"
    assert ev.note is not None and says in ev.note
    if "size" in says or "image/png" in says:
        assert "2,048 bytes" in ev.note


def test_a_read_attachment_is_not_named(pack: Pack) -> None:
    store = ResourceStore()
    for e in load_bundle("ex2-crc-mets-us")["entry"]:
        store.add(e["resource"])
    (out,) = evaluate_store(store, pack, now=NOW)
    assert "attachment-not-read" not in {f.code for f in out.evaluation.findings}
