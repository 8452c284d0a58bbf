"""The shape of a rule pack (mappings/*.yaml), checked when the pack is loaded.

Fields that name another part of the pack (a value set, a pattern group, a fact,
a collection...) are typed with a `Ref` marker; one model validator resolves them
all, so a new config field that names a value set is checked without new code.
Matchers are a discriminated union keyed by the one matcher name each entry has.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from fhir_adapter.case import COLLECTIONS
from fhir_adapter.pack.facts import FACTS
from fhir_adapter.text.index import TEXT_SOURCES
from fhir_adapter.text.vocabulary import TextConfig

Severity = Literal["low", "moderate", "high"]


@dataclass(frozen=True)
class Ref:
    """Marks a field whose value(s) must name an entry of `kind` (see PackModel.names)."""

    kind: str


ValueSetName = Annotated[str, Ref("valuesets")]
PatternName = Annotated[str, Ref("patterns")]
SystemName = Annotated[str, Ref("systems")]
CrosswalkName = Annotated[str, Ref("crosswalks")]
FactName = Annotated[str, Ref("facts")]
Collections = Annotated[list[str], Ref("collections")]
TextSources = Annotated[list[str], Ref("text_sources")]
ModifierName = Annotated[str, Ref("modifiers")]

NOUNS = {
    "valuesets": "value set",
    "patterns": "pattern group",
    "systems": "system alias",
    "crosswalks": "crosswalk",
    "facts": "fact",
    "collections": "collection",
    "text_sources": "text source",
    "modifiers": "modifier",
}


class _Strict(BaseModel):
    # strict: no "12" for 12, no 1 for true; a value of the wrong type is named at its line
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _as_path(value: object) -> object:
    return value.split(".") if isinstance(value, str) else value


class CodesMatch(_Strict):
    """Codings found at `path` of the resources in `from` that are in `valueset`."""

    from_: Collections = Field(alias="from")
    path: list[str]
    valueset: ValueSetName

    _lists = field_validator("from_", mode="before")(_as_list)

    _paths = field_validator("path", mode="before")(_as_path)


class TextMatch(_Strict):
    """A text target (mappings/text/) with a mention ConText affirms in the text of `in` sources."""

    patterns: PatternName
    in_: TextSources | None = Field(default=None, alias="in")


class FhirPathMatch(_Strict):
    """A FHIRPath expression, compiled once, true on some resource of `from`."""

    from_: Collections = Field(alias="from")
    expression: str

    _lists = field_validator("from_", mode="before")(_as_list)


class ValueMatch(_Strict):
    """A primitive at `path` whose value is one of `in` (or, with `not_in`, absent or none of them)."""

    from_: Collections = Field(alias="from")
    path: list[str]
    in_: list[str] | None = Field(default=None, alias="in")
    not_in: list[str] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ValueMatch:
        if (self.in_ is None) == (self.not_in is None):
            raise ValueError("a value matcher has exactly one of `in` and `not_in`")
        return self

    _lists = field_validator("from_", mode="before")(_as_list)

    _paths = field_validator("path", mode="before")(_as_path)


class FactMatch(_Strict):
    """A fact the engine derives (place of service, coverage, tumor count...): found when it
    is known and, if given, in `valueset`, one of `in`, at least `min`, at most `max` and
    less than `below` (payer policies write "< 3 cm" as well as "<= 5 cm")."""

    name: FactName
    valueset: ValueSetName | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    min: float | None = None
    max: float | None = None
    below: float | None = None


class CodesMatcher(_Strict):
    codes: CodesMatch


class TextMatcher(_Strict):
    text: TextMatch


class FhirPathMatcher(_Strict):
    fhirpath: FhirPathMatch


class ValueMatcher(_Strict):
    value: ValueMatch


class FactMatcher(_Strict):
    fact: FactMatch


MATCHER_KINDS = ("codes", "text", "fhirpath", "value", "fact")


def _matcher_kind(value: Any) -> str | None:
    """The one matcher name an entry carries (None, and so an error, for zero or several)."""
    if isinstance(value, dict):
        present = [k for k in MATCHER_KINDS if k in value]
        return present[0] if len(present) == 1 else None
    if isinstance(value, BaseModel):
        return next((k for k in MATCHER_KINDS if k in type(value).model_fields), None)
    return None


Matcher = Annotated[
    Union[  # noqa: UP007 - Tag needs the members spelled out
        Annotated[CodesMatcher, Tag("codes")],
        Annotated[TextMatcher, Tag("text")],
        Annotated[FhirPathMatcher, Tag("fhirpath")],
        Annotated[ValueMatcher, Tag("value")],
        Annotated[FactMatcher, Tag("fact")],
    ],
    Discriminator(
        _matcher_kind,
        custom_error_type="matcher",
        custom_error_message="a matcher has exactly one of codes, text, fhirpath, value, fact",
    ),
]


class Unverified(_Strict):
    """How a finding is raised when every fact behind it rests on unverified ground (a CMS
    table row nobody checked against a CMS release): not blocking, and saying so."""

    severity: Severity
    message: str


class Rule(_Strict):
    finding: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    kind: Literal["require", "forbid"]
    severity: Severity
    actcode: str | None = None
    message: str
    source: str
    when: list[Matcher] = []
    any: list[Matcher] = Field(min_length=1)
    # the rule does not apply when one of these finds evidence (e.g. a documented exception)
    unless: list[Matcher] = []
    # severity and message when the facts it found rest only on unverified table rows
    unverified: Unverified | None = None

    def label(self) -> str:
        return f"rule {self.finding!r}"


class ModifierRule(_Strict):
    code: str
    reason: str
    source: str
    when: list[Matcher] = []
    any: list[Matcher] = Field(min_length=1)
    unless: list[Matcher] = []
    # modifiers that cannot go with this one on the line: when the documentation supports
    # both, this one is billed, the excluded one is not, and the engine's modifier_conflicts
    # fact names both (a rule turns it into a finding)
    excludes: list[ModifierName] = []

    def label(self) -> str:
        return f"modifier {self.code!r}"


class CodeGroup(_Strict):
    system: SystemName
    codes: list[str] = []
    # [low, high], inclusive (a YAML list: a strict tuple is not one)
    ranges: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = []


class ValueSetDef(_Strict):
    description: str
    source: str
    include: list[CodeGroup] = Field(min_length=1)
    exclude: list[CodeGroup] = []


class ProcedureDef(_Strict):
    system: SystemName
    code: str
    display: str
    # a Procedure with one of these statuses is no record at all: it is not a case
    void_status: list[str] = ["entered-in-error"]


class Canonical(_Strict):
    finding_system: str
    identifier_system: str
    # a payer finding's policy and criterion, as DetectedIssue.code codings
    payer_policy_system: str | None = None
    payer_criterion_system: str | None = None


class ClassInference(_Strict):
    source: str
    system: str
    map: dict[str, str]


class PlaceOfService(_Strict):
    infer_from_encounter_class: ClassInference
    names: dict[str, str] = {}


class CountFact(_Strict):
    observations: ValueSetName
    body_sites: ValueSetName
    patterns: PatternName
    # a count of the lesions treated in this session ("Lesions treated today: 1"): when the
    # text has one, the last one stated wins over counts of lesions seen on imaging
    treated: PatternName | None = None
    # a tumor named in the singular with its segment ("the segment 6 HCC", "a 3.1 cm HCC in
    # segment 7"): when no count is stated and no tumors in the plural are affirmed, each
    # segment so named is one tumor (how a coder counts a note that never says "one")
    single: PatternName | None = None
    plural: PatternName | None = None
    # nothing was treated in this session: no tumor is counted from the ones it names
    none_treated: PatternName | None = None
    # a treatment in the sentence ("RFA of", "was ablated"): the tumors named there were
    # treated, the ones named elsewhere were only seen
    treatment: PatternName | None = None
    # one tumor said to be the only one treated, without a number ("only the segment VI
    # metastasis was ablated today"): a treated count of one
    alone: PatternName | None = None


class SizeFact(_Strict):
    observations: ValueSetName
    patterns: PatternName


class DiagnosisFacts(_Strict):
    """Which Conditions are diagnoses a professional claim may code (ICD-10-CM guideline IV.H)."""

    source: str
    uncertain_verification: list[str]
    # Conditions with these verification statuses are not evidence of anything: rules and
    # the Claim never see them (rules.evaluate drops them from the case)
    void_verification: list[str] = ["refuted", "entered-in-error"]
    # Condition.clinicalStatus values of a condition that is no longer there to treat: not a
    # diagnosis of the service, stated reason or not
    inactive_clinical: list[str] = ["inactive", "resolved", "remission"]


class UnitsFact(_Strict):
    """Units of the pack's code per patient and date of service when no MUE row is loaded."""

    source: str
    default_max_units: int = Field(default=1, ge=1)
    # Procedure.status values of another same-code Procedure that count as a unit (a procedure
    # in preparation, in progress or on hold has not been rendered)
    counted_status: list[str] = ["completed", "stopped"]


class DocumentedFact(_Strict):
    """A fact established by an affirmed pattern group in the text of `in` sources."""

    patterns: PatternName
    in_: TextSources | None = Field(default=None, alias="in")


class GuidanceFacts(_Strict):
    """Ablation guidance vs needle-placement guidance, and the code that replaces each needle code."""

    ablation: ValueSetName
    needle_placement: ValueSetName
    crosswalk: CrosswalkName
    # ablation-guidance codes describe guidance *and monitoring* of the ablation: a needle
    # code is pointed at its ablation code only when this pattern group documents monitoring
    monitoring: DocumentedFact | None = None


class GlobalPeriodFacts(_Strict):
    """Earlier surgeries whose global days the tables do not know, within `lookback_days`."""

    source: str
    # the codes that are surgeries (a global period is possible); the pack's code always is
    surgery: ValueSetName
    lookback_days: int = Field(default=90, ge=1)


class StatedDiagnosis(_Strict):
    """A condition the narrative may state, the ICD-10-CM code(s) it maps to, and the coded
    prefixes that already cover it."""

    patterns: PatternName
    codes: list[str] = Field(min_length=1)
    covered_by: list[str] = Field(min_length=1)


class StatedDiagnoses(_Strict):
    """The coder-maintained crosswalk behind diagnosis-not-coded (billing.review)."""

    source: str
    in_: TextSources | None = Field(default=None, alias="in")
    entries: list[StatedDiagnosis] = Field(min_length=1)


class AdditionalCode(_Strict):
    """A "use additional code" / "code also" note of the tabular, and the prefixes that
    satisfy it (billing.review)."""

    when: list[str] = Field(min_length=1)  # coded prefixes the note belongs to
    satisfied_by: list[str] = Field(min_length=1)
    suggest: str  # what to code, as the coder reads it
    # the note applies only when the text affirms what it asks to identify (the hepatitis,
    # the alcohol use); absent: it always applies (a secondary's primary)
    documented: PatternName | None = None


class AdditionalCodes(_Strict):
    source: str
    notes: list[AdditionalCode] = Field(min_length=1)


class ServicesNotBilled(_Strict):
    """Session services by the operator that are separately reportable (billing.review)."""

    source: str
    reportable: ValueSetName
    # guidance documented in the text with no guidance Procedure: word -> guidance code
    narrative_guidance: PatternName | None = None
    guidance_words: dict[str, str] = {}


class DocumentationConflicts(_Strict):
    """Structured values checked against the note (billing.review)."""

    source: str
    in_: TextSources | None = Field(default=None, alias="in")
    location_patterns: PatternName
    # Procedure.bodySite code -> segment number (Couinaud)
    segments: CrosswalkName
    size_patterns: PatternName | None = None
    size_tolerance_cm: float = 0.5
    # a size in a sentence naming one of these measures something else than the tumor
    size_not_with: list[str] = []
    # Procedure.bodySite code (segment or lobe) -> the lobe it lies in, and the words a note
    # names each lobe by: a note whose lobes are all other than the coded ones disagrees
    lobe_of: CrosswalkName | None = None
    lobe_words: dict[str, list[str]] = {}
    # the tumor count a structured record states (one size Observation per lesion, from two
    # on; distinct coded segments as a floor) against the count the note states
    count_patterns: PatternName | None = None


class Histology(_Strict):
    """One histology a payer policy names: coded by `valueset` (beside a `with_primary` code
    when given: C78.7 is a colorectal metastasis only beside a colorectal primary), else
    stated in the text (`patterns`, affirmed)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    valueset: ValueSetName | None = None
    with_primary: ValueSetName | None = None
    patterns: PatternName | None = None
    # tried only when no other histology is coded or stated (C78.7 of an unnamed primary)
    last_resort: bool = False


class StatusFact(_Strict):
    """A yes/no fact a policy needs: `present` when a code of `valueset` or an affirmed
    `patterns` mention documents it, `absent` when an affirmed `absent_patterns` mention or
    a negated `patterns` mention does, unknown otherwise (ConText decides what counts)."""

    valueset: ValueSetName | None = None
    # where its codes count: any Condition of the case, or only a reason the Procedure states
    # (Procedure.reason: COPD on the problem list is no reason not to resect)
    coded_in: Literal["conditions", "reasons"] = "conditions"
    patterns: PatternName | None = None
    absent_patterns: PatternName | None = None
    # a negated `patterns` mention ("no extrahepatic disease") documents absence
    negated_is_absent: bool = True
    # what a record that says nothing means: unknown (ask), or absent (an ablation is no
    # bridge to transplant unless the record says so)
    unstated: Literal["unknown", "absent"] = "unknown"


class ChildPughFact(_Strict):
    """Child-Pugh class: a score Observation (5-6 A, 7-9 B, 10-15 C, or a coded class), else
    an affirmed text mention ("Child-Pugh B7")."""

    observations: ValueSetName
    patterns: PatternName


class PayerFacts(_Strict):
    """Where the facts payer policies decide on are found (fhir_adapter.payers.facts)."""

    source: str
    in_: TextSources | None = Field(default=None, alias="in")
    histology: list[Histology] = Field(min_length=1)
    extrahepatic_disease: StatusFact
    portal_vein_occlusion: StatusFact
    transplant_listed: StatusFact
    not_resection_candidate: StatusFact
    resection_declined: StatusFact
    all_foci_treatable: StatusFact
    net_functioning: StatusFact
    net_symptoms_after_systemic: StatusFact
    child_pugh: ChildPughFact
    liver_share: PatternName


class PayerFinding(_Strict):
    finding: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    severity: Severity
    actcode: str | None = None
    # the finding's message; {policy}, {criterion}, {text}, {value} are filled in
    message: str
    source: str


class PriorAuthorization(_Strict):
    """What an approved prior authorization looks like (fhir_adapter.payers.prior_auth):
    a ClaimResponse with `use` preauthorization whose review action is approved, else
    whose outcome is complete with a preAuthRef."""

    source: str
    review_action: str  # the PAS extension URL on item.adjudication
    review_action_code: str  # its code sub-extension
    approved: list[str] = Field(min_length=1)  # X12 306 codes: certified in total, modified
    outcomes: list[str] = Field(min_length=1)  # ClaimResponse.outcome values that decide
    period_extensions: list[str] = []  # item extensions holding the authorized period


class PayerFindings(_Strict):
    """The findings a payer overlay raises (fhir_adapter.payers.evaluate)."""

    not_met: PayerFinding
    undocumented: PayerFinding
    prior_auth_missing: PayerFinding
    prior_authorization: PriorAuthorization


class Facts(_Strict):
    tumor_count: CountFact
    tumor_max_size_cm: SizeFact
    diagnoses: DiagnosisFacts | None = None
    units: UnitsFact | None = None
    guidance: GuidanceFacts | None = None
    distinct_service: DocumentedFact | None = None
    stated_diagnoses: StatedDiagnoses | None = None
    additional_codes: AdditionalCodes | None = None
    services_not_billed: ServicesNotBilled | None = None
    documentation_conflicts: DocumentationConflicts | None = None
    global_period: GlobalPeriodFacts | None = None
    payer: PayerFacts | None = None


class CodingDef(_Strict):
    system: SystemName
    code: str
    display: str | None = None


class SessionLines(_Strict):
    """How the session's other lines follow the pack's line (billing.session)."""

    source: str
    # a guidance Procedure in another status (preparation, not-done...) was not performed
    performed_status: list[str] = ["completed", "stopped"]
    # modifiers on the pack's line (reduced, discontinued) that reduce its guidance line too
    reduced_by: list[str] = ["52", "53"]
    reduced_modifier: str = "52"
    # a stopped Procedure's statusReason / complication codings (SNOMED CT) -> ICD-10-CM:
    # the complication that stopped the session is coded
    complication_crosswalk: CrosswalkName | None = None
    # the Z53 code (procedure not carried out) when the text says nothing was done
    not_carried_out_code: str | None = None
    not_carried_out: PatternName | None = None


class TeachingPhysician(_Strict):
    """A resident or fellow took part: the teaching physician's lines carry `modifier` for
    the payers named (billing.session)."""

    source: str
    modifier: str
    # words in performer.function (text or display) or PractitionerRole.code marking a trainee
    trainee_words: list[str] = Field(min_length=1)
    # words naming a payer that requires the modifier: Coverage.type / class / payor's name
    payers: list[str] = Field(min_length=1)


class SpreadWithinPrimary(_Strict):
    """ICD-10-CM prefixes: a `secondary` code beside a `primary` one is left off the Claim
    unless an `other_primary` code (another primary, or its history) is coded too."""

    source: str
    primary: list[str] = Field(min_length=1)
    secondary: list[str] = Field(min_length=1)
    other_primary: list[str] = []


class ClaimConfig(_Strict):
    primary_diagnoses: ValueSetName
    guidance_items: ValueSetName
    diagnosis_crosswalk: CrosswalkName | None = None
    max_diagnosis_pointers: int = Field(default=4, ge=1, le=12)
    diagnosis_system: SystemName
    place_of_service_system: SystemName
    max_diagnoses: int = Field(default=12, ge=1, le=12)
    facility_pos: ValueSetName | None = (
        None  # value set: POS codes that are facilities (Claim.facility, 26)
    )
    professional_component_modifier: str | None = None  # on PC/TC guidance lines in a facility
    distinct_service_modifier: str | None = None  # on a PTP column-2 line documented as distinct
    care_team_role: CodingDef | None = None
    principal_diagnosis_type: CodingDef | None = None
    secondary_diagnosis_type: CodingDef | None = None
    supporting_info_category: CodingDef | None = None
    # modifiers whose documentation goes with the Claim as supportingInfo (22: the statement)
    supporting_info_for: list[str] = ["22"]
    taxonomy_system: SystemName | None = None
    # value set of Procedure.performer.function codes that mark the rendering provider
    # (the operator); see billing.rendering
    rendering_functions: ValueSetName | None = None
    # when the rendering provider has several taxonomies, one in this value set is reported
    taxonomy_preferred: ValueSetName | None = None
    currency: str = "USD"
    session_lines: SessionLines | None = None
    teaching_physician: TeachingPhysician | None = None
    spread_within_primary: SpreadWithinPrimary | None = None


class PackModel(_Strict):
    pack: str
    version: str
    title: str
    procedure: ProcedureDef
    canonical: Canonical
    systems: dict[str, str]
    # other URIs data writes a system under (CPT's OID in documents converted from C-CDA):
    # read as that system wherever codes are compared
    system_aliases: dict[str, list[str]] = {}
    valuesets: dict[str, ValueSetDef]
    claim: ClaimConfig
    crosswalks: dict[str, dict[str, str]] = {}
    place_of_service: PlaceOfService
    text: TextConfig
    facts: Facts
    severity_order: list[Severity] = ["low", "moderate", "high"]
    default_block_on: Severity = "high"
    rules: list[Rule] = Field(min_length=1)
    modifiers: list[ModifierRule] = []
    payer_findings: PayerFindings | None = None

    def names(self) -> dict[str, set[str]]:
        """What each kind of `Ref` may name: the pack's own entries and the engine's registries."""
        return {
            "valuesets": set(self.valuesets),
            "patterns": set(self.text.targets) | set(self.text.patterns),
            "systems": set(self.systems),
            "crosswalks": set(self.crosswalks),
            "facts": set(FACTS),
            "collections": set(COLLECTIONS),
            "text_sources": set(TEXT_SOURCES),
            "modifiers": {m.code for m in self.modifiers},
        }

    @model_validator(mode="after")
    def _references_resolve(self) -> PackModel:
        names = self.names()
        problems = []
        for where, kind, value in references(self, "pack"):
            if kind == "systems" and ("://" in value or value.startswith("urn:")):
                continue  # a full system URL needs no alias
            if value not in names[kind]:
                listed = (
                    ""
                    if kind in ("valuesets", "patterns")
                    else f" (one of {', '.join(sorted(names[kind]))})"
                )
                problems.append(f"{where}: unknown {NOUNS[kind]} {value!r}{listed}")
        problems += self._alias_problems()
        seen: set[str] = set()
        for rule in self.rules:
            if rule.finding in seen:
                problems.append(f"{rule.label()}: finding code defined twice")
            seen.add(rule.finding)
        excludes = {m.code: set(m.excludes) for m in self.modifiers}
        for mod in self.modifiers:
            for other in mod.excludes:
                if other == mod.code or mod.code in excludes.get(other, set()):
                    problems.append(
                        f"{mod.label()}: excludes {other!r}, which excludes it (no precedence)"
                    )
        if self.default_block_on not in self.severity_order:
            problems.append("default_block_on is not in severity_order")
        if problems:
            raise ValueError("; ".join(dict.fromkeys(problems)))
        return self

    def _alias_problems(self) -> list[str]:
        problems = []
        urls = set(self.systems.values())
        named: dict[str, str] = {}
        for name, aliases in self.system_aliases.items():
            if name not in self.systems:
                problems.append(
                    f"system_aliases: unknown system alias {name!r} "
                    f"(one of {', '.join(sorted(self.systems))})"
                )
            for uri in aliases:
                where = f"system_aliases.{name}: {uri!r}"
                if not (uri.startswith("urn:") or "://" in uri) or uri != uri.strip():
                    problems.append(f"{where} is not a URI (urn:oid:... or http...)")
                elif uri in urls:
                    problems.append(f"{where} is the URL of a system in `systems`")
                elif uri in named:
                    problems.append(f"{where} is an alias of {named[uri]!r} already")
                named.setdefault(uri, name)
        return problems


def _ref_of(field: FieldInfo) -> Ref | None:
    for meta in field.metadata:
        if isinstance(meta, Ref):
            return meta
    return _ref_in(field.annotation)


def _ref_in(annotation: Any) -> Ref | None:
    if get_origin(annotation) is Annotated:
        found = next((m for m in get_args(annotation)[1:] if isinstance(m, Ref)), None)
        if found is not None:
            return found
    for arg in get_args(annotation):
        found = _ref_in(arg)
        if found is not None:
            return found
    return None


def references(model: BaseModel, where: str) -> Iterator[tuple[str, str, str]]:
    """(where, kind, name) for every Ref-typed value in a model tree."""
    label = getattr(model, "label", None)
    here = label() if callable(label) else where
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        ref = _ref_of(field)
        if ref is not None and value is not None:
            for item in [value] if isinstance(value, str) else value:
                yield here, ref.kind, item
        children: list[tuple[str, Any]] = []
        if isinstance(value, BaseModel):
            children = [(here if here != "pack" else name, value)]
        elif isinstance(value, list):
            children = [(here if here != "pack" else name, v) for v in value]
        elif isinstance(value, dict):
            noun = "value set" if name == "valuesets" else name
            children = [(f"{noun} {k!r}", v) for k, v in value.items()]
        for child_where, child in children:
            if isinstance(child, BaseModel):
                yield from references(child, child_where)
