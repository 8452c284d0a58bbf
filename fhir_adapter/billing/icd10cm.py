"""ICD-10-CM validity, billability and Excludes1, from the CDC tabular in `simple-icd-10-cm`.

The package loads its whole tabular at import (2-5 s, ~200 MB), which a command that
checks a handful of diagnoses cannot afford on every run. So the package is imported
once per package version to build a compact index (every code with its billability,
every Excludes1 note with the code references it names, each category's block and
chapter), which is cached as gzipped JSON under the user cache directory and read
lazily with orjson afterwards. The index answers exactly what the package answers;
`tests/test_codesets.py` checks that on every code.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.metadata
import importlib.util
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from fhir_adapter.errors import CodeSetError
from fhir_adapter.fhir.codings import dotted_icd10cm, normalize_code
from fhir_adapter.fhir.systems import ICD10CM

PACKAGE = "simple-icd-10-cm"
# Bump when the index layout or its derivation changes: old cache files are then ignored.
INDEX_FORMAT = 3

# One code reference inside an Excludes1 note: "C78.7", "D03.-", "C7A.02-", "B18.0-B18.1", "C00-C14".
_CODE = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{0,4})?-?"
_REF = re.compile(rf"({_CODE})(?:-({_CODE}))?")
_GROUP = re.compile(r"\(([^()]*)\)")
_TABULAR = re.compile(r"tabular-([A-Za-z]+)-(\d{1,2})-(\d{4})\.xml$")


class _CodeSet:
    """Codes grouped by category: {"C22": "|0|1|2|3|4|7|8|9|"} ("" is the category itself).

    About 1,900 strings instead of ~100,000: nothing to build when loading (a set
    would cost most of the load time and ~15 MB), and a lookup is one dict access and
    one substring search in a short string.
    """

    def __init__(self, buckets: dict[str, str]) -> None:
        self.buckets = buckets

    @staticmethod
    def pack(codes: list[str]) -> dict[str, str]:
        grouped: dict[str, list[str]] = {}
        for c in codes:
            grouped.setdefault(c[:3], []).append(c[3:])
        return {cat: "|" + "|".join(sorted(rest)) + "|" for cat, rest in sorted(grouped.items())}

    def __contains__(self, code: str) -> bool:
        bucket = self.buckets.get(code[:3])
        return bucket is not None and f"|{code[3:]}|" in bucket


# An Excludes1 note as stored: [text, [[as written, low, high], ...]]; low/high undotted,
# e.g. ["hepatitis B", [["B16.-", "B16", "B16"], ["B18.0-B18.1", "B180", "B181"]]].
_RawNote = list[Any]


class _Index:
    """The loaded index: two code lists for membership, Excludes1 notes by node."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.release: str = doc["release"]
        self.leaves = _CodeSet(doc["leaf"])
        self.inner = _CodeSet(doc["inner"])
        self.up: dict[str, list[str]] = doc["up"]
        self.code_notes: dict[str, list[_RawNote]] = doc["code_notes"]
        self.group_notes: dict[str, list[_RawNote]] = doc["group_notes"]

    def valid(self, code: str) -> bool:
        return code in self.leaves or code in self.inner

    def notes(self, code: str) -> list[tuple[str, _RawNote]]:
        """(node, note): the code's own Excludes1 notes, then each ancestor's, nearest first."""
        out: list[tuple[str, _RawNote]] = []
        for n in range(len(code), 2, -1):
            out += ((dotted_icd10cm(code[:n]), note) for note in self.code_notes.get(code[:n], ()))
        for group in self.up.get(code[:3], ()):
            out += ((group, note) for note in self.group_notes.get(group, ()))
        return out

    def covers(self, low: str, high: str, code: str) -> bool:
        if low == high:
            return code.startswith(low)
        if code[: len(low)] >= low and code[: len(high)] <= high:
            return True
        # A range naming a block covers every category filed in it, e.g. C4A in C43-C44.
        return f"{low}-{high}" in self.up.get(code[:3], ())


def normalize(code: str) -> str | None:
    """Upper case, no spaces, no dot ("c22.0" and "C220" -> "C220"); None if it cannot be a code."""
    c = "".join(code.split()).upper()
    if "." in c:
        if c.find(".") != 3 or c.count(".") > 1:
            return None
        c = c.replace(".", "")
    return c if 3 <= len(c) <= 7 and c.isascii() and c.isalnum() else None


def parse_refs(note: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Split a note into its text and the code references in its parentheses.

    Only a parenthesised group made entirely of code references counts, so that
    "(G6PD)" in a description is not read as the code G6P.
    """
    refs: list[tuple[str, str, str]] = []
    for group in _GROUP.findall(note):
        parts = [p.strip() for p in group.split(",")]
        matches = [_REF.fullmatch(p) for p in parts]
        if not parts or not all(matches):
            continue
        for m in matches:
            assert m is not None
            low = normalize_code(ICD10CM, m.group(1)).rstrip("-")
            high = normalize_code(ICD10CM, m.group(2)).rstrip("-") if m.group(2) else low
            refs.append((m.group(0), low, high))
        note = note.replace(f"({group})", "")
    return re.sub(r"\s+", " ", note).strip(" ,;"), refs


# -- building and caching ------------------------------------------------------------------


def _package_dir() -> Path:
    spec = importlib.util.find_spec("simple_icd_10_cm")
    if spec is None or not spec.submodule_search_locations:
        raise CodeSetError(f"{PACKAGE} is not installed: pip install '{PACKAGE}>=1.5,<1.6'")
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file() -> str:
    """The tabular XML the package ships, found without importing the package (which is slow)."""
    names = sorted(p.name for p in (_package_dir() / "data").glob("*tabular*.xml"))
    if len(names) != 1:
        raise CodeSetError(f"{PACKAGE}: expected one tabular XML in its data, found {names}")
    return names[0]


def describe_release(package_version: str, data_file: str) -> str:
    m = _TABULAR.search(data_file)
    if not m:
        return f"ICD-10-CM ({data_file}; {PACKAGE} {package_version})"
    month, day, year = m.groups()
    return f"ICD-10-CM {year} ({month} {int(day)}, {year} tabular; {PACKAGE} {package_version})"


def build_index() -> dict[str, Any]:
    """Import the package (slow, once) and derive the index from its tabular."""
    with warnings.catch_warnings():  # its loader uses importlib.resources' legacy API
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm as cm  # type: ignore[import-untyped]

    leaf: list[str] = []
    inner: list[str] = []
    code_notes: dict[str, list[Any]] = {}
    group_notes: dict[str, list[Any]] = {}
    up: dict[str, list[str]] = {}
    for item in dict.fromkeys(cm.get_all_codes(with_dots=True)):
        # A few names are both a block and its only category (B10, C7A, ...): check both roles.
        if cm.is_category_or_subcategory(item):
            code = normalize_code(ICD10CM, item)
            (leaf if cm.is_leaf(item) else inner).append(code)
            if notes := cm.get_excludes1(item):
                code_notes[code] = [parse_refs(n) for n in notes]
            if cm.is_category(item):
                up[code] = list(cm.get_ancestors(item))
        if (cm.is_chapter(item) or cm.is_block(item)) and (
            notes := cm.get_excludes1(item, prioritize_blocks=True)
        ):
            group_notes[item] = [parse_refs(n) for n in notes]
    version = importlib.metadata.version(PACKAGE)
    return {
        "format": INDEX_FORMAT,
        "package": f"{PACKAGE} {version}",
        "data_file": _data_file(),
        "release": describe_release(version, _data_file()),
        "leaf": _CodeSet.pack(leaf),
        "inner": _CodeSet.pack(inner),
        "up": up,
        "code_notes": code_notes,
        "group_notes": group_notes,
    }


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/fhir-adapter (default ~/.cache/fhir-adapter; a relative value is ignored)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fhir-adapter"


def cache_name() -> str:
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise CodeSetError(
            f"{PACKAGE} is not installed: pip install '{PACKAGE}>=1.5,<1.6'"
        ) from None
    stem = _data_file().removesuffix(".xml")
    return f"icd10cm-{version}-{stem}-v{INDEX_FORMAT}.json.gz"


def _candidates() -> list[Path]:
    fallback = (
        Path(tempfile.gettempdir())
        / f"fhir-adapter-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    )
    return [cache_dir() / cache_name(), fallback / cache_name()]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with gzip.open(path, "rb") as fh:
            doc = orjson.loads(fh.read())
    except (OSError, EOFError, orjson.JSONDecodeError):
        return None  # missing, truncated or corrupt: rebuild
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
        return None
    return doc


def _write(path: Path, doc: dict[str, Any]) -> bool:
    """Write atomically (temp file + rename in the same directory); False if not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".icd10cm-", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
            fh.write(orjson.dumps(doc))
        os.replace(tmp, path)
        return True
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False


def load_index_document() -> tuple[dict[str, Any], Path | None]:
    """The cached index (building and caching it when missing) and where it lives."""
    candidates = _candidates()
    for path in candidates:
        if (doc := _read(path)) is not None:
            return doc, path
    # Parallel workers starting on an empty cache would each spend seconds and ~200 MB
    # building the same index: the first builds it, the others wait and read it.
    with _build_lock(candidates):
        for path in candidates:
            if (doc := _read(path)) is not None:
                return doc, path
        doc = build_index()
        for path in candidates:
            if _write(path, doc):
                return doc, path
    return doc, None  # no writable cache: works, but builds again next run


@contextlib.contextmanager
def _build_lock(candidates: list[Path]) -> Iterator[None]:
    """An exclusive lock file beside the first writable cache location (none on Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path.parent / ".icd10cm.lock", "a")  # noqa: SIM115 (held across the yield)
        except OSError:
            continue
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield
            return
    yield


_lock = threading.Lock()
_index: _Index | None = None


def _get() -> _Index:
    global _index
    if _index is None:
        with _lock:
            if _index is None:
                _index = _Index(load_index_document()[0])
    return _index


def reset() -> None:
    """Forget the loaded index (tests; after the cache directory changed)."""
    global _index
    with _lock:
        _index = None
        _lookup.cache_clear()
        excludes1_conflict.cache_clear()


# -- the API -------------------------------------------------------------------------------


def release() -> str:
    """The tabular in use, e.g. "ICD-10-CM 2026 (April 1, 2026 tabular; simple-icd-10-cm 1.5.0)"."""
    return _get().release


# Claims repeat the same few codes, so answers are memoised per input string.
_MEMO = 1 << 16


@functools.lru_cache(maxsize=_MEMO)
def _lookup(code: str) -> tuple[bool, bool]:
    """(valid, billable) for the code as typed."""
    c = normalize(code)
    if c is None:
        return False, False
    index = _get()
    billable = c in index.leaves
    return billable or c in index.inner, billable


def is_valid(code: str) -> bool:
    """A code of the tabular at any level (category, subcategory, 7th character); not chapters or blocks."""
    return _lookup(code)[0]


def is_billable(code: str) -> bool:
    """A valid code with no children: only these may go on a claim."""
    return _lookup(code)[1]


@functools.lru_cache(maxsize=_MEMO)
def excludes1_conflict(a: str, b: str) -> str | None:
    """The Excludes1 note that forbids coding a with b, in either direction, or None.

    Notes are inherited from every ancestor (C22.0 gets C22's note that excludes C78.7)
    and name a code, its category ("D03.-") or a range ("B18.0-B18.1").
    """
    if not (is_valid(a) and is_valid(b)):
        return None  # an invalid code has no notes (and is a finding of its own)
    index = _get()
    ca, cb = normalize(a) or "", normalize(b) or ""
    for this, other in ((ca, cb), (cb, ca)):
        for node, (text, refs) in index.notes(this):
            for written, low, high in refs:
                if index.covers(low, high, other):
                    return f"{node} excludes1 {written}: {text}"
    return None
