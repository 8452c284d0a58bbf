"""Walking element paths through FHIR JSON, the one way every stage reads a resource."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

Resource = dict[str, Any]


def values_at(resource: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """Walk a dotted path through dicts and lists, yielding every value found.

    Breadth-first over plain lists: the hottest function of an evaluation, so no
    recursion and no generator per level.
    """
    level = resource if isinstance(resource, list) else [resource]
    for key in path:
        found: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                value = item.get(key)
                if isinstance(value, list):
                    found.extend(value)
                elif value is not None:
                    found.append(value)
        if not found:
            return iter(())
        level = found
    return iter([v for v in level if v is not None])


# A resource's logical id (FHIR R4 `id`): what may be quoted in a reference, a card, a file.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CODING_STRINGS = ("system", "version", "code", "display")
# Timing.repeat.period and SampledData.period are numbers; their siblings tell them apart
_NUMERIC_PERIOD = frozenset({"periodUnit", "dimensions"})


def malformed_element(resource: Resource) -> str | None:
    """Where the JSON shape of `resource` breaks FHIR R4 in a way the readers would trip on,
    as "path: what is wrong", or None. Checked: every resource `id` (a FHIR id), Codings
    (`coding` an array of objects with string parts), Periods (objects with string
    `start`/`end`) and `reference` strings (or Identifiers); one pass, no recursion."""
    stack: list[tuple[Any, str]] = [(resource, str(resource.get("resourceType", "resource")))]
    while stack:
        node, path = stack.pop()
        if isinstance(node, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            at = f"{path}.{key}"
            problem = _shape_problem(node, key, value)
            if problem:
                return f"{at}: {problem}"
            if isinstance(value, dict | list):
                stack.append((value, at))
    return None


def _shape_problem(parent: dict[str, Any], key: str, value: Any) -> str | None:
    if key == "id" and "resourceType" in parent:
        if not isinstance(value, str) or not FHIR_ID.fullmatch(value):
            return "must be a FHIR id (A-Z, a-z, 0-9, '-', '.'; 1-64 characters)"
    elif key == "coding":
        if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
            return "must be an array of Codings (objects)"
        for coding in value:
            if any(not isinstance(coding.get(k, ""), str) for k in _CODING_STRINGS):
                return "a Coding's system, version, code and display must be strings"
    elif (key == "period" and not _NUMERIC_PERIOD & parent.keys()) or key.endswith("Period"):
        periods = value if isinstance(value, list) else [value]
        if not all(isinstance(p, dict) for p in periods):
            return "must be a Period (an object)"
        if any(not isinstance(p.get(k, ""), str) for p in periods for k in ("start", "end")):
            return "a Period's start and end must be strings"
    elif key == "reference" and not isinstance(value, str | dict):
        return "must be a string"
    return None
