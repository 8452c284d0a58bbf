"""What a compiled matcher sees: the case, its text index and the derived facts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.case import Case
from fhir_adapter.findings import Evidence
from fhir_adapter.text.index import TextIndex, counts


@dataclass(slots=True, unsafe_hash=True)  # never mutated: see fhir_adapter.findings
class Fact:
    """A derived value (None when unknown), the system of a coded value, and its evidence;
    `verified` is False when the value rests only on rows nobody verified (a shipped CMS
    table excerpt), so a rule may not block on it."""

    value: Any
    evidence: tuple[Evidence, ...] = ()
    system: str | None = None
    verified: bool = True


def evidence_fact(evidence: list[Evidence], *, verified: bool = True) -> Fact:
    """A fact that is its evidence: the references found (None when nothing was); `verified`
    False when it rests on table rows nobody verified."""
    if not evidence:
        return Fact(None)
    return Fact([e.reference for e in evidence], tuple(evidence), verified=verified)


@dataclass(slots=True)
class Context:
    case: Case
    text: TextIndex
    facts: dict[str, Fact] = field(default_factory=dict)


def found(fn: Callable[[Context], Iterable[Evidence]], ctx: Context) -> bool:
    """A matcher found something that counts (a ruled-out text mention does not)."""
    return any(counts(e) for e in fn(ctx))
