"""The facts payer policies decide on, found in structured data first and in the text second.

Which codes and patterns document each fact comes from the pack (facts.payer); the code
knows where in FHIR each is kept. A status fact is "present", "absent" or unknown (None):
a policy that needs it and cannot tell asks for it (payer-criteria-undocumented).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from fhir_adapter.billing.decide import verification_code
from fhir_adapter.case import Case
from fhir_adapter.fhir.codings import codings
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.context import Context, Fact
from fhir_adapter.pack.derivers import Derivers
from fhir_adapter.pack.load import Pack
from fhir_adapter.pack.schema import PayerFacts, StatusFact
from fhir_adapter.pack.valuesets import ValueSet
from fhir_adapter.text.index import TEXT_SOURCES, mention_evidence

PAYER = Derivers()

PRESENT, ABSENT = "present", "absent"

_STATUS_FACTS = (
    "extrahepatic_disease",
    "portal_vein_occlusion",
    "transplant_listed",
    "not_resection_candidate",
    "resection_declined",
    "all_foci_treatable",
    "net_functioning",
    "net_symptoms_after_systemic",
)


CHILD_PUGH_CLASSES = ("A", "B", "C")


def closed_values(pack: Pack, name: str) -> list[str] | None:
    """The values fact `name` can take, where they are a closed list (the histologies the
    pack names, present/absent, a Child-Pugh class); None for the others."""
    cfg = pack.model.facts.payer
    if name == "histology" and cfg is not None:
        return [h.name for h in cfg.histology]
    if name in _STATUS_FACTS:
        return [PRESENT, ABSENT]
    if name == "child_pugh":
        return list(CHILD_PUGH_CLASSES)
    return None


@PAYER.provides("histology", *_STATUS_FACTS)
def _documented(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    cfg = pack.model.facts.payer
    if cfg is None:
        return (Fact(None),) * (1 + len(_STATUS_FACTS))
    sources = _sources(cfg)
    return (
        histology(pack, ctx, cfg, sources),
        *(status_fact(pack, ctx, getattr(cfg, name), sources) for name in _STATUS_FACTS),
    )


@PAYER.provides("tumor_sizes_cm", "tumor_total_diameter_cm")
def _sizes(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    return tumor_sizes(pack, ctx)


@PAYER.provides("child_pugh", "liver_share_pct")
def _measures(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    cfg = pack.model.facts.payer
    if cfg is None:
        return Fact(None), Fact(None)
    sources = _sources(cfg)
    return child_pugh(pack, ctx, cfg, sources), liver_share(pack, ctx, cfg.liver_share, sources)


def _sources(cfg: PayerFacts) -> tuple[str, ...]:
    return tuple(cfg.in_ or TEXT_SOURCES)


def diagnoses(pack: Pack, case: Case, *, reasons: bool = False) -> list[Resource]:
    """The case's Conditions that may document a fact (with `reasons`, only those stated as
    the reason): not provisional, differential or refuted (a suspected metastasis is no
    extrahepatic disease)."""
    dx = pack.model.facts.diagnoses
    uncertain = set(dx.uncertain_verification) if dx is not None else set()
    seen: dict[int, Resource] = {}
    for c in case.reason_conditions if reasons else [*case.reason_conditions, *case.conditions]:
        if verification_code(c) not in uncertain:
            seen.setdefault(id(c), c)
    return list(seen.values())


def coded(pack: Pack, case: Case, vs: ValueSet, *, reasons: bool = False) -> list[Evidence]:
    """Evidence of the diagnoses with a code in `vs`."""
    out = []
    for c in diagnoses(pack, case, reasons=reasons):
        for coding in codings(c.get("code")):
            if vs.contains(coding.get("system"), coding.get("code")):
                note = f"{coding.get('code')} {coding.get('display') or ''}".strip()
                out.append(Evidence(case.ref(c), "Condition.code", None, note))
                break
    return out


def _mentions(
    pack: Pack, ctx: Context, patterns: str, sources: tuple[str, ...]
) -> tuple[list[Evidence], list[Evidence]]:
    """(affirmed, negated) mentions of a pattern group, as evidence (three of each)."""
    affirmed: list[Evidence] = []
    negated: list[Evidence] = []
    for unit, m in ctx.text.mentions(pack.engine, patterns, sources):
        bucket = affirmed if m.affirmed else negated if m.status == "negated" else None
        if bucket is not None and len(bucket) < 3:
            bucket.append(mention_evidence(unit, m))
    return affirmed, negated


def histology(pack: Pack, ctx: Context, cfg: PayerFacts, sources: tuple[str, ...]) -> Fact:
    """The first histology whose codes are on the record, else the first the text states;
    a last-resort entry (a metastasis of an unnamed primary) only when neither is."""
    case = ctx.case
    ordered = [h for h in cfg.histology if not h.last_resort]
    last = [h for h in cfg.histology if h.last_resort]
    for group in (ordered, last):
        for h in group:
            if h.valueset is None:
                continue
            found = coded(pack, case, pack.valuesets[h.valueset])
            if found and h.with_primary is not None:
                primary = coded(pack, case, pack.valuesets[h.with_primary])
                found = found + primary if primary else []
            if found:
                return Fact(h.name, tuple(found))
        if group is last:
            break
        for h in group:
            if h.patterns is not None:
                affirmed, _ = _mentions(pack, ctx, h.patterns, sources)
                if affirmed:
                    return Fact(h.name, tuple(affirmed))
    return Fact(None)


def status_fact(pack: Pack, ctx: Context, cfg: StatusFact, sources: tuple[str, ...]) -> Fact:
    """present (a code, an affirmed mention), absent (an affirmed absence pattern, or a
    negated mention where the pack says so), else unknown; present wins a disagreement."""
    reasons = cfg.coded_in == "reasons"
    found = (
        coded(pack, ctx.case, pack.valuesets[cfg.valueset], reasons=reasons) if cfg.valueset else []
    )
    negated: list[Evidence] = []
    if cfg.patterns is not None:
        affirmed, negated = _mentions(pack, ctx, cfg.patterns, sources)
        found += affirmed
    if found:
        return Fact(PRESENT, tuple(found))
    absent = negated if cfg.negated_is_absent else []
    if cfg.absent_patterns is not None:
        absent = _mentions(pack, ctx, cfg.absent_patterns, sources)[0] + absent
    if absent:
        return Fact(ABSENT, tuple(absent))
    if cfg.unstated == ABSENT:
        return Fact(ABSENT, (Evidence(ctx.case.key, "Procedure", None, "not stated: absent"),))
    return Fact(None)


def tumor_sizes(pack: Pack, ctx: Context) -> tuple[Fact, Fact]:
    """Every treated tumor's greatest dimension (one per lesion Observation, else the
    distinct sizes the text affirms), and their total when there is one size per counted
    tumor (else unknown: a policy's total-diameter limit cannot be checked)."""
    case = ctx.case
    cfg = pack.model.facts.tumor_max_size_cm
    obs_vs = pack.valuesets[cfg.observations]
    sizes: list[float] = []
    evidence: list[Evidence] = []
    for obs in case.observations:
        if not any(
            obs_vs.contains(c.get("system"), c.get("code")) for c in codings(obs.get("code"))
        ):
            continue
        dims = [cm for cm in _quantities(obs) if cm is not None]
        if dims:
            sizes.append(max(dims))
            evidence.append(
                Evidence(case.ref(obs), "Observation.valueQuantity", None, f"{max(dims):g} cm")
            )
    if not sizes:
        for unit, m in ctx.text.affirmed(pack.engine, cfg.patterns):
            cm = max(pack.engine.lengths_cm(m.words), default=None)
            if cm is not None and cm not in sizes:
                sizes.append(cm)
                evidence.append(mention_evidence(unit, m))
    if not sizes:
        return Fact(None), Fact(None)
    listed = Fact(sorted(sizes, reverse=True), tuple(evidence[:5]))
    count = ctx.facts.get("tumor_count")
    n = count.value if count is not None else None
    if not isinstance(n, int) or n != len(sizes):
        return listed, Fact(None, (Evidence(case.key, "Procedure", None, _total_note(n, sizes)),))
    total = round(sum(sizes), 2)
    note = " + ".join(f"{s:g}" for s in sizes) + f" = {total:g} cm"
    return listed, Fact(total, (*evidence[:5], Evidence(case.key, "Procedure", None, note)))


def _total_note(n: object, sizes: list[float]) -> str:
    return f"{len(sizes)} size(s) documented for a tumor count of {n or 'unknown'}: no total"


def _quantities(obs: Resource) -> Iterator[float | None]:
    for q in [obs.get("valueQuantity")] + [
        comp.get("valueQuantity") for comp in obs.get("component") or [] if isinstance(comp, dict)
    ]:
        if isinstance(q, dict) and isinstance(q.get("value"), int | float):
            unit = str(q.get("code") or q.get("unit") or "cm").lower()
            factor = {"cm": 1.0, "mm": 0.1}.get(unit)
            yield float(q["value"]) * factor if factor else None


_CLASS = re.compile(r"pugh\W+(?:class\W+|score\W+(?:of\W+)?|grade\W+)?([abc])?\s?(\d{1,2})?", re.I)


def _pugh_class(letter: str | None, score: float | None) -> str | None:
    if letter:
        return letter.upper()
    if score is None:
        return None
    return (
        "A" if 5 <= score <= 6 else "B" if 7 <= score <= 9 else "C" if 10 <= score <= 15 else None
    )


def child_pugh(pack: Pack, ctx: Context, cfg: PayerFacts, sources: tuple[str, ...]) -> Fact:
    """Child-Pugh class A, B or C: a score or class Observation, else the text."""
    case = ctx.case
    vs = pack.valuesets[cfg.child_pugh.observations]
    for obs in case.observations:
        if not any(vs.contains(c.get("system"), c.get("code")) for c in codings(obs.get("code"))):
            continue
        q = obs.get("valueQuantity") or {}
        score = q.get("value") if isinstance(q.get("value"), int | float) else None
        text = obs.get("valueString") or " ".join(
            str(c.get("code") or c.get("display") or "")
            for c in codings(obs.get("valueCodeableConcept"))
        )
        letter = text.strip()[:1] if text.strip()[:1].upper() in "ABC" and text.strip() else None
        found = _pugh_class(letter, score)
        if found:
            return Fact(
                found, (Evidence(case.ref(obs), "Observation.value", None, f"class {found}"),)
            )
    for unit, m in ctx.text.affirmed(pack.engine, cfg.child_pugh.patterns, sources):
        hit = _CLASS.search(m.words)
        if hit:
            found = _pugh_class(hit.group(1), float(hit.group(2)) if hit.group(2) else None)
            if found:
                return Fact(found, (mention_evidence(unit, m),))
    return Fact(None)


_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*(?:%|percent|per\s+cent)", re.I)


def liver_share(pack: Pack, ctx: Context, patterns: str, sources: tuple[str, ...]) -> Fact:
    """The largest share of the liver (per cent) the text says the tumors involve."""
    best: float | None = None
    evidence: tuple[Evidence, ...] = ()
    for unit, m in ctx.text.affirmed(pack.engine, patterns, sources):
        hit = _PERCENT.search(m.words)
        if hit and (best is None or float(hit.group(1)) > best):
            best = float(hit.group(1))
            evidence = (mention_evidence(unit, m),)
    return Fact(best, evidence)
