"""References as real data writes them: relative, absolute, versioned, bare strings."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from fhir_adapter.fhir.elements import Resource, values_at

_TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?/?$")

# Elements whose references let us find "who points at X" (patient, encounter,
# procedure). Technical plumbing for joins, not a coding rule.
REVERSE_PATHS: tuple[tuple[str, ...], ...] = (
    ("subject",),
    ("patient",),
    ("beneficiary",),
    ("encounter",),
    ("partOf",),
    ("focus",),
    ("context", "encounter"),
    ("context", "related"),
    ("practitioner",),
)


def reference_string(ref: Any) -> str | None:
    """The `reference` of a Reference (or a bare string), else None."""
    if isinstance(ref, dict):
        ref = ref.get("reference")
    return ref if isinstance(ref, str) and ref else None


def reference_label(ref: Any) -> str:
    """What a person reads for a Reference: its `reference`, else its identifier as
    `system|value`, else its display ("" when it has none of them)."""
    if not isinstance(ref, dict):
        return ""
    if ref.get("reference"):
        return str(ref["reference"])
    ident = ref.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return f"{ident.get('system', '')}|{ident['value']}"
    return str(ref.get("display") or "")


@functools.lru_cache(maxsize=1 << 16)
def tail_key(ref: str) -> str | None:
    """`Type/id` at the end of a relative or absolute reference, without the version."""
    m = _TAIL.search(ref)
    return f"{m.group(1)}/{m.group(2)}" if m else None


# REVERSE_PATHS grouped by their first element: most resources carry two or three of
# them, so one dict lookup per group rules the rest out.
_REVERSE_FIRST: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = tuple(
    (first, tuple(p[1:] for p in REVERSE_PATHS if p[0] == first))
    for first in dict.fromkeys(p[0] for p in REVERSE_PATHS)
)


def reverse_targets(
    resource: Resource, canonical: Callable[[Any], str | None] | None = None
) -> set[str]:
    """The keys a resource points at through REVERSE_PATHS (tail `Type/id` by default)."""
    seen: set[str] = set()
    get = resource.get
    for first, rests in _REVERSE_FIRST:
        value = get(first)
        if value is None:
            continue
        for rest in rests:
            for ref in values_at(value, rest) if rest else _items(value):
                if canonical is not None:
                    target = canonical(ref)
                else:
                    text = reference_string(ref)
                    target = tail_key(text) if text else None
                if target:
                    seen.add(target)
    return seen


def _items(value: Any) -> list[Any]:
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


def with_references(node: Any, mapping: Mapping[str, str]) -> Any:
    """A copy of `node` with every `reference` string found in `mapping` replaced (the
    urn:uuid fullUrls of a transaction by what the server gave them, say)."""
    if isinstance(node, dict):
        return {
            k: (
                mapping.get(v, v)
                if k == "reference" and isinstance(v, str)
                else with_references(v, mapping)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [with_references(x, mapping) for x in node]
    return node
