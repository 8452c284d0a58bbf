"""Streaming Bulk Data input: same answers as loading everything, for any worker count and form."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapter import InputError, ResourceStore, evaluate_paths, evaluate_store, read_paths
from fhir_adapter.pack import Pack
from fhir_adapter.sources.bulk import load_for_cases
from fhir_adapter.testing.synth import generate

NOW = "2026-11-27T00:00:00+00:00"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    counts = generate(out, 400, seed=7)
    assert counts["Procedure"] > 400 and counts["Patient"] == 400
    return out


def _reports(outputs: list[Any]) -> list[bytes]:
    return [orjson.dumps(o.report(), option=orjson.OPT_SORT_KEYS) for o in outputs]


def test_streaming_equals_loading_everything(export: Path, pack: Pack) -> None:
    full = evaluate_store(ResourceStore(read_paths([export])), pack, now=NOW)
    assert len(full) >= 15
    streamed = evaluate_paths([export], pack, now=NOW)
    assert _reports(streamed) == _reports(full)
    # the stream kept a small part of the export
    kept = load_for_cases([export], pack.procedure_system, pack.procedure_code)
    assert len(kept) < 0.3 * sum(1 for _ in read_paths([export]))


def test_workers_and_chunks_do_not_change_results(
    export: Path, pack: Pack, pool_always: None
) -> None:
    one = evaluate_paths([export], pack, now=NOW, workers=1)
    store = load_for_cases(
        [export], pack.procedure_system, pack.procedure_code, workers=2, chunk_bytes=64 * 1024
    )
    two = evaluate_store(store, pack, now=NOW, workers=2)
    assert _reports(two) == _reports(one)


def test_bundle_gzip_and_ndjson_inputs_agree(export: Path, pack: Pack, tmp_path: Path) -> None:
    resources = [x.resource for x in read_paths([export])]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    (tmp_path / "all.json").write_bytes(orjson.dumps(bundle))
    gz = tmp_path / "gz"
    gz.mkdir()
    for f in export.iterdir():
        with open(f, "rb") as src, gzip.open(gz / (f.name + ".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    base = _reports(evaluate_paths([export], pack, now=NOW))
    assert _reports(evaluate_paths([tmp_path / "all.json"], pack, now=NOW)) == base
    assert _reports(evaluate_paths([gz], pack, now=NOW, workers=2)) == base


def test_bad_line_in_a_chunk_names_file_and_line(tmp_path: Path, pack: Pack) -> None:
    good = b'{"resourceType":"Patient","id":"p1"}\n'
    proc = (
        b'{"resourceType":"Procedure","id":"x","status":"completed","subject":{"reference":"Patient/p1"},'
        b'"code":{"coding":[{"system":"http://www.ama-assn.org/go/cpt","code":"47382"}]}}\n'
    )
    (tmp_path / "Procedure.ndjson").write_bytes(proc)
    (tmp_path / "Patient.ndjson").write_bytes(
        good * 5000 + b'{"resourceType":"Patient","id":"p1",\n' + good
    )
    with pytest.raises(InputError, match=r"Patient\.ndjson:5001: not a complete JSON object"):
        load_for_cases([tmp_path], pack.procedure_system, pack.procedure_code, chunk_bytes=4096)


def test_bad_lines_are_numbered_in_one_read_per_file(tmp_path: Path) -> None:
    from fhir_adapter.sources.bulk import BadLine, where_all

    lines = [b'{"resourceType":"Patient","id":"p%d"}' % i for i in range(6)]
    lines[1] = lines[1][:10]
    lines[4] = lines[4][:12]
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    offsets = [sum(len(x) + 1 for x in lines[:i]) for i in (4, 1)]
    bad = [BadLine(str(path), o) for o in offsets]
    assert where_all(bad) == [f"{path}:2", f"{path}:5"]


def test_a_file_changed_after_screening_is_an_error_not_wrong_data(
    export: Path, pack: Pack, tmp_path: Path
) -> None:
    """Kept lines stay in their files until a case needs them: if a file is rewritten in
    between (an export still being written), the run stops with a clear error."""
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    store = load_for_cases([copy], pack.procedure_system, pack.procedure_code)
    obs = copy / "Observation.ndjson"
    data = obs.read_bytes()
    # same length, other ids: every kept Observation now reads as something else
    obs.write_bytes(data.replace(b'"id":"obs-', b'"id":"xbs-'))
    assert obs.read_bytes() != data
    with pytest.raises(InputError, match=r"Observation\.ndjson: the file changed while"):
        evaluate_store(store, pack, now=NOW)
    obs.write_bytes(data[: len(data) // 2])  # cut short
    with pytest.raises(InputError, match=r"Observation\.ndjson: the file changed while"):
        evaluate_store(store, pack, now=NOW)
    first = data.index(b"\n") + 1
    obs.write_bytes(data[:first] + data)  # a line added at the top: every offset moves
    with pytest.raises(InputError, match=r"Observation\.ndjson: the file changed while"):
        evaluate_store(store, pack, now=NOW)


def test_with_several_bad_lines_the_first_in_file_order_is_named(
    export: Path, pack: Pack, tmp_path: Path, pool_always: None
) -> None:
    """However the chunks are shared out (largest first, two workers), the error names the
    first bad line of the export, as a one-worker run would."""
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    # the first bad line ends Condition.ndjson, in a short last chunk that largest-first
    # dispatches late; a second one near the top of Observation.ndjson is in a full chunk
    from fhir_adapter.sources.bulk import chunks_of

    cond = copy / "Condition.ndjson"
    last = chunks_of([cond], 8192)[-1]
    data = cond.read_bytes()
    head = data[: last.start]
    at = head.count(b"\n") + 1  # 1-based: the last chunk's first line, cut short
    cond.write_bytes(head + data[last.start : last.start + 40] + b"\n")
    observations = (copy / "Observation.ndjson").read_bytes().split(b"\n")
    observations[3] = observations[3][:40]
    (copy / "Observation.ndjson").write_bytes(b"\n".join(observations))
    for workers in (1, 2, 2):
        expected = rf"Condition\.ndjson:{at}: not a complete JSON object"
        with pytest.raises(InputError, match=expected):
            load_for_cases(
                [copy],
                pack.procedure_system,
                pack.procedure_code,
                workers=workers,
                chunk_bytes=8192,
            )


def _case_procedure_line(export: Path) -> tuple[bytes, dict[str, Any]]:
    for line in (export / "Procedure.ndjson").read_bytes().splitlines():
        procedure = orjson.loads(line)
        if any(c.get("code") == "47382" for c in procedure["code"].get("coding", [])):
            return line, procedure
    raise AssertionError("the generated export has no 47382 Procedure")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("coded_later", [False, True])
def test_a_later_copy_of_a_procedure_decides_whether_it_is_a_case(
    export: Path,
    pack: Pack,
    tmp_path: Path,
    pool_always: None,
    workers: int,
    coded_later: bool,
) -> None:
    """The loader notes the case Procedures it found, so that finding the cases parses
    nothing; a later line with the same key still replaces the earlier, as when the
    same data is loaded whole."""
    data = tmp_path / "export"
    shutil.copytree(export, data)
    line, procedure = _case_procedure_line(export)
    uncoded = {**procedure, "code": {"text": "a different procedure"}}
    first, later = (uncoded, procedure) if coded_later else (procedure, uncoded)
    lines = (data / "Procedure.ndjson").read_bytes().replace(line, orjson.dumps(first))
    (data / "Procedure.ndjson").unlink()
    (data / "Procedure.000.ndjson").write_bytes(lines)
    (data / "Procedure.001.ndjson").write_bytes(orjson.dumps(later) + b"\n")

    streamed = evaluate_paths([data], pack, now=NOW, workers=workers)
    whole = evaluate_store(ResourceStore(read_paths([data])), pack, now=NOW)
    key = f"Procedure/{procedure['id']}"
    assert (key in [o.evaluation.procedure for o in streamed]) is coded_later
    assert _reports(streamed) == _reports(whole)


def test_outputs_cross_processes_in_their_compact_form(export: Path, pack: Pack) -> None:
    import pickle

    from fhir_adapter.writeback import CaseOutput

    output = evaluate_paths([export], pack, now=NOW)[0]
    data = pickle.dumps(output)
    assert output.to_bytes() in data  # pickled as to_bytes, not object by object
    back = pickle.loads(data)
    assert isinstance(back, CaseOutput)
    assert back.to_bytes() == output.to_bytes()
    assert back.report() == output.report()


def test_the_loader_notes_the_cases_it_found(export: Path, pack: Pack) -> None:
    from fhir_adapter.case import find_procedure_keys, find_procedures

    system, code = pack.procedure_system, pack.procedure_code
    store = load_for_cases([export], system, code)
    noted = store.coded_keys(system, code)
    assert noted is not None and len(noted) >= 15
    parsed = [store.key_of(p) for p in find_procedures(store, system, code)]
    assert find_procedure_keys(store, system, code) == parsed == sorted(noted)
    # a store nobody noted is searched the long way, with the same answer
    whole = ResourceStore(read_paths([export]))
    assert whole.coded_keys(system, code) is None
    assert find_procedure_keys(whole, system, code) == parsed


def test_a_bad_line_stops_the_worker_processes_at_once(
    export: Path, pack: Pack, tmp_path: Path, pool_always: None
) -> None:
    """The error is raised while children may still be screening: they are stopped before
    it reaches the caller, without waiting for the garbage collector."""
    import gc
    import multiprocessing

    data = tmp_path / "export"
    shutil.copytree(export, data)
    procedures = (data / "Procedure.ndjson").read_bytes()
    (data / "Procedure.ndjson").write_bytes(procedures[:30] + b"\n" + procedures)
    gc.disable()
    try:
        with pytest.raises(InputError, match=r"Procedure\.ndjson:1:"):
            load_for_cases(
                [data], pack.procedure_system, pack.procedure_code, workers=3, chunk_bytes=16384
            )
        assert multiprocessing.active_children() == []
    finally:
        gc.enable()


def test_a_case_procedure_in_a_file_named_for_another_type_is_still_a_case(
    export: Path, pack: Pack, tmp_path: Path
) -> None:
    """Pass 1 reads only the files that may hold Procedures; one filed under another type
    (an exporter's mistake) is kept by pass 2 for its encounter, and is a case as when
    the same data is loaded whole."""
    data = tmp_path / "export"
    shutil.copytree(export, data)
    _, procedure = _case_procedure_line(export)
    # another procedure (its own id and no business identifier: one shared would make
    # the two one procedure told two ways)
    twin = {**procedure, "id": "rfa-misfiled"}
    twin.pop("identifier", None)
    with (data / "Encounter.ndjson").open("ab") as f:
        f.write(orjson.dumps(twin) + b"\n")
    streamed = evaluate_paths([data], pack, now=NOW)
    whole = evaluate_store(ResourceStore(read_paths([data])), pack, now=NOW)
    assert "Procedure/rfa-misfiled" in [o.evaluation.procedure for o in whole]
    assert _reports(streamed) == _reports(whole)


REFUTED = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": "refuted",
        }
    ]
}


def _two_copies_of_the_diagnosis(
    folder: Path, stale_file: str, current: dict[str, Any] | None, stale: dict[str, Any] | None
) -> tuple[Path, Path]:
    """ex1 as NDJSON, one file per type, and a second copy of its diagnosis (refuted) in
    `stale_file`; `current` and `stale` are the two copies' `meta` (None: none)."""
    from .conftest import load_bundle

    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in load_bundle("ex1-hcc-ct")["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    [diagnosis] = [c for c in by_type["Condition"] if c["id"] == "ex1-hcc-ct-dx"]
    old = {**diagnosis, "verificationStatus": REFUTED}
    if current is not None:
        diagnosis["meta"] = current
    if stale is not None:
        old["meta"] = stale
    folder.mkdir()
    for rtype, resources in by_type.items():
        (folder / f"{rtype}.ndjson").write_bytes(
            b"".join(orjson.dumps(r) + b"\n" for r in resources)
        )
    data = orjson.dumps(old) + b"\n"
    path = folder / stale_file
    path.write_bytes(gzip.compress(data) if stale_file.endswith(".gz") else data)
    current_file = folder / "Condition.ndjson"
    line = 1 + [c["id"] for c in by_type["Condition"]].index("ex1-hcc-ct-dx")
    return path, current_file.with_name(f"{current_file.name}:{line}")


NEWER = {"versionId": "7", "lastUpdated": "2026-11-01T00:00:00Z"}
OLDER = {"versionId": "2", "lastUpdated": "2025-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("stale_file", "current", "stale"),
    [
        # the stale copy read after the current one, and before it
        ("Condition.old.ndjson", NEWER, OLDER),
        ("Condition.0.ndjson", NEWER, OLDER),
        ("Condition.old.ndjson.gz", NEWER, OLDER),
        # only versionId, or only lastUpdated (as instants: +02:00 is earlier than Z)
        ("Condition.old.ndjson", {"versionId": "10"}, {"versionId": "9"}),
        ("Condition.0.ndjson", {"versionId": "10"}, {"versionId": "9"}),
        (
            "Condition.old.ndjson",
            {"lastUpdated": "2026-11-01T01:30:00+00:00"},
            {"lastUpdated": "2026-11-01T02:00:00+02:00"},
        ),
    ],
)
def test_the_newer_of_two_copies_wins_whatever_the_file_order(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stale_file: str,
    current: dict[str, Any],
    stale: dict[str, Any],
) -> None:
    """Two NDJSON files hold different versions of one Condition: the one its meta says is
    newer (confirmed) decides, wherever the stale one (refuted) sorts, and stderr says
    which was used, naming both copies' file:line, once."""
    from fhir_adapter.cli import main

    path, used = _two_copies_of_the_diagnosis(tmp_path / "nd", stale_file, current, stale)
    assert main(["evaluate", str(path.parent), "--workers", "1", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    [row] = orjson.loads(out)["cases"]
    assert row["outcome"] == "claim" and not row["findings"]
    notes = [line for line in err.splitlines() if "Condition/ex1-hcc-ct-dx" in line]
    assert len(notes) == 1
    assert f"using {used}, the newer" in notes[0] and f"{path}:1" in notes[0]


def test_copies_that_do_not_say_which_is_newer_go_by_reading_order(
    tmp_path: Path, pack: Pack, capsys: pytest.CaptureFixture[str]
) -> None:
    """No meta (or one copy without it): the later file in reading order decides, as
    before, and stderr says so: here the refuted copy, so the diagnosis is unsupported."""
    from fhir_adapter.cli import main

    path, used = _two_copies_of_the_diagnosis(tmp_path / "nd", "Condition.old.ndjson", NEWER, None)
    assert main(["evaluate", str(path.parent), "--workers", "1", "--format", "json"]) == 1
    out, err = capsys.readouterr()
    [row] = orjson.loads(out)["cases"]
    assert "diagnosis-unsupported" in {f["code"] for f in row["findings"]}
    [note] = [line for line in err.splitlines() if "Condition/ex1-hcc-ct-dx" in line]
    assert f"using {path}:1, the later in reading order" in note and str(used) in note
    # the same answer however many workers screen the files
    [again] = evaluate_paths([path.parent], pack, now=NOW, workers=2)
    assert again.evaluation.outcome == row["outcome"]


def test_newer_copy_reads_meta_as_fhir_means_it() -> None:
    from fhir_adapter.sources.store import newer_copy

    def meta(**m: str) -> dict[str, Any]:
        return {"resourceType": "Condition", "id": "c", "meta": m}

    assert newer_copy(meta(versionId="9"), meta(versionId="10")) == (True, "versionId 10")
    assert newer_copy(meta(versionId="10"), meta(versionId="9")) == (False, "versionId 10")
    # versionId is opaque unless both are whole numbers; a date without a zone is no instant
    assert newer_copy(meta(versionId="b"), meta(versionId="a")) is None
    assert newer_copy(meta(lastUpdated="2026-01-02"), meta(lastUpdated="2026-01-01")) is None
    assert newer_copy(meta(), {"resourceType": "Condition", "id": "c"}) is None
    # the same lastUpdated: versionId decides
    same = "2026-01-01T00:00:00Z"
    assert newer_copy(meta(lastUpdated=same, versionId="3"), meta(lastUpdated=same, versionId="4"))
