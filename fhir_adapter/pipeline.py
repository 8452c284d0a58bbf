"""The whole flow for data already in hand: store -> cases -> rules -> findings -> output."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fhir_adapter.billing import icd10cm
from fhir_adapter.billing.decide import payment_tables
from fhir_adapter.case import assemble, coded_procedure, find_procedure_keys
from fhir_adapter.errors import AdapterError, InputError
from fhir_adapter.pack import Pack, cached_pack
from fhir_adapter.parallel import fork_map
from fhir_adapter.payers import Payers
from fhir_adapter.rules import evaluate_case
from fhir_adapter.sources import ResourceStore
from fhir_adapter.text.index import scope_of
from fhir_adapter.writeback import CaseOutput, build_output

if TYPE_CHECKING:  # the server path imports requests; `evaluate` of files does not need it
    from fhir_adapter.client.rest import FhirClient


def now_iso() -> str:
    """The evaluation time, to the second, with timezone (what FHIR dateTime needs)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def evaluate_store(
    store: ResourceStore,
    pack: Pack | None = None,
    *,
    block_on: str | None = None,
    now: str | None = None,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    charges: Mapping[str, float] | None = None,
    payers: Payers | None = None,
) -> list[CaseOutput]:
    """Evaluate every case in `store`, in a stable order (the same for any `workers`).

    `on_progress(done, total)` is called as cases complete; `charges` (a chargemaster,
    code -> amount) prices the Claims' lines; `payers` are the payer overlays (default:
    the shipped ones).
    """
    pack = pack or cached_pack()
    if block_on is not None and block_on not in pack.model.severity_order:
        raise ValueError(f"block_on must be one of {pack.model.severity_order}")
    stamp = now or now_iso()
    stores = store.case_stores()
    keys = sorted(
        (key, i)
        for i, part in enumerate(stores)
        for key in find_procedure_keys(part, pack.procedure_systems, pack.procedure_code)
        if part.owns(key)
    )
    total = len(keys)
    job = EvalJob(stores, pack, keys, block_on, stamp, charges, payers)
    if workers > 1 and total >= 2 * workers:
        prepare(pack)  # done already when the load forked workers: then it costs nothing
        return one_per_procedure(_evaluate_parallel(job, workers, on_progress))
    outputs = []
    for i in range(total):
        outputs.extend(_evaluate_slice(job, (i, i + 1)))
        if on_progress is not None and ((i + 1) % 64 == 0 or i + 1 == total):
            on_progress(i + 1, total)
    return one_per_procedure(outputs)


def one_per_procedure(outputs: list[CaseOutput]) -> list[CaseOutput]:
    """One output per procedure: cases whose Procedures carry the same business identifier
    (system and value) are one procedure, whatever file or id they came under. Where every
    copy says the same (the same findings and Claim), the first in reading order is kept;
    where they differ, nothing is written for any of them: an InputError names both."""
    first: dict[str, CaseOutput] = {}
    kept = []
    for output in outputs:
        business = output.procedure_identifier
        if business is None:
            kept.append(output)
            continue
        earlier = first.setdefault(business, output)
        if earlier is output:
            kept.append(output)
        elif _told(earlier) != _told(output):
            raise InputError(
                f"{earlier.evaluation.procedure} and {output.evaluation.procedure} are one "
                f"procedure (identifier {business}) but say different things (findings, "
                "Claim or what they point at): nothing is written; remove the wrong copy or "
                "make them agree"
            )
    return kept


def _told(output: CaseOutput) -> bytes:
    """What a case concluded and writes, without the label of the file it came from."""
    concluded = output.evaluation.to_dict()
    del concluded["procedure"]
    return orjson.dumps(
        [concluded, output.resources, output.date_of_service, output.payer],
        option=orjson.OPT_SORT_KEYS,
    )


def prepare(pack: Pack) -> None:
    """Fill the caches every case fills on first use (the ICD-10-CM index, the CMS tables,
    the vocabulary's compiled terms, the scope rules), in a process about to fork
    evaluation workers: they inherit them instead of each filling its own. Called while
    the load's forked workers screen, it costs no time of its own."""
    try:
        icd10cm.release()  # reads the installed release's index
        payment_tables()
    except AdapterError:
        pass  # raised again, as before, by the first case that needs them
    pack.engine.compile_all()
    scope_of(pack.engine)


def evaluate_one(
    store: ResourceStore,
    pack: Pack,
    procedure: dict[str, Any],
    block_on: str | None,
    stamp: str,
    charges: Mapping[str, float] | None = None,
    payers: Payers | None = None,
) -> CaseOutput:
    store.begin_case(procedure)
    case = assemble(store, procedure, pack.procedure_systems, pack.procedure_code)
    evaluation = evaluate_case(pack, case, block_on, payers)
    output = build_output(pack, case, evaluation, stamp, charges)
    # the case's memo (its text index) points back at the case: with the cyclic GC paused
    # for speed, that cycle would keep every case of the run alive
    case.derived.clear()
    return output


@dataclass(frozen=True)
class EvalJob:
    """What every evaluation worker needs; inherited by the forked workers, not pickled."""

    stores: list[ResourceStore]  # one, or one per reference scope (sources.scopes)
    pack: Pack
    # the case Procedures' keys and their stores: each worker parses its own
    keys: list[tuple[str, int]]
    block_on: str | None
    stamp: str
    charges: Mapping[str, float] | None
    payers: Payers | None = None


# cases per task: small enough that the two workers finish together, large enough that
# a task's overhead does not show
_SLICE = 64


def case_procedure(store: ResourceStore, pack: Pack, key: str) -> dict[str, Any] | None:
    """The Procedure stored under `key` when it is a case: still coded with the pack's code
    (a later copy may have replaced it) and not void (entered in error). Every engine that
    evaluates by key asks this, so they agree on what a case is."""
    store.begin_case()
    procedure = coded_procedure(store, key, pack.procedure_systems, pack.procedure_code)
    return None if procedure is None or pack.voids(procedure) else procedure


def _evaluate_slice(job: EvalJob, bounds: tuple[int, int]) -> list[CaseOutput]:
    outputs = []
    for key, i in job.keys[bounds[0] : bounds[1]]:
        store = job.stores[i]
        procedure = case_procedure(store, job.pack, key)
        if procedure is not None:
            outputs.append(
                evaluate_one(
                    store, job.pack, procedure, job.block_on, job.stamp, job.charges, job.payers
                )
            )
    return outputs


def _evaluate_parallel(
    job: EvalJob, workers: int, on_progress: Callable[[int, int], None] | None
) -> list[CaseOutput]:
    """Forked workers share the store copy-on-write; slices come back in order."""
    n = len(job.keys)
    outputs: list[CaseOutput] = []
    step = max(1, min(_SLICE, n // (workers * 16)))
    bounds = [(i, min(n, i + step)) for i in range(0, n, step)]
    parts = fork_map(_evaluate_slice, job, bounds, workers)
    for (_, done), part in zip(bounds, parts, strict=True):
        outputs.extend(part)
        if on_progress is not None:
            on_progress(done, n)
    return outputs


def load_store(
    paths: Iterable[str | os.PathLike[str]],
    pack: Pack | None = None,
    *,
    workers: int = 1,
    skip_bad_lines: bool = False,
) -> ResourceStore:
    """Read files/directories into a store holding what the pack's cases need.

    NDJSON is streamed: only the resources the cases need are kept in memory. A
    corrupt NDJSON line is an InputError naming file and line, unless
    `skip_bad_lines`, in which case the store lists them in `bad_lines`.
    """
    from fhir_adapter.sources.bulk import load_for_cases

    pack = pack or cached_pack()
    with gc_paused():
        return load_for_cases(
            [Path(p) for p in paths],
            pack.procedure_systems,
            pack.procedure_code,
            workers=workers,
            skip_bad_lines=skip_bad_lines,
            meanwhile=functools.partial(prepare, pack) if workers > 1 else None,
        )


def evaluate_paths(
    paths: Iterable[str | os.PathLike[str]],
    pack: Pack | None = None,
    *,
    block_on: str | None = None,
    now: str | None = None,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    charges: Mapping[str, float] | None = None,
    payers: Payers | None = None,
) -> list[CaseOutput]:
    """Read files/directories (JSON, Bundles, NDJSON exports) and evaluate every case in them.

    Without `pack`, the bundled one, compiled once per process until mappings/ changes."""
    pack = pack or cached_pack()
    store = load_store(paths, pack, workers=workers)
    with gc_paused():
        return evaluate_store(
            store,
            pack,
            block_on=block_on,
            now=now,
            workers=workers,
            on_progress=on_progress,
            charges=charges,
            payers=payers,
        )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many acyclic dicts (it more than doubled load time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class ServerResult:
    """One case evaluated against a server, and what was (or would be) written."""

    output: CaseOutput
    transaction: dict[str, Any] | None
    written: bool
    reads: int


def run_on_server(
    client: FhirClient,
    pack: Pack | None = None,
    *,
    procedure_ids: Sequence[str] = (),
    patient: str | None = None,
    since: str | None = None,
    block_on: str | None = None,
    dry_run: bool = False,
    now: str | None = None,
    on_case: Callable[[ServerResult], None] | None = None,
    charges: Mapping[str, float] | None = None,
    concurrency: int = 1,
    write_to: FhirClient | None = None,
    lookup_earlier: bool = True,
    payers: Payers | None = None,
) -> list[ServerResult]:
    """Evaluate the 47382 Procedures on a server and write back one transaction per case.

    `concurrency` cases are read, evaluated and written at once; results come back in the
    search's order, the same as one at a time. `write_to`: the server the output goes to
    (default: `client`); its earlier output is looked for there. `lookup_earlier=False`
    (output to files): no earlier output is looked for, every case plans its full write.
    """
    from fhir_adapter.gather import ServerSource

    pack = pack or cached_pack()
    job = _ServerJob(
        pack,
        ServerSource(client, pack.procedure_systems, pack.procedure_code),
        write_to or client,
        block_on,
        now or now_iso(),
        charges,
        dry_run,
        lookup_earlier,
        payers,
    )
    results: list[ServerResult] = []
    voided: list[str] = []
    items = (
        procedure
        for procedures, included in job.source.procedure_pages(
            ids=procedure_ids, patient=patient, since=since
        )
        for procedure in _with_included(procedures, included)
    )
    for done in _in_order(job.one, items, concurrency):
        if isinstance(done, str):
            voided.append(done)
            continue
        results.append(done)
        if on_case is not None:
            on_case(done)
    if procedure_ids:
        found = {r.output.evaluation.procedure for r in results}
        missing = [i for i in procedure_ids if f"Procedure/{i}" not in found]
        if missing:
            void = [f"Procedure/{m}" for m in missing if f"Procedure/{m}" in voided]
            other = [f"Procedure/{m}" for m in missing if f"Procedure/{m}" not in voided]
            why = []
            if other:
                why.append(f"not found or not coded {pack.procedure_code}: {', '.join(other)}")
            if void:
                why.append(f"entered in error, so not a case: {', '.join(void)}")
            raise AdapterError("; ".join(why))
    return results


def _with_included(
    procedures: list[dict[str, Any]], included: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    for procedure in procedures:
        yield procedure, included


@dataclass(frozen=True)
class _ServerJob:
    """One case of a server run, from gathering to writing (any thread may run it)."""

    pack: Pack
    source: Any  # gather.ServerSource
    write_to: FhirClient
    block_on: str | None
    stamp: str
    charges: Mapping[str, float] | None
    dry_run: bool
    lookup_earlier: bool
    payers: Payers | None = None

    def one(self, item: tuple[dict[str, Any], list[dict[str, Any]]]) -> ServerResult | str:
        """The case's result, or the key of a voided Procedure (whose earlier output is
        withdrawn)."""
        from fhir_adapter.client.reads import Reader
        from fhir_adapter.findings import Evaluation
        from fhir_adapter.gather import bundle_resources
        from fhir_adapter.writeback.identity import case_token
        from fhir_adapter.writeback.plan import output_queries, plan_write

        procedure, included = item
        pack, source = self.pack, self.source
        system = pack.model.canonical.identifier_system
        token = case_token(procedure, f"Procedure/{procedure['id']}")
        queries = output_queries(system, token) if self.lookup_earlier else []
        outputs = Reader(self.write_to)
        if pack.voids(procedure):
            # no case: what earlier runs wrote for it is withdrawn, nothing new is written
            key = f"Procedure/{procedure['id']}"
            earlier = bundle_resources(outputs.get_many(queries))
            withdraw = plan_write(
                CaseOutput(Evaluation(key, None, None)), earlier, self.write_to.base_url
            )
            if withdraw is not None and not self.dry_run:
                self.write_to.write(withdraw)
            return key
        gathered = source.gather(procedure, included, queries, outputs)
        evaluation = evaluate_case(pack, gathered.case, self.block_on, self.payers)
        output = build_output(pack, gathered.case, evaluation, self.stamp, self.charges)
        output.reads = gathered.reads
        transaction = plan_write(output, gathered.existing, self.write_to.base_url)
        written = False
        if transaction is not None and not self.dry_run:
            self.write_to.write(transaction)
            written = True
        return ServerResult(output, transaction, written, gathered.reads)


def _in_order(work: Callable[[Any], Any], items: Iterable[Any], concurrency: int) -> Iterator[Any]:
    """`work(item)` for each item, `concurrency` at a time, answers in the items' order.

    At most twice `concurrency` items are taken ahead of the first unfinished one, so a
    large search is not read ahead into memory. The first failure (in order) is raised
    once the work under way has finished; nothing after it is started.
    """
    if concurrency <= 1:
        yield from map(work, items)
        return
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    pending: deque[Future[Any]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="case") as pool:
        try:
            for item in it:
                pending.append(pool.submit(work, item))
                while len(pending) >= 2 * concurrency or (pending and pending[0].done()):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def connect(base_url: str, auth: Any = None, **options: Any) -> FhirClient:
    """A client for a FHIR R4 server (checks `/metadata`; discovers SMART endpoints)."""
    from fhir_adapter.client.rest import FhirClient

    return FhirClient(base_url, auth, **options)


def evaluate_procedure(
    client: FhirClient, procedure_id: str, pack: Pack | None = None, **options: Any
) -> ServerResult:
    """Evaluate one Procedure on the server without writing; `write_back` sends the result."""
    [result] = run_on_server(client, pack, procedure_ids=[procedure_id], dry_run=True, **options)
    return result


def write_back(client: FhirClient, result: ServerResult) -> bool:
    """Send a case's planned transaction (if anything changed); True when something was written."""
    if result.transaction is None or result.written:
        return False
    client.write(result.transaction)
    result.written = True
    return True
