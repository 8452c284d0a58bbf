"""Where output goes: a directory of transaction Bundles (written all-or-nothing)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import orjson

from fhir_adapter.errors import AdapterError
from fhir_adapter.writeback import CaseOutput

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def bundle_filename(procedure_key: str) -> str:
    return _UNSAFE.sub("-", procedure_key).strip("-") + ".json"


def write_bundles(outputs: Sequence[CaseOutput], directory: str | os.PathLike[str]) -> list[Path]:
    """One transaction Bundle per case; nothing lands in `directory` unless all were written."""
    target = Path(directory)
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".fhir-adapter-", dir=target))
    except OSError as exc:
        raise AdapterError(f"cannot write to {target}: {exc.strerror or exc}") from None
    try:
        staged = []
        for output in outputs:
            name = bundle_filename(output.evaluation.procedure)
            path = staging / name
            path.write_bytes(orjson.dumps(output.bundle(), option=orjson.OPT_INDENT_2))
            staged.append(path)
        written = []
        for path in staged:
            final = target / path.name
            os.replace(path, final)
            written.append(final)
        return written
    except OSError as exc:
        raise AdapterError(f"cannot write to {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
