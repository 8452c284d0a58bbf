"""The services this CDS Hooks endpoint offers, and their prefetch templates.

Templates use only what CDS Hooks 2.0 allows in tokens: root-level primitive
context fields (`{{context.patientId}}`, `{{context.encounterId}}`). Includes
and revincludes bring what the engine needs for a case in as few queries as the
EHR can run; anything a template cannot reach is read from `fhirServer` later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.fhir.elements import FHIR_ID

ORDER_SIGN = "cpt-47382-order-sign"
APPOINTMENT_BOOK = "cpt-47382-appointment-book"
ENCOUNTER_DISCHARGE = "cpt-47382-encounter-discharge"

_PATIENT = "Patient/{{context.patientId}}"
_COVERAGE = "Coverage?beneficiary=Patient/{{context.patientId}}&_include=Coverage:payor"
_CONDITIONS = "Condition?patient=Patient/{{context.patientId}}"
_ENCOUNTER = (
    "Encounter?_id={{context.encounterId}}&_include=Encounter:diagnosis"
    "&_include=Encounter:location&_include=Encounter:service-provider"
)
_IN_ENCOUNTER = "encounter=Encounter/{{context.encounterId}}"


@dataclass(frozen=True)
class Service:
    """One entry of the discovery document; `required` are the prefetch keys it cannot do without."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str]
    required: tuple[str, ...]
    also_hooks: tuple[str, ...] = field(default=())
    usage: str | None = None

    def discovery(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": dict(self.prefetch),
        }
        if self.usage:
            out["usageRequirements"] = self.usage
        return out

    def accepts(self, hook: str) -> bool:
        return hook == self.hook or hook in self.also_hooks


SERVICES: dict[str, Service] = {
    s.id: s
    for s in (
        Service(
            ORDER_SIGN,
            "order-sign",
            "CPT 47382 order check",
            "Before a ServiceRequest for percutaneous RF ablation of liver tumor(s) (CPT 47382) "
            "is signed: is there a liver-tumor diagnosis, active coverage and a covered setting; "
            "what the operative note must document. Adds the Da Vinci CRD coverage-information "
            "extension to the draft order. Also answers order-select.",
            {
                "patient": _PATIENT,
                "coverage": _COVERAGE,
                "conditions": _CONDITIONS,
                "encounter": _ENCOUNTER,
            },
            required=("patient", "coverage", "conditions"),
            also_hooks=("order-select",),
            usage="Register it for order-sign and, if wanted, order-select (same id).",
        ),
        Service(
            APPOINTMENT_BOOK,
            "appointment-book",
            "CPT 47382 appointment check",
            "When an Appointment for CPT 47382 is booked: the same checks as the order-sign "
            "service, with the coverage-information extension on the Appointment.",
            {
                "patient": _PATIENT,
                "coverage": _COVERAGE,
                "conditions": _CONDITIONS,
                "encounter": _ENCOUNTER,
            },
            required=("patient", "coverage", "conditions"),
        ),
        Service(
            ENCOUNTER_DISCHARGE,
            "encounter-discharge",
            "CPT 47382 coding integrity at discharge",
            "Evaluates every CPT 47382 Procedure of the encounter with the full rule pack: one "
            "card per finding and, when nothing blocks billing, a suggestion that creates the "
            "draft Claim.",
            {
                "patient": _PATIENT,
                "encounter": _ENCOUNTER,
                # Split in three: servers cap how many includes one search may follow.
                "procedures": (
                    f"Procedure?{_IN_ENCOUNTER}&_include=Procedure:location"
                    "&_include=Procedure:reason-reference"
                ),
                "performers": (
                    f"Procedure?{_IN_ENCOUNTER}&_include=Procedure:performer"
                    "&_revinclude:iterate=PractitionerRole:practitioner"
                    "&_include:iterate=PractitionerRole:organization"
                ),
                "procedure-results": (
                    f"Procedure?{_IN_ENCOUNTER}&_revinclude=Observation:part-of"
                    "&_revinclude=DocumentReference:related"
                ),
                # the patient's other Procedures: units per date across encounters and
                # global periods (2.0 tokens cannot say "up to today", so all of them), with
                # their performers' roles and groups (global-period scope)
                "patient-procedures": (
                    "Procedure?subject=Patient/{{context.patientId}}"
                    "&_include=Procedure:performer"
                    "&_revinclude:iterate=PractitionerRole:practitioner"
                    "&_include:iterate=PractitionerRole:organization"
                ),
                # and those recorded by PractitionerRole: the role's Practitioner and group
                # (apart: one search following roles both ways passes the include scope
                # servers allow, e.g. depth 5 on the test server)
                "role-performers": (
                    "Procedure?subject=Patient/{{context.patientId}}"
                    "&_include=Procedure:performer"
                    "&_include:iterate=PractitionerRole:practitioner"
                    "&_include:iterate=PractitionerRole:organization"
                ),
                "conditions": f"Condition?{_IN_ENCOUNTER}",
                "observations": f"Observation?{_IN_ENCOUNTER}",
                "reports": f"DiagnosticReport?{_IN_ENCOUNTER}&_include=DiagnosticReport:result",
                "documents": f"DocumentReference?{_IN_ENCOUNTER}",
                "coverage": _COVERAGE,
            },
            required=(
                "patient",
                "encounter",
                "procedures",
                "performers",
                "procedure-results",
                "patient-procedures",
                "role-performers",
                "conditions",
                "observations",
                "reports",
                "documents",
                "coverage",
            ),
        ),
    )
}


def query_type(template: str) -> str:
    """The resource type a prefetch query returns (alone for a read, as matches of a search),
    which is what a prefetched value for its key may hold."""
    return template.partition("?")[0].partition("/")[0]


def discovery_document() -> dict[str, Any]:
    return {"services": [s.discovery() for s in SERVICES.values()]}


_TOKEN = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
# a userId is a relative reference "Type/id" (CDS Hooks: Practitioner,
# PractitionerRole, Patient or RelatedPerson)
USER_REFERENCE = re.compile(
    r"(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}"
)
ID_FIELDS = ("patientId", "encounterId")


def valid_context_value(name: str, value: Any) -> bool:
    """Whether a context id field holds what it must: a FHIR id (a user reference for userId)."""
    if not isinstance(value, str):
        return False
    if name == "userId":
        return USER_REFERENCE.fullmatch(value) is not None
    return FHIR_ID.fullmatch(value) is not None


def render(template: str, context: dict[str, Any]) -> str | None:
    """The query with its tokens filled from the context; None when a token has no value
    (e.g. an order-sign without encounterId), in which case the key does not apply."""
    missing = False

    def fill(m: re.Match[str]) -> str:
        nonlocal missing
        name = m.group(1)
        value = context.get(name.removeprefix("context.")) if name.startswith("context.") else None
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            missing = True
            return ""
        text = str(value)
        field_name = name.removeprefix("context.")
        if field_name in (*ID_FIELDS, "userId") and not valid_context_value(field_name, text):
            missing = True  # not an id (query syntax, a list, too long): never put in a query
            return ""
        return text

    out = _TOKEN.sub(fill, template)
    return None if missing else out
