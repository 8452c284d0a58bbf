"""Gather cases from a FHIR server in few round trips.

Per case: the Procedure search page brings the Procedure with its patient,
encounter, performers, location and stated reasons (`_include`); one batch
brings everything that points at the procedure or encounter, the patient's
Coverage, the performers' roles and the adapter's own earlier output; a last
batch reads whatever references are still unresolved. At most three reads,
plus, only when documents or reports carry text attachments by `url`: one batch
for the `Binary` ones and one GET per other same-origin URL. A server without
batch or those includes is read the plain way (client.reads): the same resources,
one request per search or read.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.case import Case, assemble, service_date
from fhir_adapter.client.capabilities import is_refusal
from fhir_adapter.client.reads import Reader
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.client.urls import redact_url
from fhir_adapter.errors import ServerError
from fhir_adapter.fhir.codings import Systems
from fhir_adapter.fhir.references import reference_string, tail_key
from fhir_adapter.sources.questionnaire import add_questionnaire_evidence
from fhir_adapter.sources.store import ResourceStore

# Attachments given by `url` are read up to this size (the rest of a document is not needed
# to find a sentence, and a runaway file must not stall the run).
ATTACHMENT_LIMIT = 1_000_000
_TEXT_TYPES = ("text/plain", "text/html", "application/xhtml")

PROCEDURE_INCLUDES = (
    "Procedure:subject",
    "Procedure:encounter",
    "Procedure:performer",
    "Procedure:location",
    "Procedure:reason-reference",
)


@dataclass
class ServerCase:
    """A case as gathered from a server, with what the adapter wrote for it before."""

    case: Case
    store: ResourceStore
    existing: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0


def _ref_id(ref: Any, rtype: str | None = None) -> str | None:
    text = reference_string(ref)
    key = tail_key(text) if text else None
    if key and (rtype is None or key.startswith(f"{rtype}/")):
        return key
    return None


def _bundle_resources(bundle: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    if not bundle:
        return
    if bundle.get("resourceType") != "Bundle":
        yield bundle
        return
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType"):
            yield resource


def bundle_resources(results: Sequence[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The resources of search results (a batch's entries), in order."""
    return [r for result in results for r in _bundle_resources(result)]


class ServerSource:
    """Finds the Procedures coded system|code on a server and gathers each case."""

    def __init__(self, client: FhirClient, system: Systems, code: str) -> None:
        self.client = client
        self.system = system
        self.code = code
        self.reader = Reader(client)
        # the Procedure search's includes the server does not do: read per case instead
        self.pending_includes: tuple[str, ...] = ()

    def procedure_pages(
        self,
        *,
        ids: Sequence[str] = (),
        patient: str | None = None,
        encounter: str | None = None,
        since: str | None = None,
        page_size: int = 50,
    ) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """(matched Procedures, included resources) for each page of the search."""
        systems = (self.system,) if isinstance(self.system, str) else self.system
        # one token per URI the system is written under (FHIR search: a comma is "or")
        params = [("code", ",".join(f"{s}|{self.code}" for s in systems))]
        if ids:
            params.append(("_id", ",".join(ids)))
        if patient:
            params.append(("patient", patient if "/" in patient else f"Patient/{patient}"))
        if encounter:  # the CDS Hooks encounter-discharge service asks per encounter
            params.append(
                ("encounter", encounter if "/" in encounter else f"Encounter/{encounter}")
            )
        if since:
            params.append(("date", f"ge{since}"))
        includes = self.reader.can_include("Procedure", PROCEDURE_INCLUDES)
        self.pending_includes = tuple(i for i in PROCEDURE_INCLUDES if i not in includes)
        count = [("_count", str(page_size))]
        pages = self.client.search_pages(
            "Procedure", params + [("_include", inc) for inc in includes] + count
        )
        try:
            first = next(pages, None)
        except ServerError as exc:
            if not (includes and is_refusal(exc)):
                raise
            self.reader.features.refuse("_include", redact_url(self.client.base_url), exc)
            self.pending_includes = PROCEDURE_INCLUDES
            pages = self.client.search_pages("Procedure", params + count)
            first = next(pages, None)
        for page in itertools.chain([first] if first is not None else [], pages):
            matches: list[dict[str, Any]] = []
            included: list[dict[str, Any]] = []
            for entry in page.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if not isinstance(resource, dict):
                    continue
                mode = (entry.get("search") or {}).get("mode", "match")
                (included if mode == "include" else matches).append(resource)
            yield [m for m in matches if m.get("resourceType") == "Procedure"], included

    def gather(
        self,
        procedure: dict[str, Any],
        included: Sequence[dict[str, Any]],
        output_queries: Sequence[str] = (),
        outputs_from: Reader | None = None,
    ) -> ServerCase:
        """Requests 2 and 3 of a case: what points at it, then what is still missing.

        `outputs_from`: the reader of the server the output is written to, when that is
        not this one (the earlier output is looked for there)."""
        with self.client.tally() as tally:
            if outputs_from is None or outputs_from.client is self.client:
                case, store, existing = self._gather(procedure, included, output_queries)
            else:
                with outputs_from.client.tally() as other:
                    existing = bundle_resources(outputs_from.get_many(output_queries))
                    case, store, _ = self._gather(procedure, included, ())
                tally.update(other)
        return ServerCase(case, store, existing, sum(tally.values()))

    def _gather(
        self,
        procedure: dict[str, Any],
        included: Sequence[dict[str, Any]],
        output_queries: Sequence[str],
    ) -> tuple[Case, ResourceStore, list[dict[str, Any]]]:
        store = ResourceStore()
        for resource in [*included, procedure]:
            store.add(resource)
        if self.pending_includes:  # what the search's _include would have brought
            for resource in self.reader.included([procedure], self.pending_includes):
                store.add(resource)
        proc_key = f"Procedure/{procedure['id']}"
        patient = _ref_id(procedure.get("subject"), "Patient")
        encounter_key = _ref_id(procedure.get("encounter"), "Encounter")
        queries: list[str] = [
            f"Observation?part-of={proc_key}",
            f"DocumentReference?related={proc_key}",
        ]
        if encounter_key:
            for rtype in (
                "Condition",
                "Observation",
                "DiagnosticReport",
                "DocumentReference",
                "Procedure",
            ):
                queries.append(f"{rtype}?encounter={encounter_key}")
        if patient:
            # The patient's Procedures up to the date of service: the session when there is
            # no encounter, units per date across encounters, global periods of earlier ones.
            date = service_date(procedure, None)
            if date:
                # with their performers: a colleague of the same group and specialty is in
                # the global-period scope (whose roles come in the last read, if needed)
                queries.append(
                    f"Procedure?subject={patient}&date=le{date}&_include=Procedure:performer"
                )
            queries.append(f"Coverage?beneficiary={patient}&_include=Coverage:payor")
            # prior authorizations, with the requests they answer (payers.prior_auth)
            queries.append(
                f"ClaimResponse?patient={patient}&use=preauthorization"
                "&_include=ClaimResponse:request"
            )
            # completed prior-authorization questionnaires: their answers are evidence
            # (sources.questionnaire), found through the order the procedure is based on
            if procedure.get("basedOn"):
                queries.append(f"QuestionnaireResponse?subject={patient}&status=completed")
        for order in procedure.get("basedOn") or []:
            order_key = _ref_id(order, "ServiceRequest")
            if order_key:  # what documents the order (as case.assemble anchors it)
                queries.append(f"DocumentReference?related={order_key}")
        for performer in procedure.get("performer") or []:
            actor = _ref_id((performer or {}).get("actor"), "Practitioner")
            if actor:
                queries.append(
                    f"PractitionerRole?practitioner={actor}&_include=PractitionerRole:organization"
                )
        queries.extend(output_queries)
        # Direct references known now (encounter's diagnoses, locations, provider; reports).
        direct = self._missing(store, [procedure, *store.of_type("Encounter")])
        results = self.reader.get_many(queries + direct)
        existing: list[dict[str, Any]] = []
        first_output = len(queries) - len(output_queries)
        for index, result in enumerate(results):
            is_output = first_output <= index < len(queries)
            for resource in _bundle_resources(result):
                if is_output:
                    existing.append(resource)
                else:
                    store.add(resource)
        add_questionnaire_evidence(store)
        case = assemble(store, procedure, self.system, self.code)
        dangling = {tail_key(r) for refs in case.unresolved.values() for r in refs}
        leftovers = sorted(k for k in dangling if k and not store.has(k))
        leftovers += _colleague_roles(store, procedure)
        if leftovers:
            for found in self.reader.get_many(leftovers):
                if found is None:
                    continue
                for resource in _bundle_resources(found) if _is_bundle(found) else [found]:
                    store.add(resource)
            case = assemble(store, procedure, self.system, self.code)
        fetch_attachments(self.client, case, self.reader)
        return case, store, existing

    @staticmethod
    def _missing(store: ResourceStore, resources: Sequence[dict[str, Any]]) -> list[str]:
        wanted: list[str] = []
        for resource in resources:
            refs: list[Any] = []
            if resource.get("resourceType") == "Encounter":
                refs += [
                    d.get("condition")
                    for d in resource.get("diagnosis") or []
                    if isinstance(d, dict)
                ]
                refs += [
                    loc.get("location")
                    for loc in resource.get("location") or []
                    if isinstance(loc, dict)
                ]
                refs.append(resource.get("serviceProvider"))
            else:
                refs += list(resource.get("report") or [])
                refs += list(resource.get("reasonReference") or [])
                refs.append(resource.get("location"))
            for ref in refs:
                key = _ref_id(ref)
                if key and store.get(key) is None and key not in wanted:
                    wanted.append(key)
        return wanted


def _is_bundle(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "Bundle"


def _colleague_roles(store: ResourceStore, procedure: dict[str, Any]) -> list[str]:
    """Searches for the roles (with their organization) of the practitioners who performed
    the patient's earlier Procedures, when they are not the case's own performers: their
    group and specialty decide whether a global period is in scope."""
    own = {
        _ref_id((p or {}).get("actor"), "Practitioner") for p in procedure.get("performer") or []
    }
    date = service_date(procedure, None)
    wanted: list[str] = []
    for other in store.of_type("Procedure"):
        day = service_date(other, None)
        if other is procedure or not date or not day or day >= date:
            continue
        for performer in other.get("performer") or []:
            actor = _ref_id((performer or {}).get("actor"), "Practitioner")
            query = f"PractitionerRole?practitioner={actor}&_include=PractitionerRole:organization"
            if actor and actor not in own and query not in wanted:
                wanted.append(query)
    return wanted


def url_attachments(case: Case) -> list[dict[str, Any]]:
    """Text attachments of the case's documents and reports given by `url`, without data."""
    found: list[dict[str, Any]] = []
    for doc in case.documents:
        for content in doc.get("content") or []:
            if isinstance(content, dict):
                found.append(content.get("attachment") or {})
    for report in case.reports:
        found.extend(report.get("presentedForm") or [])
    return [
        a
        for a in found
        if isinstance(a, dict)
        and isinstance(a.get("url"), str)
        and not a.get("data")
        and str(a.get("contentType") or "text/plain").lower().startswith(_TEXT_TYPES)
    ]


def fetch_attachments(
    client: FhirClient, case: Case, reader: Reader | None = None, limit: int = ATTACHMENT_LIMIT
) -> None:
    """Read the text of attachments given by `url` on the server's own origin, in place.

    `Binary/...` URLs (relative, or absolute under the base URL) come in one batch,
    so one read per case whatever their number; any other same-origin URL is one GET
    each. A URL on another origin is never requested. The text is cut at `limit`
    bytes and put in the attachment's `data`, where the text layer reads it.
    """
    binaries: dict[str, list[dict[str, Any]]] = {}
    others: list[dict[str, Any]] = []
    for att in url_attachments(case):
        url = att["url"]
        absolute = url if "://" in url else client.url(url)
        if not client.same_origin(absolute):
            continue
        key = tail_key(url)
        if key and key.startswith("Binary/") and absolute.startswith(client.base_url):
            binaries.setdefault(key, []).append(att)
        else:
            others.append(att)
    if binaries:
        keys = sorted(binaries)
        binaries_read = (reader or Reader(client)).get_many(keys)
        for key, binary in zip(keys, binaries_read, strict=True):
            data = (binary or {}).get("data")
            if not isinstance(data, str):
                continue
            try:
                raw = base64.b64decode(data, validate=False)[:limit]
            except (binascii.Error, ValueError):
                continue
            for att in binaries[key]:
                _inline(att, raw, str((binary or {}).get("contentType") or ""))
    for att in others:
        got = client.fetch_bytes(att["url"], limit)
        if got is not None:
            _inline(att, *got)


def _inline(att: dict[str, Any], raw: bytes, content_type: str) -> None:
    att["data"] = base64.b64encode(raw).decode("ascii")
    if not att.get("contentType") and content_type:
        att["contentType"] = content_type
