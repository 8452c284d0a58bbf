"""Check a resource against an implementation guide's StructureDefinition snapshots.

What is checked, from the snapshot alone (no base-FHIR definitions are needed):
cardinalities, `fixed[x]` and `pattern[x]`, slices (their minimum and maximum, and
closed slicing) matched by the discriminators the guides use (`value`/`pattern` on a
path or `$this`, `type` on `$this` or `resource`, and an `extension('url').value`
path), extensions and datatypes whose profile is in the packages (checked against that
profile), `contentReference` elements, and every invariant fhirpathpy can evaluate.

What is skipped, and reported as such in `Report.skipped` (never silently passed):
terminology bindings (the X12 code lists are licensed: no validator can expand them),
`targetProfile` of references, profiles not in the vendored packages (US Core, SDC, base
FHIR: the snapshot of a guide's own profile already carries what it inherits), and
invariants fhirpathpy cannot evaluate (`htmlChecks()`, `memberOf()`, `resolve()`,
`conformsTo()`) or that fail on it. `ele-1` and `ext-1` are checked natively (they apply
to every element; evaluating them by FHIRPath would be most of the cost).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhir_adapter.conformance.packages import canonical, definitions

# Invariants fhirpathpy cannot evaluate (functions it lacks): skipped by name.
UNSUPPORTED_FUNCTIONS = ("htmlChecks(", "memberOf(", "resolve(", "conformsTo(")
NATIVE = ("ele-1", "ext-1")
_EXTENSION_VALUE = re.compile(r"^extension\('([^']+)'\)\.value(?:\.ofType\(\w+\))?$")


@dataclass(frozen=True, slots=True)
class Issue:
    """One failed rule: where (a FHIRPath-like location) and why."""

    location: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class Report:
    """What a check found (`errors`, `warnings`) and the rules it could not evaluate."""

    issues: list[Issue] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)

    @property
    def errors(self) -> list[Issue]:
        """Each failed rule once (a resource checked by its slice's profile and by the profile
        it claims meets the same rule twice)."""
        return list(dict.fromkeys(i for i in self.issues if i.severity == "error"))

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        return "; ".join(str(i) for i in self.errors)


class Structure:
    """A StructureDefinition's snapshot, indexed by element id."""

    def __init__(self, sd: dict[str, Any]) -> None:
        self.url = sd["url"]
        self.type = sd.get("type", "")
        self.elements: dict[str, dict[str, Any]] = {}
        self.children: dict[str, list[str]] = {}
        self.slices: dict[str, list[str]] = {}
        for element in sd.get("snapshot", {}).get("element", []):
            eid = element.get("id") or element["path"]
            self.elements[eid] = element
            head, dot, tail = eid.rpartition(".")
            if not dot:
                continue
            if ":" in tail:
                base = tail.split(":", 1)[0]
                if "/" not in tail:  # re-slices are not matched: their parent slice is
                    self.slices.setdefault(f"{head}.{base}", []).append(eid)
            else:
                self.children.setdefault(head, []).append(eid)
        self.root = next(iter(self.elements), self.type)


@cache
def structure(url: str) -> Structure | None:
    sd = definitions().get(canonical(url))
    return Structure(sd) if sd is not None and sd.get("snapshot") else None


@cache
def _parsed(expression: str) -> Any:
    from fhirpathpy.parser import parse

    return parse(expression)  # type: ignore[no-untyped-call]


def _evaluate(expression: str, node: Any, base: str, resource: Any) -> list[Any]:
    """FHIRPath on `node`, typed as the element at `base` (so that `value` finds a
    choice-type `valueString`, `is Claim` works), `%resource` the resource around it."""
    from fhirpathpy import apply_parsed_path
    from fhirpathpy.engine.nodes import ResourceNode
    from fhirpathpy.models import models

    typed = ResourceNode.create_node(node, base)  # type: ignore[no-untyped-call]
    context = {"resource": resource, "rootResource": resource}
    result: list[Any] = apply_parsed_path(  # type: ignore[no-untyped-call]
        typed, _parsed(expression), context, models["r4"], {"traceFn": _no_trace}
    )
    return result


def _no_trace(label: str, value: Any) -> None:
    """`trace()` inside an invariant (dom-3) would print to stdout."""


def _type_suffix(code: str) -> str:
    return code[:1].upper() + code[1:]


def _values(node: dict[str, Any], element: dict[str, Any]) -> list[tuple[str, Any]]:
    """(JSON key, value) for an element's data in `node`, arrays flattened."""
    name = element["path"].rsplit(".", 1)[-1]
    keys: list[str]
    if name.endswith("[x]"):
        stem = name[:-3]
        codes = [t.get("code", "") for t in element.get("type", [])]
        keys = [stem + _type_suffix(c) for c in codes] if codes else []
        if not keys:
            keys = [
                k for k in node if k.startswith(stem) and k[len(stem) : len(stem) + 1].isupper()
            ]
    else:
        keys = [name]
    out: list[tuple[str, Any]] = []
    for key in keys:
        if key not in node:
            continue
        value = node[key]
        out.extend((key, v) for v in (value if isinstance(value, list) else [value]))
    return out


def matches_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every element of the pattern is present with that value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            matches_pattern(value.get(k), v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(i, p) for i in items) for p in pattern)
    if isinstance(value, list):
        return any(matches_pattern(v, pattern) for v in value)
    return bool(value == pattern)


def _fixed_or_pattern(element: dict[str, Any]) -> tuple[str, Any] | None:
    for key, value in element.items():
        if key.startswith("fixed"):
            return "fixed", value
        if key.startswith("pattern"):
            return "pattern", value
    return None


def _walk(value: Any, path: list[str]) -> list[Any]:
    """The values at a dotted path below `value` (arrays flattened)."""
    current = [value]
    for step in path:
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and step in item:
                got = item[step]
                nxt.extend(got if isinstance(got, list) else [got])
        current = nxt
    return current


class Checker:
    """Validates resources against the vendored guides' profiles."""

    def __init__(self) -> None:
        self.report = Report()
        self._root: Any = None
        self._undecidable: set[str] = set()  # slices whose discriminator could not be read

    # -- entry points ----------------------------------------------------------
    def check(self, resource: dict[str, Any], profile: str | None = None) -> Report:
        """Check `resource` against `profile` and every known profile in its meta.profile."""
        self.report = Report()
        self._check_resource(
            resource, [profile] if profile else [], resource.get("resourceType", "")
        )
        return self.report

    def _check_resource(self, resource: Any, profiles: Iterable[str], where: str) -> None:
        if not isinstance(resource, dict):
            self._issue(where, "is not a JSON object")
            return
        claimed = [
            p for p in (resource.get("meta") or {}).get("profile") or [] if isinstance(p, str)
        ]
        wanted = list(dict.fromkeys([*profiles, *claimed]))
        for url in wanted:
            sd = structure(url)
            if sd is None:
                self.report.skipped.add(f"profile {canonical(url)} (not in the vendored packages)")
                continue
            if sd.type != resource.get("resourceType"):
                self._issue(
                    where, f"is a {resource.get('resourceType')}, not a {sd.type} ({sd.url})"
                )
                continue
            saved = self._root
            self._root = resource
            try:
                self._check_node(resource, sd, sd.root, where)
            finally:
                self._root = saved

    def _issue(self, where: str, message: str, severity: str = "error") -> None:
        self.report.issues.append(Issue(where, message, severity))

    # -- elements --------------------------------------------------------------
    def _check_node(self, node: Any, sd: Structure, eid: str, where: str) -> None:
        """`node` (one value of element `eid`) against that element and its children."""
        element = sd.elements[eid]
        self._check_value(node, element, where)
        self._check_constraints(node, element, where)
        if not isinstance(node, dict):
            return
        children = sd.children.get(eid)
        ref = element.get("contentReference")
        if not children and ref:
            target = ref.split("#", 1)[-1]
            children = sd.children.get(target)
        if children:
            for child in children:
                self._check_child(node, sd, child, where)
            return
        self._check_by_type_profile(node, element, where)

    def _check_by_type_profile(
        self, node: dict[str, Any], element: dict[str, Any], where: str
    ) -> None:
        """A complex value the snapshot does not expand: against its type's profile when the
        packages have it (several profiles: any one may be met), else, for a resource, the
        profiles it claims."""
        profiles = [p for t in element.get("type", []) for p in t.get("profile", [])]
        known = [p for p in profiles if structure(p) is not None]
        for url in profiles:
            if url not in known:
                self.report.skipped.add(f"profile {canonical(url)} (not in the vendored packages)")
        is_resource = "resourceType" in node
        if not known:
            if is_resource:
                self._check_resource(node, [], where)
            return
        attempts: list[Report] = []
        for url in known:
            sub = Checker()
            sub._root = node if is_resource else self._root
            if is_resource:
                sub._check_resource(node, [url], where)
            else:
                sd = structure(url)
                assert sd is not None
                sub._check_node(node, sd, sd.root, where)
            attempts.append(sub.report)
            if sub.report.ok:
                break
        best = attempts[-1] if attempts[-1].ok else min(attempts, key=lambda r: len(r.errors))
        self.report.issues.extend(best.issues)
        for report in attempts:
            self.report.skipped |= report.skipped

    def _check_child(self, node: dict[str, Any], sd: Structure, cid: str, where: str) -> None:
        element = sd.elements[cid]
        name = element["path"].rsplit(".", 1)[-1]
        values = _values(node, element)
        label = name.replace("[x]", "")
        slices = sd.slices.get(cid, [])
        assigned: dict[str, list[tuple[int, str, Any]]] = {s: [] for s in slices}
        unmatched: list[tuple[int, str, Any]] = []
        discriminators = (element.get("slicing") or {}).get("discriminator") or []
        for index, (key, value) in enumerate(values):
            slice_id = self._slice_for(sd, cid, slices, discriminators, key, value)
            (assigned[slice_id] if slice_id else unmatched).append((index, key, value))
        self._cardinality(element, len(values), f"{where}.{label}")
        for slice_id, members in assigned.items():
            slice_element = sd.elements[slice_id]
            slice_name = slice_id.rsplit(":", 1)[-1]
            if slice_id in self._undecidable:
                self.report.skipped.add(f"slice {sd.url}#{slice_id} (discriminator not evaluable)")
                continue
            self._cardinality(slice_element, len(members), f"{where}.{label}:{slice_name}")
            for index, key, value in members:
                self._check_node(value, sd, slice_id, self._at(where, key, index, values))
        if slices and (element.get("slicing") or {}).get("rules") == "closed" and unmatched:
            self._issue(f"{where}.{label}", "has a value that matches none of its closed slices")
        for index, key, value in unmatched:
            self._check_node(value, sd, cid, self._at(where, key, index, values))

    @staticmethod
    def _at(where: str, key: str, index: int, values: list[tuple[str, Any]]) -> str:
        same = [i for i, (k, _) in enumerate(values) if k == key]
        return f"{where}.{key}" if len(same) == 1 else f"{where}.{key}[{same.index(index)}]"

    def _cardinality(self, element: dict[str, Any], count: int, where: str) -> None:
        low = int(element.get("min") or 0)
        high = element.get("max", "*")
        if count < low:
            self._issue(where, f"minimum cardinality {low} not met ({count} present)")
        if high != "*" and count > int(high):
            self._issue(where, f"maximum cardinality {high} exceeded ({count} present)")

    def _check_value(self, node: Any, element: dict[str, Any], where: str) -> None:
        rule = _fixed_or_pattern(element)
        if rule is None:
            return
        kind, expected = rule
        if kind == "fixed" and node != expected:
            self._issue(where, f"must be exactly {expected!r}")
        elif kind == "pattern" and not matches_pattern(node, expected):
            self._issue(where, f"must match the pattern {expected!r}")

    def _check_constraints(self, node: Any, element: dict[str, Any], where: str) -> None:
        is_extension = element["path"] == "Extension" or element["path"].endswith("xtension")
        has_value = isinstance(node, dict) and any(k.startswith("value") for k in node)
        if is_extension and isinstance(node, dict) and ("extension" in node) == has_value:
            self._issue(where, "ext-1: an extension has either extensions or a value[x]")
        if node in ({}, [], "", None):
            self._issue(where, "ele-1: an element has a value or children")
        for constraint in element.get("constraint", []):
            key = constraint.get("key", "?")
            expression = constraint.get("expression")
            if key in NATIVE or not expression:
                continue
            if any(fn in expression for fn in UNSUPPORTED_FUNCTIONS):
                self.report.skipped.add(f"invariant {key} (uses a function fhirpathpy lacks)")
                continue
            resource = node if isinstance(node, dict) and "resourceType" in node else self._root
            base = element["path"].replace("[x]", "")
            try:
                result = _evaluate(expression, node, base, resource)
            except Exception:
                self.report.skipped.add(f"invariant {key} (fhirpathpy cannot evaluate it)")
                continue
            if result == [False]:
                severity = "warning" if constraint.get("severity") == "warning" else "error"
                self._issue(where, f"{key}: {constraint.get('human', expression)}", severity)

    # -- slicing -----------------------------------------------------------------
    def _slice_for(
        self,
        sd: Structure,
        cid: str,
        slices: list[str],
        discriminators: list[dict[str, Any]],
        key: str,
        value: Any,
    ) -> str | None:
        if not slices:
            return None
        for slice_id in slices:
            verdicts = [self._discriminates(sd, slice_id, d, key, value) for d in discriminators]
            if None in verdicts or not discriminators:
                self._undecidable.add(slice_id)
                continue
            if all(verdicts):
                return slice_id
        return None

    def _discriminates(
        self, sd: Structure, slice_id: str, disc: dict[str, Any], key: str, value: Any
    ) -> bool | None:
        """Whether `value` belongs to the slice by this discriminator (None: cannot tell)."""
        kind, path = disc.get("type"), disc.get("path", "")
        slice_element = sd.elements[slice_id]
        if kind == "type" and path == "$this":
            name = slice_id.rsplit(":", 1)[-1]
            codes = [t.get("code", "") for t in slice_element.get("type", [])]
            stem = slice_element["path"].rsplit(".", 1)[-1].replace("[x]", "")
            return key == name or key in {stem + _type_suffix(c) for c in codes}
        if kind == "type" and path == "resource":
            child = sd.elements.get(f"{slice_id}.resource")
            kinds = {t.get("code") for t in (child or {}).get("type", [])}
            resource = value.get("resource") if isinstance(value, dict) else None
            return isinstance(resource, dict) and resource.get("resourceType") in kinds
        if kind not in ("value", "pattern"):
            return None
        match = _EXTENSION_VALUE.match(path)
        if match:
            return self._extension_value_matches(sd, slice_id, match.group(1), value)
        steps = [] if path == "$this" else path.split(".")
        expected = self._expected(sd, slice_id, steps)
        if expected is None:
            return None
        return any(matches_pattern(v, expected) for v in _walk(value, steps))

    def _expected(self, sd: Structure, slice_id: str, steps: list[str]) -> Any:
        """The fixed/pattern value the slice sets at `steps` (from the deepest element that
        sets one, descending into it), or the url of an extension slice's profile."""
        for depth in range(len(steps), -1, -1):
            eid = ".".join([slice_id, *steps[:depth]])
            element = sd.elements.get(eid)
            if element is None:
                continue
            rule = _fixed_or_pattern(element)
            if rule is not None:
                found = _walk(rule[1], steps[depth:])
                return found[0] if found else None
        if steps == ["url"]:
            for t in sd.elements[slice_id].get("type", []):
                for url in t.get("profile", []):
                    return canonical(url)
        return None

    def _extension_value_matches(
        self, sd: Structure, slice_id: str, url: str, value: Any
    ) -> bool | None:
        for ext_id in sd.slices.get(f"{slice_id}.extension", []):
            profiles = [
                p for t in sd.elements[ext_id].get("type", []) for p in t.get("profile", [])
            ]
            if canonical(url) not in {canonical(p) for p in profiles}:
                continue
            rule = None
            for child in sd.children.get(ext_id, []):
                if child.endswith(".value[x]"):
                    rule = _fixed_or_pattern(sd.elements[child])
            if rule is None:
                return None
            actual = [
                v
                for ext in (value.get("extension") or [] if isinstance(value, dict) else [])
                if isinstance(ext, dict) and ext.get("url") == url
                for k, v in ext.items()
                if k.startswith("value")
            ]
            return any(matches_pattern(v, rule[1]) for v in actual)
        return None


def check(resource: dict[str, Any], profile: str | None = None) -> Report:
    """Check one resource (and what it contains) against `profile` and its meta.profile."""
    return Checker().check(resource, profile)


def iter_examples(package: str) -> Iterator[tuple[str, dict[str, Any]]]:
    from fhir_adapter.conformance.packages import load_package

    yield from sorted(load_package(package).examples.items())


def check_element(value: dict[str, Any], profile: str) -> Report:
    """Check a datatype or an extension (not a resource) against its profile."""
    sd = structure(profile)
    checker = Checker()
    if sd is None:
        checker.report.skipped.add(f"profile {canonical(profile)} (not in the vendored packages)")
        return checker.report
    checker._root = value
    checker._check_node(value, sd, sd.root, sd.type)
    return checker.report
