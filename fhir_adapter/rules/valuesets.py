"""Value sets compiled to set lookups, with the code normalisation real data needs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


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


@dataclass
class ValueSet:
    """Codes by system, plus numeric ranges (CPT sections), minus exclusions."""

    name: str
    codes: dict[str, set[str]] = field(default_factory=dict)
    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    excluded: dict[str, set[str]] = field(default_factory=dict)

    def contains(self, system: str | None, code: str | None) -> bool:
        if not system or not isinstance(code, str):
            return False
        norm = normalize_code(system, code)
        if norm in self.excluded.get(system, ()):
            return False
        if norm in self.codes.get(system, ()):
            return True
        if norm.isdigit():
            value = int(norm)
            return any(lo <= value <= hi for lo, hi in self.ranges.get(system, ()))
        return False


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
