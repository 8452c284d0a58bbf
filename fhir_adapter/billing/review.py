"""What a coder's review adds to a Claim that may go out: the service facility's NPI,
diagnoses the note states and no Condition codes, "use additional code" notes nothing
satisfies, services of the session left off the Claim, and structured values the note
contradicts. None of these blocks a Claim by itself (their severities are the pack's).

Derived after the billing facts (rules.facts), so each may read them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable

from fhir_adapter.billing import decide
from fhir_adapter.billing.facts import place_of_service
from fhir_adapter.billing.tabular_notes import additional_code_notes
from fhir_adapter.case import Case
from fhir_adapter.fhir.codings import codings
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.fhir.systems import NPI
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.context import Context, Fact
from fhir_adapter.pack.derivers import Derivers
from fhir_adapter.pack.load import Pack
from fhir_adapter.text.index import TEXT_SOURCES, affirmed_evidence, text_index

DERIVERS = Derivers()
provides = DERIVERS.provides


def _fact(evidence: list[Evidence]) -> Fact:
    return Fact([e.reference for e in evidence], tuple(evidence)) if evidence else Fact(None)


def _starts(code: str, prefixes: Iterable[str]) -> bool:
    return any(code.startswith(p) for p in prefixes)


# -- service facility NPI (CMS-1500 box 32a) -------------------------------------------


@decide.once_per_case
def facility_npi(pack: Pack, case: Case) -> tuple[str | None, Evidence | None]:
    """The service facility's NPI: the Location's own, else its managing Organization's,
    else the Encounter's serviceProvider's (valid check digit only). The facility_npi fact
    and the Claim's box 32a read the same answer."""
    ref = decide.facility_location(case)
    location = case.resource(ref)
    holders: list[tuple[Resource | None, str]] = [(location, "Location.identifier")]
    if location is not None:
        org = _resolve(case, location.get("managingOrganization"))
        holders.append((org, "Location.managingOrganization"))
    if case.encounter is not None:
        holders.append(
            (_resolve(case, case.encounter.get("serviceProvider")), "Encounter.serviceProvider")
        )
    for holder, path in holders:
        if holder is None:
            continue
        for ident in holder.get("identifier") or []:
            if not isinstance(ident, dict) or ident.get("system") != NPI:
                continue
            npi = str(ident.get("value") or "").strip()
            if decide.is_valid_npi(npi):
                return npi, Evidence(case.ref(holder), path, None, f"facility NPI {npi}")
    return None, None


def _resolve(case: Case, reference: object) -> Resource | None:
    ref = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(ref, str):
        return None
    return case.resource(case.aliases.get(ref, ref))


@provides("facility_npi")
def _facility_npi(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    npi, evidence = facility_npi(pack, ctx.case)
    return (Fact(npi, (evidence,)) if npi and evidence else Fact(None),)


# -- diagnoses the note states and no Condition codes ------------------------------------


def _coded(pack: Pack, case: Case) -> list[str]:
    dx = decide.claim_diagnoses(pack, case)
    return [d.code for d in dx.billable] + [d.code for d, _ in (*dx.invalid, *dx.left_off)]


@provides("uncoded_diagnoses")
def _uncoded(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """Each crosswalk entry the text affirms (this patient, current) and no coded diagnosis
    covers, with the sentence and the code it maps to."""
    cfg = pack.model.facts.stated_diagnoses
    if cfg is None:
        return (Fact(None),)
    case = ctx.case
    coded = _coded(pack, case)
    sources = tuple(cfg.in_ or ("procedure", "reports", "documents"))
    index = text_index(case, pack.engine)
    out = []
    for entry in cfg.entries:
        if any(_starts(c, entry.covered_by) for c in coded):
            continue
        found = affirmed_evidence(index, pack.engine, entry.patterns, sources, limit=1)
        for e in found[:1]:
            note = f"stated, not coded: code {', '.join(entry.codes)} ({cfg.source})"
            out.append(dataclasses.replace(e, note=note))
    return (_fact(out),)


# -- "use additional code" / "code also" notes ------------------------------------------


@provides("additional_code_notes")
def _additional(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """A coded diagnosis whose tabular note asks for another code that nothing coded gives."""
    cfg = pack.model.facts.additional_codes
    if cfg is None:
        return (Fact(None),)
    case = ctx.case
    dx = decide.claim_diagnoses(pack, case).billable
    codes = _coded(pack, case)  # an invalid code that would satisfy it is a finding of its own
    index = text_index(case, pack.engine)
    out = []
    for note in cfg.notes:
        owner = next((d for d in dx if _starts(d.code, note.when)), None)
        if owner is None or any(_starts(c, note.satisfied_by) for c in codes):
            continue
        stated: list[Evidence] = []
        if note.documented is not None:
            stated = affirmed_evidence(index, pack.engine, note.documented, TEXT_SOURCES, limit=1)
            if not stated:
                continue
        tabular = additional_code_notes(owner.code)
        said = f" (tabular: {'; '.join(tabular)})" if tabular else ""
        text = f"{owner.code}: {note.suggest}{said}"
        out.append(Evidence(owner.reference, owner.path, None, text))
        out += [dataclasses.replace(e, note="documented here") for e in stated]
    return (_fact(out),)


# -- services of the session left off the Claim -----------------------------------------


@provides("services_not_billed")
def _not_billed(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    return (_fact(services_not_billed(pack, ctx.case)),)


def services_not_billed(pack: Pack, case: Case) -> list[Evidence]:
    """Services the operator documented in the session that are separately reportable and
    not on the Claim: another surgical code (with XS where a PTP edit is bypassed by a
    documented distinct service; none where an edit bundles it), and guidance the text
    documents with no guidance Procedure to bill."""
    cfg = pack.model.facts.services_not_billed
    if cfg is None or case.same_code_earlier:
        return []  # a second 47382 that day: the first one's Claim carries the day's services
    cpt = pack.procedure_system
    reportable = pack.valuesets[cfg.reportable]
    on = decide.as_date(case.date)
    table = decide.payment_tables()
    distinct = pack.model.claim.distinct_service_modifier
    out: list[Evidence] = []
    seen: set[str] = set()
    for proc in case.session_procedures:
        if proc is case.procedure or not decide.same_performer(pack, case, proc):
            continue
        if proc.get("status") not in ("completed", None):
            continue
        for coding in codings(proc.get("code")):
            code = str(coding.get("code") or "").strip()
            if (
                pack.canonical_system(coding.get("system")) != cpt
                or code in seen
                or code == pack.procedure_code
            ):
                continue
            if not reportable.contains(cpt, code):
                continue
            edit = table.ptp(pack.procedure_code, code, on) if on else None
            line = code
            if edit is not None and edit.modifier_indicator in ("0", "1"):
                if edit.modifier_indicator == "0" or not _distinct(pack, case):
                    continue  # bundled with the pack's code: not separately reportable
                line = f"{code}-{distinct}" if distinct else code
            seen.add(code)
            note = f"documented in the session by the same operator, not on the Claim: {line}"
            out.append(Evidence(case.ref(proc), "Procedure.code", None, note))
    out += _narrative_guidance(pack, case)
    return out


def _distinct(pack: Pack, case: Case) -> bool:
    """A distinct service (separate lesion, site...) is documented in the session."""
    cfg = pack.model.facts.distinct_service
    if cfg is None:
        return False
    sources = (*(cfg.in_ or ("procedure",)), "session_procedures")
    return bool(
        affirmed_evidence(text_index(case, pack.engine), pack.engine, cfg.patterns, sources)
    )


def _narrative_guidance(pack: Pack, case: Case) -> list[Evidence]:
    cfg = pack.model.facts.services_not_billed
    if cfg is None or cfg.narrative_guidance is None or not cfg.guidance_words:
        return []
    g = pack.model.facts.guidance
    ablation = pack.valuesets[g.ablation if g else pack.model.claim.guidance_items]
    needle = pack.valuesets[g.needle_placement] if g else None
    for proc in case.session_procedures:
        for c in codings(proc.get("code")):
            system, code = c.get("system"), c.get("code")
            if ablation.contains(system, code) or (needle and needle.contains(system, code)):
                return []  # a guidance Procedure is recorded: the guidance rules judge it
    index = text_index(case, pack.engine)
    words = sorted(cfg.guidance_words, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.I)
    for e in affirmed_evidence(
        index, pack.engine, cfg.narrative_guidance, ("procedure", "reports", "documents")
    ):
        match = pattern.search(e.snippet or "")
        if match is None:
            continue
        code = cfg.guidance_words[match.group(1).lower()]
        facility = decide.is_facility(pack, _pos(pack, case))
        pc = pack.model.claim.professional_component_modifier
        line = f"{code}-{pc}" if facility and pc else code
        note = f"guidance documented in the note with no guidance Procedure: {line}"
        return [dataclasses.replace(e, note=note)]
    return []


def _pos(pack: Pack, case: Case) -> str | None:
    value = place_of_service(pack, case).value
    return value if isinstance(value, str) else None


# -- structured values the note contradicts ---------------------------------------------

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8}
_NUMERAL = r"(?:viii|vii|vi|iv|v|iii|ii|i|[1-8])\b"
_SEGMENT = re.compile(rf"\bsegments?\s+((?:{_NUMERAL}(?:\s*(?:,|and|&|/)\s*)?)+)", re.I)
_ONE = re.compile(_NUMERAL, re.I)


@provides("documentation_conflicts")
def _conflicts(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    return (_fact(documentation_conflicts(pack, ctx)),)


def documentation_conflicts(pack: Pack, ctx: Context) -> list[Evidence]:
    """Structured values against what the note affirms: the Procedure's Couinaud segments
    and lobes, the tumor count and the tumor size Observation. Each conflict gives both
    pieces of evidence and a query to the performing physician that leads to neither."""
    cfg = pack.model.facts.documentation_conflicts
    if cfg is None:
        return []
    sources = tuple(cfg.in_ or ("procedure", "reports", "documents"))
    out = _segment_conflict(pack, ctx, sources)
    out += _lobe_conflict(pack, ctx, sources)
    out += _count_conflict(pack, ctx, sources)
    out += _size_conflict(pack, ctx, sources)
    return out


def _coded_sites(pack: Pack, case: Case, crosswalk: str) -> set[str]:
    """The Procedure's bodySite codes mapped through a crosswalk of the pack."""
    table = pack.model.crosswalks.get(crosswalk, {})
    return {
        table[str(c.get("code"))]
        for c in codings(case.procedure.get("bodySite"))
        if str(c.get("code")) in table
    }


def _site_conflict(
    pack: Pack,
    ctx: Context,
    sources: tuple[str, ...],
    find: Callable[[str], Iterable[str]],
    coded: set[str],
    query: str,
    what: str,
) -> list[Evidence]:
    """The Procedure's site and the note's, for the first note whose sites (each value
    `find` reads in its affirmed location sentences) are all other than the coded ones: a
    note naming the coded site and another lesion's does not disagree."""
    cfg = pack.model.facts.documentation_conflicts
    assert cfg is not None
    index = text_index(ctx.case, pack.engine)
    by_unit: dict[tuple[str, str], dict[str, Evidence]] = {}
    for e in affirmed_evidence(index, pack.engine, cfg.location_patterns, sources, limit=10):
        stated = by_unit.setdefault((e.reference, e.path), {})
        for value in find(e.snippet or ""):  # the sentence: every value in it
            stated.setdefault(value, e)
    for stated in by_unit.values():
        if stated and not set(stated) & coded:
            first = min(stated)
            return [
                Evidence(ctx.case.key, "Procedure.bodySite", None, query.format(note=first)),
                dataclasses.replace(stated[first], note=f"the note's {what}"),
            ]
    return []


def _segment_conflict(pack: Pack, ctx: Context, sources: tuple[str, ...]) -> list[Evidence]:
    cfg = pack.model.facts.documentation_conflicts
    assert cfg is not None
    # Roman numerals I-VIII sort as their numbers do
    coded = {_roman(int(n)) for n in _coded_sites(pack, ctx.case, cfg.segments)}
    if not coded:
        return []

    def segments(sentence: str) -> Iterable[str]:
        for m in _SEGMENT.finditer(sentence):
            for one in _ONE.finditer(m.group(1)):
                raw = one.group(0).lower()
                yield _roman(int(raw)) if raw.isdigit() else raw.upper()

    return _site_conflict(
        pack,
        ctx,
        sources,
        segments,
        coded,
        f"The Procedure records segment {', '.join(sorted(coded))}; the note states segment "
        "{note}. Query to the performing physician: please document the segment(s) treated "
        "in this session.",
        "segment",
    )


def _lobe_conflict(pack: Pack, ctx: Context, sources: tuple[str, ...]) -> list[Evidence]:
    cfg = pack.model.facts.documentation_conflicts
    assert cfg is not None
    if cfg.lobe_of is None or not cfg.lobe_words:
        return []
    coded = _coded_sites(pack, ctx.case, cfg.lobe_of)
    if not coded:
        return []
    words = _lobe_words(pack)

    def lobes(sentence: str) -> Iterable[str]:
        return {lobe for lobe, rx in words if rx.search(sentence)}

    return _site_conflict(
        pack,
        ctx,
        sources,
        lobes,
        coded,
        f"The Procedure's body site lies in the {' and '.join(sorted(coded))} lobe; the note "
        "states the {note} lobe. Query to the performing physician: please document the "
        "location of the tumor(s) treated in this session.",
        "lobe",
    )


def _count_conflict(pack: Pack, ctx: Context, sources: tuple[str, ...]) -> list[Evidence]:
    """The note's one stated count against the structured record: fewer than the distinct
    coded segments, or other than the lesion Observations when there are two or more (a
    single Observation may measure only the largest)."""
    cfg = pack.model.facts.documentation_conflicts
    assert cfg is not None
    if cfg.count_patterns is None:
        return []
    case = ctx.case
    index = text_index(case, pack.engine)
    counted: list[tuple[int, Evidence]] = []
    for e in affirmed_evidence(index, pack.engine, cfg.count_patterns, sources, limit=10):
        start, end = e.span or (0, len(e.snippet or ""))
        n = pack.engine.number((e.snippet or "")[start:end])
        if n is not None and 0 < n <= 50 and n == int(n):
            counted.append((int(n), e))
    if len({n for n, _ in counted}) != 1:
        return []  # none stated, or counts that differ: the count rule's own concern
    stated, evidence = counted[0]
    count_cfg = pack.model.facts.tumor_count
    obs_vs = pack.valuesets[count_cfg.observations]
    lesions = [
        o
        for o in case.observations
        if any(obs_vs.contains(c.get("system"), c.get("code")) for c in codings(o.get("code")))
    ]
    segments = _coded_sites(pack, case, cfg.segments)
    if len(lesions) >= 2 and len(lesions) != stated:
        structured = Evidence(
            case.ref(lesions[0]),
            "Observation.code",
            None,
            f"{len(lesions)} tumor-size Observations (one per lesion); the note states {stated}.",
        )
    elif len(segments) > stated:
        structured = Evidence(
            case.key,
            "Procedure.bodySite",
            None,
            f"The Procedure records {len(segments)} segments; the note states {stated} "
            f"tumor{'s' if stated > 1 else ''}.",
        )
    else:
        return []
    query = " Query to the performing physician: please document the number of tumors treated in this session."
    return [
        dataclasses.replace(structured, note=(structured.note or "") + query),
        dataclasses.replace(evidence, note="the note's count"),
    ]


def _lobe_words(pack: Pack) -> list[tuple[str, re.Pattern[str]]]:
    """(lobe, regex of one of its phrases) for documentation_conflicts.lobe_words, compiled
    once per pack rather than once per case."""
    found = pack.compiled.get("review.lobe_words")
    if not isinstance(found, list):
        cfg = pack.model.facts.documentation_conflicts
        found = pack.compiled["review.lobe_words"] = [
            (lobe, re.compile(r"\b" + r"\s+".join(map(re.escape, w.split())) + r"\b", re.I))
            for lobe, phrases in (cfg.lobe_words.items() if cfg is not None else ())
            for w in phrases
        ]
    return found


def _size_not_with(pack: Pack) -> re.Pattern[str]:
    """documentation_conflicts.size_not_with as one regex, compiled once per pack."""
    found = pack.compiled.get("review.size_not_with")
    if not isinstance(found, re.Pattern):
        cfg = pack.model.facts.documentation_conflicts
        words = cfg.size_not_with if cfg is not None else []
        found = pack.compiled["review.size_not_with"] = re.compile(
            r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.I
        )
    return found


def _roman(n: int) -> str:
    return next(k.upper() for k, v in _ROMAN.items() if v == n)


def _size_conflict(pack: Pack, ctx: Context, sources: tuple[str, ...]) -> list[Evidence]:
    cfg = pack.model.facts.documentation_conflicts
    count = ctx.facts.get("tumor_count")
    if cfg is None or cfg.size_patterns is None or count is None or count.value != 1:
        return []  # with several tumors an Observation may measure another one than the note
    case = ctx.case
    obs_vs = pack.valuesets[pack.model.facts.tumor_max_size_cm.observations]
    measured: tuple[float, Resource] | None = None
    for obs in case.observations:
        if not any(
            obs_vs.contains(c.get("system"), c.get("code")) for c in codings(obs.get("code"))
        ):
            continue
        for q in [obs.get("valueQuantity")] + [
            comp.get("valueQuantity")
            for comp in obs.get("component") or []
            if isinstance(comp, dict)
        ]:
            if isinstance(q, dict) and isinstance(q.get("value"), int | float):
                unit = str(q.get("code") or q.get("unit") or "cm").lower()
                factor = {"cm": 1.0, "mm": 0.1}.get(unit)
                if factor and (measured is None or q["value"] * factor > measured[0]):
                    measured = (float(q["value"]) * factor, obs)
    if measured is None:
        return []
    index = text_index(case, pack.engine)
    best: tuple[float, Evidence] | None = None
    other = _size_not_with(pack)
    for e in affirmed_evidence(index, pack.engine, cfg.size_patterns, sources, limit=5):
        if cfg.size_not_with and other.search(e.snippet or ""):
            continue
        start, end = e.span or (0, len(e.snippet or ""))
        cm = max(pack.engine.lengths_cm((e.snippet or "")[start:end]), default=None)
        if cm is not None and (best is None or cm > best[0]):
            best = (cm, e)
    if best is None or abs(best[0] - measured[0]) <= cfg.size_tolerance_cm:
        return []
    obs = measured[1]
    note = (
        f"The tumor size Observation records {measured[0]:g} cm; the note states "
        f"{best[0]:g} cm. Query to the performing physician: please document the greatest "
        "dimension of the tumor(s) treated."
    )
    return [
        Evidence(case.ref(obs), "Observation.valueQuantity", None, note),
        dataclasses.replace(best[1], note="the note's size"),
    ]
