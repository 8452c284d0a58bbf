"""CDS Hooks calls built from the fixtures loaded on a FHIR server, for the hooks tests and
benchmark alike (one copy, so that what is timed is what is tested): the fixtures' 47382
Procedures as stored, the draft order each would have had, the hook contexts, and the
prefetch an EHR would send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_adapter.fhir.codings import has_coding
from fhir_adapter.fhir.systems import CPT
from fhir_adapter.hooks.services import render
from fhir_adapter.testing.catalog import list_fixtures

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from fhir_adapter.client.rest import FhirClient

USER = "Practitioner/clinician"


def ref_id(ref: dict[str, Any]) -> str:
    """The logical id a Reference ends with."""
    return str(ref["reference"]).split("/")[-1]


def stored_procedures(
    client: FhirClient, names: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """The 47382 Procedures of the named fixtures (all without names) as the server holds
    them, i.e. with their urn:uuid references rewritten by the server."""
    ids = [
        entry["resource"]["id"]
        for case in list_fixtures()
        if names is None or case.name in names
        for entry in case.transaction()["entry"]
        if entry["resource"]["resourceType"] == "Procedure"
        and has_coding(entry["resource"], ("code",), CPT, "47382")
    ]
    return [client.read("Procedure", i) for i in ids]


def draft_order(proc: dict[str, Any]) -> dict[str, Any]:
    """The draft ServiceRequest that would have ordered this Procedure."""
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": f"sr-{proc['id']}",
        "status": "draft",
        "intent": "order",
        "code": proc["code"],
        "subject": proc["subject"],
        "encounter": proc["encounter"],
        "occurrenceDateTime": proc.get("performedDateTime")
        or proc.get("performedPeriod", {}).get("start"),
    }
    for name in ("reasonReference", "reasonCode"):
        if proc.get(name):
            order[name] = proc[name]
    if proc.get("performer"):
        order["performer"] = [p["actor"] for p in proc["performer"]]
    if proc.get("location"):
        order["locationReference"] = [proc["location"]]
    return order


def discharge_context(proc: dict[str, Any], user: str = USER) -> dict[str, str]:
    """The encounter-discharge context of the Procedure's patient and encounter."""
    return {
        "userId": user,
        "patientId": ref_id(proc["subject"]),
        "encounterId": ref_id(proc["encounter"]),
    }


def order_context(
    proc: dict[str, Any], orders: list[dict[str, Any]], user: str = USER
) -> dict[str, Any]:
    """The order-sign context: the Procedure's patient and encounter, and the draft orders."""
    return {
        **discharge_context(proc, user),
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": o} for o in orders],
        },
    }


def ehr_prefetch(
    client: FhirClient, templates: Mapping[str, str], context: dict[str, Any]
) -> dict[str, Any]:
    """What an EHR sends as prefetch: each template rendered for the context and run on its
    server (a key whose tokens the context cannot fill is left out)."""
    out: dict[str, Any] = {}
    for key, template in templates.items():
        query = render(template, context)
        if query is not None:
            out[key] = client.request("GET", query)
    return out
