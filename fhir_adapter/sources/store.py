"""An in-memory index of resources that resolves references the ways real data writes them.

Every source (files, NDJSON, a FHIR server) fills a store; case assembly only
ever asks a store. References resolve through Bundle `fullUrl` (including
`urn:uuid:`), relative `Type/id`, absolute URLs whose tail is `Type/id` (unless the
resource here came under an absolute fullUrl on another server base), version
suffixes (`/_history/n`) and contained resources (`#id`). One store is one reference
scope; sources.scopes puts several side by side.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import orjson

from fhir_adapter.errors import InputError
from fhir_adapter.fhir.codings import Systems
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.fhir.references import reference_string, reverse_targets, tail_key
from fhir_adapter.sources.files import Loaded


class ResourceStore:
    """Resources keyed by `Type/id` (or fullUrl when they have no id)."""

    def __init__(self, loaded: Iterable[Loaded] = ()) -> None:
        self._by_key: dict[str, Resource] = {}
        self._alias: dict[str, str] = {}
        self._base: dict[str, str] = {}  # Type/id -> the server base of its absolute fullUrl
        self._local: set[str] = set()  # keys added under a fullUrl naming no server's copy
        self._by_type: dict[str, list[str]] = defaultdict(list)
        self._reverse: dict[str, list[str]] | None = None
        self._anon = 0
        self.bad_lines: list[str] = []  # file:line of NDJSON lines skipped as corrupt
        # what the run should say on stderr: which of two different copies of one resource
        # was used, and why (see `CompactStore.add_indexed`)
        self.notices: list[str] = []
        # Procedures that hold the case's code in a form that is no coding of it (a number,
        # a string for a list, another system): "file[:line]: key: why", for a warning
        self.miscoded: list[str] = []
        self._coded: dict[tuple[Systems, str], frozenset[str]] = {}
        for item in loaded:
            self.add(item.resource, item.full_url)

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, resource: Resource, full_url: str | None = None) -> str:
        """Store a resource (a later copy of the same `Type/id` replaces the earlier)."""
        rtype = resource["resourceType"]
        rid = resource.get("id")
        if rid:
            key = f"{rtype}/{rid}"
        elif full_url:
            key = full_url
        else:
            self._anon += 1
            key = f"{rtype}/#anonymous-{self._anon}"
        if not self.has(key):
            self._by_type[rtype].append(key)
        self._by_key[key] = resource
        if full_url:
            self._alias[full_url] = key
            if "://" in full_url and full_url.endswith(f"/{key}"):
                self._base[key] = full_url[: -len(key)]
            elif ":" in full_url:
                self._local.add(key)  # urn:uuid:, urn:oid: or another URL: this file's own
        self._reverse = None
        return key

    def stored_keys(self) -> Iterator[str]:
        """Every stored key (without parsing anything)."""
        yield from self._by_key

    def aliases(self) -> dict[str, str]:
        """The fullUrls resources were added under, and their keys."""
        return self._alias

    def full_url_of(self, key: str) -> str | None:
        """The absolute fullUrl a resource was added under, if it had one."""
        base = self._base.get(key)
        return None if base is None else base + key

    def identity(self, key: str) -> str | None:
        """Whose copy of `key` this is, for telling whether two files hold one resource:
        the server base of its absolute fullUrl; "" when it came with no fullUrl (or a
        relative one) and names no server; None when its fullUrl (a `urn:uuid:`...) makes
        it this file's own."""
        base = self._base.get(key)
        if base is not None:
            return base
        return None if key in self._local else ""

    def case_stores(self) -> list[ResourceStore]:
        """The stores cases are found and assembled in: this one, or one per reference
        scope (sources.scopes) when the input's files give one id to different resources."""
        return [self]

    def source_of(self, key: str) -> str | None:
        """Where a case's Procedure came from, when its key alone does not tell it apart
        (another file holds a different resource under it); None otherwise."""
        return None

    def owns(self, key: str) -> bool:
        """Whether a case found here under `key` is evaluated here (a resource two scopes
        hold alike is one resource, evaluated once)."""
        return True

    def where(self, key: str) -> str | None:
        """`file:line` of a stored resource when the store knows it (for messages)."""
        return None

    def note_coded(self, system: Systems, code: str, keys: Iterable[str]) -> None:
        """Record which stored lines a loader found to be Procedures coded system|code
        (it parsed them anyway): finding the cases then needs no parsing."""
        self._coded[(system, code)] = frozenset(keys)

    def coded_keys(self, system: Systems, code: str) -> frozenset[str] | None:
        """The keys `note_coded` recorded, or None: nobody looked. Only stored lines are
        covered; resources added whole are not, and a later line with the same key may
        have replaced a noted one (callers check the resource they get)."""
        return self._coded.get((system, code))

    def whole_resources(self) -> Iterator[Resource]:
        """The resources added as parsed dicts (for a CompactStore: those from JSON files)."""
        yield from self._by_key.values()

    def key_of(self, resource: Resource) -> str:
        """The key a stored resource is known by (its `Type/id` where it has one)."""
        rid = resource.get("id")
        if rid:
            return f"{resource['resourceType']}/{rid}"
        for key in self._by_type.get(resource["resourceType"], ()):
            if self._by_key[key] is resource:
                return key
        raise KeyError("resource is not in this store")

    def get(self, key: str) -> Resource | None:
        return self._by_key.get(key)

    def has(self, key: str) -> bool:
        """Whether a resource with this key is stored (without parsing it)."""
        return key in self._by_key

    def begin_case(self, procedure: Resource | None = None) -> None:
        """Called before each case is assembled (a hook for stores that parse lazily)."""

    def of_type(self, rtype: str, mentioning: str | None = None) -> list[Resource]:
        """The stored resources of a type; with `mentioning`, a store may leave out those
        whose JSON cannot contain that string (a hint: callers still check what they need)."""
        out = []
        for key in self._by_type.get(rtype, ()):
            found = self.get(key)
            if found is not None:
                out.append(found)
        return out

    def canonical(self, ref: Any) -> str | None:
        """The store key a reference points at, whether or not that resource is here."""
        text = reference_string(ref)
        if text is None or text.startswith("#"):
            return None
        if text in self._alias:
            return self._alias[text]
        if self.has(text):
            return text
        key = tail_key(text)
        if key is None:
            return text
        base = self._base.get(key)
        if base is not None and "://" in text and not text.startswith(base):
            return text  # the same Type/id on another server: not the one here
        return key

    def resolve(self, ref: Any, container: Resource | None = None) -> Resource | None:
        """The resource a Reference points at, or None when it is dangling."""
        text = reference_string(ref)
        if text is None:
            return None
        if text.startswith("#"):
            for contained in (container or {}).get("contained") or []:
                if isinstance(contained, dict) and contained.get("id") == text[1:]:
                    return contained
            return None
        key = self.canonical(text)
        return self.get(key) if key else None

    def referrers(self, target: str, rtype: str | None = None) -> list[Resource]:
        """Resources of `rtype` whose subject/encounter/partOf/... point at `target`."""
        if self._reverse is None:
            self._reverse = self._build_reverse()
        out = []
        for key in self._reverse.get(target, ()):
            found = self.get(key)
            if found is not None and (rtype is None or found["resourceType"] == rtype):
                out.append(found)
        return out

    def referred(self) -> Iterator[str]:
        """Every key some stored resource points at (what `referrers` can answer for)."""
        if self._reverse is None:
            self._reverse = self._build_reverse()
        yield from self._reverse

    def _build_reverse(self) -> dict[str, list[str]]:
        reverse: dict[str, list[str]] = defaultdict(list)
        for key, resource in self._by_key.items():
            for target in self._targets(resource):
                reverse[target].append(key)
        return reverse

    def _targets(self, resource: Resource) -> set[str]:
        return reverse_targets(resource, self.canonical)


# Resource types that are reference data rather than a patient's record: a few hundred
# of them serve every case of a cohort.
SHARED_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization", "Location"})
SHARED_MAX = 8192


class IndexedLine(Protocol):
    """A raw line whose key and reverse-index targets were worked out elsewhere: its bytes,
    or (`offset` >= 0) where they are in the file `source`."""

    @property
    def line(self) -> bytes: ...
    @property
    def key(self) -> str: ...
    @property
    def targets(self) -> tuple[str, ...]: ...
    @property
    def source(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def at(self) -> int: ...  # a line kept as bytes: its offset in `source` (-1: unknown)


class Located(NamedTuple):
    """A line left in its file: which file, and its byte range."""

    file: int
    offset: int
    length: int


class LineFiles:
    """NDJSON lines read back from their files by offset when a case asks for them.

    Keeping an export's needed lines in memory made a 100,000-patient run's peak
    memory a quarter of the export; left in the files (the OS caches them), a line
    costs a read of ~3 us when its case is evaluated, and nothing to keep or to send
    between processes. Descriptors are opened on first use and inherited by forked
    workers (`os.pread` has no shared file position).
    """

    MAX_OPEN = 256

    def __init__(self) -> None:
        self._paths: list[str] = []
        self._index: dict[str, int] = {}
        self._fds: dict[int, int] = {}
        weakref.finalize(self, _close_all, self._fds)

    def locate(self, path: str, offset: int, length: int) -> Located:
        i = self._index.get(path)
        if i is None:
            i = self._index[path] = len(self._paths)
            self._paths.append(path)
        return Located(i, offset, length)

    def read(self, at: Located) -> bytes:
        path = self._paths[at.file]
        try:
            fd = self._fds.get(at.file)
            if fd is None:
                if len(self._fds) >= self.MAX_OPEN:
                    _close_all(self._fds)
                fd = self._fds[at.file] = os.open(path, os.O_RDONLY)
            data = os.pread(fd, at.length, at.offset)
        except OSError as exc:
            raise InputError(
                f"cannot read file again: {exc.strerror or exc}", source=path
            ) from None
        if len(data) != at.length:
            raise InputError("the file changed while it was being read", source=path)
        return data

    def path(self, at: Located) -> str:
        return self._paths[at.file]


def _close_all(fds: dict[int, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


class CompactStore(ResourceStore):
    """Holds resources as raw JSON (where they are in their NDJSON files, or their bytes)
    and parses them when a case asks.

    Parsed dicts cost ~4.7x the bytes they came from; keeping only keys and offsets lets
    a large export's cases fit in a fraction of its size. Parsed resources are cached
    for the current case only, so identity holds while a case is assembled.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw: dict[str, bytes | Located] = {}
        self._files = LineFiles()
        self._raw_reverse: dict[str, list[str]] = defaultdict(list)
        self._targets_of: dict[str, tuple[str, ...]] = {}
        self._live: dict[str, Resource] = {}
        # reference data many cases point at (a practitioner, the hospital): parsed once
        # for the whole run, not once per case
        self._shared: dict[str, Resource] = {}
        # where lines kept as bytes (gzipped files') are, for messages
        self._at: dict[str, tuple[str, int]] = {}
        self._noticed: set[tuple[str, Any, Any]] = set()
        # each file's rank in reading order: which of two copies is the later one
        self.order: dict[str, int] = {}

    def __len__(self) -> int:
        return super().__len__() + len(self._raw)

    def add_indexed(
        self,
        line: bytes | Located,
        key: str,
        targets: Iterable[str],
        at: tuple[str, int] | None = None,
    ) -> str:
        """Store a line whose key and reverse-index targets were worked out elsewhere; `at`,
        where a line kept as bytes is (its file and offset), for messages. A different copy
        of a stored key replaces it when it is newer (`newer_copy`), or, where the copies
        do not say, when it comes later in reading order; either way `notices` says so."""
        previous = self._raw.get(key)
        if previous is not None:
            if previous == line:
                return key  # the same line met again (e.g. in two passes)
            old, new = self._bytes(previous), self._bytes(line)
            if old == new:
                return key  # the same resource met again
            if not self._supersedes(key, (previous, old), (line, new, at)):
                return key
            for target in self._targets_of.pop(key, ()):
                self._raw_reverse[target].remove(key)
        elif not super().has(key):
            self._by_type[key.split("/", 1)[0]].append(key)
        self._live.pop(key, None)
        self._shared.pop(key, None)
        self._insert(key, line, tuple(targets))
        if at is not None and isinstance(line, bytes):
            self._at[key] = at
        else:
            self._at.pop(key, None)
        return key

    def _supersedes(
        self,
        key: str,
        stored: tuple[bytes | Located, bytes],
        met: tuple[bytes | Located, bytes, tuple[str, int] | None],
    ) -> bool:
        """Whether `met`, a different copy of `key`, replaces the `stored` one, noting which
        one is used and why (once per pair of copies)."""
        first = self._position(key, stored[0], None)
        second = self._position(key, met[0], met[2])
        verdict = newer_copy(orjson.loads(stored[1]), orjson.loads(met[1]))
        if verdict is not None:
            wins, why = verdict[0], f"the newer by its meta.{verdict[1]}"
        else:
            why = "the later in reading order (neither copy's meta.lastUpdated or versionId"
            why += " says which is newer)"
            # lines are added in reading order, but a pass may meet an earlier one again
            if first is not None and second is not None and self.order:
                wins = self._rank(second) > self._rank(first)
            else:
                wins = True
        used, other = (second, first) if wins else (first, second)
        if (key, used, other) not in self._noticed:
            self._noticed.add((key, used, other))
            place = self._place(used)
            self.notices.append(
                f"{key} differs in {place} and {self._place(other)}; using {place}, {why}"
            )
        return wins

    def _position(
        self, key: str, line: bytes | Located, at: tuple[str, int] | None
    ) -> tuple[str, int] | None:
        if isinstance(line, Located):
            return self._files.path(line), line.offset
        return at if at is not None else self._at.get(key)

    def _rank(self, where: tuple[str, int]) -> tuple[int, int]:
        return self.order.get(where[0], len(self.order)), where[1]

    def _place(self, where: tuple[str, int] | None) -> str:
        """`file:line` of a copy (a line number only for this message)."""
        if where is None:
            return "another line"
        path, offset = where
        opener: Any = gzip.open if path.lower().endswith(".gz") else open
        try:
            with opener(path, "rb") as fh:
                line = fh.read(offset).count(b"\n") + 1
        except OSError:
            return path
        return f"{path}:{line}"

    def add_lines(self, lines: Iterable[IndexedLine]) -> None:
        """`add_indexed` for many lines at once, the key met for the first time taking the
        short way (a dense export keeps every line: the parent indexes them all, alone)."""
        raw, by_type, whole, locate = self._raw, self._by_type, self._by_key, self._files.locate
        for item in lines:
            key = item.key
            line = item.line if item.offset < 0 else locate(item.source, item.offset, item.length)
            at = (item.source, item.at) if item.at >= 0 else None
            if key in raw or key in whole:
                self.add_indexed(line, key, item.targets, at)  # met again, or replacing
            else:
                by_type[key.split("/", 1)[0]].append(key)
                self._insert(key, line, item.targets)
                if at is not None:
                    self._at[key] = at

    def _insert(self, key: str, line: bytes | Located, targets: tuple[str, ...]) -> None:
        self._raw[key] = line
        if targets:
            self._targets_of[key] = targets
            for target in targets:
                self._raw_reverse[target].append(key)

    def has(self, key: str) -> bool:
        return key in self._raw or super().has(key)

    def stored_keys(self) -> Iterator[str]:
        yield from self._raw
        yield from (key for key in self._by_key if key not in self._raw)

    def where(self, key: str) -> str | None:
        raw = self._raw.get(key)
        if not isinstance(raw, Located):
            return None
        path = self._files.path(raw)
        with open(path, "rb") as fh:
            line = fh.read(raw.offset).count(b"\n") + 1
        return f"{path}:{line}"

    def get(self, key: str) -> Resource | None:
        found = self._live.get(key)
        if found is not None:
            return found
        raw = self._raw.get(key)
        if raw is None:
            return super().get(key)
        return self._load(key, raw)

    def _load(self, key: str, raw: bytes | Located, data: bytes | None = None) -> Resource:
        """Parse a stored line into this case's cache (reference data: the run's)."""
        shared = key.split("/", 1)[0] in SHARED_TYPES
        if shared:
            found = self._shared.get(key)
            if found is not None:
                self._live[key] = found
                return found
        parsed = self._parse(key, raw, data)
        self._live[key] = parsed
        if shared:
            if len(self._shared) >= SHARED_MAX:
                self._shared.clear()
            self._shared[key] = parsed
        return parsed

    def of_type(self, rtype: str, mentioning: str | None = None) -> list[Resource]:
        """Raw lines that do not contain `mentioning` are not parsed: finding the cases of
        a dense export would otherwise parse every Procedure kept."""
        if mentioning is None:
            return super().of_type(rtype)
        needle = mentioning.encode()
        out = []
        for key in self._by_type.get(rtype, ()):
            raw = self._raw.get(key)
            if raw is None or key in self._live:
                found = self.get(key)
            else:
                data = self._bytes(raw)  # read once: tested here, parsed below
                if needle not in data:
                    continue
                found = self._load(key, raw, data)
            if found is not None:
                out.append(found)
        return out

    def _parse(self, key: str, raw: bytes | Located, data: bytes | None = None) -> Resource:
        """A stored line parsed; one read back from its file must still be the resource
        screened there (an export rewritten mid-run is an error, not other data)."""
        if isinstance(raw, bytes):
            parsed: Resource = orjson.loads(raw)
            return parsed
        try:
            value = orjson.loads(self._files.read(raw) if data is None else data)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or f"{value.get('resourceType')}/{value.get('id')}" != key:
            raise InputError(
                "the file changed while it was being read", source=self._files.path(raw)
            )
        return value

    def _bytes(self, raw: bytes | Located) -> bytes:
        return raw if isinstance(raw, bytes) else self._files.read(raw)

    def begin_case(self, procedure: Resource | None = None) -> None:
        self._live.clear()
        if procedure is not None and procedure.get("id"):
            self._live[f"{procedure['resourceType']}/{procedure['id']}"] = procedure

    def referrers(self, target: str, rtype: str | None = None) -> list[Resource]:
        out = super().referrers(target, rtype)
        prefix = f"{rtype}/" if rtype is not None else ""
        for key in self._raw_reverse.get(target, ()):
            if not key.startswith(prefix):
                continue
            found = self.get(key)
            if found is not None:
                out.append(found)
        return out


def newer_copy(stored: Resource, met: Resource) -> tuple[bool, str] | None:
    """Whether `met` is newer than `stored` by their `meta`, and what says so: their
    `lastUpdated` instants when both have one and they differ, else their `versionId`s
    when both are whole numbers and differ; None when nothing says."""
    a, b = stored.get("meta"), met.get("meta")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return None
    then, now = _instant(a.get("lastUpdated")), _instant(b.get("lastUpdated"))
    if then is not None and now is not None and then != now:
        newer = now > then
        return newer, f"lastUpdated {(b if newer else a)['lastUpdated']}"
    old, new = _version(a.get("versionId")), _version(b.get("versionId"))
    if old is not None and new is not None and old != new:
        return new > old, f"versionId {max(old, new)}"
    return None


def _version(value: Any) -> int | None:
    """A versionId that is a whole number (FHIR leaves its form to the server)."""
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


def _instant(value: Any) -> dt.datetime | None:
    """A FHIR instant (it always has a time zone), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
