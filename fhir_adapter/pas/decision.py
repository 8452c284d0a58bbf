"""A prior-authorization decision: made from the engine's findings (payer), written as a
PAS ClaimResponse, and read back from one (provider).

The payer decides by the same findings `evaluate` reports on the requested service
(`mappings/prior-auth.yaml`): a finding that blocks the Claim and is not documentation
the payer can ask for is a criterion not met (A3, the criterion in text); documentation
missing (doc-tumor-size, payer-criteria-undocumented...) pends (A4, naming what is
missing); none of them certifies (A1, with an authorization number and period).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.findings import Evaluation, Finding
from fhir_adapter.pack import Pack
from fhir_adapter.pas.request import PAS, PROFILE_CLAIMRESPONSE, PROFILE_RESPONSE_BUNDLE
from fhir_adapter.sources.questionnaire import PriorAuth, prior_auth

X12_306 = "https://codesystem.x12.org/005010/306"
EXT_REVIEW_ACTION = PAS + "extension-reviewAction"
EXT_REVIEW_ACTION_CODE = PAS + "extension-reviewActionCode"
EXT_ADMIN_REFERENCE = PAS + "extension-administrationReferenceNumber"
EXT_PREAUTH_ISSUE = PAS + "extension-itemPreAuthIssueDate"
EXT_PREAUTH_PERIOD = PAS + "extension-itemPreAuthPeriod"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
FINDING_SYSTEM = "http://fhir-adapter.org/fhir/CodeSystem/cpt-47382-finding"

ACTIONS = {
    "A1": "Certified in total",
    "A2": "Certified - partial",
    "A3": "Not Certified",
    "A4": "Pended",
    "A6": "Modified",
    "C": "Cancelled",
}


@dataclass
class Decision:
    """What was decided on the request: X12 306 action, why, the authorization."""

    action: str  # A1 certified, A3 not certified, A4 pended, A6 modified
    reasons: list[Finding] = field(default_factory=list)  # A3: unmet; A4: what is missing
    number: str | None = None  # the authorization number (A1, A6)
    period: tuple[str, str] | None = None
    pend_reference: str | None = None  # A4: the payer's administration reference

    @property
    def certified(self) -> bool:
        return self.action in ("A1", "A2", "A6")

    @property
    def label(self) -> str:
        return ACTIONS.get(self.action, self.action)


def decide(
    evaluation: Evaluation,
    pack: Pack,
    *,
    claim_key: str,
    service_date: str,
    block_on: str | None = None,
    config: PriorAuth | None = None,
) -> Decision:
    """The payer's decision on one request from the engine's findings on its service."""
    config = config or prior_auth()
    threshold = pack.severity_rank(block_on or pack.model.default_block_on)
    ignored = set(config.decision.not_before_service)
    pend = set(config.decision.pend)
    relevant = [f for f in evaluation.findings if f.code not in ignored]
    unmet = [
        f for f in relevant if f.code not in pend and pack.severity_rank(f.severity) >= threshold
    ]
    if unmet:
        return Decision("A3", unmet)
    missing = [f for f in relevant if f.code in pend]
    if missing:
        return Decision("A4", missing, pend_reference="PEND-" + _digest(claim_key, "pend"))
    start = dt.date.fromisoformat(service_date)
    end = start + dt.timedelta(days=config.pas.authorization_days)
    return Decision(
        "A1",
        number="PA" + _digest(claim_key, "A1").upper(),
        period=(start.isoformat(), end.isoformat()),
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def claim_response(
    claim: dict[str, Any], claim_ref: str, decision: Decision, *, now: str
) -> dict[str, Any]:
    """The PAS ClaimResponse for `claim` (its item sequence echoed, the decision in the
    `submitted` adjudication's reviewAction; preAuthRef and disposition for servers and
    clients that read only those)."""
    item = (claim.get("item") or [{}])[0]
    review: list[dict[str, Any]] = [
        {
            "url": EXT_REVIEW_ACTION_CODE,
            "valueCodeableConcept": {
                "coding": [{"system": X12_306, "code": decision.action, "display": decision.label}]
            },
        }
    ]
    if decision.number:
        review.insert(0, {"url": "number", "valueString": decision.number})
    for finding in decision.reasons[:1]:
        review.append(
            {
                "url": "reasonCode",
                "valueCodeableConcept": {
                    "coding": [{"system": FINDING_SYSTEM, "code": finding.code}],
                    "text": finding.message,
                },
            }
        )
    item_ext: list[dict[str, Any]] = []
    if decision.action == "A4" and decision.pend_reference:
        item_ext.append({"url": EXT_ADMIN_REFERENCE, "valueString": decision.pend_reference})
    if decision.period:
        item_ext += [
            {"url": EXT_PREAUTH_ISSUE, "valueDate": now[:10]},
            {
                "url": EXT_PREAUTH_PERIOD,
                "valuePeriod": {"start": decision.period[0], "end": decision.period[1]},
            },
        ]
    response: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": f"{claim.get('id', 'claim')}-{decision.action.lower()}",
        "meta": {"profile": [PROFILE_CLAIMRESPONSE]},
        "identifier": [dict(i) for i in claim.get("identifier") or []][:1],
        **echoed(claim, now),
        "requestor": claim.get("provider"),
        "request": {"reference": claim_ref},
        "outcome": "complete",
        "disposition": _disposition(decision),
        "item": [
            {
                "extension": item_ext,
                "itemSequence": item.get("sequence", 1),
                "adjudication": [
                    {
                        "extension": [{"url": EXT_REVIEW_ACTION, "extension": review}],
                        "category": {"coding": [{"system": ADJUDICATION, "code": "submitted"}]},
                    }
                ],
            }
        ],
    }
    if decision.number:
        response["preAuthRef"] = decision.number
    if decision.period:
        response["preAuthPeriod"] = {"start": decision.period[0], "end": decision.period[1]}
    notes = [f"{f.code}: {f.message}" for f in decision.reasons]
    if notes:
        response["processNote"] = [
            {"number": i, "type": "display", "text": text} for i, text in enumerate(notes, 1)
        ]
    return {k: v for k, v in response.items() if v not in (None, [], {})}


def echoed(claim: dict[str, Any], now: str) -> dict[str, Any]:
    """What a ClaimResponse or an inquiry repeats of the request's Claim."""
    return {
        "status": "active",
        "type": claim.get("type"),
        "use": "preauthorization",
        "patient": claim.get("patient"),
        "created": now,
        "insurer": claim.get("insurer"),
    }


def _disposition(decision: Decision) -> str:
    if decision.action == "A4":
        missing = ", ".join(f.code for f in decision.reasons)
        return f"Pended: documentation missing ({missing})"
    if decision.action == "A3":
        return "Not certified: " + "; ".join(f.message for f in decision.reasons)
    return f"{decision.label}: authorization {decision.number}"


def response_bundle(
    claim_response: dict[str, Any],
    others: Sequence[tuple[str, dict[str, Any]]],
    *,
    now: str,
    base: str,
) -> dict[str, Any]:
    """The PAS response Bundle: the ClaimResponse first, then what it references."""
    key = f"ClaimResponse/{claim_response['id']}"
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [PROFILE_RESPONSE_BUNDLE]},
        "identifier": {
            "system": "urn:ietf:rfc:3986",
            "value": "urn:uuid:" + _uuid_from(key + now),
        },
        "type": "collection",
        "timestamp": now,
        "entry": [
            {"fullUrl": base + k, "resource": r} for k, r in [(key, claim_response), *others]
        ],
    }


def _uuid_from(text: str) -> str:
    h = hashlib.sha256(text.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


# -- reading a decision (the provider) -----------------------------------------------


@dataclass
class ReadDecision:
    """A decision as the provider reads it from any payer's ClaimResponse."""

    action: str
    number: str | None
    period: tuple[str, str] | None
    reasons: list[str]
    pend_reference: str | None
    claim_response: dict[str, Any]

    @property
    def certified(self) -> bool:
        return self.action in ("A1", "A2", "A6")


def find_claim_response(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The ClaimResponse of a PAS response Bundle (first entry), or the resource itself."""
    if answer.get("resourceType") == "ClaimResponse":
        return answer
    if answer.get("resourceType") == "Bundle":
        for entry in answer.get("entry") or []:
            res = (entry or {}).get("resource") or {}
            if res.get("resourceType") == "ClaimResponse":
                return res
    if answer.get("resourceType") == "Parameters":  # $inquire's output
        for param in answer.get("parameter") or []:
            found = find_claim_response((param or {}).get("resource") or {})
            if found is not None:
                return found
    return None


def read_decision(response: dict[str, Any], item_sequence: int = 1) -> ReadDecision:
    """The decision on item `item_sequence`: its `submitted` adjudication's reviewAction
    (X12 306 code, number, reasonCode), else `disposition`/`preAuthRef` for payers that
    set no reviewAction (a pend is then what says so, or an outcome of `queued`)."""
    action: str | None = None
    number: str | None = None
    reasons: list[str] = []
    pend_ref: str | None = None
    period: tuple[str, str] | None = None
    for item in response.get("item") or []:
        if item.get("itemSequence") != item_sequence:
            continue
        for ext in item.get("extension") or []:
            if ext.get("url") == EXT_ADMIN_REFERENCE:
                pend_ref = ext.get("valueString")
            if ext.get("url") == EXT_PREAUTH_PERIOD:
                p = ext.get("valuePeriod") or {}
                if p.get("start") and p.get("end"):
                    period = (p["start"], p["end"])
        for adjudication in item.get("adjudication") or []:
            for ext in adjudication.get("extension") or []:
                if ext.get("url") != EXT_REVIEW_ACTION:
                    continue
                for sub in ext.get("extension") or []:
                    url = sub.get("url")
                    if url in ("code", EXT_REVIEW_ACTION_CODE):
                        codes = (sub.get("valueCodeableConcept") or {}).get("coding") or []
                        action = next((c.get("code") for c in codes if c.get("code")), action)
                    elif url == "number":
                        number = sub.get("valueString")
                    elif url == "reasonCode":
                        cc = sub.get("valueCodeableConcept") or {}
                        text = cc.get("text") or ", ".join(
                            c.get("code", "") for c in cc.get("coding") or []
                        )
                        if text:
                            reasons.append(text)
    if action is None:
        action = _fallback_action(response)
    number = number or response.get("preAuthRef")
    if period is None:
        p = response.get("preAuthPeriod") or {}
        if p.get("start") and p.get("end"):
            period = (p["start"], p["end"])
    if not reasons:
        reasons = [n.get("text") for n in response.get("processNote") or [] if n.get("text")]
    return ReadDecision(action, number, period, reasons, pend_ref, response)


def _fallback_action(response: dict[str, Any]) -> str:
    disposition = str(response.get("disposition") or "").lower()
    if response.get("outcome") == "error":
        return "A3"
    if response.get("outcome") == "queued" or "pend" in disposition:
        return "A4"
    if "denied" in disposition or "not certified" in disposition or "not approved" in disposition:
        return "A3"
    if response.get("preAuthRef"):
        return "A1"
    return "A4"
