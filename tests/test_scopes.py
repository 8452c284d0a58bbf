"""Reference scopes: files that reuse ids never mix, and an ambiguous merge is an error."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapter import CaseOutput, evaluate_paths
from fhir_adapter.cli import main
from fhir_adapter.errors import InputError
from fhir_adapter.rules import Pack

from .conftest import ROOT, by_id, load_bundle

NOW = "2026-11-28T00:00:00+00:00"
BLIND = ROOT / "benchmarks" / "blind-cases"
OTHER_NPI = "1234567890"  # fails the NPI check digit


def _outcome(output: CaseOutput) -> tuple[str, Any]:
    """A case's key and everything it concluded, the Claim without its identifiers (they
    carry the file when another file reuses the Procedure's id)."""
    e = output.evaluation
    claims = [
        {k: v for k, v in r.items() if k != "identifier"}
        for r in output.resources
        if r["resourceType"] == "Claim"
    ]
    return e.procedure.split(" (")[0], (
        e.outcome,
        sorted(f.code for f in e.findings),
        sorted(m.code for m in e.modifiers),
        e.place_of_service,
        e.patient,
        e.encounter,
        e.unresolved,
        claims,
    )


@pytest.mark.parametrize("name", ["set-1", "set-2", "set-3"])
def test_a_directory_of_bundles_gives_what_each_file_gives(name: str, pack: Pack) -> None:
    """The blind cases (written by authors who never saw the code) reuse `Patient/p1`,
    `Procedure/proc-rfa`... across files: as one directory, every file's cases are still
    its own."""
    folder = BLIND / name
    whole = [_outcome(o) for o in evaluate_paths([folder], pack, now=NOW)]
    alone = [
        _outcome(o)
        for path in sorted(folder.glob("*.json"))
        for o in evaluate_paths([path], pack, now=NOW)
    ]
    assert len(whole) == len(alone) > 0
    assert sorted(map(repr, whole)) == sorted(map(repr, alone))
    forked = [_outcome(o) for o in evaluate_paths([folder], pack, now=NOW, workers=2)]
    assert forked == whole


def _write(path: Path, resources: list[dict[str, Any]]) -> Path:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    return path


def _two_patients(tmp_path: Path, one_procedure: bool = False) -> tuple[Path, Path]:
    """Two per-patient Bundles with the same ids throughout and the very same Procedure
    text: the second patient has another name, a surgeon with an invalid NPI and a
    Coverage that lapsed. The second Procedure has a business identifier of its own
    (two procedures), unless `one_procedure` (then the files tell one procedure two ways)."""
    first = [e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]]
    second = copy.deepcopy(first)
    if not one_procedure:
        by_id(second, "ex1-hcc-ct-rfa")["identifier"][0]["value"] = "ex1-hcc-ct-rfa-other"
    by_id(second, "ex1-hcc-ct-pt")["name"] = [{"family": "Other", "given": ["Patient"]}]
    by_id(second, "ex1-hcc-ct-dr")["identifier"][0]["value"] = OTHER_NPI
    by_id(second, "ex1-hcc-ct-cov")["period"] = {"start": "2020-01-01", "end": "2020-12-31"}
    folder = tmp_path / "extracts"
    folder.mkdir()
    return _write(folder / "a.json", first), _write(folder / "b.json", second)


def _codes(output: CaseOutput) -> set[str]:
    return {f.code for f in output.evaluation.findings}


def test_two_per_patient_bundles_reusing_ids_do_not_mix(pack: Pack, tmp_path: Path) -> None:
    a, b = _two_patients(tmp_path)
    outputs = evaluate_paths([a.parent], pack, now=NOW)
    by_label = {o.evaluation.procedure: o for o in outputs}
    assert sorted(by_label) == [
        "Procedure/ex1-hcc-ct-rfa (a.json)",
        "Procedure/ex1-hcc-ct-rfa (b.json)",
    ]
    mine, theirs = (
        by_label["Procedure/ex1-hcc-ct-rfa (a.json)"],
        by_label["Procedure/ex1-hcc-ct-rfa (b.json)"],
    )
    # a.json bills with its own surgeon and Coverage; b.json is held back by its own
    assert mine.evaluation.outcome == "claim" and not _codes(mine)
    assert theirs.evaluation.outcome == "issues"
    assert {"coverage-missing", "provider-npi-invalid"} <= _codes(theirs)
    for output, path in ((mine, a), (theirs, b)):
        [alone] = evaluate_paths([path], pack, now=NOW)
        assert _outcome(output) == _outcome(alone)
    # what each writes is its own: identifiers never meet
    idents = [{i["value"] for r in o.resources for i in r["identifier"]} for o in (mine, theirs)]
    assert idents[0] and idents[1] and not idents[0] & idents[1]


def test_cases_sharing_an_id_get_their_own_files_and_report_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = _two_patients(tmp_path)
    out = tmp_path / "out"
    args = ["evaluate", str(a.parent), "--out", str(out), "--workers", "1"]
    assert main([*args, "--format", "json"]) == 1
    rows = json.loads(capsys.readouterr().out)["cases"]
    assert sorted(r["procedure"] for r in rows) == [
        "Procedure/ex1-hcc-ct-rfa (a.json)",
        "Procedure/ex1-hcc-ct-rfa (b.json)",
    ]
    names = sorted(p.name for p in out.glob("Procedure-*.json"))
    assert names == ["Procedure-ex1-hcc-ct-rfa-a.json", "Procedure-ex1-hcc-ct-rfa-b.json"]
    html = (out / "report.html").read_text()
    assert "ex1-hcc-ct-rfa (a.json)" in html and "ex1-hcc-ct-rfa (b.json)" in html
    assert main([*args[:2], "--workers", "1", "--format", "csv"]) == 1
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len({r["procedure"] for r in table}) == 2
    # the same run again names the same files (deterministic)
    assert main([*args, "--format", "json"]) == 1
    assert sorted(p.name for p in out.glob("Procedure-*.json")) == names


def test_a_resource_only_another_file_holds_is_still_found(pack: Pack, tmp_path: Path) -> None:
    """Files merge where a resource is absent from its own scope: b.json's case finds the
    Location (the facility) that only a.json gives, as if it were in its own Bundle."""
    a, b = _two_patients(tmp_path)
    resources = [e["resource"] for e in json.loads(b.read_text())["entry"]]
    _write(b, [r for r in resources if r["id"] != "ex1-hcc-ct-loc"])
    [alone] = evaluate_paths([b], pack, now=NOW)
    assert "Location/ex1-hcc-ct-loc" in alone.evaluation.unresolved
    outputs = {o.evaluation.procedure: o for o in evaluate_paths([a.parent], pack, now=NOW)}
    theirs = outputs["Procedure/ex1-hcc-ct-rfa (b.json)"]
    assert "Location/ex1-hcc-ct-loc" not in theirs.evaluation.unresolved
    assert theirs.evaluation.place_of_service == "22"
    assert {"coverage-missing", "provider-npi-invalid"} <= _codes(theirs)


def _without_full_urls(bundle: dict[str, Any]) -> dict[str, Any]:
    for entry in bundle["entry"]:
        entry.pop("fullUrl", None)
    return bundle


def test_one_procedure_in_two_extracts_is_one_claim(
    pack: Pack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two extracts holding the same Procedure (one business identifier) without fullUrls:
    their stubs stay apart, but the procedure is one, so it is billed once, under the
    Claim identifier that either file alone gives."""
    data = orjson.dumps(_without_full_urls(load_bundle("ex1-hcc-ct")), option=orjson.OPT_INDENT_2)
    folder = tmp_path / "twof"
    folder.mkdir()
    (folder / "a.json").write_bytes(data)
    (folder / "b.json").write_bytes(data)
    [alone] = evaluate_paths([folder / "b.json"], pack, now=NOW)
    [output] = evaluate_paths([folder], pack, now=NOW)
    assert output.evaluation.procedure == "Procedure/ex1-hcc-ct-rfa (a.json)"
    assert output.evaluation.outcome == "claim"
    assert output.resources == alone.resources
    out = tmp_path / "out"
    args = ["evaluate", str(folder), "--out", str(out), "--workers", "1", "--format", "json"]
    assert main(args) == 0
    assert len(json.loads(capsys.readouterr().out)["cases"]) == 1
    assert [p.name for p in out.glob("Procedure-*")] == ["Procedure-ex1-hcc-ct-rfa-a.json"]


def test_one_procedure_two_files_tell_differently_stops_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same business identifier in two files whose cases conclude differently (another
    patient, surgeon and Coverage): exit 2 naming both files, and nothing written."""
    a, _ = _two_patients(tmp_path, one_procedure=True)
    out = tmp_path / "out"
    code = main(["evaluate", str(a.parent), "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Procedure/ex1-hcc-ct-rfa (a.json)" in err and "(b.json)" in err
    assert "procedure-id|ex1-hcc-ct-rfa" in err.replace("http://example.org/", "")
    assert "Traceback" not in err and err.count("\n") == 1
    assert not list(out.glob("Procedure-*"))


def test_two_ids_for_one_procedure_in_one_file_stop_the_run(pack: Pack, tmp_path: Path) -> None:
    """One file giving one business identifier to two Procedure ids: which is billed is not
    known, so neither is (two Claims would bill it twice)."""
    resources = [e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]]
    twin = copy.deepcopy(by_id(resources, "ex1-hcc-ct-rfa"))
    twin["id"] = "ex1-hcc-ct-rfa-twin"
    path = _write(tmp_path / "twins.json", [*resources, twin])
    with pytest.raises(InputError, match="Procedure/ex1-hcc-ct-rfa and Procedure/ex1-hcc"):
        evaluate_paths([path], pack, now=NOW)


def test_files_holding_the_same_resources_alike_are_one_case(pack: Pack, tmp_path: Path) -> None:
    bundle = load_bundle("ex1-hcc-ct")
    (tmp_path / "a.json").write_bytes(orjson.dumps(bundle))
    (tmp_path / "b.json").write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    [output] = evaluate_paths([tmp_path], pack, now=NOW)
    assert output.evaluation.procedure == "Procedure/ex1-hcc-ct-rfa"


def test_an_ambiguous_merge_stops_the_run_naming_both_files_and_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case whose own file lacks its surgeon, while two other files hold two different
    surgeons under that id: exit 2, never a guess."""
    a, b = _two_patients(tmp_path)
    resources = [e["resource"] for e in json.loads(a.read_text())["entry"]]
    _write(a, [r for r in resources if r["id"] != "ex1-hcc-ct-dr"])
    staff = [e["resource"] for e in json.loads(b.read_text())["entry"]]
    _write(tmp_path / "extracts" / "staff.json", [by_id(staff, "ex1-hcc-ct-dr")])
    _write(b, [by_id(copy.deepcopy(resources), "ex1-hcc-ct-dr")])
    code = main(["evaluate", str(a.parent), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    line_b = _line_of(b, '"id": "ex1-hcc-ct-dr"')
    line_staff = _line_of(tmp_path / "extracts" / "staff.json", '"id": "ex1-hcc-ct-dr"')
    assert f"b.json:{line_b}" in err and f"staff.json:{line_staff}" in err
    assert "Practitioner/ex1-hcc-ct-dr" in err and "Traceback" not in err
    assert err.count("\n") == 1


def _line_of(path: Path, text: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if text in line)


def test_one_bundle_with_one_id_on_two_servers_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Relative references resolve against the entry's fullUrl base: with `Patient/p1` on
    two servers in one Bundle, which one a case means is not known."""
    bundle = load_bundle("ex1-hcc-ct")
    patient = copy.deepcopy(by_id([e["resource"] for e in bundle["entry"]], "ex1-hcc-ct-pt"))
    patient["gender"] = "male"
    bundle["entry"].append(
        {"fullUrl": "https://other.example.org/fhir/Patient/ex1-hcc-ct-pt", "resource": patient}
    )
    path = tmp_path / "two-servers.json"
    path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    assert main(["evaluate", str(path), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    line = _line_of(path, '"id": "ex1-hcc-ct-pt"')
    assert f"two-servers.json:{line}:" in err
    assert "http://example.org/fhir/Patient/ex1-hcc-ct-pt" in err
    assert "https://other.example.org/fhir/Patient/ex1-hcc-ct-pt" in err


def _extract_beside_export(tmp_path: Path, patient_in_extract: dict[str, Any] | None) -> Path:
    """ex1's Procedures (and, given, a Patient) as an EHR extract; the rest as an export."""
    resources = [e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]]
    extract = [r for r in resources if r["resourceType"] == "Procedure"]
    if patient_in_extract is not None:
        extract.append(patient_in_extract)
    _write(tmp_path / "extract.json", extract)
    export = tmp_path / "export"
    export.mkdir()
    for r in resources:
        if r["resourceType"] != "Procedure":
            with (export / f"{r['resourceType']}.ndjson").open("ab") as fh:
                fh.write(orjson.dumps(r) + b"\n")
    return export


def test_an_extract_beside_an_export_that_holds_another_patient_p1_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The extract's Patient differs from the export's under the same id, and the case
    reaches both (its own, and the export's Encounter points at the export's): exit 2
    naming the extract's line and the export's NDJSON line."""
    patient = by_id([e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]], "ex1-hcc-ct-pt")
    patient["name"] = [{"family": "Someone", "given": ["Else"]}]
    export = _extract_beside_export(tmp_path, patient)
    code = main(["evaluate", str(tmp_path / "extract.json"), str(export), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    line = _line_of(tmp_path / "extract.json", '"id": "ex1-hcc-ct-pt"')
    assert f"extract.json:{line}" in err
    assert f"{export / 'Patient.ndjson'}:1" in err


def test_an_extract_beside_an_export_holding_the_same_patient_joins(
    pack: Pack, tmp_path: Path
) -> None:
    patient = by_id([e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]], "ex1-hcc-ct-pt")
    export = _extract_beside_export(tmp_path, patient)
    [joined] = evaluate_paths([tmp_path / "extract.json", export], pack, now=NOW)
    [whole] = evaluate_paths([ROOT / "fixtures" / "cases" / "ex1-hcc-ct.json"], pack, now=NOW)
    assert _outcome(joined) == _outcome(whole)
    assert joined.evaluation.procedure == "Procedure/ex1-hcc-ct-rfa"


def _ex1_with(extra: dict[str, Any], full_url: str | None, first: bool) -> dict[str, Any]:
    """ex1 with one more entry, under `full_url` (None: no fullUrl), before or after all."""
    bundle = load_bundle("ex1-hcc-ct")
    entry: dict[str, Any] = {"resource": extra}
    if full_url is not None:
        entry["fullUrl"] = full_url
    bundle["entry"].insert(0 if first else len(bundle["entry"]), entry)
    return bundle


def _other_diagnosis() -> dict[str, Any]:
    """ex1's Condition under its own id, coded K76.89 instead of C22.0."""
    dx = copy.deepcopy(
        by_id([e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]], "ex1-hcc-ct-dx")
    )
    dx["code"] = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "K76.89"}]}
    return dx


def _guidance_as_ablation() -> dict[str, Any]:
    """ex1's guidance Procedure renamed to the ablation Procedure's id."""
    resources = [e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]]
    guide = copy.deepcopy(by_id(resources, "ex1-hcc-ct-guide"))
    guide["id"] = "ex1-hcc-ct-rfa"
    return guide


@pytest.mark.parametrize("first", [False, True], ids=["after", "before"])
@pytest.mark.parametrize(
    ("make", "full_url"),
    [
        (_other_diagnosis, "urn:uuid:3f1d7c52-8a0e-4b7e-9a55-0c2f4f0d9b11"),
        (_other_diagnosis, None),
        (_other_diagnosis, "http://example.org/fhir/Condition/ex1-hcc-ct-dx"),
        (_guidance_as_ablation, "http://example.org/fhir/Procedure/ex1-hcc-ct-rfa"),
        (_guidance_as_ablation, "http://example.org/fhir/Procedure/ex1-hcc-ct-guide"),
        (_guidance_as_ablation, "urn:uuid:9b0e2d4a-51c3-4f6e-8d7a-2e6b1c0a7f33"),
    ],
    ids=["urn-uuid", "no-url", "same-url", "procedure", "procedure-own-url", "procedure-urn"],
)
def test_one_bundle_giving_one_id_two_resources_is_an_error(
    make: Any,
    full_url: str | None,
    first: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever the fullUrls and the entry order, a second, different resource under one
    `Type/id` in one file is exit 2 naming the file and both lines, never a silent
    last-one-wins (the outcome would change from claim to blocked, or a Claim go out on
    the other diagnosis)."""
    extra = make()
    key = f"{extra['resourceType']}/{extra['id']}"
    path = tmp_path / "dup.json"
    path.write_bytes(orjson.dumps(_ex1_with(extra, full_url, first), option=orjson.OPT_INDENT_2))
    assert main(["evaluate", str(path), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    lines = [
        i
        for i, line in enumerate(path.read_text().splitlines(), start=1)
        if f'"id": "{extra["id"]}"' in line
    ]
    assert len(lines) == 2
    assert f"dup.json:{lines[0]}:" in err and str(lines[1]) in err
    assert key in err and "Traceback" not in err and err.count("\n") == 1


def test_one_bundle_giving_one_resource_twice_is_one_resource(pack: Pack, tmp_path: Path) -> None:
    resources = [e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]]
    again = copy.deepcopy(by_id(resources, "ex1-hcc-ct-dx"))
    path = tmp_path / "twice.json"
    path.write_bytes(
        orjson.dumps(_ex1_with(again, "urn:uuid:5c2a0f3e-7d41-4e8b-b6a9-1f0e3d2c4b55", True))
    )
    [output] = evaluate_paths([path], pack, now=NOW)
    [whole] = evaluate_paths([ROOT / "fixtures" / "cases" / "ex1-hcc-ct.json"], pack, now=NOW)
    assert _outcome(output) == _outcome(whole)
    assert output.evaluation.outcome == "claim"


STUB = {"resourceType": "Patient", "id": "ex1-hcc-ct-pt"}


def _stub_and_diagnosis(tmp_path: Path, urls: Any) -> Path:
    """a.json: ex1 without its Condition, its Patient a bare stub; b.json: the same stub and
    ex1's Condition, under the fullUrls `urls(resource)` gives."""
    bundle = load_bundle("ex1-hcc-ct")
    entries = [e for e in bundle["entry"] if e["resource"]["id"] != "ex1-hcc-ct-dx"]
    for entry in entries:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"] = dict(STUB)
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "a.json").write_bytes(orjson.dumps({**bundle, "entry": entries}))
    dx = by_id([e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]], "ex1-hcc-ct-dx")
    other = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": urls(r), "resource": r} for r in (dict(STUB), dx)],
    }
    (folder / "b.json").write_bytes(orjson.dumps(other, option=orjson.OPT_INDENT_2))
    return folder


def test_an_alike_patient_stub_does_not_join_another_files_diagnosis(
    pack: Pack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """b.json's Patient stub is byte-equal to a.json's but came under a `urn:uuid`, not
    a.json's server: it is b.json's own patient, and its diagnosis never makes a.json's
    case billable (alone, a.json is blocked for want of one)."""
    uuids = iter(
        [
            "urn:uuid:0d6f1c2e-3b4a-4c5d-8e9f-a0b1c2d3e4f5",
            "urn:uuid:1e7a2d3f-4c5b-4d6e-9f0a-b1c2d3e4f5a6",
        ]
    )
    folder = _stub_and_diagnosis(tmp_path, lambda r: next(uuids))
    [alone] = evaluate_paths([folder / "a.json"], pack, now=NOW)
    assert alone.evaluation.outcome != "claim"
    assert "diagnosis-unsupported" in _codes(alone)
    assert main(["evaluate", str(folder), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "a.json" in err and "b.json" in err and "Patient/ex1-hcc-ct-pt" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_one_servers_patient_in_two_files_joins_its_diagnosis(pack: Pack, tmp_path: Path) -> None:
    """The same stub under the same server's fullUrl in both files is one resource: the
    diagnosis b.json gives is the patient's."""
    base = "http://example.org/fhir/"
    folder = _stub_and_diagnosis(tmp_path, lambda r: f"{base}{r['resourceType']}/{r['id']}")
    [joined] = evaluate_paths([folder], pack, now=NOW)
    assert "diagnosis-unsupported" not in _codes(joined)
    assert joined.evaluation.outcome == "claim"


def test_an_extract_copy_under_a_urn_uuid_does_not_join_the_export(
    pack: Pack, tmp_path: Path
) -> None:
    """Beside an export, a JSON file's copy counts as that server's unless its fullUrl
    made it the file's own: then the export's Condition and Coverage (about the export's
    patient) never join the extract's case, they stop it."""
    patient = by_id([e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]], "ex1-hcc-ct-pt")
    export = _extract_beside_export(tmp_path, patient)
    extract = tmp_path / "extract.json"
    bundle = json.loads(extract.read_text())
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["fullUrl"] = "urn:uuid:7a3c9e1f-2b4d-4f6a-8c0e-1d3f5a7b9c2e"
    extract.write_bytes(orjson.dumps(bundle))
    with pytest.raises(InputError, match="Patient/ex1-hcc-ct-pt"):
        evaluate_paths([extract, export], pack, now=NOW)
