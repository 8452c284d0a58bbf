"""Codings inside CodeableConcepts, and code normalisation as real data needs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fhir_adapter.fhir.elements import Resource, values_at
from fhir_adapter.fhir.systems import ICD10CM


def codings(value: Any) -> Iterator[dict[str, Any]]:
    """The Codings inside a CodeableConcept, a Coding, or lists of either."""
    if isinstance(value, list):
        for item in value:
            yield from codings(item)
    elif isinstance(value, dict):
        if isinstance(value.get("coding"), list):
            for coding in value["coding"]:
                if isinstance(coding, dict):
                    yield coding
        elif "code" in value or "system" in value:
            yield value


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
