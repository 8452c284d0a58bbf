"""Codings inside CodeableConcepts, and code normalisation as real data needs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fhir_adapter.fhir.elements import Resource, values_at
from fhir_adapter.fhir.systems import ICD10CM


def codings(value: Any) -> Iterator[dict[str, Any]]:
    """The Codings inside a CodeableConcept, a Coding, or lists of either.

    A list, not a generator per level: every rule and fact asks this of every resource."""
    if isinstance(value, dict):
        return iter(_of_concept(value))
    if not isinstance(value, list):
        return iter(())
    out: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, dict):
            out.extend(_of_concept(item))
        elif isinstance(item, list):
            out.extend(codings(item))
    return iter(out)


def _of_concept(value: dict[str, Any]) -> list[dict[str, Any]]:
    coding = value.get("coding")
    if isinstance(coding, list):
        return [c for c in coding if isinstance(c, dict)]
    if "code" in value or "system" in value:
        return [value]
    return []


def first_code(value: Any) -> str | None:
    """The first code of a CodeableConcept (a status such as clinicalStatus), stripped."""
    for coding in codings(value):
        code = coding.get("code")
        if isinstance(code, str):
            return code.strip()
    return None


def has_coding(resource: Resource, path: tuple[str, ...], system: str, code: str) -> bool:
    """True when a CodeableConcept at `path` carries system|code."""
    for cc in values_at(resource, path):
        for coding in (cc.get("coding") or []) if isinstance(cc, dict) else ():
            if isinstance(coding, dict) and coding.get("system") == system:
                value = coding.get("code")
                if isinstance(value, str) and value.strip() == code:
                    return True
    return False


def normalize_code(system: str, code: str) -> str:
    """ICD-10-CM is compared without the dot and in upper case (`C220` == `C22.0`)."""
    code = code.strip()
    if system == ICD10CM:
        return code.replace(".", "").upper()
    return code


def dotted_icd10cm(code: str) -> str:
    """`C220` -> `C22.0`: the form FHIR and claims print."""
    bare = normalize_code(ICD10CM, code)
    return bare if len(bare) <= 3 else f"{bare[:3]}.{bare[3:]}"
