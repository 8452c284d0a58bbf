"""Plan the write of one case against what the server already holds for it.

Unchanged resources are not written again; changed ones are updated in place
(PUT on the id found by the identifier search, with If-Match); new ones are
conditional creates on the deterministic identifier; earlier output that no longer applies (a
finding that went away, a Claim that is now blocked) is cancelled, not left
behind. Nothing to do means no request at all.
"""

from __future__ import annotations

import copy
from typing import Any

from fhir_adapter.fhir.references import with_references
from fhir_adapter.writeback.bundle import CaseOutput

_VOLATILE = ("id", "meta", "created", "identifiedDateTime", "text")


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in _VOLATILE}


def plan_write(
    output: CaseOutput, existing: list[dict[str, Any]], base_url: str = ""
) -> dict[str, Any] | None:
    """The transaction to send for this case, or None when the server is already current."""
    by_ident: dict[str, dict[str, Any]] = {}
    for resource in existing:
        for ident in resource.get("identifier") or []:
            if isinstance(ident, dict) and ident.get("value"):
                by_ident[f"{ident.get('system')}|{ident['value']}"] = resource

    def key(resource: dict[str, Any]) -> str:
        ident = resource["identifier"][0]
        return f"{ident['system']}|{ident['value']}"

    mapping = {}
    for url, resource in zip(output.full_urls, output.resources, strict=True):
        found = by_ident.get(key(resource))
        if found is not None and found.get("id"):
            mapping[url] = f"{found['resourceType']}/{found['id']}"
    entries = []
    wanted = set()
    for url, resource in zip(output.full_urls, output.resources, strict=True):
        resource = with_references(resource, mapping)
        wanted.add(key(resource))
        found = by_ident.get(key(resource))
        if found is not None and found.get("id"):
            if _comparable(found) == _comparable(resource):
                continue
            # Known resource: a plain update with optimistic locking, no conditional search.
            request: dict[str, Any] = {
                "method": "PUT",
                "url": f"{found['resourceType']}/{found['id']}",
            }
            version = (found.get("meta") or {}).get("versionId")
            if version:
                request["ifMatch"] = f'W/"{version}"'
            resource = {**resource, "id": found["id"]}
        else:
            ident = resource["identifier"][0]
            request = {
                "method": "POST",
                "url": resource["resourceType"],
                "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
            }
        entries.append({"fullUrl": url, "resource": resource, "request": request})
    # A server without transactions takes these one by one, and a run can stop between any
    # two: a Claim withdrawn goes first (no prefix leaves a Claim the case no longer
    # supports), a finding withdrawn last (no prefix loses a finding that still holds).
    withdrawn_claims: list[dict[str, Any]] = []
    for resource in existing:
        idents = [f"{i.get('system')}|{i.get('value')}" for i in resource.get("identifier") or []]
        if not idents or idents[0] in wanted or resource.get("status") == "cancelled":
            continue
        if not resource.get("id"):
            continue
        stale = copy.deepcopy(resource)
        stale.pop("meta", None)
        stale["status"] = "cancelled"
        request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        version = (resource.get("meta") or {}).get("versionId")
        if version:
            request["ifMatch"] = f'W/"{version}"'
        withdrawn = {
            "fullUrl": f"{base_url.rstrip('/')}/{resource['resourceType']}/{resource['id']}",
            "resource": stale,
            "request": request,
        }
        (withdrawn_claims if stale["resourceType"] == "Claim" else entries).append(withdrawn)
    entries[:0] = withdrawn_claims
    if not entries:
        return None
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def output_queries(output_system: str, token: str) -> list[str]:
    """Searches that find a case's earlier Claim and DetectedIssues."""
    return [
        f"{rtype}?identifier={output_system}/case|{token}" for rtype in ("Claim", "DetectedIssue")
    ]
