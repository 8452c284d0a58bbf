"""Where output goes: a directory of transaction Bundles and the HTML report (all-or-nothing)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import orjson

from fhir_adapter.errors import AdapterError
from fhir_adapter.outdir import publish
from fhir_adapter.writeback import CaseOutput

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
REPORT_HTML = "report.html"


def bundle_filename(procedure_key: str) -> str:
    return _UNSAFE.sub("-", procedure_key).strip("-") + ".json"


def write_bundles(
    outputs: Sequence[CaseOutput],
    directory: str | os.PathLike[str],
    *,
    report_html: str | None = None,
    force: bool = False,
    kind: str = "evaluate",
) -> list[Path]:
    """One transaction Bundle per case (and `report.html` when given), replacing what an
    earlier `kind` (`evaluate`, `run`) wrote there; all or nothing lands (see
    `fhir_adapter.outdir`)."""

    def write(staging: Path) -> None:
        for output in outputs:
            name = bundle_filename(output.evaluation.procedure)
            (staging / name).write_bytes(orjson.dumps(output.bundle(), option=orjson.OPT_INDENT_2))
        if report_html is not None:
            (staging / REPORT_HTML).write_text(report_html, encoding="utf-8")

    return publish(directory, kind, write, force=force, last=[REPORT_HTML])


def write_report_html(directory: str | os.PathLike[str], page: str) -> Path:
    """`report.html` in `directory`, replaced atomically (a reader never sees half a page)."""
    target = Path(directory) / REPORT_HTML
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise AdapterError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
