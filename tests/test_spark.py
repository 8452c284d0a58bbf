"""Spark engine: identical answers to the local engine, with the very same rule pack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapter import evaluate_paths
from fhir_adapter.cli import main
from fhir_adapter.testing.catalog import write_fixtures
from fhir_adapter.testing.synth import generate

pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")
pytestmark = pytest.mark.spark

from fhir_adapter.spark import evaluate_on_spark, read_reports  # noqa: E402

from .conftest import CASES, PA_OVERLAY  # noqa: E402

NOW = "2026-11-27T00:00:00+00:00"


def _local(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(orjson.dumps(o.report())) for o in evaluate_paths([path], now=NOW)]


def test_generated_export_matches_local(spark: Any, tmp_path: Path) -> None:
    data = tmp_path / "export"
    generate(data, 300, seed=11)
    result = evaluate_on_spark(str(data), str(tmp_path / "out"), spark=spark, now=NOW)
    local = _local(data)
    assert result.cases == len(local) > 20
    assert read_reports(result.reports) == local
    bundles = [
        orjson.loads(line)
        for p in sorted(Path(result.bundles).glob("part-*"))
        for line in p.read_bytes().splitlines()
    ]
    assert len(bundles) == len(local) and all(b["type"] == "transaction" for b in bundles)


def test_every_fixture_matches_local_with_the_chargemaster(spark: Any, tmp_path: Path) -> None:
    """Every fixture gives the local engine's report, and the chargemaster reaches the
    executors: the Claims carry the same prices as locally (one run checks both)."""
    from fhir_adapter.writeback.charges import load_charges

    charges = load_charges(CASES.parent / "chargemaster.csv")
    ndjson = tmp_path / "fixtures"
    write_fixtures(ndjson, "ndjson")
    for meta in ndjson.glob("*.yaml"):
        meta.unlink()
    result = evaluate_on_spark(
        str(ndjson), str(tmp_path / "out"), spark=spark, now=NOW, charges=charges
    )
    spark_rows = read_reports(result.reports)
    local = [
        orjson.loads(orjson.dumps(o.report()))
        for o in evaluate_paths([ndjson], now=NOW, charges=charges)
    ]
    assert spark_rows == local
    assert result.cases >= 21
    totals = [
        r["total"]["value"]
        for row in spark_rows
        for r in row["resources"]
        if r["resourceType"] == "Claim"
    ]
    assert len(totals) >= 15 and all(t > 0 for t in totals)


def test_cli_engine_spark(spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "export"
    generate(data, 150, seed=3)
    code = main(
        [
            "evaluate",
            "--engine",
            "spark",
            "--spark-master",
            "local[2]",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--format",
            "json",
        ]
    )
    rows = read_reports(str(tmp_path / "out" / "reports"))
    # --format json: the local engine's document, code-set releases included
    on_spark = orjson.loads(capsys.readouterr().out)
    local_code = main(["evaluate", str(data), "--format", "json"])
    locally = orjson.loads(capsys.readouterr().out)
    local = locally["cases"]
    assert len(rows) > 5
    assert [r["procedure"] for r in rows] == [r["procedure"] for r in local]
    assert code == local_code == (1 if any(r["outcome"] == "issues" for r in local) else 0)
    assert list(on_spark) == list(locally) == ["code_sets", "cases"]
    assert on_spark["code_sets"] == locally["code_sets"]
    assert on_spark["cases"] == rows
    # the default --format table: the same table as the local engine prints
    assert main(["evaluate", str(data)]) == code
    table_locally = capsys.readouterr().out
    spark_out = tmp_path / "out-table"
    argv = ["evaluate", "--engine", "spark", str(data), "--out", str(spark_out)]
    assert main(argv) == code
    assert capsys.readouterr().out == table_locally
    assert table_locally.count("\n") > len(rows)


def test_a_glob_is_read_by_spark_itself_with_the_same_answers(spark: Any, tmp_path: Path) -> None:
    """A glob (as a remote URI) is listed and read by Spark's text reader, not by the
    Python workers: the same rows as the local engine's on the directory, and a cut
    line is still named by its file."""
    from fhir_adapter.errors import AdapterError

    data = tmp_path / "export"
    generate(data, 150, seed=7)
    result = evaluate_on_spark(str(data / "*.ndjson"), str(tmp_path / "out"), spark=spark, now=NOW)
    local = _local(data)
    assert result.cases == len(local) > 5
    assert read_reports(result.reports) == local
    with (data / "Encounter.ndjson").open("ab") as fh:
        fh.write(b'{"resourceType": "Encounter", "id": "cut\n')
    with pytest.raises(AdapterError, match=r"Encounter\.ndjson: .*not a complete JSON object"):
        evaluate_on_spark(str(data / "*.ndjson"), str(tmp_path / "o2"), spark=spark, now=NOW)


def test_gzipped_files_beside_plain_ones_on_spark_as_locally(spark: Any, tmp_path: Path) -> None:
    """A local export's lines are read back from their files by the evaluation (the JVM
    holds only where they are); a gzipped file cannot be read at an offset, so its lines
    travel as bytes: with both kinds in one export, the local engine's rows."""
    import gzip

    data = tmp_path / "export"
    generate(data, 120, seed=13)
    for name in ("Encounter.ndjson", "Practitioner.ndjson"):
        plain = data / name
        (data / f"{name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    local = _local(data)
    assert len(local) > 5
    result = evaluate_on_spark(str(data), str(tmp_path / "out"), spark=spark, now=NOW)
    assert read_reports(result.reports) == local


def test_truncated_line_and_used_out_dir_are_clear_errors(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "export"
    generate(data, 40, seed=5)
    obs = data / "Observation.ndjson"
    lines = obs.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + b"\n"
    obs.write_bytes(b"".join(lines))
    args = ["evaluate", "--engine", "spark", str(data), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a complete JSON object" in err and "Traceback" not in err
    # the Python workers read a local export's files themselves: the line is named, as
    # the local engine names it
    assert f"{obs}:2: " in err
    used = tmp_path / "used"
    used.mkdir()
    (used / "reports").mkdir()
    assert main(["evaluate", "--engine", "spark", str(data), "--out", str(used)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert main([*args, "--skip-bad-lines"]) == 2
    assert "local engine only" in capsys.readouterr().err


def test_missing_input_and_an_export_without_cases_on_spark(
    spark: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["evaluate", "--engine", "spark", str(tmp_path / "nope"), "--out", "o"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    data = tmp_path / "nd"
    data.mkdir()
    (data / "Patient.ndjson").write_bytes(b'{"resourceType":"Patient","id":"p"}\n')
    (tmp_path / "part-00000").write_text('{"not": "a report"}\n')  # in the working directory
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--engine", "spark", str(data), "--out", str(tmp_path / "o")]) == 0
    assert "0 case(s)" in capsys.readouterr().err
    # no case, so no pass reads every file (pass 1 reads only the Procedure files): a cut
    # line outside them is still found
    (data / "Procedure.ndjson").write_bytes(
        b'{"resourceType":"Procedure","id":"x","status":"completed",'
        b'"subject":{"reference":"Patient/p"}}\n'
    )
    with (data / "Patient.ndjson").open("ab") as fh:
        fh.write(b'{"resourceType": "Patient", "id": "cut\n')
    assert main(["evaluate", "--engine", "spark", str(data), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "Patient.ndjson:2: " in err and "not a complete JSON object" in err


def _case_lines(path: Path) -> list[bytes]:
    lines = [
        line
        for line in (path / "Procedure.ndjson").read_bytes().splitlines()
        if b'"47382"' in line and b'"completed"' in line
    ]
    assert len(lines) >= 2, "fewer than two completed 47382 Procedures"
    return lines


# Cases enough for the two copies and for others that stay cases (a claim, findings,
# two in one session): the rule is per line, not per fixture set.
LATER_COPY_FIXTURES = ("ex1-hcc-ct", "v06-two-in-session", "v12-doc-gaps", "v26-global-period")


def test_a_later_copy_decides_on_spark_as_locally(spark: Any, tmp_path: Path) -> None:
    """A later file's copy of a case Procedure replaces the earlier one on both engines:
    entered in error (one case), or no longer coded (another), it is no case (the rows
    arrive in any order after grouping)."""
    ndjson = tmp_path / "fixtures"
    write_fixtures(ndjson, "ndjson", LATER_COPY_FIXTURES)
    for meta in ndjson.glob("*.yaml"):
        meta.unlink()
    voided, recoded = _case_lines(ndjson)[:2]
    copies = [
        voided.replace(b'"completed"', b'"entered-in-error"'),
        recoded.replace(b'"47382"', b'"47380"'),
    ]
    (ndjson / "Procedure.zzz.ndjson").write_bytes(b"\n".join(copies) + b"\n")
    keys = {f"Procedure/{orjson.loads(line)['id']}" for line in (voided, recoded)}
    local = _local(ndjson)
    assert len(keys) == 2 and not keys & {r["procedure"] for r in local}
    assert len(local) >= 3  # cases remain beside the two that are no longer cases
    result = evaluate_on_spark(str(ndjson), str(tmp_path / "out"), spark=spark, now=NOW)
    assert read_reports(result.reports) == local


def test_the_newer_copy_by_meta_decides_on_spark_as_locally(spark: Any, tmp_path: Path) -> None:
    """Copies whose meta says which is newer: the newer decides on both engines, wherever
    the files sort (an older voided copy read later leaves the case a case; a newer
    voided copy read earlier makes it none)."""
    ndjson = tmp_path / "fixtures"
    write_fixtures(ndjson, "ndjson", LATER_COPY_FIXTURES)
    for meta in ndjson.glob("*.yaml"):
        meta.unlink()
    kept, dropped = _case_lines(ndjson)[:2]
    procedures = ndjson / "Procedure.ndjson"
    current = {"versionId": "5", "lastUpdated": "2026-06-01T00:00:00Z"}
    stamped = {line: _with_meta(line, current) for line in (kept, dropped)}
    text = procedures.read_bytes()
    for line, new in stamped.items():
        text = text.replace(line, new)
    procedures.write_bytes(text)
    older = {"versionId": "4", "lastUpdated": "2026-01-01T00:00:00Z"}
    newer = {"versionId": "6", "lastUpdated": "2026-09-01T00:00:00Z"}
    voided = [line.replace(b'"completed"', b'"entered-in-error"') for line in (kept, dropped)]
    (ndjson / "Procedure.zzz.ndjson").write_bytes(_with_meta(voided[0], older) + b"\n")
    (ndjson / "Procedure.0.ndjson").write_bytes(_with_meta(voided[1], newer) + b"\n")
    key_kept, key_dropped = (f"Procedure/{orjson.loads(line)['id']}" for line in (kept, dropped))
    local = _local(ndjson)
    cases = {r["procedure"] for r in local}
    assert key_kept in cases and key_dropped not in cases
    result = evaluate_on_spark(str(ndjson), str(tmp_path / "out"), spark=spark, now=NOW)
    assert read_reports(result.reports) == local


def _with_meta(line: bytes, meta: dict[str, str]) -> bytes:
    return orjson.dumps({**orjson.loads(line), "meta": meta})


def test_every_case_entered_in_error_is_no_case_on_spark(spark: Any, tmp_path: Path) -> None:
    data = tmp_path / "export"
    generate(data, 60, seed=3)
    lines = (data / "Procedure.ndjson").read_bytes().splitlines()
    voided = [
        ln.replace(b'"completed"', b'"entered-in-error"') if b'"47382"' in ln else ln
        for ln in lines
    ]
    (data / "Procedure.ndjson").write_bytes(b"\n".join(voided) + b"\n")
    assert _local(data) == []
    result = evaluate_on_spark(str(data), str(tmp_path / "out"), spark=spark, now=NOW)
    assert (result.cases, result.claims) == (0, 0)


def test_a_colleague_named_only_as_practitioner_on_spark_as_locally(
    spark: Any, tmp_path: Path
) -> None:
    """v40's earlier 47382 names its performer as the Practitioner alone: the local engine
    holds her PractitionerRole (gathered for that earlier case) and so knows her group and
    specialty; Spark follows the role back to the Practitioner for the later case too."""
    ndjson = tmp_path / "v40"
    write_fixtures(ndjson, "ndjson")
    for path in ndjson.iterdir():
        if path.suffix != ".ndjson":
            path.unlink()
            continue
        lines = [ln for ln in path.read_bytes().splitlines() if b"v40-global-group" in ln]
        text = b"\n".join(lines).replace(
            b'"PractitionerRole/v40-global-group-role2"', b'"Practitioner/v40-global-group-dr2"'
        )
        path.write_bytes(text + b"\n" if lines else b"")
    local = _local(ndjson)
    later = next(r for r in local if r["procedure"] == "Procedure/v40-global-group-rfa")
    assert "global-period" in [f["code"] for f in later["findings"]]
    result = evaluate_on_spark(str(ndjson), str(tmp_path / "out"), spark=spark, now=NOW)
    assert read_reports(result.reports) == local


def test_a_bad_line_leaves_the_session_as_it_was(spark: Any, tmp_path: Path) -> None:
    """The run sets its own shuffle partitions for its length: a run stopped by a bad line
    gives the caller's session back with the caller's setting."""
    from fhir_adapter.errors import AdapterError

    data = tmp_path / "export"
    generate(data, 20, seed=5)
    with (data / "Procedure.ndjson").open("ab") as fh:
        fh.write(b'{"resourceType": "Procedure", "id": "cut\n')
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        with pytest.raises(AdapterError, match="not a complete JSON object"):
            evaluate_on_spark(str(data), str(tmp_path / "out"), spark=spark, now=NOW)
        assert spark.conf.get("spark.sql.shuffle.partitions") == "7"
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")


def test_the_cli_runs_on_the_active_session_of_its_master(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--engine spark` in a process with a session on the same master runs on it as it
    is (no second JVM, the caller's settings kept); on another master it says so rather
    than running where it was not asked to."""
    data = tmp_path / "export"
    generate(data, 60, seed=3)
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    try:
        argv = ["evaluate", "--engine", "spark", "--spark-master", spark.sparkContext.master]
        assert main([*argv, str(data), "--out", str(tmp_path / "out")]) in (0, 1)
        assert spark.conf.get("spark.sql.shuffle.partitions") == "5"
        assert read_reports(str(tmp_path / "out" / "reports"))
        other = ["evaluate", "--engine", "spark", "--spark-master", "local[1]", str(data)]
        assert main([*other, "--out", str(tmp_path / "other")]) == 2
        err = capsys.readouterr().err
        assert "is active in this process" in err and "local[1]" in err
        assert not (tmp_path / "other").exists()
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")


def test_a_local_session_compiles_with_the_first_jit_tier_only() -> None:
    """A session the adapter starts on a local master has its JVM compile with the JIT's
    first tier only (its optimising compiler cost more CPU than it saved, taken from
    the tasks); on a cluster the JVMs are left as they are configured."""
    from fhir_adapter.spark import LOCAL_JVM_OPTIONS, session_builder

    assert "TieredStopAtLevel=1" in LOCAL_JVM_OPTIONS
    for master in ("local[1]", "local[2]", "local[*]"):
        options = session_builder(master)._options
        assert options["spark.driver.extraJavaOptions"] == LOCAL_JVM_OPTIONS
    assert "spark.driver.extraJavaOptions" not in session_builder("spark://host:7077")._options


@pytest.mark.parametrize("candidates", [16, 0], ids=["placed", "repartitionByRange"])
def test_cases_are_evaluated_in_ranges_of_their_keys_in_key_order(
    spark: Any, candidates: int, monkeypatch: Any
) -> None:
    """The evaluation's partitions are ranges of the sorted case keys (each partition's
    reports are one part file: the output is in key order), as many cases each, placed
    without a sample of the rows; with no number found for a partition (no candidates),
    Spark's own range partitioning places them, in the same order."""
    from pyspark.sql import functions as F

    import fhir_adapter.spark
    from fhir_adapter.spark import _in_case_ranges

    monkeypatch.setattr(fhir_adapter.spark, "RANK_CANDIDATES_PER_PART", candidates)

    cases = sorted(f"Procedure/p{n:03d}" for n in range(0, 300, 7))
    rows = [(case, line) for case in reversed(cases) for line in range(3)]
    frame = spark.createDataFrame(rows, "case string, line int")
    for parts in (1, 4, 5):
        placed = (
            _in_case_ranges(frame, cases, parts)
            .select("case", F.spark_partition_id().alias("part"))
            .toArrow()
            .to_pylist()
        )
        assert len(placed) == len(rows)
        ranges: dict[int, set[str]] = {}
        for row in placed:
            ranges.setdefault(row["part"], set()).add(row["case"])
        assert sorted(ranges) == list(range(parts))
        in_order = [sorted(ranges[part]) for part in range(parts)]
        assert [case for part in in_order for case in part] == cases
        if candidates:  # Spark's own ranges come from a sample: about, not exactly, even
            assert max(map(len, in_order)) - min(map(len, in_order)) <= 1


def test_payer_overlays_of_the_command_line_reach_the_executors(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """`--payers DIR --payer ID` on Spark: every case judged by the added overlay, which
    only the driver can read, exactly as the local engine judges it."""
    import fhir_adapter.pipeline

    monkeypatch.setattr(fhir_adapter.pipeline, "now_iso", lambda: NOW)  # one stamp for both
    ndjson = tmp_path / "fixtures"
    write_fixtures(ndjson, "ndjson")
    for meta in ndjson.glob("*.yaml"):
        meta.unlink()
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    (overlays / "example-health.yaml").write_text(PA_OVERLAY)
    options = ["--payers", str(overlays), "--payer", "example-health-ablation"]
    options += ["--format", "json"]
    local_code = main(["evaluate", str(ndjson), *options])
    local = orjson.loads(capsys.readouterr().out)["cases"]
    out = tmp_path / "out"
    code = main(["evaluate", "--engine", "spark", str(ndjson), "--out", str(out), *options])
    on_spark = orjson.loads(capsys.readouterr().out)["cases"]
    assert on_spark == local and code == local_code
    assert len(local) >= 21
    assert {r["payer_policy"]["id"] for r in local} == {"example-health-ablation"}
    assert all(r["payer_policy"]["matched_by"] == "--payer" for r in local)
    assert sum("prior-auth-missing" in {f["code"] for f in r["findings"]} for r in local) >= 15


def test_cpt_written_as_its_oid_is_read_as_cpt_on_spark(spark: Any, tmp_path: Path) -> None:
    """CPT's OID (documents converted from C-CDA) is CPT to Spark's screens as locally."""
    data = tmp_path / "export"
    generate(data, 40, seed=5)
    want = [r["outcome"] for r in _local(data)]
    for f in data.glob("*.ndjson"):
        text = f.read_text()
        f.write_text(
            text.replace("http://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.12")
        )
    result = evaluate_on_spark(str(data), str(tmp_path / "out"), spark=spark, now=NOW)
    local = _local(data)
    assert [r["outcome"] for r in local] == want and len(want) > 2
    assert result.cases == len(local)
    assert read_reports(result.reports) == local
