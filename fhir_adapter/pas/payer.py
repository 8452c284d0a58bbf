"""The payer's side of Da Vinci PAS: decide a request Bundle with the same engine.

The Claim is turned back into what the rules read: a planned Procedure (the item's code,
date and place of service, the care team as performers, `basedOn` nothing), one confirmed
Condition per diagnosis code, the request's Coverage, its supporting documents as the
Procedure's reports, and a completed questionnaire's answers as evidence. The decision
(decision.decide) is kept per request (its trace number) in SQLite, with the
Subscriptions of submitters: when a pended request is decided again (the missing answers
arrived), each subscriber whose organization filter matches is notified with the full
PAS response Bundle.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_adapter.case import assemble
from fhir_adapter.conformance import check
from fhir_adapter.errors import AdapterError
from fhir_adapter.fhir.references import reference_string, tail_key
from fhir_adapter.pack import Pack
from fhir_adapter.pas.decision import Decision, claim_response, decide, response_bundle
from fhir_adapter.pas.request import PROFILE_REQUEST_BUNDLE, REQUESTED_SETTING
from fhir_adapter.rules import evaluate_case
from fhir_adapter.sources.questionnaire import evidence_from
from fhir_adapter.sources.store import ResourceStore

PAS_TOPIC = "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


MAX_ENTRIES = 500


class BadRequest(AdapterError):
    """A request the payer refuses (4xx): `element` names where it is wrong."""

    def __init__(self, message: str, element: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.element = element
        self.status = status


@dataclass
class Outcome:
    """A decided request: the response Bundle and the decision in it."""

    trace: str
    decision: Decision
    bundle: dict[str, Any]
    was_pended: bool


def checked_request(bundle: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request Bundle and its Claim, or BadRequest naming the first element the PAS
    profiles refuse. A request names one Claim and what it references: more than
    `MAX_ENTRIES` entries is refused before any check (checking costs ~5 ms an entry)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("the body must be a PAS request Bundle", "Bundle")
    entries = bundle.get("entry")
    if isinstance(entries, list) and len(entries) > MAX_ENTRIES:
        raise BadRequest(
            f"a PAS request of {len(entries)} entries: at most {MAX_ENTRIES} are read",
            "Bundle.entry",
            413,
        )
    report = check(bundle, PROFILE_REQUEST_BUNDLE)
    if not report.ok:
        first = report.errors[0]
        raise BadRequest(f"not a PAS request Bundle: {first}", first.location)
    claim = bundle["entry"][0]["resource"]
    if claim.get("use") != "preauthorization":
        raise BadRequest("Claim.use must be preauthorization", "Bundle.entry[0].resource.use")
    return bundle, claim


def request_store(
    bundle: dict[str, Any], claim: dict[str, Any]
) -> tuple[ResourceStore, dict[str, Any]]:
    """The store the rules read for a request, and the planned Procedure it asks for."""
    store = ResourceStore()
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource is not claim:
            store.add(resource, entry.get("fullUrl"))
    item = claim["item"][0]
    key = f"claim-{claim.get('id') or 'request'}"
    patient = claim.get("patient")
    conditions = []
    for i, dx in enumerate(claim.get("diagnosis") or [], 1):
        cc = dx.get("diagnosisCodeableConcept")
        if not isinstance(cc, dict):
            continue
        condition = {
            "resourceType": "Condition",
            "id": f"{key}-dx{i}",
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "verificationStatus": {
                "coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]
            },
            "code": cc,
            "subject": patient,
        }
        store.add(condition)
        conditions.append({"reference": f"Condition/{condition['id']}"})
    by_sequence = {ct.get("sequence"): ct.get("provider") for ct in claim.get("careTeam") or []}
    performers = [
        {"actor": by_sequence[s]} for s in item.get("careTeamSequence") or [] if by_sequence.get(s)
    ] or [{"actor": claim["provider"]}]
    reports: list[dict[str, Any]] = []
    procedure_ref = {"reference": f"Procedure/{key}"}
    for info in claim.get("supportingInfo") or []:
        ref = reference_string(info.get("valueReference"))
        target = store.resolve(info.get("valueReference")) if ref else None
        if target is None:
            continue
        if target.get("resourceType") == "DocumentReference":
            reports.append({"reference": store.key_of(target)})
        elif target.get("resourceType") == "QuestionnaireResponse":
            for derived in evidence_from(target, store.key_of(target), anchors=[procedure_ref]):
                store.add(derived)
    procedure: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": key,
        "status": "preparation",
        "code": item.get("productOrService"),
        "subject": patient,
        "performer": performers,
        "performedDateTime": item.get("servicedDate")
        or (item.get("servicedPeriod") or {}).get("start"),
    }
    if item.get("locationCodeableConcept"):
        procedure["extension"] = [
            {"url": REQUESTED_SETTING, "valueCodeableConcept": item["locationCodeableConcept"]}
        ]
    if conditions:
        procedure["reasonReference"] = conditions
    if reports:
        procedure["report"] = reports
    procedure = {k: v for k, v in procedure.items() if v not in (None, [])}
    store.add(procedure)
    return store, procedure


def decide_request(
    pack: Pack,
    bundle: dict[str, Any],
    claim: dict[str, Any],
    *,
    now: str,
    base: str,
    block_on: str | None = None,
) -> tuple[Decision, dict[str, Any]]:
    """The decision on a checked request and its PAS response Bundle."""
    store, procedure = request_store(bundle, claim)
    case = assemble(store, procedure, pack.procedure_systems, pack.procedure_code)
    evaluation = evaluate_case(pack, case, block_on)
    claim_key = f"Claim/{claim.get('id')}"
    service_date = str(procedure.get("performedDateTime") or now)[:10]
    decision = decide(
        evaluation,
        pack,
        claim_key=_trace(claim) or claim_key,
        service_date=service_date,
        block_on=block_on,
    )
    response = claim_response(claim, claim_key, decision, now=now)
    others: list[tuple[str, dict[str, Any]]] = [(claim_key, claim)]
    for ref in ("patient", "insurer", "provider"):
        key = tail_key(reference_string(claim.get(ref)) or "")
        found = store.get(key) if key else None
        if key and found is not None and key not in {k for k, _ in others}:
            others.append((key, found))
    return decision, response_bundle(response, others, now=now, base=base)


def _trace(claim: dict[str, Any]) -> str | None:
    for ident in claim.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            return f"{ident.get('system', '')}|{ident['value']}"
    return None


class PayerStore:
    """Requests, their latest decisions, and Subscriptions (SQLite, one file)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pas_request (trace TEXT PRIMARY KEY, submitter TEXT, "
                "action TEXT, response TEXT, updated TEXT)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pas_subscription (id TEXT PRIMARY KEY, submitter TEXT, "
                "org TEXT, resource TEXT)"
            )

    def previous_action(self, trace: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT action FROM pas_request WHERE trace = ?", (trace,)
            ).fetchone()
        return str(row[0]) if row else None

    def record(
        self, trace: str, submitter: str, action: str, response: dict[str, Any], now: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO pas_request VALUES (?, ?, ?, ?, ?)",
                (trace, submitter, action, json.dumps(response), now),
            )

    def latest(self, trace: str, submitter: str) -> dict[str, Any] | None:
        """The latest response Bundle for a request this submitter made (none for another's)."""
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM pas_request WHERE trace = ? AND submitter = ?",
                (trace, submitter),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def add_subscription(
        self, sid: str, submitter: str, org: str, resource: dict[str, Any]
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO pas_subscription VALUES (?, ?, ?, ?)",
                (sid, submitter, org, json.dumps(resource)),
            )

    def subscriptions(self, submitter: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT resource FROM pas_subscription WHERE submitter = ?", (submitter,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def submit(
    pack: Pack,
    store: PayerStore,
    body: Any,
    submitter: str,
    *,
    now: str,
    base: str,
    notify: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    block_on: str | None = None,
) -> Outcome:
    """`Claim/$submit`: check, decide, record; a request pended before and decided now
    notifies the submitter's subscriptions."""
    bundle, claim = checked_request(body)
    trace = _trace(claim) or f"Claim/{claim.get('id')}"
    before = store.previous_action(trace)
    decision, response = decide_request(pack, bundle, claim, now=now, base=base, block_on=block_on)
    store.record(trace, submitter, decision.action, response, now)
    was_pended = before == "A4"
    if was_pended and decision.action != "A4" and notify is not None:
        for subscription in store.subscriptions(submitter):
            notify(subscription, response)
    return Outcome(trace, decision, response, was_pended)


def inquire(store: PayerStore, body: Any, submitter: str) -> dict[str, Any]:
    """`Claim/$inquire` by example: the latest response to the request whose Claim
    identifier the inquiry's Claim carries (only the submitter's own)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest("the body must be a PAS inquiry Bundle", "Bundle")
    entries = body.get("entry") or []
    claim = (entries[0].get("resource") if entries and isinstance(entries[0], dict) else None) or {}
    if claim.get("resourceType") != "Claim":
        raise BadRequest("the inquiry's first entry must be a Claim", "Bundle.entry[0].resource")
    trace = _trace(claim)
    if trace is None:
        raise BadRequest(
            "the inquiry's Claim has no identifier", "Bundle.entry[0].resource.identifier"
        )
    found = store.latest(trace, submitter)
    if found is None:
        raise BadRequest(f"no request with identifier {trace}", "Claim.identifier", 404)
    return found


def subscription(body: Any) -> tuple[dict[str, Any], str]:
    """A PASSubscription (rest-hook, full-resource, the PAS topic) and its org filter."""
    if not isinstance(body, dict) or body.get("resourceType") != "Subscription":
        raise BadRequest("the body must be a Subscription", "Subscription")
    if body.get("criteria") != PAS_TOPIC:
        raise BadRequest(f"Subscription.criteria must be {PAS_TOPIC}", "Subscription.criteria")
    channel = body.get("channel") or {}
    if channel.get("type") != "rest-hook":
        raise BadRequest("Subscription.channel.type must be rest-hook", "Subscription.channel.type")
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise BadRequest(
            "Subscription.channel.endpoint is required", "Subscription.channel.endpoint"
        )
    filters = [
        e.get("valueString")
        for e in (body.get("_criteria") or {}).get("extension") or []
        if e.get("url") == BACKPORT + "backport-filter-criteria"
    ]
    org = next((f.split("=", 1)[1] for f in filters if isinstance(f, str) and "=" in f), "")
    return body, org


def notification(
    subscription: dict[str, Any], response: dict[str, Any], *, now: str, number: int
) -> dict[str, Any]:
    """The backport notification Bundle: the status Parameters, then the full PAS response."""
    focus = f"urn:uuid:{response['identifier']['value'].rsplit(':', 1)[-1]}"
    return {
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": now,
        "entry": [
            {
                "fullUrl": f"urn:uuid:{_status_id(subscription, number)}",
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [
                        {
                            "name": "subscription",
                            "valueReference": {"reference": f"Subscription/{subscription['id']}"},
                        },
                        {"name": "topic", "valueCanonical": PAS_TOPIC},
                        {"name": "status", "valueCode": "active"},
                        {"name": "type", "valueCode": "event-notification"},
                        {
                            "name": "notification-event",
                            "part": [
                                {"name": "event-number", "valueString": str(number)},
                                {"name": "timestamp", "valueInstant": now},
                                {"name": "focus", "valueReference": {"reference": focus}},
                            ],
                        },
                    ],
                },
                "request": {"method": "GET", "url": f"Subscription/{subscription['id']}/$status"},
                "response": {"status": "200"},
            },
            {
                "fullUrl": focus,
                "resource": response,
                "request": {"method": "POST", "url": "Bundle"},
                "response": {"status": "200"},
            },
        ],
    }


def _status_id(subscription: dict[str, Any], number: int) -> str:
    import hashlib

    h = hashlib.sha256(f"{subscription['id']}|{number}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"
