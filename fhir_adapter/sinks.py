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
from fhir_adapter.sources.files import JSON_SUFFIXES, NDJSON_SUFFIXES
from fhir_adapter.writeback import CaseOutput

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
REPORT_HTML = "report.html"
# longest first: `a.json.gz` loses `.json.gz`, not `.gz` alone
INPUT_SUFFIXES = sorted(JSON_SUFFIXES + NDJSON_SUFFIXES, key=len, reverse=True)


def bundle_filename(procedure_key: str) -> str:
    """`Procedure/p1` -> `Procedure-p1.json`; a case named with its file
    (`Procedure/p1 (a.json)`) leaves the file's own suffix off (`Procedure-p1-a.json`)."""
    head, paren, label = procedure_key.partition(" (")
    if paren and label.endswith(")"):
        file = label[:-1]
        suffix = next((s for s in INPUT_SUFFIXES if file.lower().endswith(s)), "")
        procedure_key = f"{head} ({file[: len(file) - len(suffix)]})"
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
        taken: set[str] = set()
        for output in outputs:
            name = bundle_filename(output.evaluation.procedure)
            if name in taken:  # `a.json` and `a.json.gz` both reuse the id: keep the suffix
                name = _UNSAFE.sub("-", output.evaluation.procedure).strip("-") + ".json"
            taken.add(name)
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
