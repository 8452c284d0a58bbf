"""Reports in the terminal (a table) and for scripts (one JSON object), and the exit code."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

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
    from fhir_adapter.codesets import code_set_versions

    document: dict[str, Any] = {**(meta or {}), "code_sets": code_set_versions(), "cases": rows}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def render_table(outputs: Sequence[CaseOutput], width: int | None = None) -> str:
    """One row per case; each finding on its own line with severity and a short why."""
    width = width or shutil.get_terminal_size((120, 20)).columns
    header = ("PROCEDURE", "PATIENT", "OUTCOME", "POS", "MODIFIERS", "FINDINGS")
    rows: list[tuple[str, ...]] = []
    for o in outputs:
        e = o.evaluation
        first = (
            e.procedure,
            e.patient or "-",
            e.outcome,
            e.place_of_service or "-",
            ",".join(m.code for m in e.modifiers) or "-",
        )
        lines = [f"{f.severity} {f.code}: {f.message}" for f in e.findings] or ["-"]
        rows.append((*first, lines[0]))
        rows.extend(("", "", "", "", "", line) for line in lines[1:])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    fixed = sum(widths) + 2 * 5
    out = []
    for row in [header, *rows]:
        cells = [row[i].ljust(widths[i]) for i in range(5)]
        out.append("  ".join([*cells, _cut(row[5], max(30, width - fixed))]).rstrip())
    out.append("")
    out.append(summary(outputs))
    return "\n".join(out) + "\n"


def summary(outputs: Sequence[CaseOutput]) -> str:
    claims = sum(1 for o in outputs if not o.evaluation.blocked)
    counts = Counter(f.code for o in outputs for f in o.evaluation.findings)
    by_code = ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "none"
    return (
        f"{len(outputs)} case(s): {claims} claim(s), {len(outputs) - claims} blocked; "
        f"findings: {by_code}"
    )
