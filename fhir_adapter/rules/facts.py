"""Clinical facts rules test: the tumors' count and greatest size. The Claim's facts
(billing.facts) derive after these, so a modifier's matcher may read them.

The code knows how to find each fact in FHIR; which codes and patterns count
comes from the pack.
"""

from __future__ import annotations

import re
from typing import Any

from fhir_adapter.billing.facts import DERIVERS as BILLING
from fhir_adapter.billing.review import DERIVERS as REVIEW
from fhir_adapter.case import Case
from fhir_adapter.fhir.codings import codings
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.context import Context, Fact, evidence_fact
from fhir_adapter.pack.derivers import Derivers
from fhir_adapter.pack.facts import FACTS
from fhir_adapter.pack.load import Pack
from fhir_adapter.pack.schema import CountFact, references
from fhir_adapter.payers.facts import PAYER
from fhir_adapter.text.engine import ContextEngine, Mention
from fhir_adapter.text.index import (
    TextIndex,
    TextUnit,
    amends,
    mention_evidence,
    unread_attachments,
)

CLINICAL = Derivers()

# clinical first: a billing deriver (the modifiers' matchers) may read any fact before it;
# the payer facts last (every tumor's size reads the count)
_ALL = (CLINICAL, BILLING, REVIEW, PAYER)


def derive_facts(pack: Pack, ctx: Context, *, payer: bool = True) -> dict[str, Fact]:
    """Every fact for the case, each deriver run once, in registration order
    (a deriver may read the facts registered before it in `ctx.facts`). The payer facts
    only with `payer`: when a payer overlay judges the case or a pack rule names one
    (reading their text costs about a third of a case's time)."""
    for derivers in _ALL:
        if payer or derivers is not PAYER:
            derivers.derive(pack, ctx)
    return ctx.facts


def names_payer_facts(pack: Pack) -> bool:
    """Whether a rule or modifier of the pack names a payer fact (then it is always derived)."""
    found = pack.compiled.get("names_payer_facts")
    if not isinstance(found, bool):
        payer = set(PAYER.names())
        found = pack.compiled["names_payer_facts"] = any(
            kind == "facts" and name in payer
            for part in (*pack.model.rules, *pack.model.modifiers)
            for _, kind, name in references(part, "pack")
        )
    return found


@CLINICAL.provides("tumor_count", "tumor_max_size_cm")
def _tumors(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    case, text = ctx.case, ctx.text
    return (tumor_count(pack, case, text), tumor_max_size_cm(pack, case, text))


@CLINICAL.provides("text_truncated")
def _text_truncated(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """The narratives longer than the pack reads (text.max_chars): what lies beyond the cap
    was not read, so what it documents or rules out is not known."""
    cap = pack.engine.cfg.max_chars
    evidence = [
        Evidence(
            u.reference,
            u.path,
            None,
            f"{u.source} text of {u.length:,} characters: the first {cap:,} were read",
        )
        for u in ctx.text.truncated()
    ]
    return (evidence_fact(evidence),)


@CLINICAL.provides("attachments_unread")
def _attachments_unread(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """The case's attached documents and reports whose text is not read (a PDF, an image,
    a url never fetched, nothing to read): what they document was not checked."""
    case = ctx.case
    evidence = [
        Evidence(case.ref(resource), path, None, f"not read: {why}")
        for resource in (*case.documents, *case.reports)
        for path, why in unread_attachments(resource)
    ]
    return (evidence_fact(evidence),)


def tumor_count(pack: Pack, case: Case, text: TextIndex) -> Fact:
    """The largest count documented: lesion Observations, Couinaud sites, or text."""
    cfg = pack.model.facts.tumor_count
    obs_vs = pack.valuesets[cfg.observations]
    site_vs = pack.valuesets[cfg.body_sites]
    best = 0
    evidence: list[Evidence] = []
    lesions = [
        o
        for o in case.observations
        if any(obs_vs.contains(c.get("system"), c.get("code")) for c in codings(o.get("code")))
    ]
    if lesions:
        best = len(lesions)
        evidence.extend(
            Evidence(case.ref(o), "Observation.code", None, "one tumor-size observation per lesion")
            for o in lesions
        )
    sites = {
        c.get("code")
        for c in codings(case.procedure.get("bodySite"))
        if site_vs.contains(c.get("system"), c.get("code"))
    }
    if len(sites) > best:
        best = len(sites)
        evidence.append(Evidence(case.key, "Procedure.bodySite", None, f"{len(sites)} segment(s)"))
    # Text, as a coder counts: the counts stated must agree (MRI three, CT two, and nothing
    # says which were treated: not documented), unless a count of the lesions treated
    # today settles it. Treated counts that differ (the fellow's three, the attending's
    # two) settle nothing, unless the last one stands where the note corrects itself
    # (an addendum, "should read").
    # (the treated count is looked for only when the counts stated do not settle it alone)
    counted = _counts(pack, text, cfg.patterns)
    seen = "none stated as treated"
    if cfg.treated and len({n for _, _, n in counted}) != 1:
        treated = _counts(pack, text, cfg.treated)
        if cfg.alone:
            treated += [(unit, m, 1) for unit, m in text.affirmed(pack.engine, cfg.alone)]
        if len({n for _, _, n in treated}) > 1:
            unit, m, _ = treated[-1]
            treated = treated[-1:] if amends(pack.engine, unit, m) else treated
            seen = "counts of the lesions treated, none a correction"
        counted = treated or counted
    values = sorted({n for _, _, n in counted})
    if not values and not best and cfg.single and cfg.plural:
        single = _single_sites(pack, text, cfg)
        if single:
            best = len(single)
            evidence.extend(mention_evidence(unit, m) for unit, m in list(single.values())[:3])
    if len(values) == 1:
        evidence.extend(mention_evidence(unit, m) for unit, m, _ in counted[:3])
        best = max(best, values[0])
    elif values:
        first = mention_evidence(counted[0][0], counted[0][1])
        note = "counts differ (" + " vs ".join(str(v) for v in values) + f"), {seen}"
        # not evidence of a count: the finding shows it as what ruled the count out
        evidence.append(
            Evidence(first.reference, first.path, first.snippet, note, "uncertain", note)
        )
    return Fact(best if best else None, tuple(evidence[:_EVIDENCE_MAX]))


_EVIDENCE_MAX = 5  # a long note may state a count on every line: five show it


def _counts(pack: Pack, text: TextIndex, patterns: str) -> list[tuple[TextUnit, Mention, int]]:
    """The affirmed count mentions of a target, with their whole numbers (1-50); a count
    inside a longer one of the same sentence is part of it ("1 of 2 known lesions ablated"
    is one count, not also "2 known lesions ablated")."""
    found = list(text.affirmed(pack.engine, patterns))
    # one sweep over the mentions in order of where they start (widest first): a mention
    # that ends no later than one before it in its sentence lies inside that one
    inside: set[int] = set()
    group: tuple[int, int] | None = None
    reach = -1
    for unit, m in sorted(
        found, key=lambda x: (id(x[0]), x[1].sentence_index, x[1].start, -x[1].end)
    ):
        if (id(unit), m.sentence_index) != group:
            group, reach = (id(unit), m.sentence_index), -1
        if m.end <= reach:
            inside.add(id(m))
        reach = max(reach, m.end)
    out = []
    for unit, m in found:
        if id(m) in inside:
            continue
        n = pack.engine.number(m.words)
        if n is not None and 0 < n <= 50 and n == int(n):
            out.append((unit, m, int(n)))
    return out


_Named = tuple[TextUnit, Mention]
_SEGMENT = re.compile(
    r"\b(?:(?:segments?|seg\.?|s)\s*([1-8][ab]?|iv[ab]?|vi{0,3}|i{1,3})\b|(caudate))"
)


def _single_sites(pack: Pack, text: TextIndex, cfg: CountFact) -> dict[str, _Named]:
    """segment -> the first affirmed mention of a tumor named in the singular there: the
    ones a sentence says were treated ("RFA of the segment 6 HCC"; "the segment 2 lesion
    was not ablated" is not), else, when no tumors in the plural are affirmed, every one
    named. None when tumors in the plural were treated ("RFA of hepatic lesion(s)") or
    the note says that nothing was treated."""
    engine = pack.engine
    named: list[tuple[str, _Named]] = []
    for unit, m in text.affirmed(engine, cfg.single or ""):
        site = _SEGMENT.search(m.words.lower())
        if site is not None:
            seg = "1" if site.group(2) else site.group(1)  # the caudate lobe is segment 1
            named.append((_ROMAN.get(seg, seg), (unit, m)))
    # (the rest is looked for only when a tumor was named once: most notes name none)
    if not named or (cfg.none_treated and _any(text, engine, cfg.none_treated)):
        return {}
    acts = (
        {(id(u), m.sentence_index) for u, m in text.affirmed(engine, cfg.treatment)}
        if cfg.treatment
        else set()
    )
    plural = [(id(u), m.sentence_index) for u, m in text.affirmed(engine, cfg.plural or "")]
    if any(p in acts for p in plural):
        return {}
    treated = [(seg, x) for seg, x in named if (id(x[0]), x[1].sentence_index) in acts]
    if not treated and plural:
        return {}
    out: dict[str, _Named] = {}
    for seg, x in treated or named:
        out.setdefault(seg, x)
    return out


def _any(text: TextIndex, engine: ContextEngine, target: str) -> bool:
    return next(text.affirmed(engine, target), None) is not None


_ROMAN = {
    "i": "1",
    "ii": "2",
    "iii": "3",
    "iv": "4",
    "iva": "4a",
    "ivb": "4b",
    "v": "5",
    "vi": "6",
    "vii": "7",
    "viii": "8",
}


def tumor_max_size_cm(pack: Pack, case: Case, text: TextIndex) -> Fact:
    """The greatest tumor dimension in cm, from Observations or lesion sentences."""
    cfg = pack.model.facts.tumor_max_size_cm
    obs_vs = pack.valuesets[cfg.observations]
    best: float | None = None
    evidence: list[Evidence] = []
    for obs in case.observations:
        if not any(
            obs_vs.contains(c.get("system"), c.get("code")) for c in codings(obs.get("code"))
        ):
            continue
        quantities = [obs.get("valueQuantity")] + [
            comp.get("valueQuantity")
            for comp in obs.get("component") or []
            if isinstance(comp, dict)
        ]
        for q in quantities:
            cm = _centimetres(q)
            if cm is not None and (best is None or cm > best):
                best = cm
                evidence = [
                    Evidence(case.ref(obs), "Observation.valueQuantity", None, f"{cm:g} cm")
                ]
    # Text: affirmed tumor-size mentions; a needle, margin or ablation zone is "other", not a tumor.
    for unit, m in text.affirmed(pack.engine, cfg.patterns):
        cm = max(pack.engine.lengths_cm(m.words), default=None)
        if cm is not None and (best is None or cm > best):
            best = cm
            evidence = [mention_evidence(unit, m)]
    return Fact(best, tuple(evidence))


def _centimetres(q: Any) -> float | None:
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
        return None
    unit = str(q.get("code") or q.get("unit") or "cm").lower()
    factor = {"cm": 1.0, "mm": 0.1, "m": 100.0}.get(unit)
    return float(q["value"]) * factor if factor else None


_derived = sorted(name for derivers in _ALL for name in derivers.names())
if _derived != sorted(FACTS):
    raise RuntimeError(
        f"facts derived {_derived} are not the facts declared in fhir_adapter.pack.facts"
    )
