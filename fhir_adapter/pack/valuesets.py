"""Value sets compiled to set lookups, with the code normalisation real data needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_adapter.fhir.codings import normalize_code


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
