"""The evidence for one procedure: everything the rules may look at, gathered from a store.

Assembly only follows references and joins; it knows no coding rule. A dangling
reference is not an error: the evidence is absent, and the case remembers the
reference so that a finding can say what was missing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from fhir_adapter.fhir.codings import Systems, has_coding
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.fhir.references import reference_string, tail_key
from fhir_adapter.fhir.systems import NPI, NUCC
from fhir_adapter.sources.store import ResourceStore

_T = TypeVar("_T")

# Collections a rule may name in `from:` (see mappings/*.yaml).
COLLECTIONS = (
    "procedure",
    "patient",
    "encounter",
    "conditions",
    "reason_conditions",
    "observations",
    "reports",
    "documents",
    "session_procedures",
    "same_performer_procedures",
    "prior_procedures",
    "practitioners",
    "roles",
    "organizations",
    "locations",
    "coverage",
    "authorizations",
)


def service_date(procedure: Resource, encounter: Resource | None) -> str | None:
    """The date of service (YYYY-MM-DD) from the Procedure, else the Encounter."""
    candidates = [
        procedure.get("performedDateTime"),
        (procedure.get("performedPeriod") or {}).get("start"),
        ((encounter or {}).get("period") or {}).get("start"),
    ]
    for value in candidates:
        if isinstance(value, str) and len(value) >= 10:
            return value[:10]
    return None


def performed_sort_key(procedure: Resource, key: str) -> tuple[str, str]:
    start = procedure.get("performedDateTime") or (procedure.get("performedPeriod") or {}).get(
        "start"
    )
    return (start if isinstance(start, str) else "9999", key)


@dataclass(slots=True, unsafe_hash=True)  # never mutated: see fhir_adapter.findings
class Performer:
    """One Procedure.performer whose actor resolved: which function it had, who it is."""

    ref: str  # the actor as gathered (Case.ref)
    resource_type: str
    # performer.function codings as (system, code)
    functions: tuple[tuple[str | None, str], ...]
    # the actor and, for a PractitionerRole, its Practitioner (canonical references)
    keys: frozenset[str]


@dataclass
class Case:
    """One Procedure coded with the pack's CPT code and the evidence around it."""

    key: str
    procedure: Resource
    # the file the Procedure came from, when another file holds a different resource
    # under the same key (sources.scopes): the two are different cases
    source: str | None = None
    patient: Resource | None = None
    patient_ref: str | None = None
    encounter: Resource | None = None
    encounter_ref: str | None = None
    date: str | None = None
    conditions: list[Resource] = field(default_factory=list)
    reason_conditions: list[Resource] = field(default_factory=list)
    # the Conditions a reason or an Encounter.diagnosis names (the others in `conditions`
    # only point at the encounter), however the reference was written
    stated_conditions: list[Resource] = field(default_factory=list)
    observations: list[Resource] = field(default_factory=list)
    reports: list[Resource] = field(default_factory=list)
    documents: list[Resource] = field(default_factory=list)
    session_procedures: list[Resource] = field(default_factory=list)
    same_performer_procedures: list[Resource] = field(default_factory=list)
    same_code_earlier: list[Resource] = field(default_factory=list)
    # the patient's completed Procedures on earlier dates by the same performer, or by one of
    # the same group (organization NPI) and specialty (global periods)
    prior_procedures: list[Resource] = field(default_factory=list)
    practitioners: list[Resource] = field(default_factory=list)
    roles: list[Resource] = field(default_factory=list)
    organizations: list[Resource] = field(default_factory=list)
    locations: list[Resource] = field(default_factory=list)
    coverage: list[Resource] = field(default_factory=list)
    # the patient's prior-authorization answers (ClaimResponse) and, by their key, the
    # requests (Claim use preauthorization) they answer
    authorizations: list[Resource] = field(default_factory=list)
    authorization_requests: dict[str, Resource] = field(default_factory=dict)
    # the procedure's performers in order; the pack chooses the rendering one
    # (billing.decide.rendering), by performer.function
    performers: list[Performer] = field(default_factory=list)
    # the organization behind the service: an Organization performer, else
    # Encounter.serviceProvider (the Claim's provider when no rendering person is chosen)
    provider_ref: str | None = None
    insurer_ref: str | None = None
    # reference strings that pointed nowhere, by the collection they were meant for
    unresolved: dict[str, list[str]] = field(default_factory=dict)
    # resources reached from the case that name another Patient than the Procedure does
    # (subject, patient, beneficiary): left out of the case, as (their reference, the
    # element that names the patient, that patient), for a finding to name
    other_patient: list[tuple[str, str, str]] = field(default_factory=list)
    _refs: dict[int, str] = field(default_factory=dict, repr=False)
    _by_ref: dict[str, Resource] = field(default_factory=dict, repr=False)
    # the performer keys of each gathered Procedure (see _actor_keys), by id()
    _actors: dict[int, frozenset[str]] = field(default_factory=dict, repr=False)
    # reference strings written otherwise than their target's key (a `urn:uuid:`, a full
    # URL), by the key they resolved to: two spellings of one reference are the same target
    aliases: dict[str, str] = field(default_factory=dict, repr=False)
    # the (group NPI, NUCC specialty) pairs each performer key practises as (see _scope_of)
    _scopes: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict, repr=False)
    # what the rules worked out for this case (its text index, the billing decisions),
    # kept so that the Claim builder reads them instead of working them out again
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def label(self) -> str:
        """The case as reports and output file names know it: its key, and its file when
        the key alone does not tell it apart."""
        return self.key if self.source is None else f"{self.key} ({self.source})"

    def derive(self, key: Hashable, make: Callable[[], _T]) -> _T:
        """`make()` once per key while this evaluation of the case lasts (`derived`)."""
        if key in self.derived:
            return cast(_T, self.derived[key])
        value = self.derived[key] = make()
        return value

    def collection(self, name: str) -> list[Resource]:
        """A named collection as a list (single resources become a 0/1-element list)."""
        value = getattr(self, name)
        if isinstance(value, list):
            return value
        return [value] if value is not None else []

    def ref(self, resource: Resource) -> str:
        """The reference string of a gathered resource, for evidence and output."""
        return self._refs.get(id(resource)) or (
            f"{resource.get('resourceType')}/{resource.get('id', '?')}"
        )

    def actor_keys(self, procedure: Resource) -> frozenset[str]:
        """Who performed a gathered Procedure (empty when no performer is recorded)."""
        return self._actors.get(id(procedure), frozenset())

    def scopes(self, keys: Iterable[str]) -> frozenset[tuple[str, str]]:
        """The (group NPI, NUCC specialty) pairs the performers known by `keys` practise as:
        CMS treats physicians of the same group and specialty as one for global surgery."""
        return frozenset(pair for key in keys for pair in self._scopes.get(key, ()))

    def resource(self, ref: str | None) -> Resource | None:
        """The gathered resource known by `ref` (as returned by `ref()`), if any."""
        return self._by_ref.get(ref) if ref else None

    def reference_json(self, ref: str | None) -> dict[str, Any] | None:
        """A Reference for output: `Type/id` when the target has an id, else a logical
        reference by business identifier (a `urn:uuid:` means nothing outside its Bundle)."""
        if ref is None:
            return None
        target = self._by_ref.get(ref)
        if ref.startswith("urn:") and target is not None:
            for ident in target.get("identifier") or []:
                if isinstance(ident, dict) and ident.get("value"):
                    keep = {k: ident[k] for k in ("system", "value") if k in ident}
                    return {"type": target["resourceType"], "identifier": keep}
        return {"reference": ref}


# The elements by which a resource names the patient it is about (FHIR R4: subject on
# clinical resources, patient on claims and their responses, beneficiary on Coverage).
_PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")


def named_patient(
    store: ResourceStore, resource: Resource, known: str | None = None
) -> tuple[str, str] | None:
    """(element, Patient key) for the first element by which `resource` names a Patient;
    None when it names none (no subject, or a Group, Device or Location one). `known`: a
    key already known to be a Patient's (read without resolving it again)."""
    for element in _PATIENT_ELEMENTS:
        ref = resource.get(element)
        key = store.canonical(ref) if ref is not None else None
        if key is None:
            continue
        if key == known:
            return element, key
        target = store.resolve(ref, resource)
        if target is not None:
            rtype = target.get("resourceType")
        else:
            tail = tail_key(key)
            rtype = tail.split("/", 1)[0] if tail else None
        if rtype == "Patient":
            return element, key
    return None


class _Builder:
    def __init__(self, store: ResourceStore, case: Case) -> None:
        self.store = store
        self.case = case
        self._seen: dict[str, set[int]] = {}
        self._foreign: set[int] = set()
        # the patient others are compared with: only when the Procedure names a Patient
        named = named_patient(store, case.procedure)
        self._patient = named[1] if named else None

    def foreign(self, resource: Resource) -> bool:
        """Whether `resource` names another Patient than the case's Procedure; such a
        resource is noted (once) in case.other_patient and is no evidence of the case."""
        if self._patient is None or resource is self.case.procedure:
            return False
        named = named_patient(self.store, resource, self._patient)
        if named is None or named[1] == self._patient:
            return False
        if id(resource) not in self._foreign:
            self._foreign.add(id(resource))
            try:
                key = self.store.key_of(resource)
            except KeyError:
                key = f"{resource.get('resourceType')}/{resource.get('id', '?')}"
            self.case.other_patient.append(
                (key, f"{resource.get('resourceType')}.{named[0]}", named[1])
            )
        return True

    def follow(self, ref: Any, container: Resource | None, *into: str) -> Resource | None:
        """Resolve a reference, remembering a dangling one under each collection in `into`."""
        text = reference_string(ref)
        if text is None:
            return None
        found = self.store.resolve(text, container)
        if found is None:
            for name in into:
                self.case.unresolved.setdefault(name, []).append(text)
            return None
        self.remember(found, text if text.startswith("#") else None)
        key = self.case.ref(found)
        if text != key:
            self.case.aliases.setdefault(text, key)
        return found

    def remember(self, resource: Resource, local: str | None = None) -> None:
        if id(resource) not in self.case._refs:
            try:
                key = local or self.store.key_of(resource)
            except KeyError:
                key = local or f"{resource['resourceType']}/{resource.get('id', '?')}"
            self.case._refs[id(resource)] = key
            self.case._by_ref.setdefault(key, resource)

    def add(self, into: str, resource: Resource | None, rtype: str | tuple[str, ...]) -> None:
        if resource is None:
            return
        types = (rtype,) if isinstance(rtype, str) else rtype
        if resource.get("resourceType") not in types:
            return
        seen = self._seen.setdefault(into, set())
        if id(resource) in seen or self.foreign(resource):
            return
        seen.add(id(resource))
        self.remember(resource)
        getattr(self.case, into).append(resource)


def find_procedures(store: ResourceStore, system: Systems, code: str) -> list[Resource]:
    """Procedures carrying system|code, in a stable order (by key)."""
    found = [p for p in store.of_type("Procedure", code) if has_coding(p, ("code",), system, code)]
    return sorted(found, key=store.key_of)


def find_procedure_keys(store: ResourceStore, system: Systems, code: str) -> list[str]:
    """The keys of `find_procedures`, in its order, without parsing the lines a loader
    already found coded (`store.coded_keys`): a dense export's parent process would
    otherwise parse every case before handing them to the workers. A key may name a
    Procedure since replaced by an uncoded copy: `coded_procedure` tells."""
    noted = store.coded_keys(system, code)
    if noted is None:
        return [store.key_of(p) for p in find_procedures(store, system, code)]
    whole = {
        store.key_of(r)
        for r in store.whole_resources()
        if r["resourceType"] == "Procedure" and has_coding(r, ("code",), system, code)
    }
    return sorted(noted | whole)


def coded_procedure(store: ResourceStore, key: str, system: Systems, code: str) -> Resource | None:
    """The Procedure under `key` if it is (still) coded system|code."""
    found = store.get(key)
    if found is None or found.get("resourceType") != "Procedure":
        return None
    return found if has_coding(found, ("code",), system, code) else None


def assemble_cases(store: ResourceStore, system: Systems, code: str) -> Iterator[Case]:
    """Every case in the store, one per Procedure coded system|code."""
    for procedure in find_procedures(store, system, code):
        yield assemble(store, procedure, system, code)


def assemble(store: ResourceStore, procedure: Resource, system: Systems, code: str) -> Case:
    """Gather the evidence for one Procedure (see Case for what is gathered)."""
    key = store.key_of(procedure)
    case = Case(key=key, procedure=procedure, source=store.source_of(key))
    b = _Builder(store, case)
    b.remember(procedure)

    case.patient = b.follow(procedure.get("subject"), procedure, "patient")
    case.patient_ref = store.canonical(procedure.get("subject"))
    case.encounter = b.follow(procedure.get("encounter"), procedure, "encounter")
    case.encounter_ref = store.canonical(procedure.get("encounter"))
    if case.encounter is not None and b.foreign(case.encounter):
        # another patient's encounter: none of its diagnoses, places or documents are ours
        case.encounter = case.encounter_ref = None
    case.date = service_date(procedure, case.encounter)
    enc = case.encounter or {}

    # Conditions: stated reasons, encounter diagnoses, conditions of the encounter (those no
    # longer active leave in rules.evaluate, by the pack's facts.diagnoses.inactive_clinical).
    for ref in procedure.get("reasonReference") or []:
        target = b.follow(ref, procedure, "reason_conditions", "conditions")
        b.add("reason_conditions", target, "Condition")
        b.add("stated_conditions", target, "Condition")
        b.add("conditions", target, "Condition")
        b.add("observations", target, "Observation")
        b.add("reports", target, ("DiagnosticReport",))
        b.add("documents", target, ("DocumentReference",))
    for diag in enc.get("diagnosis") or []:
        if isinstance(diag, dict):
            named = b.follow(diag.get("condition"), enc, "conditions")
            b.add("stated_conditions", named, "Condition")
            b.add("conditions", named, "Condition")
    if case.encounter_ref:
        for cond in store.referrers(case.encounter_ref, "Condition"):
            b.add("conditions", cond, "Condition")

    # Reports, documents and observations tied to the procedure or the encounter.
    for ref in procedure.get("report") or []:
        target = b.follow(ref, procedure, "reports")
        b.add("reports", target, "DiagnosticReport")
        b.add("documents", target, "DocumentReference")
    anchors = [case.key] + ([case.encounter_ref] if case.encounter_ref else [])
    # what documents the order the Procedure carries out (a completed prior-authorization
    # questionnaire's answers point at the order: sources.questionnaire)
    anchors += [a for ref in procedure.get("basedOn") or [] if (a := store.canonical(ref))]
    for anchor in anchors:
        for rtype, into in (
            ("DiagnosticReport", "reports"),
            ("DocumentReference", "documents"),
            ("Observation", "observations"),
        ):
            for found in store.referrers(anchor, rtype):
                b.add(into, found, rtype)
    for report in list(case.reports):
        for ref in report.get("result") or []:
            b.add("observations", b.follow(ref, report, "observations"), "Observation")

    _gather_session(store, case, b, system, code)
    _gather_people_and_places(case, b)
    _gather_coverage(store, case)
    return case


def _gather_session(
    store: ResourceStore, case: Case, b: _Builder, system: Systems, code: str
) -> None:
    """Other Procedures of the same session: same encounter, else same patient and day."""
    if case.encounter_ref:
        others: Iterable[Resource] = store.referrers(case.encounter_ref, "Procedure")
    elif case.patient_ref and case.date:
        others = [
            p
            for p in store.referrers(case.patient_ref, "Procedure")
            if not p.get("encounter") and service_date(p, None) == case.date
        ]
    else:
        others = []
    mine = _actor_keys(store, case.procedure)
    case._actors[id(case.procedure)] = frozenset(mine)
    _record_scopes(store, case, case.procedure)
    own_key = performed_sort_key(case.procedure, case.key)
    for other in others:
        if other is case.procedure or other.get("status") in _NOT_DONE or b.foreign(other):
            continue
        actors = case._actors[id(other)] = frozenset(_actor_keys(store, other))
        b.add("session_procedures", other, "Procedure")
        if has_coding(other, ("code",), system, code):
            if performed_sort_key(other, store.key_of(other)) < own_key:
                case.same_code_earlier.append(other)
        elif mine and mine & actors:
            b.add("same_performer_procedures", other, "Procedure")
    _gather_patient_history(store, case, b, system, code, mine, own_key)


_NOT_DONE = ("entered-in-error", "not-done")


def _gather_patient_history(
    store: ResourceStore,
    case: Case,
    b: _Builder,
    system: Systems,
    code: str,
    mine: set[str],
    own_key: tuple[str, str],
) -> None:
    """The patient's other Procedures outside the session: the same code earlier on the same
    date (units are per date of service, across encounters) and earlier completed ones by
    the same performer (global periods)."""
    if not case.patient_ref or not case.date:
        return
    counted = {id(p) for p in case.same_code_earlier}
    for other in store.referrers(case.patient_ref, "Procedure"):
        if other is case.procedure or other.get("status") in _NOT_DONE or b.foreign(other):
            continue
        day = service_date(other, None)
        if day is None or day > case.date:
            continue
        if day == case.date:
            if (
                id(other) not in counted
                and has_coding(other, ("code",), system, code)
                and performed_sort_key(other, store.key_of(other)) < own_key
            ):
                counted.add(id(other))
                b.remember(other)
                case.same_code_earlier.append(other)
        elif other.get("status") == "completed" and mine:
            actors = frozenset(_actor_keys(store, other))
            if not mine & actors:
                _record_scopes(store, case, other)
                if not case.scopes(mine) & case.scopes(actors):
                    continue
            case._actors[id(other)] = actors
            b.add("prior_procedures", other, "Procedure")


def _record_scopes(store: ResourceStore, case: Case, procedure: Resource) -> None:
    """Note the (group NPI, specialty) pairs of a Procedure's performers, by performer key."""
    for performer in procedure.get("performer") or []:
        if not isinstance(performer, dict):
            continue
        keys = _keys_of(store, procedure, performer.get("actor"))
        missing = [k for k in keys if k not in case._scopes]
        if not missing:
            continue
        pairs = _scope_of(store, procedure, performer)
        for key in missing:
            case._scopes[key] = pairs


def _scope_of(
    store: ResourceStore, procedure: Resource, performer: dict[str, Any]
) -> frozenset[tuple[str, str]]:
    """(group NPI, NUCC specialty) for one performer: the organization it acts for
    (performer.onBehalfOf, else its PractitionerRole.organization) and the specialties of
    its roles. Empty when either is unknown: then only the same performer counts."""
    actor = store.resolve(performer.get("actor"), procedure)
    key = store.canonical(performer.get("actor"))
    if actor is None or key is None:
        return frozenset()
    if actor.get("resourceType") == "PractitionerRole":
        roles = [actor]
    elif actor.get("resourceType") == "Practitioner":
        roles = store.referrers(key, "PractitionerRole")
    else:
        return frozenset()
    behalf = _group_npi(store, procedure, performer.get("onBehalfOf"))
    pairs = set()
    for role in roles:
        group = behalf or _group_npi(store, role, role.get("organization"))
        if not group:
            continue
        for spec in role.get("specialty") or []:
            codings = spec.get("coding") if isinstance(spec, dict) else None
            for coding in codings if isinstance(codings, list) else []:
                code = coding.get("code") if isinstance(coding, dict) else None
                if coding.get("system") == NUCC and isinstance(code, str):
                    pairs.add((group, code.strip()))
    return frozenset(pairs)


def _group_npi(store: ResourceStore, holder: Resource, reference: Any) -> str | None:
    org = store.resolve(reference, holder) if reference else None
    for ident in (org or {}).get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == NPI and ident.get("value"):
            return str(ident["value"]).strip()
    return None


def _actor_keys(store: ResourceStore, procedure: Resource) -> set[str]:
    """The performers, a PractitionerRole also by its Practitioner (so that one procedure
    recorded by role and another by person are seen as the same performer's)."""
    keys: set[str] = set()
    for performer in procedure.get("performer") or []:
        actor = (performer or {}).get("actor") if isinstance(performer, dict) else None
        keys |= _keys_of(store, procedure, actor)
    return keys


def _keys_of(store: ResourceStore, procedure: Resource, actor: Any) -> set[str]:
    key = store.canonical(actor)
    if not key:
        return set()
    keys = {key}
    if key.startswith("PractitionerRole/"):
        role = store.resolve(key, procedure)
        person = store.canonical((role or {}).get("practitioner"))
        if person:
            keys.add(person)
    return keys


def _functions(performer: dict[str, Any]) -> tuple[tuple[str | None, str], ...]:
    function = performer.get("function")
    out = []
    for coding in (function.get("coding") or []) if isinstance(function, dict) else []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            system = coding.get("system")
            out.append((system if isinstance(system, str) else None, coding["code"].strip()))
    return tuple(out)


def _gather_people_and_places(case: Case, b: _Builder) -> None:
    procedure, enc = case.procedure, case.encounter or {}
    for performer in procedure.get("performer") or []:
        if not isinstance(performer, dict):
            continue
        actor = b.follow(performer.get("actor"), procedure, "practitioners")
        if actor is None:
            continue
        kind = actor.get("resourceType")
        if kind in ("Practitioner", "PractitionerRole", "Organization"):
            keys = _keys_of(b.store, procedure, performer.get("actor")) | {case.ref(actor)}
            case.performers.append(
                Performer(case.ref(actor), str(kind), _functions(performer), frozenset(keys))
            )
        if case.provider_ref is None and kind == "Organization":
            case.provider_ref = case.ref(actor)
        b.add("practitioners", actor, "Practitioner")
        b.add("roles", actor, "PractitionerRole")
        b.add("organizations", actor, "Organization")
        if kind == "PractitionerRole":
            person = b.follow(actor.get("practitioner"), actor, "practitioners")
            b.add("practitioners", person, "Practitioner")
            b.follow(actor.get("organization"), actor)
        if kind == "Practitioner":
            for role in b.store.referrers(case.ref(actor), "PractitionerRole"):
                b.add("roles", role, "PractitionerRole")
                b.follow(role.get("practitioner"), role)  # notes how the role names it
                b.follow(role.get("organization"), role)
        org = b.follow(performer.get("onBehalfOf"), procedure, "organizations")
        b.add("organizations", org, "Organization")
    if case.provider_ref is None and enc.get("serviceProvider"):
        org = b.follow(enc.get("serviceProvider"), enc, "organizations")
        if org is not None:
            b.add("organizations", org, "Organization")
            case.provider_ref = case.ref(org)
    b.add("locations", b.follow(procedure.get("location"), procedure, "locations"), "Location")
    for loc in enc.get("location") or []:
        if isinstance(loc, dict):
            b.add("locations", b.follow(loc.get("location"), enc, "locations"), "Location")
    # the service facility's NPI (box 32a) may sit on either organization
    for place in case.locations:
        b.follow(place.get("managingOrganization"), place)
    b.follow(enc.get("serviceProvider"), enc)


def _names_other(store: ResourceStore, resource: Resource, patient: str) -> bool:
    named = named_patient(store, resource, patient)
    return named is not None and named[1] != patient


def _gather_coverage(store: ResourceStore, case: Case) -> None:
    """The Coverage of the patient that is active on the date of service."""
    if not case.patient_ref:
        return
    active = []
    for cov in store.referrers(case.patient_ref, "Coverage"):
        # the patient's own: a Coverage that names them only as its subscriber or policy
        # holder insures its beneficiary, another person
        if cov.get("status", "active") != "active" or _names_other(store, cov, case.patient_ref):
            continue
        period = cov.get("period") or {}
        start, end = str(period.get("start", ""))[:10], str(period.get("end", ""))[:10]
        if case.date and ((start and start > case.date) or (end and end < case.date)):
            continue
        active.append(cov)
    active.sort(key=lambda c: (c.get("order", 99), store.key_of(c)))
    for cov in active:
        case._refs[id(cov)] = store.key_of(cov)
        case._by_ref.setdefault(store.key_of(cov), cov)
    for response in store.referrers(case.patient_ref, "ClaimResponse"):
        if _names_other(store, response, case.patient_ref):
            continue
        key = store.key_of(response)
        case._refs[id(response)] = key
        case._by_ref.setdefault(key, response)
        case.authorizations.append(response)
        request = store.resolve(response.get("request"), response)
        if request is not None and request.get("resourceType") == "Claim":
            case.authorization_requests[key] = request
    case.coverage = active[:1]
    if case.coverage:
        payors = case.coverage[0].get("payor") or []
        case.insurer_ref = store.canonical(payors[0]) if payors else None
        payer = store.resolve(payors[0], case.coverage[0]) if payors else None
        if payer is not None and case.insurer_ref:
            case._refs[id(payer)] = case.insurer_ref
            case._by_ref.setdefault(case.insurer_ref, payer)
