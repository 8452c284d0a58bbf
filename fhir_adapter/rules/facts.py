"""Facts derived once per case that rules test: setting, coverage, tumor count and size,
and what the Claim would carry (diagnoses, guidance, NCCI edits, NPI, global periods).

The code knows how to find each fact in FHIR; which codes and patterns count
comes from the pack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_adapter.case import Case, Performer
from fhir_adapter.fhir.codings import codings
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.findings import Evidence
from fhir_adapter.rules import billing
from fhir_adapter.rules.context import Context, Fact
from fhir_adapter.rules.modifiers import decide_modifiers
from fhir_adapter.rules.pack import Pack
from fhir_adapter.text.index import TextIndex, mention_evidence

FactFn = Callable[[Pack, Context], tuple[Fact, ...]]

# Every fact a rule may name, with the function that derives it: the one registry
# the pack schema checks `fact:` names against and the engine evaluates.
FACTS: dict[str, FactFn] = {}


def provides(*names: str) -> Callable[[FactFn], FactFn]:
    """Register a deriver for the facts it returns, in this order."""

    def register(fn: FactFn) -> FactFn:
        for name in names:
            if name in FACTS:
                raise RuntimeError(f"fact {name!r} is derived twice")
            FACTS[name] = fn
        _ORDER[fn] = names
        return fn

    return register


_ORDER: dict[FactFn, tuple[str, ...]] = {}

# The collections a fact is read from, for the "searched" evidence of a rule that
# finds nothing (and the references there that dangled): see evaluate._absence.
LOOKS_IN: dict[str, tuple[str, ...]] = {
    name: ("reason_conditions", "conditions", "procedure")
    for name in ("diagnoses", "principal_diagnosis", "invalid_diagnoses", "excludes1_pairs")
}


def derive_facts(pack: Pack, ctx: Context) -> dict[str, Fact]:
    """Every registered fact for the case, each deriver run once, in registration order
    (a deriver may read the facts registered before it in `ctx.facts`)."""
    for fn, names in _ORDER.items():
        ctx.facts.update(zip(names, fn(pack, ctx), strict=True))
    return ctx.facts


@provides("place_of_service")
def _place(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    return (place_of_service(pack, ctx.case),)


@provides("coverage", "provider", "earlier_same_session", "rendering_unclear")
def _references(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    case = ctx.case
    return (
        _ref_fact(case, case.coverage[:1], "Coverage", "active on the date of service"),
        _provider(pack, case),
        _ref_fact(
            case,
            case.same_code_earlier,
            "Procedure.code",
            "same patient and session, performed first",
        ),
        rendering_unclear(pack, case),
    )


@provides("facility")
def _facility(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """The Location the service was performed at (Claim.facility, CMS-1500 box 32)."""
    case = ctx.case
    ref = billing.facility_location(case)
    path = "Procedure.location" if case.procedure.get("location") else "Encounter.location"
    return (Fact(ref, (Evidence(ref, path),)) if ref else Fact(None),)


@provides("tumor_count", "tumor_max_size_cm")
def _tumors(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    case, text = ctx.case, ctx.text
    return (tumor_count(pack, case, text), tumor_max_size_cm(pack, case, text))


@provides("text_truncated")
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
    return (_evidence_fact(evidence),)


@provides("units_exceeded", "guidance_conflict", "ptp_conflicts", "provider_npi", "global_period")
def _billing(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    case = ctx.case
    return (
        units_exceeded(pack, case),
        _evidence_fact(billing.guidance_plan(pack, case).conflicts),
        ptp_conflicts(pack, case),
        provider_npi(pack, case),
        _evidence_fact(billing.global_period_hits(pack, case)),
    )


@provides("diagnoses", "principal_diagnosis", "invalid_diagnoses", "excludes1_pairs")
def _diagnoses(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    return diagnosis_facts(pack, ctx.case)


def _evidence_fact(evidence: list[Evidence]) -> Fact:
    return Fact([e.reference for e in evidence], tuple(evidence)) if evidence else Fact(None)


def diagnosis_facts(pack: Pack, case: Case) -> tuple[Fact, Fact, Fact, Fact]:
    """The Claim's diagnoses, its principal, the invalid codes and the Excludes1 pairs."""
    dx = billing.claim_diagnoses(pack, case)
    icd = pack.system(pack.model.claim.diagnosis_system)
    billable = dx.billable[: pack.model.claim.max_diagnoses]
    listed = tuple(Evidence(d.reference, d.path, None, d.code) for d in billable)
    principal = dx.principal
    pairs = billing.excludes1_pairs(billable)
    # Without a principal, the uncertain Conditions left out say why (ruled-out evidence:
    # it never satisfies a rule, it is shown with the finding).
    left_out = tuple(
        Evidence(
            ref,
            "Condition.verificationStatus",
            None,
            f"{status}: an uncertain diagnosis is not coded (ICD-10-CM guideline IV.H)",
            status="uncertain",
            cue=status,
        )
        for ref, status in dx.uncertain
    ) + tuple(
        Evidence(
            ref,
            "Condition.clinicalStatus",
            None,
            f"{status}: a condition no longer present is not a diagnosis of this service",
            status="historical",
            cue=status,
        )
        for ref, status in dx.inactive
    )
    return (
        Fact([d.code for d in billable], listed, icd) if billable else Fact(None),
        (
            Fact(
                principal.code,
                (
                    Evidence(
                        principal.reference, principal.path, None, f"principal: {principal.code}"
                    ),
                ),
                icd,
            )
            if principal
            else Fact(None, left_out)
        ),
        _evidence_fact([Evidence(d.reference, d.path, None, why) for d, why in dx.invalid]),
        _evidence_fact(
            [
                Evidence(b.reference, b.path, None, f"{a.code} with {b.code}: {note}")
                for a, b, note in pairs
            ]
        ),
    )


def units_exceeded(pack: Pack, case: Case) -> Fact:
    """Earlier Procedures with the pack's code for the patient on the date, beyond the MUE."""
    allowed, why = billing.max_units(pack, case)
    units = pack.model.facts.units
    counted = set(units.counted_status) if units else {"completed", "stopped"}
    earlier = [p for p in case.same_code_earlier if p.get("status") in counted]
    if len(earlier) < allowed:
        return Fact(None)
    evidence = tuple(
        Evidence(
            case.ref(p), "Procedure.code", None, f"same patient and date, performed first; {why}"
        )
        for p in earlier
    )
    return Fact([case.ref(p) for p in earlier], evidence)


def ptp_conflicts(pack: Pack, case: Case) -> Fact:
    """NCCI PTP edits of the session that no documented distinct service allows."""
    return _evidence_fact([h.evidence for h in billing.ptp_hits(pack, case) if h.conflict])


def provider_npi(pack: Pack, case: Case) -> Fact:
    """The rendering provider's NPI when it is present and its check digit holds."""
    npi, path, resource = billing.provider_npi(pack, case)
    if resource is None or not billing.is_valid_npi(npi):
        return Fact(None)
    return Fact(
        npi,
        (Evidence(case.ref(resource), f"{resource['resourceType']}.{path}", None, f"NPI {npi}"),),
    )


def _ref_fact(case: Case, resources: list[Resource], path: str, note: str) -> Fact:
    if not resources:
        return Fact(None)
    evidence = tuple(Evidence(case.ref(r), path, None, note) for r in resources)
    return Fact([case.ref(r) for r in resources], evidence)


def _provider(pack: Pack, case: Case) -> Fact:
    ref = billing.claim_provider_ref(pack, case)
    if not ref:
        return Fact(None)
    performed = any(p.ref == ref for p in case.performers)
    path = "Procedure.performer.actor" if performed else "Encounter.serviceProvider"
    return Fact(ref, (Evidence(ref, path),))


def rendering_unclear(pack: Pack, case: Case) -> Fact:
    """Performers are recorded but none, or more than one person, is the rendering provider."""
    people = [p for p in case.performers if p.resource_type in ("Practitioner", "PractitionerRole")]
    choice = billing.rendering(pack, case)
    if not people or (choice.performer is not None and not choice.ambiguous):
        return Fact(None)
    listed = choice.candidates if choice.ambiguous else tuple(people)

    def note(p: Performer) -> str:
        functions = ", ".join(code for _, code in p.functions) or "none"
        kept = " (kept on the Claim)" if p is choice.performer else ""
        return f"performer.function: {functions}{kept}"

    evidence = tuple(Evidence(p.ref, "Procedure.performer", None, note(p)) for p in listed)
    return Fact([p.ref for p in listed], evidence)


def place_of_service(pack: Pack, case: Case) -> Fact:
    """An explicit CMS POS coding wins; otherwise infer from Encounter.class (and say so)."""
    pos = pack.system("pos")
    places: list[tuple[Resource, str, Any]] = []
    if case.encounter:
        places.append((case.encounter, "Encounter.serviceType", case.encounter.get("serviceType")))
        places.append((case.encounter, "Encounter.extension", _extension_values(case.encounter)))
    places.append((case.procedure, "Procedure.extension", _extension_values(case.procedure)))
    for loc in case.locations:
        places.append((loc, "Location.type", loc.get("type")))
        places.append((loc, "Location.extension", _extension_values(loc)))
    for resource, path, value in places:
        for coding in codings(value):
            if coding.get("system") == pos and isinstance(coding.get("code"), str):
                code = coding["code"].strip()
                return Fact(code, (Evidence(case.ref(resource), path, None, f"POS {code}"),), pos)
    inference = pack.model.place_of_service.infer_from_encounter_class
    if case.encounter:
        for coding in codings(case.encounter.get("class")):
            code = coding.get("code")
            system = coding.get("system")
            if system in (None, inference.system) and code in inference.map:
                inferred = inference.map[code]
                note = f"inferred: Encounter.class {code} -> POS {inferred}"
                ev = Evidence(case.ref(case.encounter), "Encounter.class", None, note)
                return Fact(inferred, (ev,), pos)
    return Fact(None)


def _extension_values(resource: Resource) -> list[Any]:
    out: list[Any] = []
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict):
            out.extend(v for k, v in ext.items() if k in ("valueCodeableConcept", "valueCoding"))
    return out


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
    # Text: the mentions the tumor-count target found and ConText affirmed (shared with rules).
    for unit, m in text.affirmed(pack.engine, cfg.patterns):
        n = pack.engine.number(m.words)
        if n is None or not 0 < n <= 50 or n != int(n):
            continue
        if len(evidence) < _EVIDENCE_MAX:  # a long note may count every line: five show it
            evidence.append(mention_evidence(unit, m))
        best = max(best, int(n))
    return Fact(best if best else None, tuple(evidence[:_EVIDENCE_MAX]))


_EVIDENCE_MAX = 5


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


# Last: the modifiers' matchers may read any fact above.
@provides("modifier_conflicts")
def _modifier_conflicts(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """Modifiers the documentation supports that exclude each other (pack: modifiers[].excludes)."""
    conflicts = decide_modifiers(pack, ctx).conflicts
    return (_evidence_fact(list(conflicts)),)
