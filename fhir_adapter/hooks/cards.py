"""CDS Hooks cards and actions built from the engine's findings (no rule lives here).

A finding card carries the finding's Coding (the pack's finding system, as on
the DetectedIssue the adapter writes) as `source.topic`, so an EHR or the
feedback log can key on the same public codes. Cards the service adds of its
own (documentation requirements, a Claim ready) use a separate card-type system.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Sequence
from typing import Any

from fhir_adapter.findings import Evidence, Finding
from fhir_adapter.pack.load import Pack
from fhir_adapter.writeback.bundle import CaseOutput

CARD_TYPE_SYSTEM = "http://fhir-adapter.org/fhir/CodeSystem/cds-card-type"
OVERRIDE_SYSTEM = "http://fhir-adapter.org/fhir/CodeSystem/cds-override-reason"
CRD_COVERAGE_INFO = (
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
)
SOURCE_LABEL = "fhir-adapter: CPT 47382 coding integrity"
MAX_SUMMARY = 139  # CDS Hooks: summary "<140 characters"

OVERRIDE_REASONS = (
    {"system": OVERRIDE_SYSTEM, "code": "documented-elsewhere", "display": "Documented elsewhere"},
    {"system": OVERRIDE_SYSTEM, "code": "will-document", "display": "Will document before billing"},
    {"system": OVERRIDE_SYSTEM, "code": "not-applicable", "display": "Does not apply to this case"},
)

# What the operative note must contain, as positive requirements: display text for
# the documentation rules of the pack (another `doc-*` rule shows its own message).
DOCUMENTATION_RULES = {
    "necessity-rationale-missing": "Why percutaneous ablation rather than resection "
    "(unresectable, comorbidities, size or location, refusal, bridge to transplant)",
    "doc-tumor-size": "Tumor size (greatest dimension)",
    "doc-tumor-count": "Number of tumors ablated",
    "doc-tumor-location": "Tumor location (Couinaud segment or lobe)",
    "doc-imaging-guidance": "Imaging guidance modality (CT, MRI or ultrasound)",
    "doc-energy": "Energy applied (power, time or total energy)",
    "doc-ablation-confirmation": "Confirmation of ablation (outcome, post-ablation imaging)",
}


def indicator(pack: Pack, severity: str) -> str:
    """high -> critical, moderate -> warning, low -> info (by rank for other packs' scales)."""
    order = list(pack.model.severity_order)
    rank = order.index(severity) if severity in order else 0
    if rank == len(order) - 1:
        return "critical"
    return "info" if rank == 0 else "warning"


def plain(text: str) -> str:
    """Text for a card on one line, every control or format character (escape codes,
    bidi overrides, zero-width marks, line separators) shown as U+FFFD: nothing in it
    can restyle, reorder or hide what the clinician reads."""
    flat = " ".join(text.split())
    return "".join("\ufffd" if unicodedata.category(c)[0] == "C" else c for c in flat)


def shorten(text: str, limit: int = MAX_SUMMARY) -> str:
    flat = plain(text)
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;=?@[\\]^_`{|}~")


def _md(text: str) -> str:
    """Text from the record inside markdown: no markup, no HTML, no line breaks. Every
    ASCII punctuation character gets CommonMark's backslash escape (so no link, emphasis,
    code or entity can start), and `<`, `>` become entities (no HTML or autolink)."""
    out = []
    for ch in plain(text):
        if ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch in _PUNCTUATION:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _code(text: str) -> str:
    """Text from the record as a code span (shown literally: no markup, no HTML), fenced
    with more backticks than any run inside it, so it cannot close the span early."""
    flat = plain(text)
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or longest else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def evidence_lines(evidence: Sequence[Evidence], rename: dict[str, str]) -> list[str]:
    lines = []
    for e in evidence:
        ref = rename.get(e.reference, e.reference)
        line = f"- {_code(ref)} {_md(e.path)}"
        if e.snippet:
            line += f': "{_md(e.snippet)}"'
        if e.note:
            line += f" ({_md(e.note)})"
        lines.append(line)
    return lines


def finding_coding(pack: Pack, finding: Finding) -> dict[str, str]:
    return {
        "system": pack.model.canonical.finding_system,
        "code": finding.code,
        "display": finding.message,
    }


def finding_card(
    pack: Pack, finding: Finding, subject: str, rename: dict[str, str] | None = None
) -> dict[str, Any]:
    """One card per finding: indicator from severity, the evidence in the detail."""
    rename = rename or {}
    detail = [
        f"**{_md(finding.message)}**",
        "",
        f"{_code(subject)}: finding {_code(finding.code)}, severity {_md(finding.severity)}.",
    ]
    lines = evidence_lines(finding.evidence, rename)
    if lines:
        detail += ["", "Evidence:", *lines]
    if finding.source:
        detail += ["", f"Source: {_md(finding.source)}"]
    return {
        "uuid": str(uuid.uuid4()),
        "summary": shorten(finding.message),
        "detail": "\n".join(detail),
        "indicator": indicator(pack, finding.severity),
        "source": {"label": SOURCE_LABEL, "topic": finding_coding(pack, finding)},
        "overrideReasons": [dict(r) for r in OVERRIDE_REASONS],
    }


def documentation_card(pack: Pack) -> dict[str, Any]:
    """What the operative note must contain for the claim to pass review later."""
    items = [
        DOCUMENTATION_RULES.get(r.finding, r.message)
        for r in pack.rules
        if r.finding in DOCUMENTATION_RULES or r.finding.startswith("doc-")
    ]
    detail = ["The procedure note for CPT 47382 must document:", ""]
    detail += [f"- {_md(item)}" for item in items]
    return {
        "uuid": str(uuid.uuid4()),
        "summary": "CPT 47382: document rationale, tumor size/count/location, guidance, "
        "energy and ablation result",
        "detail": "\n".join(detail),
        "indicator": "info",
        "source": {
            "label": SOURCE_LABEL,
            "topic": {
                "system": CARD_TYPE_SYSTEM,
                "code": "documentation-requirements",
                "display": "Documentation requirements",
            },
        },
    }


def out_of_time_card(budget: float) -> dict[str, Any]:
    """The call's evaluation was stopped at the service's time budget: nothing was checked,
    and the card says so rather than showing no card (which would read as "no finding")."""
    return {
        "uuid": str(uuid.uuid4()),
        "summary": shorten(f"CPT 47382 check not done: it did not finish within {budget:g} s"),
        "detail": "\n".join(
            [
                f"The evaluation was stopped at the service's time budget ({budget:g} s), "
                "so no finding or Claim card is shown for this call: nothing was checked.",
                "",
                "A very long note or attachment is the usual cause. Evaluate the encounter "
                "with `fhir-adapter evaluate` or `fhir-adapter run`, which read it in full.",
            ]
        ),
        "indicator": "warning",
        "source": {
            "label": SOURCE_LABEL,
            "topic": {
                "system": CARD_TYPE_SYSTEM,
                "code": "not-evaluated",
                "display": "Not evaluated in time",
            },
        },
    }


def claim_card(output: CaseOutput, subject: str) -> dict[str, Any] | None:
    """When the case can be billed: a suggestion that creates the draft Claim."""
    claims = [r for r in output.resources if r.get("resourceType") == "Claim"]
    if output.evaluation.blocked or not claims:
        return None
    claim = claims[0]
    ev = output.evaluation
    mods = ", ".join(m.code for m in ev.modifiers)
    summary = f"CPT 47382 can be billed for {subject}"
    if ev.place_of_service:
        summary += f" (POS {ev.place_of_service}"
        summary += f", modifiers {mods})" if mods else ")"
    detail = [f"Nothing blocks the claim for {_code(subject)}."]
    for m in ev.modifiers:
        detail.append(f"- modifier {m.code}: {_md(m.reason)}")
    if ev.findings:
        detail.append(f"{len(ev.findings)} non-blocking finding(s) are shown as their own cards.")
    return {
        "uuid": str(uuid.uuid4()),
        "summary": shorten(summary),
        "detail": "\n".join(detail),
        "indicator": "info",
        "source": {
            "label": SOURCE_LABEL,
            "topic": {"system": CARD_TYPE_SYSTEM, "code": "claim-ready", "display": "Claim ready"},
        },
        "suggestions": [
            {
                "label": "Create the draft Claim",
                "uuid": str(uuid.uuid4()),
                "isRecommended": True,
                "actions": [
                    {
                        "type": "create",
                        "description": plain(f"Create the draft professional Claim for {subject}"),
                        "resource": claim,
                    }
                ],
            }
        ],
        "selectionBehavior": "at-most-one",
    }


def coverage_information(
    *,
    order: str,
    coverage: str,
    covered: str,
    pa_needed: str | None,
    doc_needed: str | None,
    date: str,
    billing_code: dict[str, str],
    info_needed: str | None = None,
    reason: str | None = None,
    satisfied_pa_id: str | None = None,
) -> dict[str, Any]:
    """The Da Vinci CRD coverage-information extension (STU2 value sets: CRD temp codes).

    The assertion id is derived from the order and what is asserted about it, so that
    repeating the same assertion for the same order and coverage gives the same id, and
    two orders never share one.
    """
    assertion = uuid.uuid5(
        uuid.NAMESPACE_URL,
        f"{CRD_COVERAGE_INFO}|{order}|{coverage}|{covered}|{pa_needed}|{doc_needed}"
        + (
            f"|{info_needed}|{reason}|{satisfied_pa_id}"
            if info_needed or reason or satisfied_pa_id
            else ""
        ),
    )
    parts: list[dict[str, Any]] = [
        {"url": "coverage", "valueReference": {"reference": coverage}},
        {"url": "covered", "valueCode": covered},
    ]
    if pa_needed is not None:
        parts.append({"url": "pa-needed", "valueCode": pa_needed})
    if doc_needed is not None:
        parts.append({"url": "doc-needed", "valueCode": doc_needed})
    if info_needed is not None:
        parts.append({"url": "info-needed", "valueCode": info_needed})
    if reason is not None:
        parts.append({"url": "reason", "valueCodeableConcept": {"text": reason}})
    if satisfied_pa_id is not None:
        parts.append({"url": "satisfied-pa-id", "valueString": satisfied_pa_id})
    parts += [
        {"url": "billingCode", "valueCoding": billing_code},
        {"url": "date", "valueDate": date},
        {"url": "coverage-assertion-id", "valueString": str(assertion)},
    ]
    return {"url": CRD_COVERAGE_INFO, "extension": parts}


# Parts of the extension that say when and under which id, not what is asserted.
_NOT_ASSERTED = frozenset({"date", "coverage-assertion-id"})


def same_assertion(a: Any, b: Any) -> bool:
    """Whether two coverage-information extensions assert the same thing (date and
    assertion id aside): then the EHR has it already and no system action is due."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    if a.get("url") != CRD_COVERAGE_INFO or b.get("url") != CRD_COVERAGE_INFO:
        return False

    def asserted(ext: dict[str, Any]) -> list[Any]:
        parts = [p for p in ext.get("extension") or [] if isinstance(p, dict)]
        kept = [p for p in parts if p.get("url") not in _NOT_ASSERTED]
        return sorted(kept, key=lambda p: json.dumps(p, sort_keys=True))

    return asserted(a) == asserted(b)
