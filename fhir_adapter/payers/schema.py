"""The shape of a payer overlay (mappings/payers/*.yaml), checked when it is loaded.

An overlay is layered on the rule pack: its criteria are written in the pack's matcher
language (codes, text, fhirpath, value, fact) and may name the pack's value sets, pattern
groups and facts; `all` and `any` nest them where a policy says "and" and "or".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from fhir_adapter.pack.schema import MATCHER_KINDS, Matcher


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AllOf(_Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    any: list[Condition] = Field(min_length=1)


def _condition_kind(value: Any) -> str | None:
    keys = (*MATCHER_KINDS, "all", "any")
    if isinstance(value, dict):
        present = [k for k in keys if k in value]
        if len(present) != 1:
            return None
        return present[0] if present[0] in ("all", "any") else "matcher"
    if isinstance(value, AllOf):
        return "all"
    if isinstance(value, AnyOf):
        return "any"
    return "matcher" if isinstance(value, BaseModel) else None


Condition = Annotated[
    Union[  # noqa: UP007 - Tag needs the members spelled out
        Annotated[AllOf, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[Matcher, Tag("matcher")],
    ],
    Discriminator(
        _condition_kind,
        custom_error_type="condition",
        custom_error_message=(
            "a condition has exactly one of all, any, codes, text, fhirpath, value, fact"
        ),
    ),
]

AllOf.model_rebuild()
AnyOf.model_rebuild()


class Identifier(_Strict):
    """An Organization.identifier of the payer (payer ID, NAIC code); no system: any."""

    system: str | None = None
    value: str


class CoverageCode(_Strict):
    """A Coverage.class (type + value) or Coverage.type code the policy is limited to."""

    type: str | None = None
    value: str


class AppliesTo(_Strict):
    identifiers: list[Identifier] = []
    # regular expressions searched (case-insensitive) in the payor Organization's name
    names: list[str] = []
    # the policy applies only to these plans or lines of business (Coverage.class / type)
    coverage_class: list[CoverageCode] = []
    coverage_type: list[CoverageCode] = []


class Criterion(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    text: str  # as the policy states it
    source: str  # the policy's tag, [BCBSA-7.01.91]
    # the criterion applies only when all of these hold (a histology, a branch)
    when: list[Condition] = []
    # met when all of these hold: each is met, not met, or cannot be decided from the record
    met: list[Condition] = Field(min_length=1)
    # the question a coder or prior-auth nurse sends when the record cannot decide it
    query: str | None = None


class Overlay(_Strict):
    policy: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    title: str
    source: str  # the policy's tag in mappings/sources.yaml
    url: str | None = None
    # the date the source states (effective, published, reviewed), or "not seen"
    date: str
    applies_to: AppliesTo
    # among overlays that match a case equally well, the higher priority wins (a plan's own
    # policy over its association's)
    priority: int = 0
    prior_authorization: Literal["required", "not-required", "unknown"]
    # the procedure codes the policy covers (the pack's code not among them: not covered)
    modalities: list[str] = Field(min_length=1)
    criteria: list[Criterion] = []
