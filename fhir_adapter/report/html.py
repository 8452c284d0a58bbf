"""The self-contained HTML worklist: one file, no network, safe with hostile input.

Jinja2 (autoescaping on) renders the overview and the page shell; the cases go
in as one inert JSON block (Jinja2's `tojson`, which escapes `<`, `>`, `&`, `'`)
that the inline script renders page by page with `textContent` only, so a batch
of 10,000 cases opens quickly and nothing from the input is ever markup. A
Content-Security-Policy allows only this page's own script and style (by hash)
and no fetches at all: defence in depth if escaping were ever missed.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from fhir_adapter.report.model import (
    RULED_OUT,
    SEVERITIES,
    EvidenceFn,
    ReportRow,
    case_view,
    evidence_items,
    report_rows,
    severity_classes,
)
from fhir_adapter.writeback import CaseOutput

if TYPE_CHECKING:
    from fhir_adapter.pack import Pack

TITLE = "CPT 47382 coding worklist"
PAGE_SIZES = (25, 50, 100, 250, 500)
PAGE_SIZE = 50
TOP_PAYERS = 12
COLUMNS = (
    ("procedure", "Procedure"),
    ("patient", "Patient"),
    ("date", "Date of service"),
    ("performer", "Performer"),
    ("payer", "Payer (policy)"),
    ("pos", "Setting (POS)"),
    ("outcome", "Outcome"),
    ("modifiers", "Modifiers"),
    ("findings", "Findings"),
)


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj).decode()


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("fhir_adapter.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # tojson keeps its HTML-safe escaping; orjson only makes 10,000 cases fast to dump.
    env.policies["json.dumps_function"] = _dumps
    env.policies["json.dumps_kwargs"] = {}
    return env


@cache
def _static(name: str) -> str:
    return (files("fhir_adapter.report") / "static" / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class _Strings:
    """One table of the page's repeated strings (references, paths, messages, snippets).

    Evidence repeats heavily within a case and messages across cases; sending each
    string once keeps a 10,000-case page a fraction of its naive size.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, text: Any) -> int:
        if text is None:
            return -1
        if not isinstance(text, str):
            text = str(text)
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.index)
        return found

    def table(self) -> list[str]:
        return list(self.index)


def _evidence_packer(s: _Strings) -> EvidenceFn:
    """Evidence as [ref, path, snippet, note, status, cue(, start, end)] string indices."""

    def pack(items: Any) -> list[Any]:
        out = []
        for ref, path, snippet, note, status, cue, span in evidence_items(items):
            row = [s(ref), s(path), s(snippet), s(note), s(status), s(cue)]
            if span is not None:
                row += span
            out.append(row)
        return out

    return pack


def _packed(case: dict[str, Any], s: _Strings) -> dict[str, Any]:
    """The case with its repeated strings replaced by indices into the table."""
    packed = dict(case)
    packed["findings"] = [
        {
            "code": f["code"],
            "severity": f["severity"],
            "message": s(f["message"]),
            "ev": f["evidence"],
        }
        for f in case["findings"]
    ]
    packed["modifiers"] = [
        {"code": m["code"], "reason": s(m["reason"]), "ev": m["evidence"]}
        for m in case["modifiers"]
    ]
    packed["criteria"] = [[s(c["rule"]), int(c["passed"]), c["evidence"]] for c in case["criteria"]]
    packed["payer_criteria"] = [
        [s(c["id"]), s(c["text"]), s(c["source"]), c["result"], s(c["reasons"]), c["evidence"]]
        for c in case["payer_criteria"]
    ]
    packed["policy_title"] = s(case["policy_title"])
    if case["claim"]:
        claim = packed["claim"] = dict(case["claim"])
        claim["lines"] = [{**ln, "display": s(ln["display"])} for ln in claim["lines"]]
        claim["diagnoses"] = [{**d, "display": s(d["display"])} for d in claim["diagnoses"]]
    packed["issues"] = [[s(i["code"]), s(i["severity"]), s(i["detail"])] for i in case["issues"]]
    return packed


def _severity_rank(severity: str, order: Sequence[str]) -> int:
    return order.index(severity) if severity in order else len(order)


def _labels(value: Any, prefix: str = "") -> list[str]:
    """`{"icd10cm": "...", "cms_tables": {"pfs": "..."}}` as "icd10cm: ...", "cms_tables pfs: ..."."""
    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            out += _labels(v, f"{prefix} {k}".strip())
        return out
    if isinstance(value, list | tuple):
        return [label for item in value for label in _labels(item, prefix)]
    if value in (None, ""):
        return []
    return [f"{prefix}: {value}" if prefix else str(value)]


def _code_sets(rows: Sequence[ReportRow], given: Mapping[str, Any] | None) -> list[str]:
    """The code-set releases behind the findings: the caller's, else this install's, plus any
    a report row carries (rows from elsewhere, e.g. another engine's output)."""
    if given is None:
        from fhir_adapter.billing import code_set_versions

        given = code_set_versions()
    found = dict.fromkeys(_labels(given))
    for row in rows:
        found.update(dict.fromkeys(_labels(row.get("code_sets"))))
    return list(found)


def _evaluated_at(rows: Sequence[ReportRow]) -> str:
    """When the cases were evaluated: the time stamped on what they write."""
    stamps = {
        str(r.get("created") or r.get("identifiedDateTime"))
        for row in rows
        for r in row.get("resources") or []
        if isinstance(r, Mapping) and (r.get("created") or r.get("identifiedDateTime"))
    }
    if not stamps:
        return ""
    first, last = min(stamps), max(stamps)
    return first if first == last else f"{first} to {last}"


def _overview(
    cases: list[dict[str, Any]], order: Sequence[str], classes: Mapping[str, str]
) -> dict[str, Any]:
    """Counts for the overview: totals, the findings chart, outcome, worst severity, payer."""
    claims = sum(1 for c in cases if c["outcome"] == "claim")
    # one bar per code, at its worst severity in the batch (a finding on unverified table
    # rows is moderate in one case and high in another)
    per_code: Counter[str] = Counter()
    code_severity: dict[str, str] = {}
    worst: Counter[str] = Counter()
    modifiers: Counter[str] = Counter()
    payers: dict[str, list[int]] = {}
    for c in cases:
        per_code.update({f["code"] for f in c["findings"]})
        for f in c["findings"]:
            known = code_severity.get(f["code"])
            rank = _severity_rank(f["severity"], order)
            if known is None or rank < _severity_rank(known, order):
                code_severity[f["code"]] = f["severity"]
        modifiers.update(m["code"] for m in c["modifiers"])
        severities = [f["severity"] for f in c["findings"]]
        worst[min(severities, key=lambda s: _severity_rank(s, order)) if severities else ""] += 1
        tally = payers.setdefault(c["payer"], [0, 0])
        tally[0 if c["outcome"] == "claim" else 1] += 1

    ranked = sorted(
        per_code.items(),
        key=lambda kv: (_severity_rank(code_severity[kv[0]], order), -kv[1], kv[0]),
    )
    top = max(per_code.values(), default=1)
    label_width, bar_room, step = 250, 330, 20
    bars = [
        {
            "code": code,
            "severity": code_severity[code],
            "severity_class": classes[code_severity[code]],
            "count": n,
            "y": i * step,
            "width": max(2, round(bar_room * n / top)),
        }
        for i, (code, n) in enumerate(ranked)
    ]
    unknown = sorted(set(worst) - set(order) - {""})
    ranked_payers = sorted(payers.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    if len(ranked_payers) > TOP_PAYERS:
        rest = ranked_payers[TOP_PAYERS - 1 :]
        other = [sum(t[0] for _, t in rest), sum(t[1] for _, t in rest)]
        ranked_payers[TOP_PAYERS - 1 :] = [(f"{len(rest)} other payers", other)]
    return {
        "totals": {
            "cases": len(cases),
            "claims": claims,
            "blocked": len(cases) - claims,
            "findings": sum(len(c["findings"]) for c in cases),
        },
        "chart": {
            "bars": bars,
            "label_width": label_width,
            "width": label_width + bar_room + 110,
            "height": max(step, len(bars) * step),
        },
        "by_severity": [
            {"label": s or "no findings", "count": worst[s]}
            for s in [*order, *unknown, ""]
            if worst[s]
        ],
        "by_outcome": [
            {
                "outcome": "claim",
                "outcome_class": "claim",
                "label": "ready to bill",
                "count": claims,
            },
            {
                "outcome": "issues",
                "outcome_class": "issues",
                "label": "blocked",
                "count": len(cases) - claims,
            },
        ],
        "by_payer": [
            {"payer": p, "cases": sum(t), "claims": t[0], "blocked": t[1]} for p, t in ranked_payers
        ],
        "modifiers": [{"code": k, "count": v} for k, v in sorted(modifiers.items())],
    }


def render_html(
    outputs: Iterable[CaseOutput | ReportRow],
    *,
    pack: Pack | None = None,
    source: Sequence[str] = (),
    code_sets: Mapping[str, Any] | None = None,
    generated: datetime | None = None,
) -> str:
    """The whole page for these cases (CaseOutputs or JSON report rows, e.g. Spark's)."""
    from fhir_adapter.pipeline import gc_paused

    # Millions of small acyclic dicts and lists: the cyclic GC would triple the time.
    with gc_paused():
        return _render(outputs, pack, source, code_sets, generated)


def _render(
    outputs: Iterable[CaseOutput | ReportRow],
    pack: Pack | None,
    source: Sequence[str],
    code_sets: Mapping[str, Any] | None,
    generated: datetime | None,
) -> str:
    rows = report_rows(outputs)
    strings = _Strings()
    pack_evidence = _evidence_packer(strings)
    cases = [case_view(i, row, pack_evidence) for i, row in enumerate(rows)]
    order = tuple(reversed(pack.model.severity_order)) if pack is not None else SEVERITIES
    pack_label = ""
    if pack is not None:
        pack_label = f"{pack.model.pack} {pack.model.version} ({pack.model.title})"
    seen = {f["severity"] for c in cases for f in c["findings"]}
    seen.update(i["severity"] for c in cases for i in c["issues"])
    classes = severity_classes(order, sorted(seen))
    css, js = _static("report.css"), _static("report.js")
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256(js)}",
            f"style-src {_sha256(css)}",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    when = (generated or datetime.now(UTC)).isoformat(timespec="seconds")
    packed = [_packed(c, strings) for c in cases]  # before the table is read: it adds strings
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=TITLE,
        csp=csp,
        css=Markup(css),
        js=Markup(js),
        **_overview(cases, order, classes),
        # What the script needs besides the cases: the scale (worst first), the style of
        # each severity and which mention statuses do not count. It holds no copy of them.
        data={
            "severities": list(order),
            "severity_class": classes,
            "ruled_out": list(RULED_OUT),
            "cases": packed,
        },
        strings=strings.table(),
        run={
            "evaluated": _evaluated_at(rows),
            "generated": when,
            "source": list(source),
            "pack": pack_label,
            "code_sets": _code_sets(rows, code_sets),
        },
        severities=order,
        payers=sorted({c["payer"] for c in cases}),
        columns=COLUMNS,
        page_sizes=PAGE_SIZES,
        page_size=PAGE_SIZE,
    )
