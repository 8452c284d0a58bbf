"""Reference scopes: each file's references resolve in that file first, as FHIR says.

A Bundle is its own scope (its fullUrls, `urn:uuid:`s and contained resources); an
NDJSON export is one server's scope. A reference that its own scope cannot resolve is
looked for in the others, and found only where they agree: two different resources
under one `Type/id` in different files never meet, and a case that could reach both is
an InputError naming both files and lines, never a guess.

Copies in two scopes are one resource only where FHIR says so: equal content under one
absolute server base (a JSON file's copy beside the NDJSON export's counts as that
server's, unless its fullUrl is a `urn:uuid:`). Equal content alone is not enough: a bare
`Patient/p1` stub in two extracts may be two patients, and what points at one never
joins the other's cases.

Loading builds this only when some `Type/id` is held by several scopes that are not one
resource; otherwise one merged store means the same and costs nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_adapter.errors import InputError
from fhir_adapter.fhir.codings import Systems
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.fhir.references import reference_string, tail_key
from fhir_adapter.sources.store import ResourceStore

_REFERENCE = re.compile(r'"reference":"([^"]+)"')


@dataclass(frozen=True)
class Scope:
    """One scope's own resources and how a person is told where they are."""

    label: str  # the file, as shown in reports (relative to the directory given)
    store: ResourceStore
    path: str | None = None  # the JSON file, for line numbers (None: the store knows)


class Scopes(ResourceStore):
    """Several scopes; evaluation asks `case_stores()` for one view per scope."""

    def __init__(self, scopes: Sequence[Scope], streamed: int | None = None) -> None:
        """`streamed`: the index of a scope too large to list (an NDJSON export's store),
        asked key by key instead."""
        super().__init__()
        self.scopes = list(scopes)
        self._streamed = streamed
        held: dict[str, list[int]] = {}
        for i, scope in enumerate(self.scopes):
            if i != streamed:
                for key in scope.store.stored_keys():
                    held.setdefault(key, []).append(i)
        if streamed is not None:
            big = self.scopes[streamed].store
            for key, where in held.items():
                if big.has(key):
                    where.append(streamed)
        self._held = held
        shared = {key: where for key, where in held.items() if len(where) > 1}
        differ = {
            key
            for key, where in shared.items()
            if len({_content(self.scopes[i].store.get(key)) for i in where}) > 1
        }
        # copies alike, but FHIR does not make them one resource (no server base in common)
        self._alike = frozenset(
            key for key, where in shared.items() if key not in differ and not self._one(key, where)
        )
        # keys several scopes hold that are not one resource
        self.contested = frozenset(differ | self._alike)
        self._apart: dict[str, bool] = {}
        self._foreign: dict[tuple[str, str | None], dict[str, tuple[int, Any]]] = {}
        self._loose: dict[tuple[str, str | None], list[int]] = {}
        self._aliases: dict[str, set[tuple[int, str]]] = {}
        for i, scope in enumerate(self.scopes):
            for alias, key in scope.store.aliases().items():
                self._aliases.setdefault(alias, set()).add((i, key))
        # which scopes have something pointing at a key (a case asks each of them only)
        self._pointing: dict[str, list[int]] = {}
        for i, scope in enumerate(self.scopes):
            if i != streamed:
                for target in scope.store.referred():
                    self._pointing.setdefault(target, []).append(i)
        self._views = [ScopeView(self, i) for i in range(len(self.scopes))]

    def __len__(self) -> int:
        return sum(len(s.store) for s in self.scopes)

    def _one(self, key: str, where: Sequence[int]) -> bool:
        """Whether the copies of `key` in the scopes `where` came as one server's resource:
        in JSON files, under one absolute server base; a JSON file's copy beside the NDJSON
        export's, unless the file made it its own (a `urn:uuid:` fullUrl). Equal content
        alone is not enough: two extracts' `Patient/p1` stubs may be two patients."""
        ids = [self.scopes[i].store.identity(key) for i in where if i != self._streamed]
        if None in ids or len(set(ids)) > 1:
            return False
        return ids[0] != "" or len(ids) == 1  # one JSON copy beside the export's

    @property
    def streamed(self) -> ResourceStore | None:
        return None if self._streamed is None else self.scopes[self._streamed].store

    def case_stores(self) -> list[ResourceStore]:
        return list(self._views)

    def holding(self, key: str) -> list[int]:
        """The scopes that hold `key`."""
        where = self._held.get(key)
        if where is not None:
            return where
        if self._streamed is not None and self.scopes[self._streamed].store.has(key):
            return [self._streamed]
        return []

    def pointing(self, target: str) -> list[int]:
        """The scopes that may hold resources pointing at `target`."""
        found = self._pointing.get(target, [])
        return found if self._streamed is None else [*found, self._streamed]

    def foreign(self, target: str, rtype: str | None) -> dict[str, tuple[int, Any]]:
        """What the listed scopes hold pointing at `target`, one entry per key, found once
        for all cases: (a scope, its resource), or (a scope, the set of scopes that hold
        the key apart). The streamed scope is asked per case (its lines are parsed per
        case)."""
        memo = (target, rtype)
        found = self._foreign.get(memo)
        if found is None:
            found = {}
            for i in self._pointing.get(target, ()):
                store = self.scopes[i].store
                for resource in store.referrers(target, rtype):
                    key = store.key_of(resource)
                    had = found.get(key)
                    if had is None:
                        found[key] = (i, resource)
                    elif self.apart(key):
                        earlier = had[1] if isinstance(had[1], set) else {had[0]}
                        found[key] = (had[0], earlier | {i})
            self._foreign[memo] = found
        return found

    def loose(self, target: str, rtype: str | None) -> list[int]:
        """The scopes with resources pointing at `target` that they do not hold (their
        reference falls back, and `target` is apart: it could mean any holder's)."""
        memo = (target, rtype)
        found = self._loose.get(memo)
        if found is None:
            found = [
                i
                for i in self.pointing(target)
                if not self.scopes[i].store.has(target)
                and self.scopes[i].store.referrers(target, rtype)
            ]
            self._loose[memo] = found
        return found

    def apart(self, key: str) -> bool:
        """Whether the scopes holding `key` mean different things by it: different content,
        or the same content pointing at what they hold apart (one Procedure text in two
        per-patient Bundles whose `Patient/p1`s differ is two procedures)."""
        known = self._apart.get(key)
        if known is not None:
            return known
        where = self.holding(key)
        if key in self.contested:
            known = True
        elif len(where) < 2:
            known = False
        else:
            self._apart[key] = False  # a reference cycle does not make it apart
            body = orjson.dumps(self.scopes[where[0]].store.get(key)).decode()
            known = any(
                target is not None and target != key and self.apart(target)
                for target in map(tail_key, _REFERENCE.findall(body))
            )
        self._apart[key] = known
        return known

    def alike(self, key: str) -> bool:
        """Whether the scopes holding `key` hold the very same content under it (one scope
        that lacks it may take any copy: what it reads is the same)."""
        return key in self._alike

    def alias(self, text: str) -> str | None:
        """The key a fullUrl names in another scope, when every scope naming it agrees."""
        found = self._aliases.get(text)
        if not found:
            return None
        keys = {key for _, key in found}
        return next(iter(keys)) if len(keys) == 1 else None

    def ambiguous(self, key: str, scopes: Iterable[int], case: str) -> InputError:
        """The error for a key whose versions in `scopes` differ and could all reach `case`."""
        places = sorted({self.place(key, i) for i in scopes})
        return InputError(
            f"{key} is different resources in {' and '.join(places)}, and {case} could "
            "reach either: make the ids unique, or evaluate the files separately"
        )

    def place(self, key: str, i: int) -> str:
        """`file:line` of a scope's resource (line found only for this message)."""
        scope = self.scopes[i]
        if scope.path is None:
            return scope.store.where(key) or scope.label
        line = json_line(Path(scope.path), key)
        return f"{scope.path}:{line}" if line else scope.path


class ScopeView(ResourceStore):
    """One scope as its cases see it: its own resources, then what only others hold."""

    def __init__(self, scopes: Scopes, index: int) -> None:
        super().__init__()
        self._all = scopes
        self._i = index
        self.own = scopes.scopes[index].store
        self.label = scopes.scopes[index].label
        self._case = ""

    def __len__(self) -> int:
        return len(self.own)

    def stored_keys(self) -> Iterator[str]:
        return self.own.stored_keys()

    def note_coded(self, system: Systems, code: str, keys: Iterable[str]) -> None:
        self.own.note_coded(system, code, keys)

    def coded_keys(self, system: Systems, code: str) -> frozenset[str] | None:
        return self.own.coded_keys(system, code)

    def whole_resources(self) -> Iterator[Resource]:
        return self.own.whole_resources()

    def of_type(self, rtype: str, mentioning: str | None = None) -> list[Resource]:
        return self.own.of_type(rtype, mentioning)

    def source_of(self, key: str) -> str | None:
        """The file a case's Procedure came from, when another file reuses its id."""
        return self.label if self._all.apart(key) else None

    def owns(self, key: str) -> bool:
        return self._all.apart(key) or self._all.holding(key)[:1] == [self._i]

    def begin_case(self, procedure: Resource | None = None) -> None:
        self.own.begin_case(procedure)
        streamed = self._all.streamed
        if streamed is not None and streamed is not self.own:
            streamed.begin_case()  # its parsed lines are per case
        if procedure is not None:
            self._case = f"{procedure['resourceType']}/{procedure.get('id')} in {self.label}"

    def key_of(self, resource: Resource) -> str:
        if resource.get("id"):
            return f"{resource['resourceType']}/{resource['id']}"
        for scope in [self.own, *(s.store for s in self._all.scopes)]:
            try:
                return scope.key_of(resource)
            except KeyError:
                continue
        raise KeyError("resource is not in these scopes")

    def has(self, key: str) -> bool:
        return self.own.has(key) or bool(self._all.holding(key))

    def get(self, key: str) -> Resource | None:
        if self.own.has(key):
            return self.own.get(key)
        where = self._all.holding(key)
        if not where:
            return None
        if self._all.apart(key) and not self._all.alike(key):
            raise self._all.ambiguous(key, where, self._case or self.label)
        return self._pulled(where[0], self._all.scopes[where[0]].store.get(key))

    def _pulled(self, i: int, resource: Resource | None) -> Resource | None:
        """A resource of another scope, checked: what it points at must not be a key its
        scope and this one mean differently by (its reference would mean its own)."""
        if resource is None:
            return None
        for text in _REFERENCE.findall(orjson.dumps(resource).decode()):
            key = tail_key(text)
            if (
                key
                and self.own.has(key)
                and self._all.apart(key)
                and self._all.scopes[i].store.has(key)
            ):
                raise self._all.ambiguous(key, (i, self._i), self._case or self.label)
        return resource

    def canonical(self, ref: Any) -> str | None:
        text = reference_string(ref)
        if text is None or text.startswith("#"):
            return None
        own = self.own.canonical(text)
        if own is not None and self.own.has(own):
            return own
        return self._all.alias(text) or own

    def referrers(self, target: str, rtype: str | None = None) -> list[Resource]:
        """Own referrers, and those of scopes whose reference to `target` means the
        resource this scope means (they hold the same, or fall back to it)."""
        out = self.own.referrers(target, rtype)
        case = self._case or self.label
        if self._all.apart(target):
            # the others that hold it point at their own; one that does not could mean
            # any of them
            loose = self._all.loose(target, rtype)
            if loose:
                raise self._all.ambiguous(target, [*self._all.holding(target), *loose], case)
            return out
        foreign = self._all.foreign(target, rtype)
        for key, (i, found) in foreign.items():
            if i == self._i or self.own.has(key):
                continue  # here that key means this scope's own resource
            if isinstance(found, set):
                raise self._all.ambiguous(key, found, case)
            pulled = self._pulled(i, found)
            if pulled is not None:
                out.append(pulled)
        streamed = self._all.streamed
        if streamed is not None and streamed is not self.own:
            i = len(self._all.scopes) - 1
            for resource in streamed.referrers(target, rtype):
                key = streamed.key_of(resource)
                if self.own.has(key) or (key in foreign and not self._all.apart(key)):
                    continue
                if key in foreign:
                    raise self._all.ambiguous(key, self._all.holding(key), case)
                pulled = self._pulled(i, resource)
                if pulled is not None:
                    out.append(pulled)
        return out


def _content(resource: Resource | None) -> bytes:
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def json_line(path: Path, key: str) -> int | None:
    """The first line where a JSON file gives `key`'s id (see `json_lines`)."""
    lines = json_lines(path, key)
    return lines[0] if lines else None


def json_lines(path: Path, key: str) -> list[int]:
    """The lines where a JSON file gives `key`'s id next to its resourceType (for messages:
    JSON parsers keep no positions)."""
    rtype, _, rid = key.partition("/")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    kinds = [(m.start(), m.group(1)) for m in re.finditer(r'"resourceType"\s*:\s*"(\w+)"', text)]
    found = []
    for m in re.finditer(r'"id"\s*:\s*"' + re.escape(rid) + '"', text):
        before = [kind for at, kind in kinds if at < m.start()]
        after = [kind for at, kind in kinds if at > m.start()]
        if (before and before[-1] == rtype) or (after and after[0] == rtype):
            found.append(text.count("\n", 0, m.start()) + 1)
    return found


def scope_label(path: Path, roots: Sequence[Path]) -> str:
    """A file as reports name it: relative to the directory it was found under."""
    for root in roots:
        if root.is_dir() and path.is_relative_to(root):
            return str(path.relative_to(root))
    return path.name
