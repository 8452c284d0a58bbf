"""Read FHIR R4 JSON from files: Bundles, single resources, NDJSON, directories, gzip.

Input is parsed with orjson into plain dicts, never through the R4B models: real
exports carry vendor elements and timezone-less dateTimes that the models reject,
and the models cost ~59x the parse (see shared/reference/measured-here.md).
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_adapter.errors import InputError
from fhir_adapter.fhir.elements import FHIR_ID
from fhir_adapter.fhir.resource_types import RESOURCE_TYPES

JSON_SUFFIXES = (".json", ".json.gz")
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
# Bundle entries that legitimately carry no resource.
_RESOURCELESS_METHODS = {"DELETE", "GET", "HEAD"}
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Loaded:
    """One resource as read, with the Bundle fullUrl it came under and where it was."""

    resource: dict[str, Any]
    full_url: str | None
    origin: str


def read_paths(paths: Iterable[str | Path]) -> Iterator[Loaded]:
    """Yield every resource in the given files and directories, Bundles flattened (one
    ResourceStore of them all is one reference scope: files that reuse ids for different
    resources are kept apart by `pipeline.load_store`, see sources.scopes)."""
    for path in paths:
        p = Path(path)
        if p.is_dir():
            for child in input_files(p):
                if _is_input(child):
                    yield from read_file(child)
        elif p.is_file():
            yield from read_file(p)
        else:
            raise InputError(not_a_file(p), source=str(p))


def not_a_file(path: Path) -> str:
    """What `path` is, when it is neither a regular file nor a directory, as words for an
    error: every input is read more than once (screened, then read back), which a pipe
    or a device cannot be."""
    try:
        mode = path.stat().st_mode  # what a link leads to
    except OSError:
        if path.is_symlink():
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        return "no such file or directory"
    what = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    return f"{what}, not a file or directory: save the data to a file and give that"


def input_files(directory: Path) -> list[Path]:
    """The files under a directory, sorted, leaving out hidden ones (state, .part files);
    an input's name (`.json`, `.ndjson`...) on a pipe, device or dangling link is an error
    rather than passed over."""
    out = []
    for child in sorted(directory.rglob("*")):
        if any(part.startswith(".") for part in child.relative_to(directory).parts):
            continue
        if child.is_file():
            out.append(child)
        elif not child.is_dir() and _is_input(child):
            raise InputError(not_a_file(child), source=str(child))
    return out


def _is_input(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(JSON_SUFFIXES + NDJSON_SUFFIXES)


def read_file(path: Path) -> Iterator[Loaded]:
    """Yield the resources of one file; the suffix says JSON or NDJSON."""
    name = path.name.lower()
    data = _read_bytes(path)
    if name.endswith(NDJSON_SUFFIXES):
        yield from read_ndjson_bytes(data, str(path))
    else:
        yield from read_json_bytes(data, str(path))


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip raises EOFError on truncation
        raise InputError(f"cannot read file: {exc}", source=str(path)) from None


def _without_bom(data: bytes) -> bytes:
    """The bytes after a UTF-8 byte order mark, which editors on Windows write (NDJSON
    read by `sources.bulk` drops it too)."""
    return data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data


def read_json_bytes(data: bytes, origin: str) -> Iterator[Loaded]:
    """One JSON document: a resource or a Bundle."""
    try:
        value = orjson.loads(_without_bom(data))
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON (column {exc.colno}): {exc.msg}", source=origin, line=exc.lineno
        ) from None
    yield from _flatten(value, None, origin, None)


def read_ndjson_bytes(data: bytes, origin: str) -> Iterator[Loaded]:
    """One resource per line, as Bulk Data writes them; blank lines are allowed."""
    for lineno, line in enumerate(_without_bom(data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON (column {exc.colno}): {exc.msg}", source=origin, line=lineno
            ) from None
        yield from _flatten(value, None, origin, lineno)


def check_resource(value: Any, origin: str, line: int | None, where: str = "") -> dict[str, Any]:
    """Return `value` if it looks like a FHIR resource, else raise a clear InputError."""
    prefix = f"{where}: " if where else ""
    if not isinstance(value, dict):
        raise InputError(
            f"{prefix}expected a FHIR resource (a JSON object), found {type(value).__name__}",
            source=origin,
            line=line,
        )
    rtype = value.get("resourceType")
    if not isinstance(rtype, str):
        raise InputError(f"{prefix}not a FHIR resource: no resourceType", source=origin, line=line)
    if rtype not in RESOURCE_TYPES:
        raise InputError(
            f"{prefix}unknown resourceType {rtype!r} (not FHIR R4)", source=origin, line=line
        )
    rid = value.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InputError(f"{prefix}{rtype}.id must be a string", source=origin, line=line)
    if rid is not None and not FHIR_ID.fullmatch(rid):  # it goes into references and the table
        raise InputError(
            f"{prefix}{rtype}.id {rid!r} is not a FHIR id "
            "(A-Z, a-z, 0-9, '-', '.'; 1-64 characters)",
            source=origin,
            line=line,
        )
    return value


def _flatten(value: Any, full_url: str | None, origin: str, line: int | None) -> Iterator[Loaded]:
    resource = check_resource(value, origin, line)
    if resource["resourceType"] != "Bundle":
        yield Loaded(resource, full_url, origin)
        return
    entries = resource.get("entry") or []
    if not isinstance(entries, list):
        raise InputError("Bundle.entry must be a list", source=origin, line=line)
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where} is not an object", source=origin, line=line)
        child = entry.get("resource")
        if child is None:
            method = str((entry.get("request") or {}).get("method", "")).upper()
            if method in _RESOURCELESS_METHODS or "response" in entry:
                continue
            raise InputError(f"{where} has no resource", source=origin, line=line)
        check_resource(child, origin, line, where)
        url = entry.get("fullUrl")
        yield from _flatten(child, url if isinstance(url, str) else None, origin, line)
