"""One transaction Bundle per case: the Claim (if not blocked) and a DetectedIssue per finding.

Entries are conditional creates on the deterministic identifier, so posting the
same Bundle twice stores nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_adapter.case import Case
from fhir_adapter.fhir.references import reference_label
from fhir_adapter.findings import Evaluation, Finding
from fhir_adapter.pack.load import Pack
from fhir_adapter.writeback.claim import build_claim
from fhir_adapter.writeback.identity import (
    business_identifier,
    case_identifier,
    case_token,
    full_url,
)


@dataclass
class CaseOutput:
    """What one case writes: resources with their fullUrls, and the Bundle."""

    evaluation: Evaluation
    resources: list[dict[str, Any]] = field(default_factory=list)
    full_urls: list[str] = field(default_factory=list)
    case_identifier: dict[str, str] = field(default_factory=dict)
    # for the worklist, Claim or not: a blocked case still has a date and a payer
    date_of_service: str | None = None
    payer: str | None = None
    # read from a FHIR server: the requests it took to gather the case (the JSON
    # report's `reads`); None for files, and not carried by `to_bytes`
    reads: int | None = None
    # the Procedure's business identifier (`system|value`), when it has one
    procedure_identifier: str | None = None

    def bundle(self, method: str = "create") -> dict[str, Any]:
        """A transaction; `create` posts with ifNoneExist, `upsert` PUTs conditionally."""
        entries = []
        for url, resource in zip(self.full_urls, self.resources, strict=True):
            ident = resource["identifier"][0]
            query = f"identifier={ident['system']}|{ident['value']}"
            rtype = resource["resourceType"]
            if method == "upsert":
                request = {"method": "PUT", "url": f"{rtype}?{query}"}
            else:
                request = {"method": "POST", "url": rtype, "ifNoneExist": query}
            entries.append({"fullUrl": url, "resource": resource, "request": request})
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    def to_bytes(self) -> bytes:
        """A compact lossless form: cheaper across processes than pickling the objects."""
        return orjson.dumps(
            [
                self.evaluation.to_dict(),
                self.resources,
                self.full_urls,
                self.case_identifier,
                self.date_of_service,
                self.payer,
                self.procedure_identifier,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CaseOutput:
        evaluation, resources, full_urls, ident, date, payer, business = orjson.loads(data)
        return cls(
            Evaluation.from_dict(evaluation),
            resources,
            full_urls,
            ident,
            date,
            payer,
            procedure_identifier=business,
        )

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        """Pickled as `to_bytes`: a worker's outputs cross to the parent in the compact
        form, and the parent's own never take the detour."""
        return (CaseOutput.from_bytes, (self.to_bytes(),))

    def report(self) -> dict[str, Any]:
        """The case's row in the JSON report (a stable interface for scripts)."""
        e = self.evaluation
        row: dict[str, Any] = {
            "procedure": e.procedure,
            "patient": e.patient,
            "encounter": e.encounter,
            "outcome": e.outcome,
            "place_of_service": e.place_of_service,
            "date_of_service": self.date_of_service,
            "payer": self.payer,
            "findings": [f.to_json() for f in e.findings],
            "modifiers": [m.to_json() for m in e.modifiers],
            "criteria": [c.to_json() for c in e.criteria],
            "unresolved_references": list(e.unresolved),
            "code_sets": dict(e.code_sets),
            "payer_policy": e.payer_policy,
            "payer_criteria": list(e.payer_criteria),
            "resources": list(self.resources),
        }
        if self.reads is not None:
            row["reads"] = self.reads
        return row


def _writable(reference: str) -> bool:
    """Only server-resolvable references go into written resources."""
    return not reference.startswith(("#", "urn:")) and "/" in reference


def build_output(
    pack: Pack,
    case: Case,
    evaluation: Evaluation,
    now: str,
    charges: Mapping[str, float] | None = None,
) -> CaseOutput:
    """The resources one evaluated case writes; `now` stamps created/identified; `charges`
    (a chargemaster, code -> amount) prices the Claim's lines."""
    out = CaseOutput(evaluation)
    out.date_of_service = case.date
    out.payer = reference_label(case.reference_json(case.insurer_ref)) or None
    out.procedure_identifier = business_identifier(case.procedure)
    token = case_token(case.procedure, case.key, case.source)
    system = pack.model.canonical.identifier_system
    claim_url = None
    if not evaluation.blocked:
        value = f"claim-{token}"
        ident = {"system": system, "value": value}
        claim = build_claim(pack, case, evaluation, ident, now, charges)
        claim_url = full_url(value)
        out.resources.append(claim)
        out.full_urls.append(claim_url)
    for finding in evaluation.findings:
        value = f"issue-{token}-{finding.code}"
        if finding.criterion is not None:  # one issue per criterion of a payer's policy
            value += f"-{finding.policy}-{finding.criterion}"
        url = (evaluation.payer_policy or {}).get("url")
        out.resources.append(
            _detected_issue(pack, case, finding, system, value, now, claim_url, url)
        )
        out.full_urls.append(full_url(value))
    for resource in out.resources:
        resource["identifier"].append(case_identifier(system, token))
    out.case_identifier = case_identifier(system, token)
    return out


def _detected_issue(
    pack: Pack,
    case: Case,
    finding: Finding,
    system: str,
    value: str,
    now: str,
    claim_url: str | None,
    policy_url: str | None = None,
) -> dict[str, Any]:
    codings = [
        {
            "system": pack.model.canonical.finding_system,
            "code": finding.code,
            "display": finding.message,
        }
    ]
    if finding.actcode:
        codings.append({"system": pack.system("actcode"), "code": finding.actcode})
    canonical = pack.model.canonical
    if finding.policy and canonical.payer_policy_system:
        codings.append({"system": canonical.payer_policy_system, "code": finding.policy})
    if finding.policy and finding.criterion and canonical.payer_criterion_system:
        code = f"{finding.policy}#{finding.criterion}"
        codings.append({"system": canonical.payer_criterion_system, "code": code})
    implicated = [case.reference_json(case.key) or {"reference": case.key}]
    if claim_url:
        implicated.append({"reference": claim_url})
    refs = list(dict.fromkeys(e.reference for e in finding.evidence if _writable(e.reference)))
    lines = [finding.message]
    for e in finding.evidence:
        part = f"- {e.reference} {e.path}"
        if e.snippet:
            part += f': "{e.snippet}"'
        if e.note:
            part += f" ({e.note})"
        if e.cue:  # a text mention a ConText cue ruled out: say which and how
            part += f' [{e.status} by "{e.cue}"]'
        lines.append(part)
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "identifier": [{"system": system, "value": value}],
        "status": "final",
        "code": {"coding": codings, "text": finding.code},
        "severity": finding.severity,
        "identifiedDateTime": now,
        "implicated": implicated,
        "detail": "\n".join(lines),
    }
    if case.patient_ref:
        issue["patient"] = case.reference_json(case.patient_ref)
    if refs:
        issue["evidence"] = [{"detail": [{"reference": r} for r in refs]}]
    if finding.policy and policy_url:
        issue["reference"] = policy_url  # the authority for the issue: the payer's policy
    return issue
