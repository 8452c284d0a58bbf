"""What goes on the Claim, decided once so that what the rules check is what gets billed.

The facts rules test (billing.facts) and the Claim builder (write-back) both call these:
the diagnoses a professional claim may code, the guidance line of the session,
the NCCI edits between its services and the rendering provider. Which codes count
comes from the pack and the CMS tables; this module knows where to look in FHIR.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fhir_adapter.billing import icd10cm, tables
from fhir_adapter.case import Case, Performer, performed_sort_key, service_date
from fhir_adapter.fhir.codings import codings, dotted_icd10cm, first_code
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.fhir.systems import NPI
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.load import Pack
from fhir_adapter.text.index import affirmed_evidence, text_index

# how long a loaded table set is used before `load_tables` checks its files again
TABLES_RECHECK_SECONDS = 2.0
_recent_tables: dict[str | None, tuple[float, tables.PaymentTables]] = {}


def payment_tables() -> tables.PaymentTables:
    """The CMS tables ($FHIR_ADAPTER_TABLES, else mappings/tables/). `load_tables` re-reads a
    directory whose files changed; it is asked at most every TABLES_RECHECK_SECONDS (it would
    stat every file on each of a case's calls), so a new quarter's files dropped into a running
    service are picked up."""
    directory = os.environ.get("FHIR_ADAPTER_TABLES") or None
    now = time.monotonic()
    hit = _recent_tables.get(directory)
    if hit is not None and now - hit[0] < TABLES_RECHECK_SECONDS:
        return hit[1]
    loaded = tables.load_tables(directory)
    _recent_tables[directory] = (now, loaded)
    return loaded


def as_date(value: str | None) -> dt.date | None:
    """A YYYY-MM-DD date of service, None when absent or not a calendar date."""
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


@dataclass(slots=True, unsafe_hash=True)  # never mutated: see fhir_adapter.findings
class Diagnosis:
    """One ICD-10-CM code as it would go on the Claim, and where it was documented."""

    code: str
    display: str | None
    reference: str
    path: str
    primary: bool


@dataclass
class Diagnoses:
    """The case's codable diagnoses: billable ones (principal first) and invalid ones."""

    billable: list[Diagnosis] = field(default_factory=list)
    invalid: list[tuple[Diagnosis, str]] = field(default_factory=list)
    # Conditions left out as uncertain, with their verification status
    uncertain: list[tuple[str, str]] = field(default_factory=list)
    # Conditions left out as no longer present (resolved...), with their clinical status
    inactive: list[tuple[str, str]] = field(default_factory=list)
    # codes left off the Claim, and why (a secondary that is the primary's own spread)
    left_off: list[tuple[Diagnosis, str]] = field(default_factory=list)
    # the ICD-10-CM fiscal year the codes were checked against, and its release (saying why
    # when it is not the date of service's own year: the nearest one at hand)
    code_set_year: int = 0
    code_set_release: str = ""

    @property
    def principal(self) -> Diagnosis | None:
        first = self.billable[0] if self.billable else None
        return first if first is not None and first.primary else None


_T = TypeVar("_T")


def once_per_case(fn: Callable[[Pack, Case], _T]) -> Callable[[Pack, Case], _T]:
    """A billing decision is made once per case and pack: the facts, the rules and the
    Claim builder all ask for it, and must get the same answer (kept in `case.derived`)."""

    @functools.wraps(fn)
    def once(pack: Pack, case: Case) -> _T:
        return case.derive((fn.__name__, id(pack)), lambda: fn(pack, case))

    return once


def verification_code(condition: Resource) -> str | None:
    return first_code(condition.get("verificationStatus"))


def clinical_code(condition: Resource) -> str | None:
    return first_code(condition.get("clinicalStatus"))


@once_per_case
def claim_diagnoses(pack: Pack, case: Case) -> Diagnoses:
    """Confirmed diagnoses in ICD-10-CM: the stated reasons first, then the encounter's by rank.

    A Condition whose verification status is uncertain (pack: facts.diagnoses) is not a
    diagnosis (ICD-10-CM guideline IV.H). SNOMED CT codings without an ICD-10-CM one go
    through the pack's crosswalk. The principal is the first liver-tumor diagnosis.
    """
    cfg = pack.model.claim
    icd = pack.system(cfg.diagnosis_system)
    snomed = pack.system("snomed")
    primary_vs = pack.valuesets[cfg.primary_diagnoses]
    crosswalk = pack.model.crosswalks.get(cfg.diagnosis_crosswalk or "", {})
    dx_cfg = pack.model.facts.diagnoses
    uncertain = set(dx_cfg.uncertain_verification) if dx_cfg else set()
    inactive = set(dx_cfg.inactive_clinical) if dx_cfg else set()
    ranks = _encounter_ranks(case)
    reasons = {id(c) for c in case.reason_conditions}
    year, statement = icd10cm.year_for(as_date(case.date))
    release = icd10cm.release(year) + (f"; {statement}" if statement else "")
    out = Diagnoses(code_set_year=year, code_set_release=release)
    kept = []
    for c in case.conditions:
        status = verification_code(c)
        clinical = clinical_code(c)
        if status in uncertain:
            out.uncertain.append((case.ref(c), str(status)))
        elif clinical in inactive:
            out.inactive.append((case.ref(c), str(clinical)))
        else:
            kept.append(c)
    ordered = sorted(kept, key=lambda c: (id(c) not in reasons, ranks.get(case.ref(c), 99)))
    sources: list[tuple[str, str, Any]] = [
        (case.ref(c), "Condition.code", c.get("code")) for c in ordered
    ]
    sources.append((case.key, "Procedure.reasonCode", case.procedure.get("reasonCode")))
    sources += discontinued_sources(pack, case)
    found: dict[str, Diagnosis] = {}
    for reference, path, value in sources:
        items = list(codings(value))
        icd_items = [c for c in items if c.get("system") == icd and isinstance(c.get("code"), str)]
        if not icd_items:
            icd_items = [
                {"code": crosswalk[str(c.get("code")).strip()]}
                for c in items
                if c.get("system") == snomed and str(c.get("code")).strip() in crosswalk
            ]
        for c in icd_items:
            code = dotted_icd10cm(c["code"])
            if code in found:
                continue
            display = c.get("display") if isinstance(c.get("display"), str) else None
            dx = Diagnosis(code, display, reference, path, primary_vs.contains(icd, code))
            found[code] = dx
            problem = _invalid(code, year)
            if problem:
                out.invalid.append((dx, problem))
            else:
                out.billable.append(dx)
    out.billable.sort(key=lambda d: not d.primary)
    _leave_off_spread(pack, out)
    return out


def _leave_off_spread(pack: Pack, out: Diagnoses) -> None:
    """A secondary of the primary's own organ (C78.7 beside C22.x) is the primary's spread
    and stays the primary's code, unless another primary (or its history) is documented
    (pack: claim.spread_within_primary)."""
    rule = pack.model.claim.spread_within_primary
    if rule is None:
        return

    def starts(code: str, prefixes: list[str]) -> bool:
        return any(code.startswith(p) for p in prefixes)

    codes = [d.code for d in out.billable]
    primary = next((c for c in codes if starts(c, rule.primary)), None)
    if primary is None or any(starts(c, rule.other_primary) for c in codes):
        return
    for dx in [d for d in out.billable if starts(d.code, rule.secondary)]:
        out.billable.remove(dx)
        why = (
            f"{dx.code} left off the Claim: beside {primary} and with no other primary "
            f"documented, it is the spread of {primary} within the liver ({rule.source})"
        )
        out.left_off.append((dx, why))


def discontinued_sources(pack: Pack, case: Case) -> list[tuple[str, str, Any]]:
    """A stopped session's diagnoses beside the tumor's: the complication that stopped it
    (statusReason, complication, complicationDetail; SNOMED CT through the pack's
    crosswalk) and, when the text says nothing was done, the pack's Z53 code."""
    cfg = pack.model.claim.session_lines
    if cfg is None or case.procedure.get("status") != "stopped":
        return []
    icd = pack.system(pack.model.claim.diagnosis_system)
    snomed = pack.system("snomed")
    crosswalk = pack.model.crosswalks.get(cfg.complication_crosswalk or "", {})

    def coded(value: Any) -> dict[str, Any]:
        out = []
        for c in codings(value):
            code = str(c.get("code") or "").strip()
            if c.get("system") == icd and code:
                out.append({"system": icd, "code": code})
            elif c.get("system") == snomed and code in crosswalk:
                out.append({"system": icd, "code": crosswalk[code]})
        return {"coding": out}

    proc = case.procedure
    out: list[tuple[str, str, Any]] = [
        (case.key, "Procedure.statusReason", coded(proc.get("statusReason")))
    ]
    out += [(case.key, "Procedure.complication", coded(c)) for c in proc.get("complication") or []]
    for detail in proc.get("complicationDetail") or []:
        ref = detail.get("reference") if isinstance(detail, dict) else None
        condition = case.resource(case.aliases.get(str(ref), str(ref)))
        if condition is not None and verification_code(condition) in (None, "confirmed"):
            out.append((case.ref(condition), "Condition.code", coded(condition.get("code"))))
    if cfg.not_carried_out_code and cfg.not_carried_out:
        index = text_index(case, pack.engine)
        done = affirmed_evidence(
            index, pack.engine, cfg.not_carried_out, ("procedure", "documents")
        )
        for e in done[:1]:
            value = {"coding": [{"system": icd, "code": cfg.not_carried_out_code}]}
            out.append((e.reference, e.path, value))
    return out


def _invalid(code: str, year: int) -> str | None:
    if not icd10cm.is_valid(code, year):
        return f"{code} is not an ICD-10-CM code in {icd10cm.release(year)}"
    if not icd10cm.is_billable(code, year):
        return (
            f"{code} is a category, not a billable code in {icd10cm.release(year)}: code it "
            "to the highest specificity"
        )
    return None


def _encounter_ranks(case: Case) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for diag in (case.encounter or {}).get("diagnosis") or []:
        if not isinstance(diag, dict) or not isinstance(diag.get("rank"), int):
            continue
        for c in case.conditions:
            if refers_to(case, diag.get("condition"), c):
                ranks.setdefault(case.ref(c), diag["rank"])
    return ranks


def excludes1_pairs(
    diagnoses: list[Diagnosis], year: int | None = None
) -> list[tuple[Diagnosis, Diagnosis, str]]:
    """Pairs of diagnoses where one's Excludes1 note (in the year's code set) names the other."""
    out = []
    for i, a in enumerate(diagnoses):
        for b in diagnoses[i + 1 :]:
            note = icd10cm.excludes1_conflict(a.code, b.code, year)
            if note:
                out.append((a, b, note))
    return out


@dataclass(frozen=True, slots=True)
class GuidanceLine:
    """The session's ablation-guidance service billed as its own line."""

    coding: dict[str, str]
    reference: str


@dataclass
class GuidancePlan:
    billed: GuidanceLine | None = None
    conflicts: list[Evidence] = field(default_factory=list)


@once_per_case
def guidance_plan(pack: Pack, case: Case) -> GuidancePlan:
    """At most one ablation-guidance line (the first performed); extra or needle codes conflict.
    Only the session's guidance by the rendering provider (or with no performer) counts."""
    g = pack.model.facts.guidance
    ablation = pack.valuesets[g.ablation if g else pack.model.claim.guidance_items]
    needle = pack.valuesets[g.needle_placement] if g else None
    crosswalk = pack.model.crosswalks.get(g.crosswalk, {}) if g else {}
    plan = GuidancePlan()
    # guidance by another practitioner is theirs to bill, not a line of this Claim
    mine = [p for p in case.session_procedures if same_performer(pack, case, p)]
    procedures = sorted(mine, key=lambda p: performed_sort_key(p, case.ref(p)))
    ablation_codes = "/".join(sorted(c for codes in ablation.codes.values() for c in codes))
    for proc in procedures:
        for coding in codings(proc.get("code")):
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(code, str):
                continue
            code = code.strip()
            if ablation.contains(system, code):
                if plan.billed is None:
                    keep = {
                        k: str(coding[k]).strip() for k in ("system", "display") if coding.get(k)
                    }
                    if "system" in keep:  # the Claim names the system by its URL, not an alias
                        keep["system"] = pack.canonical_system(keep["system"])
                    plan.billed = GuidanceLine({**keep, "code": code}, case.ref(proc))
                elif plan.billed.coding["code"] != code:
                    note = (
                        f"{code} is a second ablation-guidance code in the session; only "
                        f"{plan.billed.coding['code']} is billed (one guidance code per session)"
                    )
                    plan.conflicts.append(Evidence(case.ref(proc), "Procedure.code", None, note))
            elif needle is not None and needle.contains(system, code):
                right = crosswalk.get(code)
                if right and not _monitoring_documented(pack, case):
                    advice = (
                        f"{right} is guidance for, and monitoring of, parenchymal tissue "
                        "ablation and no monitoring of the ablation is documented: needle "
                        f"placement alone is not {right}, so no guidance line is supported"
                    )
                elif right:
                    advice = (
                        f"report {right} (guidance for, and monitoring of, parenchymal tissue "
                        "ablation; monitoring is documented)"
                    )
                else:
                    advice = (
                        "no ablation-guidance code matches it; report the one of the "
                        f"modality used ({ablation_codes}) if monitoring of the ablation is "
                        "documented"
                    )
                note = f"{code} is needle-placement guidance, not reported with ablation: {advice}"
                plan.conflicts.append(Evidence(case.ref(proc), "Procedure.code", None, note))
    return plan


def _monitoring_documented(pack: Pack, case: Case) -> bool:
    """The documentation affirms monitoring of the ablation (pack: facts.guidance.monitoring);
    a pack that names no such pattern group does not ask for it."""
    g = pack.model.facts.guidance
    if g is None or g.monitoring is None:
        return True
    sources = (*(g.monitoring.in_ or ("procedure",)), "session_procedures")
    found = affirmed_evidence(
        text_index(case, pack.engine), pack.engine, g.monitoring.patterns, sources
    )
    return bool(found)


@dataclass(frozen=True, slots=True)
class PtpHit:
    """An NCCI PTP edit between two services of the session, and whether it is allowed."""

    column1: str
    column2: str
    indicator: str
    evidence: Evidence
    distinct: tuple[Evidence, ...]
    verified: bool = False

    @property
    def conflict(self) -> bool:
        return self.indicator == "0" or (self.indicator == "1" and not self.distinct)


def claim_codes(pack: Pack, case: Case) -> dict[str, str]:
    """The codes the Claim bills (the pack's code and the session's guidance line), each with
    the reference it was documented by: NCCI PTP edits apply between these only, since a
    column-2 code that is not billed raises nothing [MLN-59]."""
    codes = {pack.procedure_code: case.key}
    billed = guidance_plan(pack, case).billed
    if billed is not None:
        codes.setdefault(billed.coding["code"], billed.reference)
    return codes


@once_per_case
def ptp_hits(pack: Pack, case: Case) -> list[PtpHit]:
    """PTP edits in force on the date of service between the codes the Claim bills."""
    on = as_date(case.date)
    if on is None:
        return []
    codes = claim_codes(pack, case)
    table = payment_tables()
    distinct_cfg = pack.model.facts.distinct_service
    distinct: tuple[Evidence, ...] | None = None
    hits: dict[tuple[str, str], PtpHit] = {}
    names = sorted(codes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            edit = table.ptp(a, b, on)  # either may be column 1
            if edit is None or edit.modifier_indicator not in ("0", "1"):
                continue
            key = (edit.column1, edit.column2)
            if key in hits:
                continue
            if distinct is None:
                distinct = ()
                if distinct_cfg is not None:
                    sources = (*(distinct_cfg.in_ or ("procedure",)), "session_procedures")
                    distinct = tuple(
                        affirmed_evidence(
                            text_index(case, pack.engine),
                            pack.engine,
                            distinct_cfg.patterns,
                            sources,
                        )
                    )
            status = "" if edit.verified else ", row not verified"
            note = (
                f"NCCI PTP {edit.column1} (column 1) / {edit.column2} (column 2), modifier "
                f"indicator {edit.modifier_indicator} ({edit.source}{status})"
            )
            ev = Evidence(codes[edit.column2], "Procedure.code", None, note)
            hits[key] = PtpHit(
                edit.column1, edit.column2, edit.modifier_indicator, ev, distinct, edit.verified
            )
    return list(hits.values())


@dataclass
class GlobalPeriods:
    """Earlier surgeries in scope (same performer, or same group NPI and specialty)."""

    # those whose global period covers the date of service
    inside: list[Evidence] = field(default_factory=list)
    # one of them rests on a verified PFS row (an imported release or a checked row)
    verified: bool = False
    # those within the lookback whose global days the loaded tables do not know
    unknown: list[Evidence] = field(default_factory=list)


@once_per_case
def global_periods(pack: Pack, case: Case) -> GlobalPeriods:
    """The global periods the date of service may fall in. The scope is the physician, and
    physicians of the same group and specialty count as one [CMS-GLOBAL]."""
    out = GlobalPeriods()
    today = as_date(case.date)
    if today is None:
        return out
    cfg = pack.model.facts.global_period
    surgery = pack.valuesets[cfg.surgery] if cfg else None
    table = payment_tables()
    who = rendering(pack, case).keys
    for proc in case.prior_procedures:
        actors = case.actor_keys(proc)
        if actors & who:
            by = "the same performer"
        elif case.scopes(actors) & case.scopes(who):
            by = "the same group (NPI) and specialty"
        else:
            continue
        day = service_date(proc, None)
        when = as_date(day)
        if day is None or when is None:
            continue
        for coding in codings(proc.get("code")):
            code = coding.get("code")
            system = pack.canonical_system(coding.get("system"))
            if system != pack.procedure_system or not isinstance(code, str):
                continue
            code = code.strip()
            row = table.pfs_row(code)
            if row is None or not row.global_days.isdigit():
                known = row is not None and row.global_days.strip().upper() in ("XXX", "ZZZ")
                surgical = code == pack.procedure_code or (
                    surgery is not None and surgery.contains(coding.get("system"), code)
                )
                if (
                    cfg
                    and surgical
                    and not known
                    and today <= when + dt.timedelta(cfg.lookback_days)
                ):
                    note = (
                        f"{code} on {day} by {by}: its global days are not in the CMS tables "
                        "in use; check GLOB DAYS in the PFS release (58/78/79 may be needed)"
                    )
                    out.unknown.append(Evidence(case.ref(proc), "Procedure.code", None, note))
                    break
                continue
            days = int(row.global_days)
            end = when + dt.timedelta(days=days)
            if not days or not (when < today <= end):
                continue
            status = "" if row.verified else "; GLOB DAYS row not verified"
            note = (
                f"{code} on {day} by {by}: its {days}-day global period runs to "
                f"{end.isoformat()} ({row.source}{status})"
            )
            out.inside.append(Evidence(case.ref(proc), "Procedure.code", None, note))
            out.verified = out.verified or row.verified
            break
    return out


def refers_to(case: Case, reference: Any, resource: Resource) -> bool:
    """A Reference element (or reference string) names `resource` (as gathered, by Type/id,
    or by another spelling the case resolved to it, such as a Bundle's `urn:uuid:`)."""
    ref = reference.get("reference") if isinstance(reference, dict) else reference
    if not isinstance(ref, str):
        return False
    key = case.ref(resource)
    return (
        ref == key
        or case.aliases.get(ref) == key
        or (
            resource.get("id") is not None
            and ref.endswith(f"{resource.get('resourceType')}/{resource.get('id')}")
        )
    )


@dataclass(frozen=True, slots=True)
class Rendering:
    """The rendering provider chosen among the performers, and the other candidates."""

    performer: Performer | None
    candidates: tuple[Performer, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1

    @property
    def keys(self) -> frozenset[str]:
        return self.performer.keys if self.performer else frozenset()


@once_per_case
def rendering(pack: Pack, case: Case) -> Rendering:
    """The performer who renders the service: the one whose performer.function is in the
    pack's `claim.rendering_functions` value set (surgeon, primary performer...); when no
    performer has such a function, one without any function (an anesthesiologist's or an
    assistant's function rules them out). Two different people that qualify are ambiguous:
    the first is kept (deterministic) and the rendering-provider-unclear finding says so.
    """
    people = [p for p in case.performers if p.resource_type in ("Practitioner", "PractitionerRole")]
    name = pack.model.claim.rendering_functions
    if name is None:
        return Rendering(people[0] if people else None, tuple(people[:1]))
    valueset = pack.valuesets[name]
    marked = [p for p in people if any(valueset.contains(s, c) for s, c in p.functions)]
    if not marked:
        marked = [p for p in people if not p.functions]
    distinct: list[Performer] = []
    for p in marked:  # a role and its practitioner, or one listed twice, are one person
        if not any(p.keys & q.keys for q in distinct):
            distinct.append(p)
    return Rendering(distinct[0] if distinct else None, tuple(distinct))


def claim_provider_ref(pack: Pack, case: Case) -> str | None:
    """Claim.provider (CMS-1500 box 33): the rendering person's group where there is one
    (benefits reassigned to it: the payer rejects the individual's NPI there), else the
    rendering person, else the organization behind the service."""
    group = billing_group(pack, case)
    if group is not None:
        return group
    chosen = rendering(pack, case).performer
    return chosen.ref if chosen else case.provider_ref


@once_per_case
def billing_group(pack: Pack, case: Case) -> str | None:
    """The Organization the rendering person worked for, with an NPI of its own (a type-2,
    group NPI): the rendering performer's `onBehalfOf`, else the `organization` of the
    PractitionerRole it performed as, else of its only role with such an organization."""
    chosen = rendering(pack, case).performer
    if chosen is None or chosen.resource_type == "Organization":
        return None
    candidates: list[Any] = []
    for entry in case.procedure.get("performer") or []:
        if isinstance(entry, dict) and _names_performer(case, entry.get("actor"), chosen):
            candidates.append(entry.get("onBehalfOf"))
    actor = case.resource(chosen.ref)
    if chosen.resource_type == "PractitionerRole" and actor is not None:
        candidates.append(actor.get("organization"))
    else:
        orgs = {
            _org_key(case, role.get("organization"))
            for role in case.roles
            if actor is not None and refers_to(case, role.get("practitioner"), actor)
        } - {None}
        if len(orgs) == 1:
            candidates.append(orgs.pop())
    for candidate in candidates:
        key = _org_key(case, candidate)
        org = case.resource(key)
        if key and org is not None and is_valid_npi(_npi_of(org)):
            return key
    return None


def _names_performer(case: Case, actor: Any, performer: Performer) -> bool:
    ref = actor.get("reference") if isinstance(actor, dict) else None
    return isinstance(ref, str) and (case.aliases.get(ref, ref) == performer.ref)


def _org_key(case: Case, reference: Any) -> str | None:
    """The case's key of the Organization a Reference (or key) names, when it was gathered."""
    ref = reference.get("reference") if isinstance(reference, dict) else reference
    if not isinstance(ref, str):
        return None
    key = case.aliases.get(ref, ref)
    if case.resource(key) is None:
        key = next((case.ref(o) for o in case.organizations if refers_to(case, ref, o)), key)
    org = case.resource(key)
    return key if org is not None and org.get("resourceType") == "Organization" else None


def _npi_of(resource: Resource) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == NPI and ident.get("value"):
            return str(ident["value"]).strip()
    return None


def same_performer(pack: Pack, case: Case, procedure: Resource) -> bool:
    """A gathered Procedure performed by the rendering provider, or with no performer recorded."""
    actors = case.actor_keys(procedure)
    return not actors or bool(actors & rendering(pack, case).keys)


def rendering_provider(pack: Pack, case: Case) -> Resource | None:
    """The rendering Practitioner or PractitionerRole (Claim.careTeam)."""
    chosen = rendering(pack, case).performer
    return case.resource(chosen.ref) if chosen else None


def provider_npi(pack: Pack, case: Case) -> tuple[str | None, str | None, Resource | None]:
    """(NPI, where it was found, resource): the rendering provider's NPI (box 24J), else the
    provider's. A PractitionerRole's own NPI counts, else that of its Practitioner.
    """
    chosen = rendering(pack, case).performer
    provider = case.resource(chosen.ref if chosen else case.provider_ref)
    if provider is None:
        return None, None, None
    candidates = [provider]
    if provider.get("resourceType") == "PractitionerRole":
        candidates += [
            p for p in case.practitioners if refers_to(case, provider.get("practitioner"), p)
        ]
    for resource in candidates:
        for ident in resource.get("identifier") or []:
            if isinstance(ident, dict) and ident.get("system") == NPI:
                value = ident.get("value")
                return (str(value).strip() if value is not None else None), "identifier", resource
    return None, None, provider


def is_valid_npi(npi: str | None) -> bool:
    """10 digits whose last is the check digit of the first nine."""
    if not npi or len(npi) != 10 or not npi.isdigit():
        return False
    return npi[9] == npi_check_digit(npi[:9])


def npi_check_digit(first_nine: str) -> str:
    """An NPI's tenth digit: the Luhn check digit over '80840' + the first nine (CMS).

    Public so that the synthetic data (testing/synth.py) makes NPIs with this very rule.
    """
    total = 0
    for i, ch in enumerate(reversed("80840" + first_nine)):
        d = int(ch) * (2 if i % 2 == 0 else 1)  # the digit beside the check digit is doubled
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def provider_taxonomy(pack: Pack, case: Case) -> dict[str, str] | None:
    """The rendering provider's NUCC taxonomy: its own PractitionerRole.specialty (the role
    it performed as, else the roles of the Practitioner), else its Practitioner.qualification.
    Another performer's taxonomy is never reported. One in the pack's `claim.taxonomy_preferred`
    value set wins when several are given.
    """
    cfg = pack.model.claim
    system = pack.system(cfg.taxonomy_system or "nucc")
    expected = pack.valuesets[cfg.taxonomy_preferred] if cfg.taxonomy_preferred else None
    provider = rendering_provider(pack, case)
    if provider is None:
        return None
    if provider.get("resourceType") == "PractitionerRole":
        roles = [provider]
        people = [p for p in case.practitioners if refers_to(case, provider.get("practitioner"), p)]
    else:
        roles = [r for r in case.roles if refers_to(case, r.get("practitioner"), provider)]
        people = [provider]
    found: list[dict[str, Any]] = []
    for role in roles:
        found += [c for c in codings(role.get("specialty")) if c.get("system") == system]
    for person in people:
        for q in person.get("qualification") or []:
            if isinstance(q, dict):
                found += [c for c in codings(q.get("code")) if c.get("system") == system]
    found = [c for c in found if isinstance(c.get("code"), str)]
    if not found:
        return None
    if expected is not None:
        found.sort(key=lambda c: not expected.contains(system, c["code"]))
    best = found[0]
    return {k: str(best[k]).strip() for k in ("system", "code", "display") if best.get(k)}


def is_facility(pack: Pack, pos: str | None) -> bool:
    name = pack.model.claim.facility_pos
    return bool(pos and name and pack.valuesets[name].contains(pack.system("pos"), pos))


def facility_location(case: Case) -> str | None:
    """The Location the procedure was performed at (else the encounter's first)."""
    for loc in case.locations:
        if refers_to(case, case.procedure.get("location"), loc):
            return case.ref(loc)
    return case.ref(case.locations[0]) if case.locations else None


def max_units(pack: Pack, case: Case) -> tuple[int, str, bool]:
    """Units of the pack's code allowed per date of service, where that number comes from,
    and whether that ground is verified (an MUE row imported or checked against CMS)."""
    on = as_date(case.date)
    row = payment_tables().mue(pack.procedure_code, on=on)
    if row is not None:
        status = "" if row.verified else "; row not verified"
        return (
            int(row.value),
            f"MUE {row.value} per date of service ({row.source}{status})",
            row.verified,
        )
    units = pack.model.facts.units
    n = units.default_max_units if units else 1
    return n, f"{n} per date of service ({units.source if units else 'default'})", False
