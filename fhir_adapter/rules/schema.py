"""The shape of a rule pack (mappings/*.yaml), checked when the pack is loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["low", "moderate", "high"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _as_path(value: object) -> object:
    return value.split(".") if isinstance(value, str) else value


class CodesMatch(_Strict):
    """Codings found at `path` of the resources in `from` that are in `valueset`."""

    from_: list[str] = Field(alias="from")
    path: list[str]
    valueset: str

    _lists = field_validator("from_", mode="before")(_as_list)

    _paths = field_validator("path", mode="before")(_as_path)


class TextMatch(_Strict):
    """A named pattern group affirmed (not negated) in the text of `in` sources."""

    patterns: str
    in_: list[str] | None = Field(default=None, alias="in")


class FhirPathMatch(_Strict):
    """A FHIRPath expression, compiled once, true on some resource of `from`."""

    from_: list[str] = Field(alias="from")
    expression: str

    _lists = field_validator("from_", mode="before")(_as_list)


class ValueMatch(_Strict):
    """A primitive at `path` whose value is one of `in` (or, with `not_in`, absent or none of them)."""

    from_: list[str] = Field(alias="from")
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
    """A fact the engine derives (place of service, coverage, tumor count...)."""

    name: str
    valueset: str | None = None
    min: float | None = None
    max: float | None = None


class Matcher(_Strict):
    codes: CodesMatch | None = None
    text: TextMatch | None = None
    fhirpath: FhirPathMatch | None = None
    value: ValueMatch | None = None
    fact: FactMatch | None = None

    def kind(self) -> str:
        set_ = [k for k in ("codes", "text", "fhirpath", "value", "fact") if getattr(self, k)]
        if len(set_) != 1:
            raise ValueError("a matcher has exactly one of codes, text, fhirpath, value, fact")
        return set_[0]


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


class ModifierRule(_Strict):
    code: str
    reason: str
    source: str
    when: list[Matcher] = []
    any: list[Matcher] = Field(min_length=1)
    unless: list[Matcher] = []


class CodeGroup(_Strict):
    system: str
    codes: list[str] = []
    ranges: list[tuple[str, str]] = []


class ValueSetDef(_Strict):
    description: str
    source: str
    include: list[CodeGroup] = Field(min_length=1)
    exclude: list[CodeGroup] = []


class ProcedureDef(_Strict):
    system: str
    code: str
    display: str


class Canonical(_Strict):
    finding_system: str
    identifier_system: str


class ClassInference(_Strict):
    source: str
    system: str
    map: dict[str, str]


class PlaceOfService(_Strict):
    infer_from_encounter_class: ClassInference
    names: dict[str, str] = {}


class TextConfig(_Strict):
    window: int = Field(default=3, ge=0, le=20)
    negation_pre: list[str] = []
    negation_post: list[str] = []
    history_pre: list[str] = []
    terminators: list[str] = []
    patterns: dict[str, list[str]]
    numbers: dict[str, int] = {}


class CountFact(_Strict):
    observations: str
    body_sites: str
    patterns: str


class SizeFact(_Strict):
    observations: str
    patterns: str


class DiagnosisFacts(_Strict):
    """Which Conditions are diagnoses a professional claim may code (ICD-10-CM guideline IV.H)."""

    source: str
    uncertain_verification: list[str]


class UnitsFact(_Strict):
    """Units of the pack's code per patient and date of service when no MUE row is loaded."""

    source: str
    default_max_units: int = Field(default=1, ge=1)


class GuidanceFacts(_Strict):
    """Ablation guidance vs needle-placement guidance, and the code that replaces each needle code."""

    ablation: str
    needle_placement: str
    crosswalk: str


class DocumentedFact(_Strict):
    """A fact established by an affirmed pattern group in the text of `in` sources."""

    patterns: str
    in_: list[str] | None = Field(default=None, alias="in")


class Facts(_Strict):
    tumor_count: CountFact
    tumor_max_size_cm: SizeFact
    diagnoses: DiagnosisFacts | None = None
    units: UnitsFact | None = None
    guidance: GuidanceFacts | None = None
    distinct_service: DocumentedFact | None = None


class CodingDef(_Strict):
    system: str
    code: str
    display: str | None = None


class ClaimConfig(_Strict):
    primary_diagnoses: str
    guidance_items: str
    diagnosis_crosswalk: str | None = None
    max_diagnosis_pointers: int = Field(default=4, ge=1, le=12)
    diagnosis_system: str
    place_of_service_system: str
    max_diagnoses: int = Field(default=12, ge=1, le=12)
    facility_pos: str | None = None  # value set: POS codes that are facilities (Claim.facility, 26)
    professional_component_modifier: str | None = None  # on PC/TC guidance lines in a facility
    distinct_service_modifier: str | None = None  # on a PTP column-2 line documented as distinct
    care_team_role: CodingDef | None = None
    principal_diagnosis_type: CodingDef | None = None
    secondary_diagnosis_type: CodingDef | None = None
    supporting_info_category: CodingDef | None = None
    taxonomy_system: str | None = None
    currency: str = "USD"


class PackModel(_Strict):
    pack: str
    version: str
    title: str
    procedure: ProcedureDef
    canonical: Canonical
    systems: dict[str, str]
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
