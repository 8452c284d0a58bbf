"""Walking element paths through FHIR JSON, the one way every stage reads a resource."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Resource = dict[str, Any]


def values_at(resource: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """Walk a dotted path through dicts and lists, yielding every value found."""
    if not path:
        if isinstance(resource, list):
            yield from resource
        elif resource is not None:
            yield resource
        return
    if isinstance(resource, list):
        for item in resource:
            yield from values_at(item, path)
    elif isinstance(resource, dict):
        yield from values_at(resource.get(path[0]), path[1:])
