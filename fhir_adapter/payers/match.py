"""Which overlay judges a case: chosen by the case's Coverage and its payor Organization."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_adapter.case import Case
from fhir_adapter.fhir.codings import codings
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.payers.load import CompiledOverlay, Payers
from fhir_adapter.payers.schema import CoverageCode


@dataclass(frozen=True)
class Choice:
    overlay: CompiledOverlay | None
    # how it was chosen ("identifier NAIC 60054", "name 'Aetna'", "--payer"), or why none was
    matched_by: str
    payer_name: str | None


def payer_of(case: Case) -> Resource | None:
    """The payor of the case's Coverage, when it is an Organization the case holds."""
    payer = case.resource(case.insurer_ref)
    return payer if payer is not None and payer.get("resourceType") == "Organization" else None


def choose(payers: Payers, case: Case) -> Choice:
    """The forced overlay, else the best match: an identifier beats a name, a plan or line of
    business limit adds to either, and equal matches go to the higher priority, then the one
    loaded first."""
    payer = payer_of(case)
    name = payer.get("name") if payer is not None and isinstance(payer.get("name"), str) else None
    if payers.forced is not None:
        return Choice(payers.forced, "--payer", name)
    coverage = case.coverage[0] if case.coverage else None
    best: tuple[tuple[int, int, int], CompiledOverlay, str] | None = None
    for i, overlay in enumerate(payers.overlays):
        found = _score(overlay, payer, name, coverage)
        if found is None:
            continue
        score, why = found
        key = (score, overlay.model.priority, -i)
        if best is None or key > best[0]:
            best = (key, overlay, why)
    if best is None:
        who = name or case.insurer_ref or "no payer on the Coverage"
        return Choice(None, f"no payer overlay matches {who}", name)
    return Choice(best[1], best[2], name)


def _score(
    overlay: CompiledOverlay, payer: Resource | None, name: str | None, coverage: Resource | None
) -> tuple[int, str] | None:
    applies = overlay.model.applies_to
    score, why = 0, ""
    for ident in (payer or {}).get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        for want in applies.identifiers:
            if ident.get("value") == want.value and want.system in (None, ident.get("system")):
                score, why = 2, f"identifier {want.value}"
    if not score and name:
        for rx in overlay.names:
            if rx.search(name):
                score, why = 1, f"name {name!r}"
                break
    if not score:
        return None
    if applies.coverage_class or applies.coverage_type:
        plan = _coverage_match(applies.coverage_class, applies.coverage_type, coverage)
        if plan is None:
            return None
        score, why = score + 1, f"{why}, {plan}"
    return score, why


def _coverage_match(
    classes: list[CoverageCode], types: list[CoverageCode], coverage: Resource | None
) -> str | None:
    if coverage is None:
        return None
    for cls in coverage.get("class") or []:
        if not isinstance(cls, dict):
            continue
        kinds = {c.get("code") for c in codings(cls.get("type"))}
        for want in classes:
            if cls.get("value") == want.value and (want.type is None or want.type in kinds):
                return f"Coverage.class {want.value}"
    found = {c.get("code") for c in codings(coverage.get("type"))}
    text = (coverage.get("type") or {}).get("text")
    for want in types:
        if want.value in found or want.value == text:
            return f"Coverage.type {want.value}"
    return None
