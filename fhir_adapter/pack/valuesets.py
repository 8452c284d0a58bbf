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
    # alias URI (CPT's OID) -> the URL of the system it names (the pack's system_aliases)
    aliases: dict[str, str] = field(default_factory=dict)
    # answers given, by (system, code): cases ask about the same few codes again and again
    _answers: dict[tuple[str, str], bool] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def contains(self, system: str | None, code: str | None) -> bool:
        if not system or not isinstance(code, str):
            return False
        system = self.aliases.get(system, system)
        key = (system, code)
        answer = self._answers.get(key)
        if answer is None:
            if len(self._answers) >= 65_536:  # hostile input: a bounded memo
                self._answers.clear()
            answer = self._answers[key] = self._contains(system, code)
        return answer

    def _contains(self, system: str, code: str) -> bool:
        norm = normalize_code(system, code)
        if norm in self.excluded.get(system, ()):
            return False
        if norm in self.codes.get(system, ()):
            return True
        if norm.isdigit():
            value = int(norm)
            return any(lo <= value <= hi for lo, hi in self.ranges.get(system, ()))
        return False
