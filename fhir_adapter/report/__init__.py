"""Reports of a batch: terminal table, JSON for scripts, an HTML worklist, CSV; the exit code."""

from fhir_adapter.report.csv import render_csv
from fhir_adapter.report.html import render_html
from fhir_adapter.report.text import (
    EXIT_BLOCKED,
    EXIT_OK,
    EXIT_USAGE,
    exit_code,
    render_json,
    render_json_rows,
    render_table,
    render_table_rows,
    summary,
)

__all__ = [
    "EXIT_BLOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "exit_code",
    "render_csv",
    "render_html",
    "render_json",
    "render_json_rows",
    "render_table",
    "render_table_rows",
    "summary",
]
