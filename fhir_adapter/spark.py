"""Evaluate a Bulk Data NDJSON export on Apache Spark with the very same rule pack.

A local export (a file or directory) is read by the Python workers themselves: Spark
hands each task a share of the local engine's newline-aligned byte ranges of the
files, and the task runs that engine's own loop on them (`whole_lines`: the structural
check of every line, the screen of its bytes, `screen_ids` / `line_screen` per file
type; `plan_hits`, `kept_record` for the few lines parsed), so no line of the export
crosses from the JVM to Python, and a bad line is named by file and line. A glob or a
remote URI (hdfs://, s3a://) is read by Spark's text reader instead: the JVM checks each
line is one JSON object (trimming only the lines that need it) and the lines cross to
Python as Arrow batches (`mapInArrow`), where the same screens pick the few to parse.
Either way, pass 1 reads only the Procedure files for the lines that mention the code,
pass 2 every file, pass 3 the files of the types still wanted; a line's position is
its file's rank in the local engine's reading order, then its place in the file (a
later copy of a resource replaces an earlier one). Each pass's (small) result is held
as a local checkpoint, so later passes' plans stay small; of a local export's lines only
where each is (file, offset, length) is held and shuffled, and the evaluation reads the
line back from its file (a gzipped file's lines, and a glob's, travel as bytes). The
kept lines are partitioned in ranges of case keys the driver works out (it knows every
case: no sample job); each partition's lines go into one store in export order, as
the local engine's go into its one, and its cases are evaluated in Python by the same
`assemble` / `evaluate_case` / `build_output` code the local engine uses, with the
pack compiled there from the driver's YAML text. No rule exists twice.

Each case gathers what the local engine's three passes would give it: pass 3
(what the gathered resources point at) is worked out per case, so a colleague's
PractitionerRole that another case already holds still reaches this one.

Output: `OUT/reports` (one JSON report row per case, the same object as the
`cases[]` of `--format json`) and `OUT/bundles` (one transaction Bundle per
line), written by Spark's text writer, ordered by procedure (the evaluated
partitions are in that order already: each is one part file).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from fhir_adapter.errors import AdapterError, InputError, SparkUnavailable
from fhir_adapter.fhir.codings import Systems, has_coding
from fhir_adapter.fhir.references import tail_key
from fhir_adapter.pack import Pack, cached_pack
from fhir_adapter.payers.load import Payers, PayerTexts, payers_from_texts
from fhir_adapter.sources.bulk import (
    FOLLOWED,
    Chunk,
    Kept,
    Plan,
    ScanJob,
    ScanResult,
    admit_line,
    check_lines,
    chunks_of,
    forward_keys,
    kept_record,
    line_screen,
    plan_hits,
    screen_ids,
    whole_lines,
)
from fhir_adapter.sources.files import check_resource


@dataclass
class SparkResult:
    cases: int
    claims: int
    reports: str
    bundles: str


def _session(master: str) -> Any:
    """The session to run on: the one already active in this process when it is on
    `master` (as it is, its settings kept: no second JVM to start), else a new one. A
    session active on another master is an error (Spark holds one per process; the
    builder would hand it back and the run would go elsewhere than asked)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable(
            "PySpark is not installed: pip install 'fhir-adapter[spark]' (needs Java 17)"
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        if active.sparkContext.master != master:
            raise SparkUnavailable(
                f"a Spark session on {active.sparkContext.master!r} is active in this "
                f"process: stop it to run on {master!r}"
            )
        return active
    builder = session_builder(master)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # a JVM that would not start, an unknown master URL
        raise SparkUnavailable(
            f"Spark would not start with master {master!r}: {type(exc).__name__}"
        ) from None


# The JVM of a local master (the driver and the executor in one) compiles with the JIT's
# first tier only: the JVM's part of a run is short-lived plans and shuffles of a few
# dozen bytes a kept line, never hot for long, and the optimising tier's compiler threads
# cost more CPU than it saved (17 s of a local[1] run's 32 s of JVM CPU at 10,000
# patients, against 4 s for the executor's task threads), CPU a run on every core of the
# machine takes from its tasks.
LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"


def session_builder(master: str) -> Any:
    """The builder of the session a run starts on `master` when none is active (also
    what the benchmark starts, so that it times these settings)."""
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName("fhir-adapter")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master.startswith("local"):
        builder = builder.config("spark.driver.extraJavaOptions", LOCAL_JVM_OPTIONS)
    if master.startswith(("local", "spark://127.0.0.1", "spark://localhost")):
        # Workers on this machine run the driver's interpreter, so they see the packages
        # installed with it (the ICD-10-CM tabular among them), not whatever `python3` is
        # on PATH; PySpark reads only the environment for this.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return builder


# What the JVM finds a line to be (the local engine's structural check).
WHOLE, BLANK, CUT = 0, 1, 2
BAD_LINE = "a line of the export is not a complete JSON object (truncated or corrupt)"

# What crosses from the JVM to Python: a line, where it stands in the export (the file's
# rank in the local engine's reading order, then its position there: a later copy of a
# resource replaces an earlier one), and which file (named when the line is bad).
LINE_COLUMNS = ("value", "file", "pos", "path")
# What a kept line carries to the evaluation: the case it is grouped by, and its patient;
# the line's bytes, or none when the evaluation reads them back from a local export's
# file (`size` bytes at `pos`: the JVM holds and shuffles a few dozen bytes per line).
KEPT_COLUMNS = (
    ("case", "string"),
    ("patient", "string"),
    ("file", "int"),
    ("pos", "long"),
    ("size", "int"),
    ("line", "binary"),
    ("key", "string"),
    ("targets", "strings"),
    ("forward", "strings"),
)
REPORT_COLUMNS = (("case", "string"), ("report", "string"), ("bundle", "string"), ("claim", "bool"))
# Rows per Arrow batch written back from Python (bounded memory for big partitions).
BATCH_ROWS = 512
# A raw-line screen: a line's bytes and its file's rank -> whether to parse it.
Screen = Callable[[bytes, int], bool]


def _parse_line(line: bytes, path: str | None) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise AdapterError(f"{BAD_LINE}: {path or 'the export'}: {line[:80]!r}") from None
    return check_resource(value, path or "spark input", None)


def _rows(batches: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """The rows of Arrow record batches as dicts (column name -> Python value)."""
    for batch in batches:
        yield from batch.to_pylist()


def _batches(rows: Iterable[dict[str, Any]], schema: Any) -> Iterator[Any]:
    """Rows back into Arrow record batches of at most BATCH_ROWS rows."""
    import pyarrow as pa

    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= BATCH_ROWS:
            yield pa.RecordBatch.from_pylist(chunk, schema=schema)
            chunk = []
    if chunk:
        yield pa.RecordBatch.from_pylist(chunk, schema=schema)


def _spark_schema(columns: Sequence[tuple[str, str]]) -> Any:
    """A Spark schema of (name, kind) columns."""
    from pyspark.sql import types as T

    kinds = {
        "string": T.StringType(),
        "int": T.IntegerType(),
        "long": T.LongType(),
        "binary": T.BinaryType(),
        "bool": T.BooleanType(),
        "strings": T.ArrayType(T.StringType()),
    }
    return T.StructType([T.StructField(name, kinds[kind]) for name, kind in columns])


def _kept_row(
    case: str, patient: str, row: Mapping[str, Any], kept: Kept, left: bool = False
) -> dict[str, Any]:
    """A kept line's row; `left`: its bytes stay in its file (`size` bytes at `pos`)."""
    return {
        "case": case,
        "patient": patient,
        "file": row["file"],
        "pos": row["pos"],
        "size": len(kept.line),
        "line": None if left else kept.line,
        "key": kept.key,
        "targets": list(kept.targets),
        "forward": list(kept.forward),
    }


def _coded_cases(
    rows: Iterable[dict[str, Any]], system: Systems, code: str
) -> Iterator[dict[str, Any]]:
    """Pass 1, Python side: the lines Spark SQL let through are bad lines (an error) or
    Procedures mentioning the code; those coded system|code are the cases."""
    for row in rows:
        line: bytes = row["line"]
        if row["path"] is not None:  # Spark SQL found it is not one object
            raise AdapterError(f"{BAD_LINE}: {row['path']}: {line[:80]!r}")
        resource = _parse_line(line, None)
        if resource["resourceType"] == "Procedure" and has_coding(
            resource, ("code",), system, code
        ):
            kept = kept_record(line, resource)
            yield _kept_row(kept.key, _patient_of(resource, kept.key), row, kept)


def _patient_of(resource: Mapping[str, Any], fallback: str) -> str:
    """The case's patient (carried with each of its lines)."""
    subject = resource.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return (tail_key(ref) if isinstance(ref, str) else None) or fallback


def _attributed(
    rows: Iterable[dict[str, Any]],
    plan: Plan,
    cases_of: Mapping[str, Sequence[str]],
    patients: Mapping[str, str],
    coding: tuple[Systems, str, Collection[int]],
) -> Iterator[dict[str, Any]]:
    """Pass 2, Python side, of lines the JVM read: a row per case a screened line
    belongs to (`_cases_of_line`)."""
    for row in rows:
        line: bytes = row["line"]
        if row["path"] is not None:  # Spark SQL found it is not one object
            raise AdapterError(f"{BAD_LINE}: {row['path']}: {line[:80]!r}")
        resource = _parse_line(line, None)
        yield from _cases_of_line(line, resource, row, plan, cases_of, patients, coding)


def _cases_of_line(
    line: bytes,
    resource: dict[str, Any],
    where: Mapping[str, Any],
    plan: Plan,
    cases_of: Mapping[str, Sequence[str]],
    patients: Mapping[str, str],
    coding: tuple[Systems, str, Collection[int]],
    left: bool = False,
) -> Iterator[dict[str, Any]]:
    """A row per case a parsed line belongs to (`where`: its file and position), decided
    by the local engine's `plan_hits`; and the case Procedures' own coded lines in the
    files pass 1 reads (`coding`: system, code, those files' ranks). `left`: the line's
    bytes stay in its file."""
    system, code, procedure_files = coding
    refs = forward_keys(line)
    hits = plan_hits(plan, resource, refs)
    cases = {c for hit in hits for c in cases_of.get(hit, ())}
    key = f"{resource['resourceType']}/{resource.get('id')}"
    if (
        key in patients
        and where["file"] in procedure_files
        and resource["resourceType"] == "Procedure"
        and has_coding(resource, ("code",), system, code)
    ):
        cases.add(key)
    if cases:
        kept = kept_record(line, resource, refs)
        for case in sorted(cases):
            yield _kept_row(case, patients[case], where, kept, left)


_PACKS: dict[str, Pack] = {}
_PAYERS: dict[tuple[str, PayerTexts], Payers] = {}


def _executor_pack(pack_text: str) -> Pack:
    """The driver's pack, compiled once per Python worker (workers are reused by tasks)."""
    pack = _PACKS.get(pack_text)
    if pack is None:
        from fhir_adapter.pack.load import pack_from_text

        _PACKS.clear()
        pack = _PACKS[pack_text] = pack_from_text(pack_text, "<driver rule pack>")
    return pack


def _executor_payers(pack_text: str, texts: PayerTexts | None) -> Payers | None:
    """The driver's payer overlays, compiled once per Python worker against its pack;
    None (no overlays given to the run) judges by the shipped ones, as locally."""
    if texts is None:
        return None
    payers = _PAYERS.get((pack_text, texts))
    if payers is None:
        _PAYERS.clear()
        payers = _PAYERS[pack_text, texts] = payers_from_texts(_executor_pack(pack_text), texts)
    return payers


def _evaluate_rows(
    rows: Iterable[dict[str, Any]],
    pack_text: str,
    block_on: str | None,
    stamp: str,
    charges: Mapping[str, float] | None = None,
    paths: Sequence[str] = (),
    payer_texts: PayerTexts | None = None,
) -> Iterator[dict[str, Any]]:
    """Executor side: the rows of a partition (a range of cases), in export order, into
    one store, as the local engine holds the export's kept lines in one (what a case
    gathered is all it needs of it; a line several cases gathered is stored once, and
    the reference data they share is parsed once), then each case, in key order,
    evaluated by the local engine's own code. A row without its line's bytes stays in
    its file (`paths`, by rank), read back when a case asks, as the local engine's
    store reads the lines it left in their files."""
    from fhir_adapter.pipeline import case_procedure, evaluate_one, gc_paused
    from fhir_adapter.sources.store import CompactStore

    pack = _executor_pack(pack_text)
    payers = _executor_payers(pack_text, payer_texts)

    def evaluate(case_key: str, store: CompactStore) -> dict[str, Any] | None:
        procedure = case_procedure(store, pack, case_key)
        if procedure is None:
            return None
        output = evaluate_one(store, pack, procedure, block_on, stamp, charges, payers)
        return {
            "case": case_key,
            "report": orjson.dumps(output.report()).decode(),
            "bundle": orjson.dumps(output.bundle()).decode(),
            "claim": not output.evaluation.blocked,
        }

    store = CompactStore()
    store.order = {path: rank for rank, path in enumerate(paths)}  # which copy is later
    cases: set[str] = set()
    # the cyclic GC paused, as the local engine pauses it (its passes over the many
    # acyclic dicts of a case cost more than the case's evaluation)
    with gc_paused():

        def lines() -> Iterator[Kept]:
            # in export order, so that a later copy of a resource replaces an earlier one
            for row in rows:
                cases.add(row["case"])
                line, targets = row["line"], tuple(row["targets"])
                if line is None:
                    path = paths[row["file"]]
                    yield Kept(b"", row["key"], targets, (), path, row["pos"], row["size"])
                else:
                    yield Kept(line, row["key"], targets, ())

        store.add_lines(lines())
        for case in sorted(cases):
            if (done := evaluate(case, store)) is not None:
                yield done


def _to_python(frame: Any, *extra: str) -> Any:
    """The line columns (the line as bytes: what the local engine's functions take) and
    `extra`, cast only now, after Spark's screens, for the lines that cross to Python."""
    from pyspark.sql import functions as F

    line = F.col("value").cast("binary").alias("line")
    return frame.select(line, *LINE_COLUMNS[1:], *extra)


def _map_in_arrow(
    frame: Any,
    func: Callable[[Iterable[dict[str, Any]]], Iterable[dict[str, Any]]],
    columns: Sequence[tuple[str, str]],
    keep: Callable[[], Screen] | None = None,
) -> Any:
    """`frame` through a row function in Python, as Arrow batches both ways; with `keep`
    (made once per task), only the rows whose line it accepts become rows."""
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = _spark_schema(columns)
    arrow = to_arrow_schema(schema)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        rows = _rows(batches) if keep is None else _screened(batches, keep())
        return _batches(func(rows), arrow)

    return frame.mapInArrow(run, schema)


def _screened(batches: Iterable[Any], keep: Screen) -> Iterator[dict[str, Any]]:
    """The rows of Arrow record batches whose line `keep` accepts, and the lines that are
    not one object (the others are only ever bytes: on a sparse export that is almost
    every line)."""
    for batch in batches:
        lines = batch.column("line").to_pylist()
        files = batch.column("file").to_pylist()
        wholes = batch.column("path").is_null().to_pylist()
        picked = [
            i
            for i, (line, file, whole) in enumerate(zip(lines, files, wholes, strict=True))
            if not whole or keep(line, file)
        ]
        if picked:
            yield from batch.take(picked).to_pylist()


def _file_screens(ids: tuple[Any, ...], types: Mapping[int, str | None]) -> Screen:
    """The local engine's own raw-line screen (`screen_ids`, `line_screen`) for each file,
    specialised to the type its name announces, as that engine does per chunk."""
    screens: dict[int, Callable[[bytes], bool]] = {}

    def keep(line: bytes, file: int) -> bool:
        screen = screens.get(file)
        if screen is None:
            screen = screens[file] = line_screen(*screen_ids(ids, types.get(file)))
        return screen(line)

    return keep


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
    payers: Payers | None = None,
) -> SparkResult:
    """Run the evaluation of an NDJSON export (directory, glob or URI) on Spark;
    `charges` (a chargemaster, code -> amount) prices the Claims' lines; `payers` are the
    payer overlays (default: the shipped ones), shipped to the executors as their YAML.

    A corrupt line or an output directory that already holds results is an
    AdapterError, not a Spark stack trace.
    """
    local_out = Path(out_uri.removeprefix("file://"))
    local = "://" not in out_uri.removeprefix("file://")
    if local and local_out.is_dir() and any(local_out.iterdir()):
        raise AdapterError(f"{out_uri} already holds files; give an empty or new --out")
    try:
        return _evaluate_on_spark(
            input_uri, out_uri, master, pack, block_on, now, spark, charges, payers
        )
    except AdapterError:
        raise
    except Exception as exc:  # Py4J/PySpark wrap what the executors raised
        text = str(exc)
        if INPUT_MARK in text:
            raise AdapterError(text.split(INPUT_MARK, 1)[1].split(INPUT_END, 1)[0]) from None
        if BAD_LINE in text:
            named = text.split(f"{BAD_LINE}: ", 1)[1].split(": ", 1)[0]
            raise AdapterError(
                _bad_line_message(named if named.startswith(("file:", "/")) else input_uri)
            ) from None
        raise


def _ndjson_inputs(input_uri: str) -> list[str] | None:
    """A local directory becomes its NDJSON files in the local engine's reading order (no
    sidecar YAML, no hidden files); a file is itself; a glob or remote URI is None (Spark
    lists it, in path order)."""
    from fhir_adapter.sources.files import NDJSON_SUFFIXES, input_files, not_a_file

    local = Path(input_uri.removeprefix("file://"))
    if "://" in input_uri.removeprefix("file://") or any(c in input_uri for c in "*?[{"):
        return None
    if not local.is_dir() and not local.is_file():
        raise AdapterError(f"{input_uri}: {not_a_file(local)}")
    if not local.is_dir():
        return [str(local)]
    files = [str(f) for f in input_files(local) if f.name.lower().endswith(NDJSON_SUFFIXES)]
    if not files:
        raise AdapterError(f"{input_uri}: no NDJSON files in this directory")
    return files


def _read_lines(
    session: Any, input_uri: str, kinds: Collection[str | None] | None = None
) -> tuple[Any, dict[int, str | None]]:
    """The export's non-blank lines as a DataFrame (the line, its file's rank, position,
    and the file's URI where the line is not one JSON object), read by Spark itself; and
    the resource type each file's name announces, by rank (None: any), which the local
    engine's passes go by as well. With `kinds`, a local export's files of other types
    are not read (their lines' positions are then not those of a whole read)."""
    from pyspark.sql import functions as F

    files = _ndjson_inputs(input_uri)
    chosen = files
    if files is not None and kinds is not None:
        chosen = [f for f in files if Chunk(f, 0, -1).rtype in kinds] or files
    raw = session.read.text(chosen if chosen is not None else input_uri)
    uris = raw.inputFiles()
    if files is not None:
        order = {os.path.abspath(f): i for i, f in enumerate(files)}
        rank = {u: order.get(unquote(urlparse(u).path), len(order)) for u in uris}
    else:
        rank = {u: i for i, u in enumerate(sorted(uris, key=lambda u: unquote(urlparse(u).path)))}
    types: dict[int, str | None] = {}
    for uri, n in rank.items():
        named = Chunk(unquote(urlparse(uri).path), 0, -1).rtype
        types[n] = named if types.get(n, named) == named else None
    ranks = F.create_map(*[F.lit(x) for pair in rank.items() for x in pair])
    # As the local engine: a line that starts with "{" and ends with "}" is whole; only
    # the others are trimmed (trimming every line cost most of the read).
    value, body = F.col("value"), F.expr(r"btrim(value, ' \t\r\n')")
    state = F.when(value.startswith("{") & value.endswith("}"), F.lit(WHOLE)).otherwise(
        F.when(body == "", F.lit(BLANK))
        .when(body.startswith("{") & body.endswith("}"), F.lit(WHOLE))
        .otherwise(F.lit(CUT))
    )
    lines = raw.select(
        value,
        F.element_at(ranks, F.input_file_name()).cast("int").alias("file"),
        F.monotonically_increasing_id().alias("pos"),
        state.alias("state"),
    ).filter(F.col("state") != BLANK)
    path = F.when(F.col("state") == CUT, F.input_file_name()).alias("path")
    return lines.select(*LINE_COLUMNS[:3], path), types


# A broadcast (pass 2's): the plan, the cases each plan key serves, each case's
# patient, (system, code, ranks of the files pass 1 reads), the screens' ids.
Shared = Any
# A broadcast (pass 3's): the keys still wanted -> the cases, each case's patient, ids.
Final = Any


class _Source:
    """Where each pass's kept lines come from, as rows of KEPT_COLUMNS."""

    procedures: list[int]  # ranks of the files pass 1 reads (named for Procedure or none)
    # by rank, the files whose kept lines the evaluation reads back (none: lines travel)
    paths: Sequence[str] = ()

    def cases(self, system: Systems, code: str) -> Any:
        raise NotImplementedError

    def related(self, shared: Shared) -> Any:
        raise NotImplementedError

    def needed(self, final: Final, kinds: Collection[str]) -> Any:
        raise NotImplementedError

    def check(self) -> None:
        """Every line's structural check, when no pass reads them all (no case was found)."""
        raise NotImplementedError


class _LineSource(_Source):
    """A glob or remote URI (hdfs://, s3a://): Spark's text reader reads the lines and
    checks each is one JSON object; they cross to Python as Arrow batches, where the
    local engine's screens pick the few worth parsing. Each pass reads the files again:
    the same files in the same splits give every line the same position each time."""

    def __init__(self, session: Any, input_uri: str) -> None:
        self.session, self.input_uri = session, input_uri
        self.lines, self.types = _read_lines(session, input_uri)
        self.procedures = sorted(n for n, t in self.types.items() if t in (None, "Procedure"))

    def cases(self, system: Systems, code: str) -> Any:
        # only the files pass 1 reads, for the lines that mention the code (their
        # positions are not a whole read's: the case lines evaluated come from pass 2); a
        # line the JVM finds is not one object goes to Python too, which names the error
        from pyspark.sql import functions as F

        coded = F.col("file").isin(*self.procedures) & F.col("value").contains(code)
        read = _read_lines(self.session, self.input_uri, (None, "Procedure"))[0]
        first = _to_python(read.filter(F.col("path").isNotNull() | coded))
        return _map_in_arrow(first, _case_rows(system, code), KEPT_COLUMNS)

    def related(self, shared: Shared) -> Any:
        types = self.types

        def attribute(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            return _attributed(rows, *shared.value[:4])

        def screen() -> Screen:
            return _file_screens(shared.value[4], types)

        return _map_in_arrow(_to_python(self.lines), attribute, KEPT_COLUMNS, screen)

    def needed(self, final: Final, kinds: Collection[str]) -> Any:
        from pyspark.sql import functions as F

        types = self.types

        def needed(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            return _needed(rows, *final.value[:2])

        def owned() -> Screen:
            return _file_screens(final.value[2], types)

        files = sorted(n for n, t in types.items() if t is None or t in kinds)
        lookup = _to_python(self.lines.filter(F.col("file").isin(*files)))
        return _map_in_arrow(lookup, needed, KEPT_COLUMNS, owned)

    def check(self) -> None:
        _check_lines(self.lines)


# Tasks per core reading a local export: enough for a core that finishes early (or is
# slowed by other work) to take more, few enough that a task's start is not felt.
TASKS_PER_CORE = 8


class _ChunkSource(_Source):
    """A local file or directory: the Python workers read the files themselves, in the
    local engine's newline-aligned byte ranges, with its own loop (`whole_lines`: the
    structural check of every line, the screen on its bytes, a bad line named by file
    and line). The JVM only hands out the ranges and gathers the few lines kept; no line
    is copied from the JVM to Python. A line's position is its byte offset in its file."""

    def __init__(self, session: Any, files: Sequence[str], cores: int) -> None:
        self.session = session
        # absolute: an executor of a cluster does not run in the driver's directory
        files = [os.path.abspath(f) for f in files]
        rank = {f: i for i, f in enumerate(files)}
        self.paths = files
        chunks = chunks_of([Path(f) for f in files])
        self.procedures = sorted({rank[c.path] for c in chunks if c.rtype in (None, "Procedure")})
        self.chunks = [(rank[c.path], c) for c in chunks]
        self.tasks = max(1, TASKS_PER_CORE * cores)

    def _read(
        self,
        kinds: Collection[str | None] | None,
        func: Callable[[Iterable[tuple[int, Chunk]]], Iterable[dict[str, Any]]],
    ) -> Any:
        """`func` over the chunks (of the files of `kinds`, by name), as tasks of a frame
        of task numbers (the JVM makes it: no Python runs to feed the tasks); the chunks
        are dealt out largest first so that each task has as many bytes to read."""
        chunks = [(n, c) for n, c in self.chunks if kinds is None or c.rtype in kinds]
        chunks.sort(key=lambda nc: -_chunk_bytes(nc[1]))
        tasks = max(1, min(self.tasks, len(chunks)))
        shares = [[(n, c.path, c.start, c.end) for n, c in chunks[i::tasks]] for i in range(tasks)]

        def run(rows: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
            return func(
                (n, Chunk(path, start, end))
                for row in rows
                for n, path, start, end in shares[row["id"]]
            )

        return _map_in_arrow(self.session.range(0, tasks, 1, tasks), run, KEPT_COLUMNS)

    def cases(self, system: Systems, code: str) -> Any:
        def run(chunks: Iterable[tuple[int, Chunk]]) -> Iterator[dict[str, Any]]:
            return _read_cases(chunks, system, code)

        return self._read((None, "Procedure"), run)

    def related(self, shared: Shared) -> Any:
        def run(chunks: Iterable[tuple[int, Chunk]]) -> Iterator[dict[str, Any]]:
            return _read_related(chunks, *shared.value)

        return self._read(None, run)

    def needed(self, final: Final, kinds: Collection[str]) -> Any:
        def run(chunks: Iterable[tuple[int, Chunk]]) -> Iterator[dict[str, Any]]:
            return _read_needed(chunks, *final.value)

        return self._read((None, *kinds), run)

    def check(self) -> None:
        self._read(None, _checked).count()


def _chunk_bytes(chunk: Chunk) -> int:
    if chunk.end != -1:
        return chunk.end - chunk.start
    try:
        return os.path.getsize(chunk.path) - chunk.start
    except OSError:
        return 0


# A bad line the Python workers found, as the local engine names it: the driver gives the
# text between the marks as the error (Spark wraps what a worker raised in its own).
INPUT_MARK, INPUT_END = "<<input error: ", " :input error>>"


def _input_errors(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    try:
        yield from rows
    except InputError as exc:
        raise AdapterError(f"{INPUT_MARK}{exc}{INPUT_END}") from None


def _read_cases(chunks: Iterable[tuple[int, Chunk]], system: Systems, code: str) -> Iterator[Any]:
    """Pass 1, read in Python: the lines of the Procedure files that mention the code,
    every line checked (the local engine's `scan_procedures`); those coded system|code
    are the cases."""

    def run() -> Iterator[dict[str, Any]]:
        job = ScanJob(needle=code.encode(), system=system, code=code)
        needle = job.needle
        for file, chunk in chunks:
            out = ScanResult()
            for offset, line in whole_lines(job, chunk, out, wanted=lambda ln: needle in ln):
                resource = admit_line(job, chunk, offset, line, out)
                if resource is not None and (
                    resource["resourceType"] == "Procedure"
                    and has_coding(resource, ("code",), system, code)
                ):
                    kept = kept_record(line, resource)
                    where = {"file": file, "pos": offset}
                    patient = _patient_of(resource, kept.key)
                    yield _kept_row(kept.key, patient, where, kept, not chunk.gzipped)

    return _input_errors(run())


def _read_related(
    chunks: Iterable[tuple[int, Chunk]],
    plan: Plan,
    cases_of: Mapping[str, Sequence[str]],
    patients: Mapping[str, str],
    coding: tuple[Systems, str, Collection[int]],
    ids: tuple[Any, ...],
) -> Iterator[dict[str, Any]]:
    """Pass 2, read in Python: every line checked (but the Procedure files', which pass 1
    checked) and screened on its bytes for its file's type, the candidates parsed and
    kept for the cases they belong to (the local engine's `scan_related`)."""

    def run() -> Iterator[dict[str, Any]]:
        job = ScanJob()
        for file, chunk in chunks:
            out = ScanResult()
            screen = line_screen(*screen_ids(ids, chunk.rtype))
            report = chunk.rtype != "Procedure"
            left = not chunk.gzipped  # the evaluation reads the line back from the file
            for offset, line in whole_lines(job, chunk, out, report, screen):
                resource = admit_line(job, chunk, offset, line, out)
                if resource is not None:
                    where = {"file": file, "pos": offset}
                    yield from _cases_of_line(
                        line, resource, where, plan, cases_of, patients, coding, left
                    )

    return _input_errors(run())


def _read_needed(
    chunks: Iterable[tuple[int, Chunk]],
    wanted: Mapping[str, Sequence[str]],
    patients: Mapping[str, str],
    ids: tuple[Any, ...],
) -> Iterator[dict[str, Any]]:
    """Pass 3, read in Python: a line whose own key cases want, kept for each of them."""

    def run() -> Iterator[dict[str, Any]]:
        job = ScanJob()
        for file, chunk in chunks:
            out = ScanResult()
            screen = line_screen(*screen_ids(ids, chunk.rtype))
            for offset, line in whole_lines(job, chunk, out, False, screen):
                resource = admit_line(job, chunk, offset, line, out)
                if resource is None:
                    continue
                kept = kept_record(line, resource)
                for case in wanted.get(kept.key, ()):
                    where = {"file": file, "pos": offset}
                    yield _kept_row(case, patients[case], where, kept, not chunk.gzipped)

    return _input_errors(run())


def _checked(chunks: Iterable[tuple[int, Chunk]]) -> Iterator[dict[str, Any]]:
    """The structural check of every line but the Procedure files' (which pass 1
    checked), when no case was found; no rows."""

    def run() -> Iterator[dict[str, Any]]:
        job = ScanJob()
        for _, chunk in chunks:
            check_lines(job, chunk)
        yield from ()

    return _input_errors(run())


def _evaluate_on_spark(
    input_uri: str,
    out_uri: str,
    master: str,
    pack: Pack | None,
    block_on: str | None,
    now: str | None,
    spark: Any,
    charges: Mapping[str, float] | None,
    payers: Payers | None,
) -> SparkResult:
    from pyspark.sql import functions as F

    from fhir_adapter.pipeline import now_iso

    pack = pack or cached_pack()
    stamp = now or now_iso()
    session = spark or _session(master)
    system, code = pack.procedure_systems, pack.procedure_code
    cores = session.sparkContext.defaultParallelism
    held: list[Any] = []

    def checkpoint(frame: Any, eager: bool = True) -> Any:
        """`frame` computed once and held by the executors: every later pass reads it, and
        its plan is a scan of the result (the plans of later passes stay small: planning
        and describing them cost more than running them when each carried the whole
        lineage). Not `eager`: computed and held by the first action that reads it."""
        held.append(frame.localCheckpoint(eager=eager))
        return held[-1]

    # For the length of this call: the export read in a few splits per core (balanced work
    # even where one file is most of it), and shuffles of kept lines, which are small, in
    # as many partitions as cores, not Spark's 200 (each a task).
    settings = {
        "spark.sql.files.minPartitionNum": str(3 * cores),
        "spark.sql.shuffle.partitions": str(2 * cores),
    }
    previous = {name: session.conf.get(name, None) for name in settings}
    for name, value in settings.items():
        session.conf.set(name, value)
    try:
        files = _ndjson_inputs(input_uri)
        source: _Source = (
            _ChunkSource(session, files, cores)
            if files is not None
            else _LineSource(session, input_uri)
        )

        # Pass 1: the cases, from the files the local engine's pass 1 reads. The bare
        # code: a padded one ("47382 ") counts too, as in the local engine.
        found = source.cases(system, code)
        seeds = found.select("key", "forward", "patient").toArrow().to_pylist()
        if not seeds:
            source.check()
            return SparkResult(0, 0, "", "")
        plan, cases_of = Plan.for_cases(
            [Kept(b"", s["key"], (), tuple(s["forward"])) for s in seeds]
        )
        patients = {s["key"]: s["patient"] for s in seeds}
        coding = (system, code, frozenset(source.procedures))
        shared = session.sparkContext.broadcast(
            (plan, {k: sorted(v) for k, v in cases_of.items()}, patients, coding, _ids(plan))
        )

        # Pass 2: what the cases point at and what points at them, and the case lines
        # themselves, every line screened on its bytes by the local engine's screens in
        # Python, decided and keyed by case there too.
        second = checkpoint(source.related(shared))

        # Pass 3, per case: what its gathered resources point at and it does not hold yet,
        # worked out on the driver (a few rows per case), looked for in the files of those
        # types.
        wanted = _wanted(second.select("case", "key", "forward").toArrow())
        gathered = second
        if wanted:
            final = session.sparkContext.broadcast(
                (wanted, patients, Plan(needed=set(wanted)).id_bytes())
            )
            kinds = {key.split("/", 1)[0] for key in wanted}
            # held on its own: a union of held results is read as it is, not copied again
            gathered = gathered.unionByName(checkpoint(source.needed(final, kinds)))

        # Evaluate each case with the same compiled pack, the cases in ranges of their keys
        # (the order of the output: each partition is written as one part file, in order).
        pack_text = pack.source_text
        prices = dict(charges) if charges is not None else None  # shipped with the closure
        paths = list(source.paths)
        payer_texts = payers.texts() if payers is not None else None

        def evaluate(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            return _input_errors(
                _evaluate_rows(rows, pack_text, block_on, stamp, prices, paths, payer_texts)
            )

        back = _roles_back(gathered)
        kept = (
            _in_case_ranges(
                gathered if back is None else gathered.unionByName(back),
                sorted(patients),
                EVALUATION_TASKS_PER_CORE * cores,
            )
            .sortWithinPartitions("file", "pos")
            .select("case", "key", "file", "pos", "size", "line", "targets")  # what it reads
        )
        # evaluated by the first write, which holds the result for the second and the counts
        # (no action of its own to evaluate it)
        evaluated = checkpoint(_map_in_arrow(kept, evaluate, REPORT_COLUMNS), eager=False)
        reports = f"{out_uri.rstrip('/')}/reports"
        bundles = f"{out_uri.rstrip('/')}/bundles"
        evaluated.select("report").write.text(reports)
        evaluated.select("bundle").write.text(bundles)
        counts = evaluated.agg(
            F.count(F.lit(1)).alias("cases"),
            F.coalesce(F.sum(F.col("claim").cast("int")), F.lit(0)).alias("claims"),
        ).first()
        return SparkResult(int(counts["cases"]), int(counts["claims"]), reports, bundles)
    finally:
        for name, value in previous.items():
            if value is None:
                session.conf.unset(name)
            else:
                session.conf.set(name, value)
        for frame in held:
            _release(frame)


# Evaluation tasks per core (ranges of cases: each range's reports are one part file).
EVALUATION_TASKS_PER_CORE = 4


# numbers tried per partition for one whose hash lands there (16 leave one out with a
# chance of about (1 - 1/parts) ** (16 * parts), under e**-16)
RANK_CANDIDATES_PER_PART = 16


def _in_case_ranges(frame: Any, cases: Sequence[str], parts: int) -> Any:
    """`frame` partitioned in `parts` ranges of its sorted `case` keys, in key order, each
    range as many cases: `repartitionByRange` without its sample of the rows (a job of
    its own over every gathered line): the driver knows every case already.

    Spark places a row by the hash of its partitioning column (its `hash` function,
    modulo the partition count): each range is given a number whose hash places it in
    the partition of its rank, found by Spark itself (a query of constants). Should no
    number be found for some rank, `repartitionByRange` does it."""
    from pyspark.sql import functions as F

    parts = max(1, min(parts, len(cases)))
    if parts == 1:
        return frame.repartition(1)
    candidates = range(RANK_CANDIDATES_PER_PART * parts)
    where = frame.sparkSession.range(0, len(candidates), 1, 1).select(
        F.col("id"), F.pmod(F.hash(F.col("id")), F.lit(parts)).alias("part")
    )
    number: dict[int, int] = {}
    for row in where.toArrow().to_pylist():
        number.setdefault(row["part"], row["id"])
    if len(number) < parts:
        return frame.repartitionByRange(parts, "case")
    case = F.col("case")
    # the numbers as the type Spark found their hash for (`range` makes longs)
    ranks = [F.lit(number[i]).cast("long") for i in range(parts)]
    rank = F.when(case < F.lit(cases[len(cases) // parts]), ranks[0])
    for i in range(1, parts - 1):
        rank = rank.when(case < F.lit(cases[len(cases) * (i + 1) // parts]), ranks[i])
    return frame.repartition(parts, rank.otherwise(ranks[-1]))


def _release(frame: Any) -> None:
    """A local checkpoint's blocks freed now, not at the driver's next garbage collection
    (a long-lived session runs many evaluations)."""
    frame._jdf.queryExecution().analyzed().rdd().unpersist(False)


def _roles_back(gathered: Any) -> Any:
    """For each case, the PractitionerRoles gathered for any case that point at a
    Practitioner it holds, with what those roles point at (their organization): the
    local engine holds them in its one store, so a colleague named only as Practitioner
    on an earlier Procedure has the group and specialty there too.

    Worked out on the driver from the few lines involved (staff and their
    organizations): as a chain of joins over the gathered lines, Spark's work per stage
    cost more than the lines did. None when no case gains anything."""
    from pyspark.sql import functions as F

    key = F.col("key")
    is_role = key.startswith("PractitionerRole/")
    staff = gathered.filter(key.startswith("Practitioner/") | is_role).select(
        "case",
        "patient",
        "key",
        "file",
        "pos",
        "size",
        "targets",
        "forward",
        F.when(is_role, F.col("line")).alias("line"),
        is_role.alias("role"),
    )
    rows = staff.toArrow().to_pylist()  # as Arrow: Row objects cost seconds at 100k
    roles: dict[str, dict[tuple[int, int], Any]] = {}  # Practitioner -> its roles' lines
    for row in rows:
        if row["role"]:
            for target in row["targets"]:
                roles.setdefault(target, {})[(row["file"], row["pos"])] = row
    back: dict[tuple[str, int, int], tuple[Any, ...]] = {}
    pointed: dict[str, set[tuple[str, str]]] = {}  # what the roles point at -> cases
    for row in rows:
        if not row["role"]:
            for (file, pos), role in roles.get(row["key"], {}).items():
                back[(row["case"], file, pos)] = _kept_tuple(row["case"], row["patient"], role)
                for forward in role["forward"]:
                    pointed.setdefault(forward, set()).add((row["case"], row["patient"]))
    if pointed:
        columns = [name for name, _ in KEPT_COLUMNS if name not in ("case", "patient")]
        pool = gathered.filter(key.isin(*sorted(pointed))).select(*columns).toArrow()
        for line in {(r["file"], r["pos"]): r for r in pool.to_pylist()}.values():
            for case, patient in pointed[line["key"]]:
                back[(case, line["file"], line["pos"])] = _kept_tuple(case, patient, line)
    if not back:
        return None
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    # as an Arrow table: the JVM reads it as is (a list of rows goes through Python workers);
    # built column by column (a dict per row cost the driver seconds at 100k, before the
    # evaluation could start)
    schema = _spark_schema(KEPT_COLUMNS)
    arrow = to_arrow_schema(schema)
    by_column = zip(*(back[k] for k in sorted(back)), strict=True)
    table = pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(by_column, arrow, strict=True)],
        schema=arrow,
    )
    return gathered.sparkSession.createDataFrame(table, schema)


def _kept_tuple(case: str, patient: str, row: Any) -> tuple[Any, ...]:
    """A gathered line's row, for another case."""
    return (case, patient, *(row[name] for name, _ in KEPT_COLUMNS[2:]))


def _case_rows(system: Systems, code: str) -> Callable[[Iterable[dict[str, Any]]], Iterator[Any]]:
    def run(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return _coded_cases(rows, system, code)

    return run


def _needed(
    rows: Iterable[dict[str, Any]], wanted: Mapping[str, Sequence[str]], patients: Mapping[str, str]
) -> Iterator[dict[str, Any]]:
    """Pass 3, Python side: a line whose own key cases want, kept for each of them."""
    for row in rows:
        line: bytes = row["line"]
        kept = kept_record(line, _parse_line(line, None))
        for case in wanted.get(kept.key, ()):
            yield _kept_row(case, patients[case], row, kept)


def _ids(plan: Plan) -> tuple[Any, ...]:
    """The plan's screen ids (`Plan.id_bytes`), with the cases' own ids among the
    Procedures' needed ones: pass 2 keeps the case lines too."""
    anchors, with_patients, with_performers, needed = plan.id_bytes()
    cases = frozenset(
        k.rsplit("/", 1)[-1].encode() for k in plan.anchors if k.startswith("Procedure/")
    )
    needed = {**needed, "Procedure": needed.get("Procedure", frozenset()) | cases}
    return anchors, with_patients, with_performers, needed


def _check_lines(lines: Any) -> None:
    """Every line's structural check, when no pass reads them all (no case was found)."""
    from pyspark.sql import functions as F

    bad = lines.filter(F.col("path").isNotNull()).select("path").limit(1).toArrow()
    if bad.num_rows:
        raise AdapterError(_bad_line_message(bad.column("path")[0].as_py()))


def _bad_line_message(named: str) -> str:
    return f"{named}: {BAD_LINE}; Spark cannot name the line: evaluate the files locally to find it"


def _wanted(table: Any) -> dict[str, list[str]]:
    """Pass 3's plan, from the (case, key, forward) columns of what passes 1 and 2 kept:
    each key some case's gathered resources (of the FOLLOWED types) point at and that case
    does not hold, with the cases that want it."""
    cases = table.column("case").to_pylist()
    keys = table.column("key").to_pylist()
    forwards = table.column("forward").to_pylist()
    held: dict[str, set[str]] = {}
    pointed: dict[str, set[str]] = {}
    for case, key, forward in zip(cases, keys, forwards, strict=True):
        held.setdefault(case, set()).add(key)
        if forward and key.split("/", 1)[0] in FOLLOWED:
            pointed.setdefault(case, set()).update(forward)
    wanted: dict[str, list[str]] = {}
    for case in sorted(pointed):
        for key in sorted(pointed[case] - held[case]):
            wanted.setdefault(key, []).append(case)
    return wanted


def read_reports(directory: str) -> list[dict[str, Any]]:
    """The report rows Spark wrote (local paths), in order."""

    out: list[dict[str, Any]] = []
    for part in sorted(Path(directory).glob("part-*")):
        out.extend(json.loads(line) for line in part.read_text().splitlines() if line.strip())
    return out
