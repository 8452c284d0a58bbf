"""Labelled sentences through the whole rule pack: what tests/test_corpus.py asserts on
and benchmarks/bench_blind.py measures (one place for how a sentence is judged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fhir_adapter.case import Case, assemble
from fhir_adapter.pack import Pack
from fhir_adapter.rules import evaluate_case
from fhir_adapter.sources.store import ResourceStore

# element (text target) -> the rule that reads it, and whether the rule forbids it
RULES = {
    "necessity-rationale": ("necessity-rationale-missing", False),
    "tumor-size": ("doc-tumor-size", False),
    "tumor-count": ("doc-tumor-count", False),
    "tumor-location": ("doc-tumor-location", False),
    "imaging-guidance": ("doc-imaging-guidance", False),
    "energy-applied": ("doc-energy", False),
    "ablation-confirmation": ("doc-ablation-confirmation", False),
    "open-or-laparoscopic-approach": ("approach-mismatch", True),
    "non-rf-energy": ("modality-mismatch", True),
}


def load_sentences(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """element -> its labelled items, from every `*.yaml` of a directory."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        out.setdefault(data["element"], []).extend(data["items"])
    return out


def note_case(pack: Pack, text: str, date: str | None = None) -> Case:
    """A minimal completed 47382 case whose only narrative is `text` (Procedure.note),
    performed on `date` (ISO; without one, the note's own date of service is the session's)."""
    store = ResourceStore()
    store.add({"resourceType": "Patient", "id": "p"})
    procedure = {
        "resourceType": "Procedure",
        "id": "rfa",
        "status": "completed",
        "code": {"coding": [{"system": pack.procedure_system, "code": pack.procedure_code}]},
        "subject": {"reference": "Patient/p"},
        "note": [{"text": text}],
    }
    if date:
        procedure["performedDateTime"] = date
    store.add(procedure)
    return assemble(store, procedure, pack.procedure_systems, pack.procedure_code)


def documented(pack: Pack, element: str, text: str) -> bool:
    """Whether the pack finds the element documented in a case whose only narrative is `text`."""
    return documented_elements(pack, text)[element]


def documented_elements(pack: Pack, text: str, date: str | None = None) -> dict[str, bool]:
    """Every element at once: whether the pack finds it documented in `text`, the note of
    a session on `date` (one evaluation)."""
    ev = evaluate_case(pack, note_case(pack, text, date))
    fired = {f.code for f in ev.findings}
    # a requirement waived by its `unless` (nothing was ablated, so no energy is asked for)
    # does not make the element documented
    exempt = {c.rule for c in ev.criteria if c.exempt}
    return {
        e: fired_ if forbids else not fired_ and finding not in exempt
        for e, (finding, forbids) in RULES.items()
        for fired_ in [finding in fired]
    }
