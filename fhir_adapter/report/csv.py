"""One row per finding, for spreadsheets; a case without findings still gets one row.

Cells that a spreadsheet would take for a formula (`=`, `+`, `-`, `@` at the start,
also after leading whitespace and in their full-width forms, or a leading tab, CR or
LF) get a leading apostrophe: the text came from the input, and a note
must not become a formula on the coder's machine.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable

from fhir_adapter.report.model import ReportRow, case_view, report_rows
from fhir_adapter.writeback import CaseOutput

HEADER = (
    "procedure",
    "patient",
    "encounter",
    "date_of_service",
    "performer",
    "payer",
    "policy",
    "policy_verdict",
    "place_of_service",
    "outcome",
    "modifiers",
    "finding",
    "severity",
    "message",
    "evidence",
    "snippets",
)
_FORMULA = ("=", "+", "-", "@")
_CONTROL = ("\t", "\r", "\n")


def _is_formula(value: str) -> bool:
    """Would a spreadsheet read this as a formula? Leading whitespace (spaces, tab, CR, LF,
    ideographic space) is looked through, and full-width or small forms (U+FF1D, U+FE66
    and the like) count as their ASCII signs (NFKC folds them)."""
    if value.startswith(_CONTROL):
        return True
    head = value.lstrip()[:1]
    return bool(head) and unicodedata.normalize("NFKC", head).startswith(_FORMULA)


def _cell(value: str) -> str:
    return "'" + value if _is_formula(value) else value


def render_csv(outputs: Iterable[CaseOutput | ReportRow]) -> str:
    from fhir_adapter.pipeline import gc_paused

    with gc_paused():  # many small acyclic objects: the cyclic GC would triple the time
        return _render(outputs)


def _render(outputs: Iterable[CaseOutput | ReportRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    for i, row in enumerate(report_rows(outputs)):
        c = case_view(i, row, criteria=False)
        first = [
            c["procedure"],
            c["patient"],
            c["encounter"],
            c["date"],
            c["performer"],
            c["payer"],
            c["policy"],
            c["policy_verdict"],
            c["pos"],
            c["outcome"],
            ";".join(m["code"] for m in c["modifiers"]),
        ]
        findings = c["findings"] or [{"code": "", "severity": "", "message": "", "evidence": []}]
        for f in findings:
            evidence = " | ".join(f"{e['ref']} {e['path']}".strip() for e in f["evidence"])
            snippets = " | ".join(e["snippet"] for e in f["evidence"] if "snippet" in e)
            cells = [*first, f["code"], f["severity"], f["message"], evidence, snippets]
            writer.writerow([_cell(v) for v in cells])
    return buffer.getvalue()
