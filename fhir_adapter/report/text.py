"""Reports in the terminal (a table) and for scripts (one JSON object), and the exit code."""

from __future__ import annotations

import shutil
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from fhir_adapter.errors import printable
from fhir_adapter.writeback import CaseOutput

EXIT_OK = 0
EXIT_BLOCKED = 1
EXIT_USAGE = 2


def exit_code(outputs: Sequence[CaseOutput]) -> int:
    """0 when every case can be claimed, 1 when some case has a blocking finding."""
    return EXIT_BLOCKED if any(o.evaluation.blocked for o in outputs) else EXIT_OK


def render_json(outputs: Sequence[CaseOutput], *, meta: dict[str, Any] | None = None) -> bytes:
    """`meta` (e.g. the input's skipped bad lines) goes beside `cases` at the top level,
    as do the code-set releases the findings were checked against."""
    return render_json_rows([o.report() for o in outputs], meta=meta)


def render_json_rows(
    rows: Sequence[Mapping[str, Any]], *, meta: dict[str, Any] | None = None
) -> bytes:
    """The same document from report rows made elsewhere (Spark's), so that no engine's
    JSON lacks a member the other's has."""
    from fhir_adapter.billing import code_set_versions

    document: dict[str, Any] = {**(meta or {}), "code_sets": code_set_versions(), "cases": rows}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def render_table(outputs: Sequence[CaseOutput], width: int | None = None) -> str:
    """One row per case; each finding on its own line with severity and a short why."""
    return render_table_rows([o.report() for o in outputs], width)


_HEADER = ("PROCEDURE", "PATIENT", "OUTCOME", "POS", "MODIFIERS", "FINDINGS")
_GAP = "  "
_FINDINGS_MIN = 40  # a narrower findings column goes under each case instead
_INDENT = "    "


def render_table_rows(rows: Sequence[Mapping[str, Any]], width: int | None = None) -> str:
    """The table from report rows (either engine's), fitted to the terminal's width.

    Findings wrap rather than being cut: a finding's code is never split (a reader
    looks it up), its message wraps under it. When fewer than 40 columns are left
    beside the case, each case's findings go on the lines under it; when even the
    case's columns do not fit, each case is one labelled line (or more) of its own.
    """
    width = width or shutil.get_terminal_size((120, 20)).columns
    cases: list[tuple[tuple[str, ...], list[str]]] = []
    for r in rows:  # every cell may come from an input file: no escape reaches the terminal
        first: tuple[str, ...] = tuple(
            printable(cell)
            for cell in (
                r["procedure"],
                r.get("patient") or "-",
                r["outcome"],
                r.get("place_of_service") or "-",
                ",".join(m["code"] for m in r.get("modifiers") or []) or "-",
            )
        )
        findings = [
            printable(f"{f['severity']} {f['code']}: {f['message']}") for f in r["findings"]
        ]
        cases.append((first, findings))
    widths = [max(len(c[0][i]) for c in [(_HEADER[:5], []), *cases]) for i in range(5)]
    aligned = sum(widths) + len(_GAP) * 4 <= width
    beside = width - sum(widths) - len(_GAP) * 5
    header = _GAP.join(h.ljust(w) for h, w in zip(_HEADER, widths, strict=False))
    out = [header + _GAP + _HEADER[5] if beside >= _FINDINGS_MIN else header.rstrip()]
    if not aligned:  # even the case columns do not fit: each case labelled, on lines of its own
        out = []
    for cells, findings in cases:
        row = _GAP.join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True))
        if beside >= _FINDINGS_MIN:
            lines = _wrap(findings or ["-"], beside, "")
            pad = " " * (len(row) + len(_GAP))
            out.append(row + _GAP + lines[0])
            out.extend(pad + line for line in lines[1:])
            continue
        if aligned:
            out.append(row.rstrip())
        else:
            procedure, patient, outcome, pos, modifiers = cells
            labelled = [procedure, patient, outcome, f"POS {pos}", f"modifiers {modifiers}"]
            out.extend(_wrap([_GAP.join(labelled)], width, ""))
        out.extend(_wrap(findings, width - len(_INDENT), _INDENT))
    out.append("")
    out.extend(_wrap([printable(summary_rows(rows))], width, ""))
    return "\n".join(out) + "\n"


def _wrap(texts: Sequence[str], width: int, indent: str) -> list[str]:
    """Each text on lines of `width`, its continuation indented two more; words (finding
    codes, with their hyphens) are never split, so a long one may overrun."""
    return [
        indent + line
        for text in texts
        for line in textwrap.wrap(
            text,
            max(width, 1),
            subsequent_indent="  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    ]


def summary(outputs: Sequence[CaseOutput]) -> str:
    return summary_rows(
        [
            {
                "outcome": o.evaluation.outcome,
                "findings": [{"code": f.code} for f in o.evaluation.findings],
            }
            for o in outputs
        ]
    )


def summary_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    claims = sum(1 for r in rows if r["outcome"] == "claim")
    counts = Counter(f["code"] for r in rows for f in r["findings"])
    by_code = ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "none"
    return (
        f"{len(rows)} case(s): {claims} claim(s), {len(rows) - claims} blocked; findings: {by_code}"
    )
