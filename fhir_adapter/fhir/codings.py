"""Codings inside CodeableConcepts, and code normalisation as real data needs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from fhir_adapter.fhir.elements import Resource, values_at
from fhir_adapter.fhir.systems import ICD10CM

Systems = str | tuple[str, ...]
"""A code system as data writes it: its URL, or its URL and the aliases (an OID) that
name the same system (a rule pack's `system_aliases`)."""


def in_system(value: Any, system: Systems) -> bool:
    """Whether a Coding's `system` value names `system` (under its URL or an alias)."""
    if isinstance(system, str):
        return bool(value == system)
    return isinstance(value, str) and value in system


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


def has_coding(resource: Resource, path: tuple[str, ...], system: Systems, code: str) -> bool:
    """True when a CodeableConcept at `path` carries system|code (`system`: its URL, or
    its URL and aliases)."""
    for cc in values_at(resource, path):
        for coding in (cc.get("coding") or []) if isinstance(cc, dict) else ():
            if isinstance(coding, dict) and in_system(coding.get("system"), system):
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


def _kind(value: Any) -> str:
    """What a JSON value is, for a message ('a number (47382)', 'a string')."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object" if value else "null"


def miscoded(value: Any, system: Systems, code: str, path: str = "Procedure.code") -> str | None:
    """Why a resource's CodeableConcept may be meant as system|code and is not read as it:
    a shape no code can be read from (a list, a number or a string where FHIR has an
    object or a list; a string only when it holds `code`), a code that is not a string
    and holds `code`, or `code` under another system. None when it carries system|code,
    or when what can be read of it is another code."""
    if value is None:
        return None
    mentions = code in orjson.dumps(value).decode()
    if not isinstance(value, dict):
        if mentions or not isinstance(value, str):
            return f"{path} is {_kind(value)}, not a CodeableConcept"
        return None
    coding = value.get("coding")
    if coding is None:
        return None  # a text alone is no coding, of this code or another
    if not isinstance(coding, list):
        return f"{path}.coding is {_kind(coding)}, not a list of Codings"
    wrong_system = None
    url = system if isinstance(system, str) else system[0]
    for i, item in enumerate(coding):
        where = f"{path}.coding[{i}]"
        if not isinstance(item, dict):
            return f"{where} is {_kind(item)}, not a Coding"
        value_code, value_system = item.get("code"), item.get("system")
        if isinstance(value_code, str):
            if value_code.strip() != code:
                continue
            if in_system(value_system, system):
                return None
            if value_system is None:
                wrong_system = wrong_system or f"coded {code} with no system (expected {url})"
            elif not isinstance(value_system, str):
                wrong_system = f"{where}.system is {_kind(value_system)}, not a URI"
            else:
                wrong_system = wrong_system or f"coded {code} in system {value_system!r}, not {url}"
        elif value_code is not None and code in orjson.dumps(value_code).decode():
            return f"{where}.code is {_kind(value_code)}, not a string"
    return wrong_system
