"""Reads the way the server takes them: batch, `_include` and `_revinclude` only where its
CapabilityStatement lists them, plain searches and reads otherwise, with the same result.

A caller asks for URLs (`Type/id` reads and `Type?...` searches, with any `_include` and
`_revinclude` it would like) and gets, for each, the resource or one searchset Bundle
whose entries are the matches and what they include (`search.mode` `include`), as a
batch would have answered. What the server cannot do is done here: a batch becomes one
request per URL, an `_include` a read of the references it names (one `_id` search per
type), a `_revinclude` a search on the referring parameter. A server that lists a
feature and refuses it is remembered (`ServerFeatures.refuse`) and read the plain way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fhir_adapter.client.capabilities import is_refusal
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.client.urls import redact_url
from fhir_adapter.errors import ServerError
from fhir_adapter.fhir.elements import values_at
from fhir_adapter.fhir.references import reference_string, tail_key

Resource = dict[str, Any]

# The element each include parameter the adapter uses follows (the search parameter's
# expression); any other `Type:param` follows the element named like the parameter.
INCLUDE_PATHS: dict[str, tuple[str, ...]] = {
    "Procedure:performer": ("performer", "actor"),
    "Procedure:reason-reference": ("reasonReference",),
    "Procedure:patient": ("subject",),
    "Encounter:patient": ("subject",),
    "Condition:patient": ("subject",),
    "Observation:patient": ("subject",),
}
INCLUDE = "_include"
REVINCLUDE = "_revinclude"


def include_path(name: str) -> tuple[str, ...]:
    """The element path an `_include=Type:param[:Target]` follows."""
    parts = name.split(":")
    known = INCLUDE_PATHS.get(":".join(parts[:2]))
    if known is not None:
        return known
    head, *rest = parts[1].split("-") if len(parts) > 1 else [""]
    return (head + "".join(w.capitalize() for w in rest),)


@dataclass(frozen=True)
class Planned:
    """One asked-for URL: what is sent, and the includes the adapter does itself."""

    asked: str
    sent: str
    includes: tuple[str, ...] = ()
    revincludes: tuple[str, ...] = ()

    @property
    def rtype(self) -> str:
        return self.sent.split("?", 1)[0].split("/", 1)[0]


class Reader:
    """Reads against one client, choosing batch and includes by what the server does."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client
        self.features = client.features
        self.where = redact_url(client.base_url)

    # -- planning ------------------------------------------------------------------
    def plan(self, url: str) -> Planned:
        """Split off the `_include`/`_revinclude` parameters the server will not do."""
        if "?" not in url:
            return Planned(url, url)
        path, query = url.split("?", 1)
        rtype = path.split("/", 1)[0]
        kept: list[tuple[str, str]] = []
        includes: list[str] = []
        revincludes: list[str] = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == INCLUDE and not self.features.include(rtype, value):
                includes.append(value)
            elif key == REVINCLUDE and not self.features.revinclude(rtype, value):
                revincludes.append(value)
            else:
                kept.append((key, value))
        if not includes and not revincludes:
            return Planned(url, url)
        sent = f"{path}?{urlencode(kept, safe='|,:/')}" if kept else path
        return Planned(url, sent, tuple(includes), tuple(revincludes))

    def can_include(self, rtype: str, names: Iterable[str]) -> list[str]:
        """Those of `names` the server will do on a search of `rtype`."""
        return [n for n in names if self.features.include(rtype, n)]

    # -- reading -------------------------------------------------------------------
    def get_many(self, urls: Sequence[str]) -> list[Resource | None]:
        """The answer to each URL, in order: a resource, a searchset Bundle (matches and
        includes), or None where the read failed (404, or an entry the batch refused)."""
        plans = [self.plan(u) for u in urls]
        results = self._fetch(plans)
        self._emulate(plans, results)
        return results

    def included(self, resources: Sequence[Resource], names: Sequence[str]) -> list[Resource]:
        """What `_include=name` would have brought with `resources`, read here."""
        bundle: Resource = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
        }
        self._emulate([Planned("", "", tuple(names))], [bundle])
        return [
            e["resource"]
            for e in bundle["entry"]
            if (e.get("search") or {}).get("mode") == "include"
        ]

    def _fetch(self, plans: Sequence[Planned]) -> list[Resource | None]:
        if not plans:
            return []
        if self.features.batch():
            try:
                entries = self.client.batch_entries([p.sent for p in plans])
            except ServerError as exc:
                if not is_refusal(exc):
                    raise
                self.features.refuse("batch", self.where, exc)
            else:
                return self._batch_results(plans, entries)
        return [self._one(p) for p in plans]

    def _batch_results(
        self, plans: Sequence[Planned], entries: Sequence[tuple[str, Resource | None]]
    ) -> list[Resource | None]:
        out: list[Resource | None] = []
        for i, (status, resource) in enumerate(entries):
            refused = status[:3] in ("400", "501") and _asks_includes(plans[i].sent)
            if refused:  # the server listed the include, then refused it in this entry
                error = ServerError(f"batch entry {status}", status=int(status[:3]), outcome={})
                feature = INCLUDE if f"{INCLUDE}=" in plans[i].sent else REVINCLUDE
                self.features.refuse(feature, self.where, error)
                again = self.plan(plans[i].asked)
                out.append(self._one(again))
                self._emulate([again], out[-1:])
                continue
            out.append(resource if status.startswith("2") else None)
        return out

    def _one(self, plan: Planned) -> Resource | None:
        """One URL without batch: a read, or every page of a search as one Bundle."""
        try:
            if "?" not in plan.sent and plan.sent.count("/") == 1:
                return self.client.read(*plan.sent.split("/", 1))
            return self._search(plan.sent)
        except ServerError as exc:
            if is_refusal(exc) and _asks_includes(plan.sent):
                feature = INCLUDE if f"{INCLUDE}=" in plan.sent else REVINCLUDE
                self.features.refuse(feature, self.where, exc)
                again = self.plan(plan.asked)
                found = self._one(again)
                self._emulate([again], [found])
                return found
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                return None  # as a batch entry that failed: missing, not an error of the run
            raise

    def _search(self, url: str) -> Resource:
        rtype, _, query = url.partition("?")
        entries: list[Any] = []
        for page in self.client.search_pages(rtype, parse_qsl(query, keep_blank_values=True)):
            entries.extend(e for e in page.get("entry") or [] if isinstance(e, dict))
        return {"resourceType": "Bundle", "type": "searchset", "entry": entries}

    # -- includes done here ----------------------------------------------------------
    def _emulate(self, plans: Sequence[Planned], results: list[Resource | None]) -> None:
        """Add to each searchset what its plan's includes would have brought."""
        wanted: dict[str, set[str]] = {}  # type -> ids to read
        asks: list[tuple[Resource, dict[str, None]]] = []
        for plan, result in zip(plans, results, strict=True):
            if not plan.includes or not _is_searchset(result):
                continue
            assert result is not None
            keys: dict[str, None] = {}
            for match in _matches(result):
                for name in plan.includes:
                    for key in self._targets(match, name):
                        keys[key] = None
            asks.append((result, keys))
            for key in keys:
                rtype, rid = key.split("/", 1)
                wanted.setdefault(rtype, set()).add(rid)
        if wanted:
            found = self._read_by_id(wanted)
            for result, keys in asks:
                _add_included(result, [found[k] for k in keys if k in found])
        for plan, result in zip(plans, results, strict=True):
            if plan.revincludes and _is_searchset(result):
                assert result is not None
                self._revinclude(plan.revincludes, result)

    def _targets(self, match: Resource, name: str) -> Iterable[str]:
        parts = name.split(":")
        target = parts[2] if len(parts) > 2 else None
        for ref in values_at(match, include_path(name)):
            text = reference_string(ref)
            if not text or text.startswith("#"):
                continue
            if "://" in text and not text.startswith(self.client.base_url):
                continue  # another server's resource: no include would bring it
            key = tail_key(text)
            if key and (target is None or key.startswith(f"{target}/")):
                yield key

    def _read_by_id(self, wanted: dict[str, set[str]]) -> dict[str, Resource]:
        """`Type/id` -> resource: one read for a single id, one `_id` search for several."""
        plans = [
            Planned(u, u)
            for u in (
                f"{rtype}/{next(iter(ids))}"
                if len(ids) == 1
                else f"{rtype}?{urlencode([('_id', ','.join(sorted(ids)))], safe=',')}"
                for rtype, ids in sorted(wanted.items())
            )
        ]
        found: dict[str, Resource] = {}
        for result in self._fetch(plans):
            for resource in _resources(result):
                found[f"{resource['resourceType']}/{resource.get('id')}"] = resource
        return found

    def _revinclude(self, names: Sequence[str], result: Resource) -> None:
        targets = [f"{m['resourceType']}/{m['id']}" for m in _matches(result) if m.get("id")]
        if not targets:
            return
        plans = []
        for name in names:
            parts = name.split(":")
            if len(parts) < 2:
                continue
            query = urlencode([(parts[1], ",".join(targets))], safe=",/")
            plans.append(Planned("", f"{parts[0]}?{query}"))
        found = [r for res in self._fetch(plans) for r in _resources(res)]
        _add_included(result, found)


def _asks_includes(url: str) -> bool:
    return f"{INCLUDE}=" in url or f"{REVINCLUDE}=" in url


def _is_searchset(value: Resource | None) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "Bundle"


def _matches(bundle: Resource) -> list[Resource]:
    return [
        e["resource"]
        for e in bundle.get("entry") or []
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and (e.get("search") or {}).get("mode", "match") == "match"
    ]


def _resources(value: Resource | None) -> list[Resource]:
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") != "Bundle":
        return [value]
    return [
        e["resource"]
        for e in value.get("entry") or []
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def _add_included(bundle: Resource, resources: Iterable[Resource]) -> None:
    """Append resources as `include` entries, each once (a match stays a match)."""
    entries = bundle.setdefault("entry", [])
    seen = {
        f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}"
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    }
    for resource in resources:
        key = f"{resource.get('resourceType')}/{resource.get('id')}"
        if key not in seen:
            seen.add(key)
            entries.append({"resource": resource, "search": {"mode": "include"}})
