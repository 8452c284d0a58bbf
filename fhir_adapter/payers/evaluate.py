"""Judge a case by its payer's overlay: each criterion met, not met or undocumented, the
policy's verdict, and the findings that carry them (pack: payer_findings)."""

from __future__ import annotations

from typing import Any

from fhir_adapter.findings import Evaluation, Evidence, Finding
from fhir_adapter.pack.context import Context
from fhir_adapter.pack.load import Pack
from fhir_adapter.pack.schema import PayerFinding
from fhir_adapter.payers.load import CompiledOverlay, Judged, Node, judge
from fhir_adapter.payers.match import Choice
from fhir_adapter.payers.prior_auth import prior_auth

MET, NOT_MET, UNDOCUMENTED, NOT_APPLICABLE = "met", "not-met", "undocumented", "not-applicable"
COVERED, NOT_COVERED, CONDITIONAL = "covered", "not-covered", "conditional"
GENERIC = "generic"


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def evaluate_payer(pack: Pack, choice: Choice, ctx: Context, result: Evaluation) -> None:
    """Set the case's payer_policy and payer_criteria by the overlay chosen for its payer
    (payers.match), and add one finding per criterion not met or undocumented (and
    prior-auth-missing, see payers.prior_auth)."""
    overlay = choice.overlay
    if overlay is None:
        result.payer_policy = {
            "id": GENERIC,
            "title": f"the generic criteria of {pack.model.title}",
            "source": None,
            "payer": choice.payer_name,
            "matched_by": choice.matched_by,
            "authorization": prior_auth(pack, None, ctx.case).number,
        }
        return
    rows = [_modality(pack, overlay)] + [
        _criterion(c.id, c.text, c.source, c.when, c.met, c.query, ctx) for c in overlay.criteria
    ]
    cfg = pack.model.payer_findings
    for row, query in rows:
        if cfg is None or row["result"] in (MET, NOT_APPLICABLE):
            continue
        spec = cfg.not_met if row["result"] == NOT_MET else cfg.undocumented
        value = "; ".join(row["reasons"]) if row["result"] == NOT_MET else query
        result.findings.append(
            _finding(spec, overlay, row["id"], row["text"], value, row["evidence"])
        )
    results = {row["result"] for row, _ in rows}
    verdict = (
        NOT_COVERED if NOT_MET in results else CONDITIONAL if UNDOCUMENTED in results else COVERED
    )
    authorization = prior_auth(pack, overlay, ctx.case)
    result.payer_policy = {
        **overlay.summary(),
        "payer": choice.payer_name,
        "matched_by": choice.matched_by,
        "verdict": verdict,
        "authorization": authorization.number,
    }
    result.payer_criteria = [
        {**row, "evidence": [e.to_json() for e in row["evidence"]]} for row, _ in rows
    ]
    if authorization.missing and cfg is not None:
        result.findings.append(
            _finding(
                cfg.prior_auth_missing,
                overlay,
                "prior-authorization",
                "prior authorization required",
                "",
                authorization.evidence,
            )
        )


def _finding(
    spec: PayerFinding,
    overlay: CompiledOverlay,
    criterion: str,
    text: str,
    value: str,
    evidence: tuple[Evidence, ...] | list[Evidence],
) -> Finding:
    fields = _Fields(policy=overlay.model.title, criterion=criterion, text=text, value=value)
    return Finding(
        spec.finding,
        spec.severity,
        spec.message.format_map(fields),
        tuple(evidence),
        spec.actcode,
        f"{spec.source}; {overlay.model.source}",
        overlay.id,
        criterion,
    )


def _modality(pack: Pack, overlay: CompiledOverlay) -> tuple[dict[str, Any], str]:
    """The policy covers the pack's procedure code (RF, not cryo: a modality split)."""
    code = pack.procedure_code
    covered = code in overlay.model.modalities
    row = {
        "id": "modality",
        "text": f"the policy covers CPT {code}",
        "source": overlay.model.source,
        "result": MET if covered else NOT_MET,
        "reasons": [] if covered else [f"CPT {code} is not among {overlay.model.modalities}"],
        "evidence": [],
    }
    return row, ""


def _criterion(
    cid: str,
    text: str,
    source: str,
    when: list[Node],
    met: list[Node],
    query: str | None,
    ctx: Context,
) -> tuple[dict[str, Any], str]:
    row: dict[str, Any] = {"id": cid, "text": text, "source": source}
    if when and judge(Node("all", when), ctx).verdict is not True:
        row.update(result=NOT_APPLICABLE, reasons=[], evidence=[])
        return row, ""
    j: Judged = judge(Node("all", met), ctx)
    result = MET if j.verdict is True else NOT_MET if j.verdict is False else UNDOCUMENTED
    evidence = j.evidence[:8]
    if result == UNDOCUMENTED:  # what the record left open, for the coder's query
        evidence += [Evidence(ctx.case.key, "Procedure", None, why) for why in j.reasons]
    row.update(result=result, reasons=j.reasons, evidence=evidence)
    ask = query or f"please document {text} ({'; '.join(j.reasons)})"
    return row, ask
