"""The whole flow for data already in hand: store -> cases -> rules -> findings -> output."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

from fhir_adapter.case import assemble_cases
from fhir_adapter.rules import Pack, evaluate_case, load_pack
from fhir_adapter.sources import ResourceStore, read_paths
from fhir_adapter.writeback import CaseOutput, build_output


def now_iso() -> str:
    """The evaluation time, to the second, with timezone (what FHIR dateTime needs)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def evaluate_store(
    store: ResourceStore,
    pack: Pack | None = None,
    *,
    block_on: str | None = None,
    now: str | None = None,
) -> list[CaseOutput]:
    """Evaluate every case in `store`, in a stable order."""
    pack = pack or load_pack()
    if block_on is not None and block_on not in pack.model.severity_order:
        raise ValueError(f"block_on must be one of {pack.model.severity_order}")
    stamp = now or now_iso()
    outputs = []
    for case in assemble_cases(store, pack.procedure_system, pack.procedure_code):
        evaluation = evaluate_case(pack, case, block_on)
        outputs.append(build_output(pack, case, evaluation, stamp))
    return outputs


def evaluate_paths(
    paths: Iterable[str | os.PathLike[str]],
    pack: Pack | None = None,
    *,
    block_on: str | None = None,
    now: str | None = None,
) -> list[CaseOutput]:
    """Read files/directories (JSON, Bundles, NDJSON) and evaluate every case in them."""
    store = ResourceStore(read_paths(Path(p) for p in paths))
    return evaluate_store(store, pack, block_on=block_on, now=now)
