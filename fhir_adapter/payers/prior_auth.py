"""An approved prior authorization for the case's patient, code and date of service: a
ClaimResponse (use preauthorization) whose item for the code carries an approving PAS
review action (A1, A6), or, without one, whose outcome decides and that gives a preAuthRef."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_adapter.case import Case
from fhir_adapter.fhir.codings import codings
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.load import Pack
from fhir_adapter.pack.schema import PriorAuthorization
from fhir_adapter.payers.load import CompiledOverlay


@dataclass(frozen=True)
class Authorization:
    number: str | None
    missing: bool
    evidence: tuple[Evidence, ...]


def prior_auth(pack: Pack, overlay: CompiledOverlay | None, case: Case) -> Authorization:
    """The first approved authorization in the record (its number goes on the Claim, whether
    or not a policy asks for one); when the policy requires one and none is approved,
    `missing`, with what was looked at."""
    required = overlay is not None and overlay.model.prior_authorization == "required"
    cfg = pack.model.payer_findings.prior_authorization if pack.model.payer_findings else None
    looked: list[Evidence] = []
    if cfg is not None:
        for response in case.authorizations:
            number, why = _approved(cfg, pack, case, response)
            evidence = Evidence(case.ref(response), "ClaimResponse", None, why)
            if number is not None:
                return Authorization(number or None, False, (evidence,))
            looked.append(evidence)
    searched = Evidence(
        case.key, "Procedure", None, "searched: the patient's ClaimResponses (use preauthorization)"
    )
    return Authorization(None, required, (searched, *looked))


def _approved(
    cfg: PriorAuthorization, pack: Pack, case: Case, response: Resource
) -> tuple[str | None, str]:
    """(the authorization number, "" when approved without one; None when not) and why."""
    if response.get("status") != "active":
        return None, f"status {response.get('status')!r}, not active"
    if response.get("use") != "preauthorization":
        return None, f"use {response.get('use')!r}, not preauthorization"
    patient = (response.get("patient") or {}).get("reference") or ""
    if not case.patient_ref or patient.split("/")[-2:] != case.patient_ref.split("/")[-2:]:
        return None, "another patient"
    if response.get("outcome") not in cfg.outcomes:
        return None, f"outcome {response.get('outcome')!r} decides nothing"
    request = case.authorization_requests.get(case.ref(response)) or {}
    code = pack.procedure_code
    items = list(_items_for(response, request, code))
    if not items:
        return None, f"no item for {code}"
    for item, period in items:
        action, number = _review_action(cfg, item)
        if action is not None and action not in cfg.approved:
            continue
        if action is None and not response.get("preAuthRef"):
            continue
        span = _period(cfg, item) or period or response.get("preAuthPeriod")
        if not _covers(span, case.date):
            return None, f"{code} authorized for {_show(span)}, not the date of service {case.date}"
        found = number or response.get("preAuthRef") or ""
        why = f"{code} approved" + (f" ({action})" if action else "") + f", number {found or '-'}"
        return found, why
    return None, f"{code} not approved (review action not {'/'.join(cfg.approved)})"


def _items_for(
    response: Resource, request: Resource, code: str
) -> Iterator[tuple[dict[str, Any], Any]]:
    """The response's items (and added items) for `code`, with the requested service period."""
    asked = {
        i.get("sequence"): i
        for i in request.get("item") or []
        if isinstance(i, dict)
        and any(c.get("code") == code for c in codings(i.get("productOrService")))
    }
    for item in response.get("item") or []:
        if isinstance(item, dict) and item.get("itemSequence") in asked:
            source = asked[item["itemSequence"]]
            yield item, source.get("servicedPeriod") or _day(source.get("servicedDate"))
    for item in response.get("addItem") or []:
        if isinstance(item, dict) and any(
            c.get("code") == code for c in codings(item.get("productOrService"))
        ):
            yield item, item.get("servicedPeriod") or _day(item.get("servicedDate"))


def _day(value: Any) -> dict[str, str] | None:
    return {"start": value, "end": value} if isinstance(value, str) else None


def _review_action(cfg: PriorAuthorization, item: dict[str, Any]) -> tuple[str | None, str | None]:
    for adjudication in item.get("adjudication") or []:
        for ext in (adjudication or {}).get("extension") or []:
            if ext.get("url") != cfg.review_action:
                continue
            code = number = None
            for sub in ext.get("extension") or []:
                if sub.get("url") in (cfg.review_action_code, "code"):
                    code = next(
                        (c.get("code") for c in codings(sub.get("valueCodeableConcept"))), None
                    )
                elif sub.get("url") == "number":
                    number = sub.get("valueString")
            return code, number
    return None, None


def _period(cfg: PriorAuthorization, item: dict[str, Any]) -> Any:
    for ext in item.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") in cfg.period_extensions:
            return ext.get("valuePeriod")
    return None


def _covers(period: Any, date: str | None) -> bool:
    if not isinstance(period, dict) or not date:
        return False
    start, end = str(period.get("start") or "")[:10], str(period.get("end") or "")[:10]
    return bool(start or end) and (not start or start <= date) and (not end or date <= end)


def _show(period: Any) -> str:
    if not isinstance(period, dict):
        return "no period"
    return f"{period.get('start') or '…'} to {period.get('end') or '…'}"
