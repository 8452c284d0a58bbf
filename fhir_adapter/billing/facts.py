"""The billing facts rules test: what the Claim would carry and whether it may (place of
service, coverage, providers, facility, units, guidance, NCCI edits, NPI, global periods,
diagnoses, modifiers).

The code knows how to find each fact in FHIR; which codes and patterns count comes from the
pack. The decisions themselves are made in decide.decide and decide.modifiers, which the
Claim builder reads too.
"""

from __future__ import annotations

from typing import Any

from fhir_adapter.billing import decide
from fhir_adapter.billing.modifiers import decide_modifiers
from fhir_adapter.case import Case, Performer
from fhir_adapter.fhir.codings import codings
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.fhir.references import tail_key
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.context import Context, Fact, evidence_fact
from fhir_adapter.pack.derivers import Derivers
from fhir_adapter.pack.load import Pack

# the Claim's facts, in the order they derive (rules.facts runs them after the clinical ones)
DERIVERS = Derivers()
provides = DERIVERS.provides


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


@provides("other_patient")
def _other_patient(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """The resources reached from the case that name another Patient than its Procedure
    (left out of the case: case.other_patient), each beside the Procedure's own subject."""
    case = ctx.case
    evidence: list[Evidence] = []
    for ref, path, patient in case.other_patient:
        evidence.append(
            Evidence(ref, path, None, f"names {patient}, not the Procedure's {case.patient_ref}")
        )
        evidence.append(
            Evidence(
                case.key, "Procedure.subject", None, f"names {case.patient_ref}, not {patient}"
            )
        )
    return (evidence_fact(list(dict.fromkeys(evidence))),)


@provides("patient")
def _patient(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """The Patient the service was given to (Claim.patient): Procedure.subject when it
    is a reference to a Patient (found, or written `Patient/id`). Missing, an identifier
    or a display alone, a Group, Device or Location is none."""
    case = ctx.case
    ref = case.patient_ref
    if case.patient is not None:
        is_patient = case.patient.get("resourceType") == "Patient"
    else:
        tail = tail_key(ref) if ref else None
        is_patient = bool(tail and tail.startswith("Patient/"))
    if not ref or not is_patient:
        return (Fact(None),)
    return (Fact(ref, (Evidence(ref, "Procedure.subject"),)),)


@provides("date_of_service")
def _date_of_service(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """The day the service was performed (Claim.item.servicedDate, CMS-1500 box 24A):
    Procedure.performedDateTime or performedPeriod.start, else Encounter.period.start, to
    the day (a free-text performedString or a month alone is no date of service)."""
    case = ctx.case
    if case.date is None:
        return (Fact(None),)
    procedure = case.procedure
    if isinstance(procedure.get("performedDateTime"), str):
        ref, path = case.key, "Procedure.performedDateTime"
    elif isinstance((procedure.get("performedPeriod") or {}).get("start"), str):
        ref, path = case.key, "Procedure.performedPeriod.start"
    else:
        ref, path = case.encounter_ref or case.key, "Encounter.period.start"
    return (Fact(case.date, (Evidence(ref, path, None, case.date),)),)


@provides("facility")
def _facility(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """The Location the service was performed at (Claim.facility, CMS-1500 box 32)."""
    case = ctx.case
    ref = decide.facility_location(case)
    path = "Procedure.location" if case.procedure.get("location") else "Encounter.location"
    return (Fact(ref, (Evidence(ref, path),)) if ref else Fact(None),)


@provides(
    "units_exceeded",
    "guidance_conflict",
    "ptp_conflicts",
    "provider_npi",
    "global_period",
    "global_period_unknown",
)
def _billing(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    case = ctx.case
    periods = decide.global_periods(pack, case)
    return (
        units_exceeded(pack, case),
        evidence_fact(decide.guidance_plan(pack, case).conflicts),
        ptp_conflicts(pack, case),
        provider_npi(pack, case),
        evidence_fact(periods.inside, verified=periods.verified),
        evidence_fact(periods.unknown),
    )


@provides("diagnoses", "principal_diagnosis", "invalid_diagnoses", "excludes1_pairs")
def _diagnoses(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    return diagnosis_facts(pack, ctx.case)


def diagnosis_facts(pack: Pack, case: Case) -> tuple[Fact, Fact, Fact, Fact]:
    """The Claim's diagnoses, its principal, the invalid codes and the Excludes1 pairs."""
    dx = decide.claim_diagnoses(pack, case)
    icd = pack.system(pack.model.claim.diagnosis_system)
    billable = dx.billable[: pack.model.claim.max_diagnoses]
    checked = f"checked against {dx.code_set_release}"
    listed = tuple(Evidence(d.reference, d.path, None, f"{d.code} ({checked})") for d in billable)
    principal = dx.principal
    pairs = decide.excludes1_pairs(billable, dx.code_set_year)
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
                        principal.reference,
                        principal.path,
                        None,
                        f"principal: {principal.code} ({checked})",
                    ),
                ),
                icd,
            )
            if principal
            else Fact(None, left_out)
        ),
        evidence_fact([Evidence(d.reference, d.path, None, why) for d, why in dx.invalid]),
        evidence_fact(
            [
                Evidence(b.reference, b.path, None, f"{a.code} with {b.code}: {note}")
                for a, b, note in pairs
            ]
            + [Evidence(d.reference, d.path, None, why) for d, why in dx.left_off]
        ),
    )


def units_exceeded(pack: Pack, case: Case) -> Fact:
    """Earlier Procedures with the pack's code for the patient on the date, beyond the MUE."""
    allowed, why, verified = decide.max_units(pack, case)
    units = pack.model.facts.units
    counted = set(units.counted_status) if units else {"completed", "stopped"}
    earlier = [p for p in case.same_code_earlier if p.get("status") in counted]
    if len(earlier) < allowed:
        return Fact(None)
    # another of the pack's code in the same session is excluded by the CPT descriptor
    # itself ("1 or more liver tumor(s)": once per session), verified ground without the MUE
    session = {case.ref(p) for p in case.session_procedures}
    if all(case.ref(p) in session for p in earlier):
        why = f"one per session (CPT descriptor: 1 or more tumors); {why}"
        verified = True
    evidence = tuple(
        Evidence(
            case.ref(p), "Procedure.code", None, f"same patient and date, performed first; {why}"
        )
        for p in earlier
    )
    return Fact([case.ref(p) for p in earlier], evidence, verified=verified)


def ptp_conflicts(pack: Pack, case: Case) -> Fact:
    """NCCI PTP edits between the Claim's codes that no documented distinct service allows;
    verified when one of them is a verified row."""
    hits = [h for h in decide.ptp_hits(pack, case) if h.conflict]
    return evidence_fact([h.evidence for h in hits], verified=any(h.verified for h in hits))


def provider_npi(pack: Pack, case: Case) -> Fact:
    """The rendering provider's NPI when it is present and its check digit holds."""
    npi, path, resource = decide.provider_npi(pack, case)
    if resource is None or not decide.is_valid_npi(npi):
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
    ref = decide.claim_provider_ref(pack, case)
    if not ref:
        return Fact(None)
    performed = any(p.ref == ref for p in case.performers)
    if ref == decide.billing_group(pack, case):
        path = "Procedure.performer.onBehalfOf"
    else:
        path = "Procedure.performer.actor" if performed else "Encounter.serviceProvider"
    return Fact(ref, (Evidence(ref, path),))


def rendering_unclear(pack: Pack, case: Case) -> Fact:
    """Performers are recorded but none, or more than one person, is the rendering provider."""
    people = [p for p in case.performers if p.resource_type in ("Practitioner", "PractitionerRole")]
    choice = decide.rendering(pack, case)
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


# Last: the modifiers' matchers may read any fact above.
@provides("modifier_conflicts")
def _modifier_conflicts(pack: Pack, ctx: Context) -> tuple[Fact, ...]:
    """Modifiers the documentation supports that exclude each other (pack: modifiers[].excludes)."""
    conflicts = decide_modifiers(pack, ctx).conflicts
    return (evidence_fact(list(conflicts)),)
