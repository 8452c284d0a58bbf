"""What the worklist shows of a case, read from its JSON report row.

The HTML and CSV reports work from the report rows (`CaseOutput.report()`, or
the rows the Spark engine wrote), never from live objects, so that every engine
gets the same page. A row carries the case's date of service and payer; the
performer, and the date and payer of a row that lacks them (an older one), are read
from the Claim when there is one, else from the evidence of the criteria that
looked for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from fhir_adapter.fhir.references import reference_label
from fhir_adapter.text.vocabulary import STATUSES as _MENTION_STATUSES
from fhir_adapter.writeback import CaseOutput

# The default scale, worst first (a pack's `severity_order` reversed); also the names of the
# page's three severity styles.
SEVERITIES = ("high", "moderate", "low")
# Statuses of a mention: affirmed counts; the others (RULED_OUT, the pack vocabulary's) do not.
RULED_OUT: tuple[str, ...] = _MENTION_STATUSES
STATUSES = ("affirmed", *RULED_OUT)

ReportRow = Mapping[str, Any]
RENDERING_ROLES = ("rendering", "primary")  # CARIN BB, then the base claimcareteamrole
NO_COVERAGE = "no active coverage"
UNKNOWN_PAYER = "not known (no Claim)"


def report_rows(outputs: Iterable[CaseOutput | ReportRow]) -> list[ReportRow]:
    """CaseOutputs and already-serialised rows alike, as report rows."""
    return [o.report() if isinstance(o, CaseOutput) else o for o in outputs]


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def _code(concept: Any) -> tuple[str, str]:
    for c in _codings(concept):
        if c.get("code"):
            return str(c["code"]), str(c.get("display") or "")
    text = concept.get("text") if isinstance(concept, dict) else None
    return (str(text), "") if text else ("", "")


def _resources(row: ReportRow, rtype: str) -> list[Mapping[str, Any]]:
    return [
        r
        for r in row.get("resources") or []
        if isinstance(r, dict) and r.get("resourceType") == rtype
    ]


def valid_span(span: Any, snippet: str) -> bool:
    """A span is highlighted only when it lies inside its snippet; otherwise it is ignored.

    Spans count code points (Python `str` indices), not UTF-16 units."""
    return (
        isinstance(span, list | tuple)
        and len(span) == 2
        and all(type(i) is int for i in span)
        and 0 <= span[0] < span[1] <= len(snippet)
    )


Evidence = tuple[str, str, str | None, str | None, str | None, str | None, list[int] | None]


def evidence_items(items: Any) -> Iterator[Evidence]:
    """Each evidence entry as (ref, path, snippet, note, status, cue, span): strings, None when
    absent, and the span only when it is valid. The one place evidence is shaped; the HTML
    page packs these tuples, the CSV and `evidence_dicts` read them as they are."""
    for e in items or ():
        if not isinstance(e, dict):
            continue
        snippet = e.get("snippet")
        text = None if snippet is None else str(snippet)
        span = e.get("span")
        valid = text is not None and valid_span(span, text)  # then a list of two ints
        yield (
            str(e.get("reference") or ""),
            str(e.get("path") or ""),
            text,
            None if e.get("note") is None else str(e["note"]),
            None if e.get("status") is None else str(e["status"]),
            None if e.get("cue") is None else str(e["cue"]),
            [span[0], span[1]] if valid and span is not None else None,
        )


def evidence_dicts(items: Any) -> list[Any]:
    """Evidence as plain dicts (ref, path, snippet, note, status, cue, span when valid)."""
    out = []
    for ref, path, snippet, note, status, cue, span in evidence_items(items):
        ev: dict[str, Any] = {"ref": ref, "path": path}
        if snippet is not None:
            ev["snippet"] = snippet
            if span is not None:
                ev["span"] = span
        for key, value in (("note", note), ("status", status), ("cue", cue)):
            if value is not None:
                ev[key] = value
        out.append(ev)
    return out


def severity_classes(order: Sequence[str], seen: Iterable[str] = ()) -> dict[str, str]:
    """The style of each severity by its rank in the scale (`order`, worst first): the worst
    is styled as "high", the next as "moderate", the rest (and any not in the scale) "low"."""
    classes = {s: SEVERITIES[min(i, len(SEVERITIES) - 1)] for i, s in enumerate(order)}
    for s in seen:
        classes.setdefault(s, SEVERITIES[-1])
    return classes


EvidenceFn = Callable[[Any], list[Any]]


def _criterion_evidence(row: ReportRow, rule: str) -> list[Mapping[str, Any]]:
    for c in row.get("criteria") or []:
        if isinstance(c, dict) and c.get("rule") == rule:
            return [e for e in c.get("evidence") or [] if isinstance(e, dict)]
    return []


def _claim(row: ReportRow) -> dict[str, Any] | None:
    """The Claim's lines as a coder reads them: code, modifiers, units, pointers, POS."""
    claims = _resources(row, "Claim")
    if not claims:
        return None
    claim = claims[0]
    diagnoses = []
    by_seq: dict[Any, str] = {}
    for d in claim.get("diagnosis") or []:
        code, display = _code(d.get("diagnosisCodeableConcept"))
        kinds = [k for t in d.get("type") or [] for k, _ in [_code(t)] if k]
        diagnoses.append(
            {"seq": d.get("sequence"), "code": code, "display": display, "type": ", ".join(kinds)}
        )
        by_seq[d.get("sequence")] = code
    lines = []
    for item in claim.get("item") or []:
        code, display = _code(item.get("productOrService"))
        quantity = item.get("quantity")
        units = quantity.get("value") if isinstance(quantity, dict) else None
        pointers = [
            f"{seq} ({by_seq[seq]})" if by_seq.get(seq) else str(seq)
            for seq in item.get("diagnosisSequence") or []
        ]
        lines.append(
            {
                "seq": item.get("sequence"),
                "code": code,
                "display": display,
                "modifiers": [
                    m for mod in item.get("modifier") or [] for m, _ in [_code(mod)] if m
                ],
                "units": "" if units is None else str(units),
                "dx": pointers,
                "pos": _code(item.get("locationCodeableConcept"))[0],
                "date": str(item.get("servicedDate") or ""),
            }
        )
    insurance = [reference_label(i.get("coverage")) for i in claim.get("insurance") or []]
    rendering = next(
        (
            reference_label(member.get("provider"))
            for member in claim.get("careTeam") or []
            if isinstance(member, dict) and _code(member.get("role"))[0] in RENDERING_ROLES
        ),
        "",
    )
    return {
        "status": str(claim.get("status") or ""),
        "provider": reference_label(claim.get("provider")),
        "rendering": rendering,
        "insurer": reference_label(claim.get("insurer")),
        "coverage": [c for c in insurance if c],
        "diagnoses": diagnoses,
        "lines": lines,
    }


def _claim_date(claim: dict[str, Any] | None) -> str:
    return next((str(ln["date"]) for ln in claim["lines"] if ln["date"]), "") if claim else ""


def _issues(row: ReportRow) -> list[dict[str, str]]:
    out = []
    for issue in _resources(row, "DetectedIssue"):
        code = (issue.get("code") or {}).get("text") or ""
        if not code:
            code = _code(issue.get("code"))[0]
        out.append(
            {
                "code": str(code),
                "severity": str(issue.get("severity") or ""),
                "detail": str(issue.get("detail") or ""),
            }
        )
    return out


def _first_ref(evidence: list[Mapping[str, Any]], prefixes: tuple[str, ...]) -> str:
    for e in evidence:
        ref = str(e.get("reference") or "")
        if ref.startswith(prefixes):
            return ref
    return ""


def case_view(
    index: int,
    row: ReportRow,
    evidence: EvidenceFn = evidence_dicts,
    *,
    criteria: bool = True,
) -> dict[str, Any]:
    """One case, flattened for the worklist and case view; `evidence` shapes evidence lists,
    `criteria=False` skips the criteria (the bulk of the evidence) when they are not shown."""
    claim = _claim(row)
    findings = [
        {
            "code": str(f.get("code") or ""),
            "severity": str(f.get("severity") or ""),
            "message": str(f.get("message") or ""),
            "evidence": evidence(f.get("evidence")),
        }
        for f in row.get("findings") or []
        if isinstance(f, dict)
    ]
    date = row.get("date_of_service") or _claim_date(claim)
    performer = (
        row.get("performer")
        or (claim["rendering"] or claim["provider"] if claim else "")
        or _first_ref(
            _criterion_evidence(row, "provider-missing"), ("Practitioner/", "Organization/")
        )
    )
    coverage_evidence = _criterion_evidence(row, "coverage-missing")
    coverage = (claim["coverage"][0] if claim and claim["coverage"] else "") or _first_ref(
        coverage_evidence, ("Coverage/",)
    )
    found = row.get("payer_policy")
    policy: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    # the payor Organization's name, as the payer overlays matched it, before its reference
    payer = policy.get("payer") or row.get("payer") or (claim["insurer"] if claim else "")
    if not payer:
        failed = any(f["code"] == "coverage-missing" for f in findings)
        payer = NO_COVERAGE if failed else UNKNOWN_PAYER
    return {
        "i": index,
        "procedure": str(row.get("procedure") or ""),
        "patient": str(row.get("patient") or ""),
        "encounter": str(row.get("encounter") or ""),
        "outcome": str(row.get("outcome") or ""),
        "pos": str(row.get("place_of_service") or ""),
        "date": str(date or ""),
        "performer": str(performer or ""),
        "payer": str(payer),
        "policy": str(policy.get("id") or ""),
        "policy_title": str(policy.get("title") or ""),
        "policy_source": str(policy.get("source") or ""),
        "policy_verdict": str(policy.get("verdict") or ""),
        "coverage": str(coverage),
        "findings": findings,
        "modifiers": [
            {
                "code": str(m.get("code") or ""),
                "reason": str(m.get("reason") or ""),
                "evidence": evidence(m.get("evidence")),
            }
            for m in row.get("modifiers") or []
            if isinstance(m, dict)
        ],
        "criteria": [
            {
                "rule": str(c.get("rule") or ""),
                "passed": bool(c.get("passed")),
                "evidence": evidence(c.get("evidence")),
            }
            for c in (row.get("criteria") or [] if criteria else [])
            if isinstance(c, dict)
        ],
        "payer_criteria": [
            {
                "id": str(c.get("id") or ""),
                "text": str(c.get("text") or ""),
                "source": str(c.get("source") or ""),
                "result": str(c.get("result") or ""),
                "reasons": "; ".join(str(r) for r in c.get("reasons") or []),
                "evidence": evidence(c.get("evidence")),
            }
            for c in (row.get("payer_criteria") or [] if criteria else [])
            if isinstance(c, dict)
        ],
        "claim": claim,
        "issues": _issues(row),
        "unresolved": [str(u) for u in row.get("unresolved_references") or []],
    }
