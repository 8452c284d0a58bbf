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
    from fhir_adapter.billing import code_set_versions

    document: dict[str, Any] = {**(meta or {}), "code_sets": code_set_versions(), "cases": rows}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def render_table(outputs: Sequence[CaseOutput], width: int | None = None) -> str:
    """One row per case; each finding on its own line with severity and a short why."""
    return render_table_rows([o.report() for o in outputs], width)


def render_table_rows(rows: Sequence[Mapping[str, Any]], width: int | None = None) -> str:
    """The table from report rows (either engine's)."""
    width = width or shutil.get_terminal_size((120, 20)).columns
    header = ("PROCEDURE", "PATIENT", "OUTCOME", "POS", "MODIFIERS", "FINDINGS")
    lines_out: list[tuple[str, ...]] = []
    for r in rows:
        first = (
            r["procedure"],
            r.get("patient") or "-",
            r["outcome"],
            r.get("place_of_service") or "-",
            ",".join(m["code"] for m in r.get("modifiers") or []) or "-",
        )
        lines = [f"{f['severity']} {f['code']}: {f['message']}" for f in r["findings"]] or ["-"]
        lines_out.append((*first, lines[0]))
        lines_out.extend(("", "", "", "", "", line) for line in lines[1:])
    widths = [max(len(r[i]) for r in [header, *lines_out]) for i in range(5)]
    fixed = sum(widths) + 2 * 5
    out = []
    for row in [header, *lines_out]:
        cells = [row[i].ljust(widths[i]) for i in range(5)]
        out.append("  ".join([*cells, _cut(row[5], max(30, width - fixed))]).rstrip())
    out.append("")
    out.append(summary_rows(rows))
    return "\n".join(out) + "\n"


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
