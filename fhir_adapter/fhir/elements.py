"""Walking element paths through FHIR JSON, the one way every stage reads a resource."""

from __future__ import annotations

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
