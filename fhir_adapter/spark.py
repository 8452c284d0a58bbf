"""Evaluate a Bulk Data NDJSON export on Apache Spark with the very same rule pack.

The passes are the local engine's (sources/bulk.py: screening, `plan_hits`),
run as Spark jobs; each kept resource is keyed by the case(s) it belongs to,
grouped, and every group is evaluated inside the executors by the same
`assemble` / `evaluate_case` / `build_output` code the local engine uses, with
the pack compiled there from the driver's YAML text. No rule exists twice.

Output: `OUT/reports` (one JSON report row per case, the same object as the
`cases[]` of `--format json`) and `OUT/bundles` (one transaction Bundle per
line), written as partitioned text files ordered by procedure.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_adapter.errors import AdapterError, SparkUnavailable
from fhir_adapter.fhir.codings import has_coding
from fhir_adapter.pack import Pack, load_pack
from fhir_adapter.sources.bulk import (
    FOLLOWED,
    Kept,
    Plan,
    forward_keys,
    is_complete_object,
    kept_record,
    line_screen,
    plan_hits,
    screen_ids,
)
from fhir_adapter.sources.files import check_resource


@dataclass
class SparkResult:
    cases: int
    claims: int
    reports: str
    bundles: str


def _session(master: str) -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable(
            "PySpark is not installed: pip install 'fhir-adapter[spark]' (needs Java 17)"
        ) from None
    builder = (
        SparkSession.builder.master(master)
        .appName("fhir-adapter")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
    )
    if master.startswith("local"):
        # Local workers run the driver's interpreter, so they see the packages installed
        # with it (the ICD-10-CM tabular among them), not whatever `python3` is on PATH;
        # PySpark reads only the environment for this.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # a JVM that would not start, an unknown master URL
        raise SparkUnavailable(
            f"Spark would not start with master {master!r}: {type(exc).__name__}"
        ) from None


BAD_LINE = "a line of the export is not a complete JSON object (truncated or corrupt)"


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise AdapterError(f"{BAD_LINE}: {line[:80]!r}") from None
    return check_resource(value, "spark input", None)


# Where a line stands in the export: (partition, position); partitions follow the files'
# order, so a later copy of a resource sorts after an earlier one, as the local engine reads.
Order = tuple[int, int]


def _ordered(partition: int, lines: Iterable[str]) -> Iterator[tuple[str, Order]]:
    for position, text in enumerate(lines):
        if text.strip():
            yield text, (partition, position)


def _coded_cases(
    lines: Iterable[tuple[str, Order]], needle: bytes, system: str, code: str
) -> Iterator[tuple[Order, Kept]]:
    for text, order in lines:
        line = text.encode()
        if not is_complete_object(line):  # pass 1 reads every line: check them all here
            raise AdapterError(f"{BAD_LINE}: {line[:80]!r}")
        if needle not in line:
            continue
        resource = _parse_line(line)
        if resource["resourceType"] == "Procedure" and has_coding(
            resource, ("code",), system, code
        ):
            yield order, kept_record(line, resource)


def _attributed(
    lines: Iterable[tuple[str, Order]],
    plan: Plan,
    ids: tuple[Any, ...],
    cases_of: dict[str, list[str]],
) -> Iterator[tuple[str, tuple[Order, Kept]]]:
    """(case key, (order, kept resource)) for every case a line belongs to."""
    wanted = line_screen(*screen_ids(ids, None))
    for text, order in lines:
        line = text.encode()
        if not wanted(line):
            continue
        resource = _parse_line(line)
        refs = forward_keys(line)
        hits = plan_hits(plan, resource, refs)
        if not hits:
            continue
        kept = kept_record(line, resource, refs)
        for case in sorted({c for hit in hits for c in cases_of.get(hit, ())}):
            yield case, (order, kept)


def _evaluate_groups(
    groups: Iterable[tuple[str, Iterable[tuple[Order, Kept]]]],
    pack_text: str,
    block_on: str | None,
    stamp: str,
    charges: Mapping[str, float] | None = None,
) -> Iterator[tuple[str, str, str, bool]]:
    """Executor side: one store per case, evaluated by the local engine's own code."""
    from fhir_adapter.pack.load import pack_from_text
    from fhir_adapter.pipeline import case_procedure, evaluate_one
    from fhir_adapter.sources.store import CompactStore

    pack = pack_from_text(pack_text, "<driver rule pack>")
    for case_key, members in groups:
        store = CompactStore()
        # in export order, so that a later copy of a resource replaces an earlier one as
        # it does on the local engine (groupByKey hands them over in any order)
        for _, kept in sorted(members, key=lambda member: member[0]):
            store.add_indexed(kept.line, kept.key, kept.targets)
        procedure = case_procedure(store, pack, case_key)
        if procedure is None:
            continue
        output = evaluate_one(store, pack, procedure, block_on, stamp, charges)
        yield (
            case_key,
            orjson.dumps(output.report()).decode(),
            orjson.dumps(output.bundle()).decode(),
            not output.evaluation.blocked,
        )


def evaluate_on_spark(
    input_uri: str,
    out_uri: str,
    *,
    master: str = "local[2]",
    pack: Pack | None = None,
    block_on: str | None = None,
    now: str | None = None,
    spark: Any = None,
    charges: Mapping[str, float] | None = None,
) -> SparkResult:
    """Run the evaluation of an NDJSON export (directory, glob or URI) on Spark;
    `charges` (a chargemaster, code -> amount) prices the Claims' lines.

    A corrupt line or an output directory that already holds results is an
    AdapterError, not a Spark stack trace.
    """
    local_out = Path(out_uri.removeprefix("file://"))
    local = "://" not in out_uri.removeprefix("file://")
    if local and local_out.is_dir() and any(local_out.iterdir()):
        raise AdapterError(f"{out_uri} already holds files; give an empty or new --out")
    try:
        return _evaluate_on_spark(input_uri, out_uri, master, pack, block_on, now, spark, charges)
    except AdapterError:
        raise
    except Exception as exc:  # Py4J/PySpark wrap what the executors raised
        if BAD_LINE in str(exc):
            raise AdapterError(
                f"{input_uri}: {BAD_LINE}; Spark cannot name the line: "
                "evaluate the files locally to find it"
            ) from None
        raise


def _ndjson_inputs(input_uri: str) -> str:
    """A local directory becomes its NDJSON files (what the local engine reads: no sidecar
    YAML, no hidden files); a glob or remote URI goes to Spark as given."""
    from fhir_adapter.sources.files import NDJSON_SUFFIXES, input_files

    local = Path(input_uri.removeprefix("file://"))
    if "://" in input_uri.removeprefix("file://") or any(c in input_uri for c in "*?[{"):
        return input_uri
    if not local.exists():
        raise AdapterError(f"{input_uri}: no such file or directory")
    if not local.is_dir():
        return input_uri
    files = [str(f) for f in input_files(local) if f.name.lower().endswith(NDJSON_SUFFIXES)]
    if not files:
        raise AdapterError(f"{input_uri}: no NDJSON files in this directory")
    return ",".join(files)


def _evaluate_on_spark(
    input_uri: str,
    out_uri: str,
    master: str,
    pack: Pack | None,
    block_on: str | None,
    now: str | None,
    spark: Any,
    charges: Mapping[str, float] | None,
) -> SparkResult:
    from fhir_adapter.pipeline import now_iso

    pack = pack or load_pack()
    stamp = now or now_iso()
    session = spark or _session(master)
    sc = session.sparkContext
    system, code = pack.procedure_system, pack.procedure_code
    lines = sc.textFile(_ndjson_inputs(input_uri)).mapPartitionsWithIndex(_ordered)
    needle = code.encode()  # bare: a padded code counts too, as in the local engine

    # Pass 1: the cases.
    ordered_cases: list[tuple[Order, Kept]] = lines.mapPartitions(
        lambda it: _coded_cases(it, needle, system, code)
    ).collect()
    cases = [kept for _, kept in ordered_cases]
    if not cases:
        return SparkResult(0, 0, "", "")
    plan, cases_of = Plan.for_cases(cases)
    frozen = {k: sorted(v) for k, v in cases_of.items()}

    # Pass 2: what the cases point at and what points at them, keyed by case.
    b2 = sc.broadcast((plan, plan.id_bytes(), frozen))
    pass2 = lines.mapPartitions(lambda it: _attributed(it, *b2.value)).cache()

    # Pass 3: what those point at and nobody has yet, keyed by the cases that need it.
    have = set(pass2.map(lambda kv: kv[1][1].key).distinct().collect()) | {k.key for k in cases}
    wanted = (
        pass2.filter(lambda kv: kv[1][1].key.split("/", 1)[0] in FOLLOWED)
        .flatMap(lambda kv: [(ref, kv[0]) for ref in kv[1][1].forward if ref not in have])
        .distinct()
        .collect()
    )
    parts = [pass2, sc.parallelize([(kept.key, (order, kept)) for order, kept in ordered_cases])]
    if wanted:
        plan3 = Plan(needed={ref for ref, _ in wanted})
        need_cases: dict[str, set[str]] = defaultdict(set)
        for ref, case in wanted:
            need_cases[ref].add(case)
        b3 = sc.broadcast((plan3, plan3.id_bytes(), {k: sorted(v) for k, v in need_cases.items()}))
        parts.append(lines.mapPartitions(lambda it: _attributed(it, *b3.value)))

    # Group by case and evaluate inside the executors with the same compiled pack.
    pack_text = pack.source_text
    prices = dict(charges) if charges is not None else None  # shipped with the closure
    rows = (
        sc.union(parts)
        .groupByKey()
        .mapPartitions(lambda groups: _evaluate_groups(groups, pack_text, block_on, stamp, prices))
        .sortBy(lambda row: row[0])
        .cache()
    )
    reports = f"{out_uri.rstrip('/')}/reports"
    bundles = f"{out_uri.rstrip('/')}/bundles"
    rows.map(lambda row: row[1]).saveAsTextFile(reports)
    rows.map(lambda row: row[2]).saveAsTextFile(bundles)
    # fold, not reduce: every case may have been skipped (entered in error), leaving no row
    counts = rows.map(lambda row: (1, int(row[3]))).fold(
        (0, 0), lambda a, b: (a[0] + b[0], a[1] + b[1])
    )
    pass2.unpersist()
    rows.unpersist()
    return SparkResult(counts[0], counts[1], reports, bundles)


def read_reports(directory: str) -> list[dict[str, Any]]:
    """The report rows Spark wrote (local paths), in order."""

    out: list[dict[str, Any]] = []
    for part in sorted(Path(directory).glob("part-*")):
        out.extend(json.loads(line) for line in part.read_text().splitlines() if line.strip())
    return out
