"""Stream Bulk Data NDJSON exports into a store that holds only what the cases need.

An export is tens of GB; the cases are a small part of it. Three passes:

1. Procedure lines that mention the CPT code are parsed; the 47382 ones are the cases.
2. Every line is screened on its raw bytes (its references and ids, by regex) and
   only candidates are parsed: the resources the cases point at, and those that
   point at a case's procedure, encounter, patient (Coverage, the patient's
   Procedures) or performer (PractitionerRole).
3. What those point at and is still missing (report results, locations, payors).

Peak memory follows the number of cases, not the size of the export: a kept line
stays in its file, and the store reads it back by offset when its case is evaluated
(gzipped lines are kept as bytes). Files are split into newline-aligned byte ranges
and screened in parallel processes.
"""

from __future__ import annotations

import functools
import gzip
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from fhir_adapter.errors import InputError
from fhir_adapter.fhir.codings import Systems, has_coding, miscoded
from fhir_adapter.fhir.references import reverse_targets, tail_key
from fhir_adapter.fhir.resource_types import RESOURCE_TYPES
from fhir_adapter.parallel import fork_map
from fhir_adapter.sources.files import (
    JSON_SUFFIXES,
    NDJSON_SUFFIXES,
    Loaded,
    check_resource,
    input_files,
    not_a_file,
    read_file,
)
from fhir_adapter.sources.scopes import Scope, Scopes, json_lines, scope_label
from fhir_adapter.sources.store import CompactStore, ResourceStore

CHUNK_BYTES = 4 * 1024 * 1024
# below this, a pass runs in this process (measured: forking a pool and collecting its
# results costs ~50 ms, about what screening 10 MB costs)
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
_REF_ID = re.compile(rb'"reference"\s*:\s*"(?:[^"]*/)?([A-Za-z0-9\-.]{1,64})(?:/_history/[^"]*)?"')
_REF_TEXT = re.compile(r'"reference"\s*:\s*"([^"]+)"')
_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9\-.]{1,64})"')
_TYPE_PREFIX = re.compile(r"^([A-Z][A-Za-z]+)")


@dataclass(frozen=True)
class Chunk:
    """A newline-aligned byte range of one NDJSON file (a whole file when gzipped)."""

    path: str
    start: int
    end: int  # -1: to the end

    @property
    def gzipped(self) -> bool:
        """A gzipped file is one chunk, read whole (it cannot be read at an offset)."""
        return self.end == -1 and self.path.lower().endswith(".gz")

    @functools.cached_property
    def rtype(self) -> str | None:
        """The resource type the file name announces (`Procedure.ndjson`, `Procedure.000.ndjson`);
        worked out once (it was asked for every line kept)."""
        m = _TYPE_PREFIX.match(Path(self.path).name)
        return m.group(1) if m and m.group(1) in RESOURCE_TYPES else None


@dataclass
class Plan:
    """What pass 2 and 3 keep."""

    anchors: set[str] = field(default_factory=set)  # case procedures and encounters
    patients: set[str] = field(default_factory=set)
    performers: set[str] = field(default_factory=set)
    needed: set[str] = field(default_factory=set)  # exact Type/id wanted

    @classmethod
    def for_cases(cls, cases: Sequence[Kept]) -> tuple[Plan, dict[str, set[str]]]:
        """The pass-2 plan for the given case Procedures, and which cases each plan key serves."""
        plan = cls()
        cases_of: dict[str, set[str]] = {}
        for case in cases:
            plan.anchors.add(case.key)
            cases_of.setdefault(case.key, set()).add(case.key)
            for ref in case.forward:
                plan.needed.add(ref)
                cases_of.setdefault(ref, set()).add(case.key)
                if ref.startswith("Encounter/"):
                    plan.anchors.add(ref)
                elif ref.startswith("Patient/"):
                    plan.patients.add(ref)
                elif ref.startswith(("Practitioner/", "PractitionerRole/")):
                    plan.performers.add(ref)
        plan.needed -= {case.key for case in cases}
        return plan, cases_of

    def id_bytes(
        self,
    ) -> tuple[frozenset[bytes], frozenset[bytes], frozenset[bytes], dict[str, frozenset[bytes]]]:
        """Ids to screen raw lines with: anchors, + patients, + performers, exact needs by type."""

        def ids(keys: Iterable[str]) -> frozenset[bytes]:
            return frozenset(k.rsplit("/", 1)[-1].encode() for k in keys)

        by_type: dict[str, set[str]] = {}
        for key in self.needed:
            by_type.setdefault(key.split("/", 1)[0], set()).add(key)
        needed = {t: ids(keys) for t, keys in by_type.items()}
        return (
            ids(self.anchors),
            ids(self.anchors | self.patients),
            ids(self.anchors | self.performers),
            needed,
        )


def classify(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """(JSON files, NDJSON files) under the given paths, sorted."""
    json_files: list[Path] = []
    ndjson_files: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            children = input_files(p)
        elif p.is_file():
            children = [p]
        else:
            raise InputError(not_a_file(p), source=str(p))
        for child in children:
            name = child.name.lower()
            if name.endswith(NDJSON_SUFFIXES):
                ndjson_files.append(child)
            elif name.endswith(JSON_SUFFIXES) or child == p:
                json_files.append(child)
    return json_files, ndjson_files


def chunks_of(files: Sequence[Path], chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    out: list[Chunk] = []
    for path in files:
        if path.name.lower().endswith(".gz"):
            out.append(Chunk(str(path), 0, -1))
            continue
        size = path.stat().st_size
        start = 0
        with open(path, "rb") as fh:
            while start < size:
                end = start + chunk_bytes
                if end >= size:
                    out.append(Chunk(str(path), start, -1))
                    break
                fh.seek(end)
                fh.readline()
                end = fh.tell()
                out.append(Chunk(str(path), start, end))
                start = end
    return out


def _read(chunk: Chunk) -> tuple[bytes, int]:
    """A chunk's bytes and the file offset they start at (after a UTF-8 byte order mark)."""
    try:
        if chunk.gzipped:
            with gzip.open(chunk.path, "rb") as fh:
                data = fh.read()
        else:
            with open(chunk.path, "rb") as fh:
                fh.seek(chunk.start)
                data = fh.read() if chunk.end == -1 else fh.read(chunk.end - chunk.start)
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read file: {exc}", source=chunk.path) from None
    if chunk.start == 0 and data.startswith(b"\xef\xbb\xbf"):
        return data[3:], 3
    return data, chunk.start


def line_number(path: str, offset: int) -> int:
    """The 1-based line of a byte offset (only computed when reporting an error)."""
    if path.lower().endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read(offset).count(b"\n") + 1
    with open(path, "rb") as fh:
        return fh.read(offset).count(b"\n") + 1


def _parse(chunk: Chunk, offset: int, line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON (column {exc.colno}): {exc.msg}",
            source=chunk.path,
            line=line_number(chunk.path, offset),
        ) from None
    try:
        return check_resource(value, chunk.path, None)
    except InputError as exc:
        raise InputError(
            str(exc).split(": ", 1)[-1], source=chunk.path, line=line_number(chunk.path, offset)
        ) from None


class Kept(NamedTuple):
    """A line the parent stores, worked out in the worker so the parent never parses it."""

    line: bytes  # empty when the line is left in its file (see `offset`)
    key: str  # Type/id
    targets: tuple[str, ...]  # reverse-index targets (who it points at, for joins)
    forward: tuple[str, ...]  # every Type/id it references (FOLLOWED types only)
    source: str = ""  # the file, when the line is left there
    offset: int = -1  # its byte offset there (-1: `line` holds the bytes)
    length: int = 0
    at: int = -1  # a line kept as bytes (a gzipped file's): its offset there, for messages


@dataclass(frozen=True)
class BadLine:
    """A line that is not one complete JSON object (truncated download, corruption)."""

    path: str
    offset: int


def where_all(bad: list[BadLine]) -> list[str]:
    """`file:line` of each bad line, in file order; each file is read once, not once per line."""
    out: list[str] = []
    by_path: dict[str, list[int]] = {}
    for b in bad:
        by_path.setdefault(b.path, []).append(b.offset)
    for path in sorted(by_path):
        offsets = sorted(set(by_path[path]))
        opener = gzip.open if path.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            data = fh.read(offsets[-1])
        line, at = 1, 0
        for offset in offsets:
            line += data.count(b"\n", at, offset)
            at = offset
            out.append(f"{path}:{line}")
    return out


@dataclass
class ScanResult:
    kept: list[Kept] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    # case Procedures met outside the files pass 1 reads (a file named for another type)
    cases: list[str] = field(default_factory=list)
    # Procedures that may be cases but hold the code in a form that is no coding of it
    # (codings.miscoded): where, why
    miscoded: list[tuple[BadLine, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ScanJob:
    """What one pass looks for; handed to each worker once, by the pool's initializer."""

    needle: bytes = b""
    system: Systems = ""
    code: str = ""
    plan: Plan | None = None
    ids: tuple[Any, ...] = ()
    types: frozenset[str] | None = None
    check_all: bool = False  # structural check of every line (pass 2 reads every file)
    skip_bad: bool = False


# Resource types whose references pass 3 follows (report results, locations, payors...).
FOLLOWED = frozenset(
    {
        "Encounter",
        "DiagnosticReport",
        "PractitionerRole",
        "Coverage",
        "Condition",
        "Procedure",
        "ClaimResponse",
    }
)


def forward_keys(line: bytes) -> frozenset[str]:
    """Every `Type/id` a raw line references (found once per line, shared by the screens)."""
    return frozenset(k for k in map(tail_key, _REF_TEXT.findall(line.decode())) if k)


def kept_record(
    line: bytes, resource: dict[str, Any], forward: frozenset[str] | None = None
) -> Kept:
    """What the parent stores, worked out in the worker so the parent does not parse."""
    rtype = resource["resourceType"]
    key = f"{rtype}/{resource.get('id')}"
    refs: Iterable[str] = ()
    if rtype in FOLLOWED:  # only these are followed in pass 3: the rest need not carry them
        refs = forward_keys(line) if forward is None else forward
    return Kept(line, key, tuple(reverse_targets(resource)), tuple(refs))


def _left_in_file(chunk: Chunk, offset: int, line: bytes, record: Kept) -> Kept:
    """The record without its bytes, which the store reads back from the file when a case
    needs them (a gzipped file cannot be read at an offset: its lines travel)."""
    # built directly: NamedTuple._replace goes through a dict, for every line kept
    if chunk.gzipped:
        return Kept(line, record.key, record.targets, record.forward, chunk.path, -1, 0, offset)
    return Kept(b"", record.key, record.targets, record.forward, chunk.path, offset, len(line))


def is_complete_object(line: bytes) -> bool:
    """Cheap structural check: one JSON object, not cut short (what truncation breaks)."""
    body = line.strip()
    return body.startswith(b"{") and body.endswith(b"}")


def whole_lines(
    job: ScanJob,
    chunk: Chunk,
    out: ScanResult,
    report: bool = True,
    wanted: Callable[[bytes], bool] | None = None,
) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of the chunk's complete-object lines that `wanted` accepts.

    Every line gets the cheap structural check; the others raise or, skipped, are
    counted (when `report`). A file's last line is where a cut-short download ends,
    possibly right after a nested `}`: that one line per file is parsed in full. One
    loop, no generator per line: on a sparse export this runs for every line and keeps
    almost none.
    """
    data, offset = _read(chunk)
    lines = data.split(b"\n")
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    cut_short = (
        chunk.end == -1
        and last >= 0
        and is_complete_object(lines[last])
        and not _parses(lines[last])
    )
    for i, line in enumerate(lines):
        here = offset
        offset += len(line) + 1
        if not (line.startswith(b"{") and line.endswith(b"}")):
            if not line.strip():
                continue
            if not is_complete_object(line):
                if report:
                    _reject(job, out, chunk.path, here)
                continue
        if i == last and cut_short:
            if report:
                _reject(job, out, chunk.path, here)
            continue
        if wanted is None or wanted(line):
            yield here, line


def _reject(job: ScanJob, out: ScanResult, path: str, offset: int) -> None:
    """A bad line stops the run, or with `skip_bad` is counted and passed over."""
    if not job.skip_bad:
        raise _bad_line(path, offset)
    out.bad.append(BadLine(path, offset))


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


# A code or coding no code can be read from (a number, a list or null where FHIR has a
# string; a coding that is not a list of objects): such a Procedure may be a case, so
# pass 1 parses it to say so (codings.miscoded), whether or not it mentions the code.
ODD_CODE = re.compile(rb'"coding"\s*:\s*(?:[^\s\[]|\[\s*[^\s{\]])|"code"\s*:\s*[^\s{"]')


def scan_procedures(job: ScanJob, chunk: Chunk) -> ScanResult:
    """Pass 1: Procedures coded system|code (as raw lines: cheaper to ship than dicts)."""
    out = ScanResult()
    if chunk.rtype not in (None, "Procedure"):
        return out
    needle = job.needle

    def wanted(line: bytes) -> bool:
        return needle in line or ODD_CODE.search(line) is not None

    for offset, line in whole_lines(job, chunk, out, wanted=wanted):
        resource = admit_line(job, chunk, offset, line, out)
        if resource is None:
            continue
        if resource["resourceType"] != "Procedure":
            continue
        if has_coding(resource, ("code",), job.system, job.code):
            out.kept.append(_left_in_file(chunk, offset, line, kept_record(line, resource)))
        else:
            why = miscoded(resource.get("code"), job.system, job.code)
            if why is not None:
                out.miscoded.append((BadLine(chunk.path, offset), f"{_key(resource)}: {why}"))
    return out


def _key(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource.get('id')}"


def miscoded_in(loaded: Iterable[Loaded], system: Systems, code: str, path: Path) -> list[str]:
    """The Procedures of a JSON file that `miscoded` finds, as "file[:line]: key: why"."""
    out = []
    for item in loaded:
        resource = item.resource
        if resource["resourceType"] != "Procedure" or has_coding(resource, ("code",), system, code):
            continue
        why = miscoded(resource.get("code"), system, code)
        if why is not None:
            key = _key(resource)
            lines = json_lines(path, key) if resource.get("id") else []
            where = f"{path}:{lines[0]}" if lines else str(path)
            out.append(f"{where}: {key}: {why}")
    return out


def screen_ids(
    ids: tuple[Any, ...], rtype: str | None
) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """(reference ids, own ids) worth parsing a line for, given its file's resource type.

    A patient reference only matters for Coverage, ClaimResponse (prior authorizations)
    and Procedures (the patient's other
    Procedures: units per date of service, global periods), a performer reference only
    for PractitionerRole.
    """
    anchor_ids, with_patients, with_performers, needed_by_type = ids
    if rtype is None:
        ref_ids = with_patients | with_performers
        own_ids: frozenset[bytes] = frozenset().union(*needed_by_type.values())
    else:
        ref_ids = {
            "Coverage": with_patients,
            "Procedure": with_patients,
            "ClaimResponse": with_patients,
        }.get(rtype, with_performers if rtype == "PractitionerRole" else anchor_ids)
        own_ids = needed_by_type.get(rtype, frozenset())
    return ref_ids, own_ids


def line_screen(ref_ids: frozenset[bytes], own_ids: frozenset[bytes]) -> Callable[[bytes], bool]:
    """Whether a raw line points at a wanted id or has one (its bytes alone), as one test
    per line specialised to what the file can match."""
    refs, ids = _REF_ID.findall, _ID.findall
    if ref_ids and own_ids:
        return lambda line: not (ref_ids.isdisjoint(refs(line)) and own_ids.isdisjoint(ids(line)))
    if ref_ids:
        return lambda line: not ref_ids.isdisjoint(refs(line))
    if own_ids:
        return lambda line: not own_ids.isdisjoint(ids(line))
    return _nothing


def _nothing(line: bytes) -> bool:
    return False


def plan_hits(plan: Plan, resource: dict[str, Any], refs: frozenset[str]) -> set[str]:
    """The plan keys a resource is kept for: its own key if needed, the anchors it points at.

    Both engines use this: the local one keeps a resource with any hit, Spark also
    maps the hits to the cases they belong to.
    """
    rtype = resource["resourceType"]
    key = f"{rtype}/{resource.get('id')}"
    hits = {key} if key in plan.needed else set()
    hits |= refs & plan.anchors
    if rtype == "PractitionerRole":
        hits |= refs & plan.performers
    if rtype in ("Coverage", "Procedure", "ClaimResponse"):
        hits |= refs & plan.patients
    return hits


def scan_related(job: ScanJob, chunk: Chunk) -> ScanResult:
    """Pass 2 and 3: resources the plan needs, screened on raw bytes first."""
    out = ScanResult()
    if job.types is not None and chunk.rtype is not None and chunk.rtype not in job.types:
        return out
    assert job.plan is not None
    ref_ids, own_ids = screen_ids(job.ids, chunk.rtype)
    # Pass 1 already checked Procedure files; pass 3 revisits lines pass 2 reported.
    report = job.check_all and chunk.rtype != "Procedure"
    for offset, line in whole_lines(job, chunk, out, report, line_screen(ref_ids, own_ids)):
        resource = admit_line(job, chunk, offset, line, out)
        if resource is None:
            continue
        refs = forward_keys(line)
        if plan_hits(job.plan, resource, refs):
            record = kept_record(line, resource, refs)
            out.kept.append(_left_in_file(chunk, offset, line, record))
            if (
                chunk.rtype not in (None, "Procedure")
                and resource["resourceType"] == "Procedure"
                and has_coding(resource, ("code",), job.system, job.code)
            ):
                out.cases.append(record.key)
    return out


def check_lines(job: ScanJob, chunk: Chunk) -> ScanResult:
    """Only the structural check (when no case was found, nothing else reads the files)."""
    out = ScanResult()
    if chunk.rtype != "Procedure":
        for _ in whole_lines(job, chunk, out, wanted=_nothing):
            pass
    return out


def admit_line(
    job: ScanJob, chunk: Chunk, offset: int, line: bytes, out: ScanResult
) -> dict[str, Any] | None:
    """The parsed resource; a line that looked whole but does not parse is a bad line too."""
    try:
        return _parse(chunk, offset, line)
    except InputError:
        if not job.skip_bad:
            raise
        _reject(job, out, chunk.path, offset)
        return None


def _bad_line(path: str, offset: int) -> InputError:
    return InputError(
        "not a complete JSON object (a truncated or corrupt line; "
        "--skip-bad-lines goes on without it)",
        source=path,
        line=line_number(path, offset),
    )


ScanFn = Callable[[ScanJob, Chunk], ScanResult]


def run_pass(
    func: ScanFn,
    job: ScanJob,
    chunks: list[Chunk],
    workers: int,
    on_part: Callable[[ScanResult], None] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> ScanResult:
    """Screen the chunks (in parallel); the kept lines come back raw (already validated).

    Chunks whose file name announces a type outside `job.types` are not even dispatched.
    A bad line stops the pass; with several, the first in file order is the one named,
    however the chunks were shared out. `on_part` sees each chunk's result in file
    order as soon as it and those before it are in: the parent indexes while its child
    is still screening, and the child takes more of the chunks. `meanwhile()` runs in
    this process while the children screen, when the pass forks any (see fork_map).
    """
    if job.types is not None:
        chunks = [c for c in chunks if c.rtype is None or c.rtype in job.types]
    sizes = [_chunk_size(c) for c in chunks]
    total = ScanResult()
    results: list[ScanResult | InputError | None] = [None] * len(chunks)
    settled = 0

    def settle(i: int, part: ScanResult | InputError) -> None:
        nonlocal settled
        results[i] = part
        while settled < len(results):
            done = results[settled]
            if done is None:
                return
            # taken out: kept in `total` below, or raised (an error left in `results` would
            # sit in a cycle, error -> traceback -> frame -> results, until the GC ran)
            results[settled] = None
            if isinstance(done, InputError):
                raise done
            total.kept.extend(done.kept)
            total.bad.extend(done.bad)
            total.cases.extend(done.cases)
            total.miscoded.extend(done.miscoded)
            if on_part is not None:
                on_part(done)
            settled += 1

    if workers <= 1 or sum(sizes) < PARALLEL_MIN_BYTES:  # a pool would cost more than it saves
        for i, chunk in enumerate(chunks):
            settle(i, func(job, chunk))
    else:
        # largest first, so that no big chunk is left for one worker at the end
        order = sorted(range(len(chunks)), key=lambda i: -sizes[i])
        done = fork_map(_scan_catching, (func, job), [chunks[i] for i in order], workers, meanwhile)
        try:
            for i, part in zip(order, done, strict=True):
                settle(i, part)
        finally:
            done.close()  # a bad line raised mid-pass: the children are stopped now
    return total


def _scan_catching(task: tuple[ScanFn, ScanJob], chunk: Chunk) -> ScanResult | InputError:
    """A chunk's result, or its bad line: the parent raises the first in file order."""
    func, job = task
    try:
        return func(job, chunk)
    except InputError as exc:
        return exc


def _chunk_size(chunk: Chunk) -> int:
    if chunk.end != -1:
        return chunk.end - chunk.start
    try:
        size = os.path.getsize(chunk.path) - chunk.start
    except OSError:
        return 0
    return size * 4 if chunk.gzipped else size


def json_cases(stores: Iterable[ResourceStore], system: Systems, code: str) -> list[Kept]:
    """Case Procedures read from JSON files, as plan seeds (so NDJSON beside them joins in)."""
    out = []
    for store in stores:
        for resource in store.whole_resources():
            if resource["resourceType"] == "Procedure" and has_coding(
                resource, ("code",), system, code
            ):
                line = orjson.dumps(resource)
                out.append(kept_record(line, resource))
    return out


def _questionnaire_evidence(items: list[Loaded]) -> list[Loaded]:
    """What a file's completed prior-authorization QuestionnaireResponses state, as the
    evidence resources the rules read (sources.questionnaire), in the same file's scope."""
    from fhir_adapter.sources.questionnaire import evidence_from

    out = []
    for item in items:
        res = item.resource
        if res.get("resourceType") == "QuestionnaireResponse" and res.get("id"):
            for derived in evidence_from(res, f"QuestionnaireResponse/{res['id']}"):
                out.append(Loaded(derived, None, item.origin))
    return out


def load_for_cases(
    paths: Iterable[str | os.PathLike[str]],
    system: Systems,
    code: str,
    *,
    workers: int = 1,
    chunk_bytes: int = CHUNK_BYTES,
    skip_bad_lines: bool = False,
    meanwhile: Callable[[], None] | None = None,
) -> ResourceStore:
    """A store with every resource the cases in `paths` need (JSON whole, NDJSON streamed).

    Each JSON file is a reference scope of its own and the NDJSON files one more (a
    server's): where two scopes hold under one `Type/id` what is not one resource
    (different content, or no server base in common), the result is `Scopes` (each
    file's cases see their own first); otherwise one merged store. Cases found in JSON
    files seed the plan too, so a Bundle of Procedures beside an NDJSON export joins
    exactly as if everything were in one place. Bad NDJSON lines are an InputError
    naming file and line, or, with `skip_bad_lines`, are counted in `store.bad_lines`.
    `meanwhile()` runs in this process while forked workers screen the export's related
    resources, if they do.
    """
    given = [Path(p) for p in paths]
    json_files, ndjson_files = classify(given)
    scopes: list[Scope] = []
    read: list[list[Loaded]] = []
    for path in json_files:
        own = ResourceStore()
        read.append(list(read_file(path)))
        read[-1].extend(_questionnaire_evidence(read[-1]))
        for loaded in read[-1]:
            _check_one_resource_per_id(own, loaded, path)
            own.add(loaded.resource, loaded.full_url)
        scopes.append(Scope(scope_label(path, given), own, str(path)))
    json_stores = [s.store for s in scopes]
    store = _load_ndjson(
        ndjson_files, json_stores, system, code, workers, chunk_bytes, skip_bad_lines, meanwhile
    )
    for path, items in zip(json_files, read, strict=True):
        store.miscoded += miscoded_in(items, system, code, path)
    if len(scopes) + bool(ndjson_files) > 1:
        labels = [s.label for s in scopes]
        if len(set(labels)) < len(labels):  # one name under two directories given
            scopes = [replace(s, label=s.path or s.label) for s in scopes]
        if ndjson_files:
            scopes.append(Scope(_export_label(ndjson_files), store))
        scoped = Scopes(scopes, len(scopes) - 1 if ndjson_files else None)
        if scoped.contested:
            scoped.bad_lines = store.bad_lines
            scoped.notices = store.notices
            scoped.miscoded = store.miscoded
            return scoped
    # no id names two things: one store means the same, and costs less
    for items in read:
        for loaded in items:
            store.add(loaded.resource, loaded.full_url)
    store.begin_case()
    return store


def _check_one_resource_per_id(own: ResourceStore, loaded: Loaded, path: Path) -> None:
    """One file gives each `Type/id` one resource: a second, different one under it (under
    a `urn:uuid`, no fullUrl or another server's, before or after the first) leaves the
    file's references to it without one meaning. The same resource met twice is fine."""
    resource, url = loaded.resource, loaded.full_url
    rid = resource.get("id")
    key = f"{resource['resourceType']}/{rid}" if rid else url
    earlier = own.get(key) if key else None
    if key is None or earlier is None or earlier == resource:
        return
    known = own.full_url_of(key)
    lines = json_lines(path, key) if rid else []
    both = f"lines {lines[0]} and {lines[1]}" if len(lines) > 1 else "two entries"
    if known is not None and url and "://" in url and known != url:
        both += f", {known} and {url}"  # one Type/id on two servers
    raise InputError(
        f"{key} is two different resources in this Bundle, {both}: references to it "
        "could mean either (give each its own id)",
        source=str(path),
        line=lines[0] if lines else None,
    )


def _export_label(files: Sequence[Path]) -> str:
    parents = sorted({str(f.parent) for f in files})
    return parents[0] if len(parents) == 1 else "the NDJSON files"


def _load_ndjson(
    ndjson_files: Sequence[Path],
    json_stores: Sequence[ResourceStore],
    system: Systems,
    code: str,
    workers: int,
    chunk_bytes: int,
    skip_bad_lines: bool,
    meanwhile: Callable[[], None] | None = None,
) -> CompactStore:
    """The NDJSON lines the cases (theirs and the JSON files') need, in a store of their own."""
    store = CompactStore()
    if not ndjson_files:
        return store
    store.order = {str(path): rank for rank, path in enumerate(ndjson_files)}
    chunks = chunks_of(ndjson_files, chunk_bytes)
    # the bare code: a padded one ("47382 ") counts too, as it does in has_coding
    job = ScanJob(needle=code.encode(), system=system, code=code, skip_bad=skip_bad_lines)

    def index(part: ScanResult) -> None:
        store.add_lines(part.kept)

    first = run_pass(
        scan_procedures, replace(job, types=frozenset({"Procedure"})), chunks, workers, index
    )
    bad = list(first.bad)
    odd = sorted(first.miscoded, key=lambda m: (m[0].path, m[0].offset))  # where_all's order
    at = where_all([b for b, _ in odd])
    store.miscoded = [f"{w}: {why}" for w, (_, why) in zip(at, odd, strict=True)]
    cases = first.kept + json_cases(json_stores, system, code)
    if not cases:
        bad += run_pass(check_lines, job, chunks, workers).bad
        store.bad_lines = where_all(bad)
        return store
    plan, _ = Plan.for_cases(cases)
    pointed: set[str] = set()  # what the gathered resources point at

    def index_pointing(part: ScanResult) -> None:
        index(part)
        for kept in part.kept:
            pointed.update(kept.forward)  # empty but for the FOLLOWED types

    second = run_pass(
        scan_related,
        replace(job, plan=plan, ids=plan.id_bytes(), check_all=True),
        chunks,
        workers,
        index_pointing,
        meanwhile,
    )
    bad += second.bad
    # the case Procedures the passes parsed anyway: finding the cases parses none again
    coded = [*(kept.key for kept in first.kept), *second.cases]
    for json_store in json_stores:
        for r in json_store.whole_resources():
            if r["resourceType"] in FOLLOWED:
                pointed.update(kept_record(orjson.dumps(r), r).forward)
    # Pass 3: what the gathered resources point at and is still missing.
    in_json = {key for s in json_stores for key in s.stored_keys()}
    missing = {ref for ref in pointed if not store.has(ref) and ref not in in_json}
    if missing:
        final = Plan(needed=missing)
        types = frozenset(k.split("/")[0] for k in missing)
        third = run_pass(
            scan_related,
            replace(job, plan=final, ids=final.id_bytes(), types=types),
            chunks,
            workers,
            index,
        )
        bad += third.bad
        coded += third.cases
    store.note_coded(system, code, coded)
    store.bad_lines = where_all(bad)
    store.begin_case()
    return store
