"""ICD-10-CM validity, billability and Excludes1, from the CDC tabular in `simple-icd-10-cm`.

The package loads its whole tabular at import (2-5 s, ~200 MB), which a command that
checks a handful of diagnoses cannot afford on every run. So the package is imported
once per package version to build a compact index (every code with its billability,
every Excludes1 note with the code references it names, each category's block and
chapter, every "use additional code" and "code also" note), which is cached as gzipped JSON under the user cache directory and read
lazily with orjson afterwards. The index answers exactly what the package answers;
`tests/test_codesets.py` checks that on every code.

Validity depends on the release in force on the date of service (fiscal years run 1 October
to 30 September). The installed package carries one release; the data files other releases
of the package ship are kept gzipped in mappings/icd10cm/ and loaded through the package's
own `change_version()` (see `code_sets`). Each year has its own cached index.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gzip
import importlib.metadata
import importlib.util
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_adapter.errors import CodeSetError
from fhir_adapter.fhir.codings import dotted_icd10cm, normalize_code
from fhir_adapter.fhir.systems import ICD10CM

PACKAGE = "simple-icd-10-cm"
# Bump when the index layout or its derivation changes: old cache files are then ignored.
INDEX_FORMAT = 5

# One code reference inside an Excludes1 note: "C78.7", "D03.-", "C7A.02-", "B18.0-B18.1", "C00-C14".
_CODE = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{0,4})?-?"
_REF = re.compile(rf"({_CODE})(?:-({_CODE}))?")
_GROUP = re.compile(r"\(([^()]*)\)")
_TABULAR = re.compile(r"tabular-([A-Za-z]+)-(?:(\d{1,2})-)?(\d{4})\.xml(?:\.gz)?$")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august")
_SHIPPED = re.compile(r"^simple-icd-10-cm-(\d+(?:\.\d+)*)$")
# a category or subcategory as the package names it (dotted, upper case): not a block or chapter
_DOTTED = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")


@dataclass(frozen=True)
class CodeSet:
    """One ICD-10-CM release: the fiscal year it serves and where its files are (`directory`
    None: the installed package's own data)."""

    year: int
    data_file: str
    package_version: str
    directory: Path | None = None
    codes_file: str | None = None


def fiscal_year(day: datetime.date) -> int:
    """ICD-10-CM fiscal year of a date: FY2026 runs 1 Oct 2025 to 30 Sep 2026."""
    return day.year + 1 if day.month >= 10 else day.year


def _year_of(data_file: str) -> int | None:
    """The fiscal year of a tabular file name ("...-April-1-2026.xml": FY2026)."""
    m = _TABULAR.search(data_file)
    if not m:
        return None
    month, year = m.group(1).lower(), int(m.group(3))
    return year if month in _MONTHS else year + 1


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
        self.use_notes: dict[str, list[str]] = doc.get("use_notes", {})
        self.group_use_notes: dict[str, list[str]] = doc.get("group_use_notes", {})

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

    def additional(self, code: str) -> tuple[str, ...]:
        """The "use additional code" and "code also" notes of a valid code (undotted) and of
        each ancestor, nearest first, each once."""
        out: list[str] = []
        for n in range(len(code), 2, -1):
            out += (t for t in self.use_notes.get(code[:n], ()) if t not in out)
        for group in self.up.get(code[:3], ()):
            out += (t for t in self.group_use_notes.get(group, ()) if t not in out)
        return tuple(out)

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
    when = f"{month} {int(day)}, {year}" if day else f"{month} {year}"
    return f"ICD-10-CM FY{_year_of(data_file)} ({when} tabular; {PACKAGE} {package_version})"


def _shipped_directory() -> Path | None:
    """mappings/icd10cm from the source tree, else from the installed package."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "mappings", here / "_data" / "mappings"):
        if (candidate / "icd10cm").is_dir():
            return candidate / "icd10cm"
    return None


@functools.cache
def code_sets() -> dict[int, CodeSet]:
    """Every release at hand by fiscal year: the installed package's, and those shipped in
    mappings/icd10cm/ (the installed one wins a year both have)."""
    out: dict[int, CodeSet] = {}
    shipped = _shipped_directory()
    for directory in sorted(shipped.iterdir()) if shipped else []:
        m = _SHIPPED.match(directory.name)
        tabular = sorted(directory.glob("*tabular*.xml.gz"))
        codes = sorted(directory.glob("code-list-*.txt.gz"))
        if not (m and directory.is_dir() and len(tabular) == 1 and len(codes) == 1):
            continue
        year = _year_of(tabular[0].name)
        if year is not None:
            out[year] = CodeSet(year, tabular[0].name, m.group(1), directory, codes[0].name)
    own = _installed()
    out[own.year] = own
    return dict(sorted(out.items()))


def _installed() -> CodeSet:
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise CodeSetError(
            f"{PACKAGE} is not installed: pip install '{PACKAGE}>=1.5,<1.6'"
        ) from None
    data_file = _data_file()
    year = _year_of(data_file)
    if year is None:
        raise CodeSetError(f"{PACKAGE}: cannot tell the fiscal year of its tabular {data_file}")
    return CodeSet(year, data_file, version)


def default_year() -> int:
    """The installed package's fiscal year (used when no date of service is known)."""
    return _installed().year


def year_for(day: datetime.date | None) -> tuple[int, str | None]:
    """The code set year to check a date of service against, and a statement when it is not
    the date's own fiscal year (no code set of that year here: the nearest is used)."""
    if day is None:
        return default_year(), None
    wanted = fiscal_year(day)
    years = code_sets()
    if wanted in years:
        return wanted, None
    nearest = min(years, key=lambda y: (abs(y - wanted), -y))
    statement = (
        f"the date of service {day.isoformat()} is in FY{wanted}, for which no code set is at "
        f"hand ({', '.join(f'FY{y}' for y in years)}): checked against the nearest, FY{nearest}"
    )
    return nearest, statement


def build_index(code_set: CodeSet | None = None) -> dict[str, Any]:
    """Import the package (slow, once) and derive the index from a release's tabular (default:
    the package's own; another is loaded with its `change_version` and the package's own
    data restored afterwards)."""
    code_set = code_set or _installed()
    with warnings.catch_warnings():  # its loader uses importlib.resources' legacy API
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm as cm  # type: ignore[import-untyped]

    if code_set.directory is None or code_set.codes_file is None:
        return _derive(cm, code_set)
    with tempfile.TemporaryDirectory(prefix="fhir-adapter-icd10cm-") as tmp:
        paths = []
        for name in (code_set.codes_file, code_set.data_file):
            target = Path(tmp) / name.removesuffix(".gz")
            with gzip.open(code_set.directory / name, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            paths.append(str(target))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm.change_version(paths[0], paths[1])
            try:
                return _derive(cm, code_set)
            finally:
                cm.change_version()


def _derive(cm: Any, code_set: CodeSet) -> dict[str, Any]:
    leaf: list[str] = []
    inner: list[str] = []
    code_notes: dict[str, list[Any]] = {}
    group_notes: dict[str, list[Any]] = {}
    up: dict[str, list[str]] = {}
    use_notes: dict[str, list[str]] = {}
    group_use_notes: dict[str, list[str]] = {}
    for item in dict.fromkeys(cm.get_all_codes(with_dots=True)):
        # by name, as the package looks a node up (a block named as its only category
        # answers with the category's notes)
        uses = [
            cleaned
            for text in (cm.get_use_additional_code(item), cm.get_code_also(item))
            if (cleaned := " ".join(str(text or "").split()))
        ]
        # A few names are both a block and its only category (B10, C7A, ...): check both roles.
        if cm.is_category_or_subcategory(item):
            code = normalize_code(ICD10CM, item)
            (leaf if cm.is_leaf(item) else inner).append(code)
            if notes := cm.get_excludes1(item):
                code_notes[code] = [parse_refs(n) for n in notes]
            if cm.is_category(item):
                up[code] = list(cm.get_ancestors(item))
            if uses:
                use_notes[code] = uses
        if cm.is_chapter(item) or cm.is_block(item):
            if notes := cm.get_excludes1(item, prioritize_blocks=True):
                group_notes[item] = [parse_refs(n) for n in notes]
            if uses:
                group_use_notes[item] = uses
    return {
        "format": INDEX_FORMAT,
        "package": f"{PACKAGE} {code_set.package_version}",
        "year": code_set.year,
        "data_file": code_set.data_file,
        "release": describe_release(code_set.package_version, code_set.data_file),
        "leaf": _CodeSet.pack(leaf),
        "inner": _CodeSet.pack(inner),
        "up": up,
        "code_notes": code_notes,
        "group_notes": group_notes,
        "use_notes": use_notes,
        "group_use_notes": group_use_notes,
    }


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/fhir-adapter (default ~/.cache/fhir-adapter; a relative value is ignored)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fhir-adapter"


def cache_name(code_set: CodeSet | None = None) -> str:
    code_set = code_set or _installed()
    stem = code_set.data_file.removesuffix(".gz").removesuffix(".xml")
    return f"icd10cm-{code_set.package_version}-{stem}-v{INDEX_FORMAT}.json.gz"


def _candidates(code_set: CodeSet) -> list[Path]:
    fallback = (
        Path(tempfile.gettempdir())
        / f"fhir-adapter-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    )
    return [cache_dir() / cache_name(code_set), fallback / cache_name(code_set)]


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


def load_index_document(
    code_set: CodeSet | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """The cached index of a release (default: the installed package's), building and
    caching it when missing, and where it lives."""
    code_set = code_set or _installed()
    candidates = _candidates(code_set)
    for path in candidates:
        if (doc := _read(path)) is not None:
            return doc, path
    # Parallel workers starting on an empty cache would each spend seconds and ~200 MB
    # building the same index: the first builds it, the others wait and read it.
    with _build_lock(candidates):
        for path in candidates:
            if (doc := _read(path)) is not None:
                return doc, path
        doc = build_index(code_set)
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
_indexes: dict[int, _Index] = {}


def _get(year: int | None = None) -> _Index:
    year = default_year() if year is None else year
    index = _indexes.get(year)
    if index is None:
        with _lock:
            index = _indexes.get(year)
            if index is None:
                code_set = code_sets().get(year)
                if code_set is None:
                    raise CodeSetError(f"no ICD-10-CM code set for FY{year} is at hand")
                index = _indexes[year] = _Index(load_index_document(code_set)[0])
    return index


def reset() -> None:
    """Forget the loaded indexes (tests; after the cache directory changed)."""
    with _lock:
        _indexes.clear()
        _lookup.cache_clear()
        excludes1_conflict.cache_clear()


# -- the API -------------------------------------------------------------------------------


def release(year: int | None = None) -> str:
    """A year's tabular (default: the installed package's), e.g.
    "ICD-10-CM FY2026 (April 1, 2026 tabular; simple-icd-10-cm 1.5.0)"."""
    return _get(year).release


# Claims repeat the same few codes, so answers are memoised per input string.
_MEMO = 1 << 16


@functools.lru_cache(maxsize=_MEMO)
def _lookup(code: str, year: int | None = None) -> tuple[bool, bool]:
    """(valid, billable) for the code as typed, in a year's code set."""
    c = normalize(code)
    if c is None:
        return False, False
    index = _get(year)
    billable = c in index.leaves
    return billable or c in index.inner, billable


def additional_notes(code: str) -> tuple[str, ...] | None:
    """The tabular's "use additional code" and "code also" notes of a dotted code and its
    ancestors, nearest first, from the installed package's index (what the package says,
    without importing it: that parses the whole tabular, seconds in every process). None
    when `code` is not written as the package names a code (ask the package)."""
    if _DOTTED.fullmatch(code) is None:
        return None
    index = _get(None)
    bare = code.replace(".", "")
    return index.additional(bare) if index.valid(bare) else ()


def is_valid(code: str, year: int | None = None) -> bool:
    """A code of the tabular at any level (category, subcategory, 7th character); not chapters
    or blocks. `year`: the fiscal year's code set (default: the installed package's)."""
    return _lookup(code, year)[0]


def is_billable(code: str, year: int | None = None) -> bool:
    """A valid code with no children: only these may go on a claim."""
    return _lookup(code, year)[1]


@functools.lru_cache(maxsize=_MEMO)
def excludes1_conflict(a: str, b: str, year: int | None = None) -> str | None:
    """The Excludes1 note that forbids coding a with b, in either direction, or None.

    Notes are inherited from every ancestor (C22.0 gets C22's note that excludes C78.7)
    and name a code, its category ("D03.-") or a range ("B18.0-B18.1").
    """
    if not (is_valid(a, year) and is_valid(b, year)):
        return None  # an invalid code has no notes (and is a finding of its own)
    index = _get(year)
    ca, cb = normalize(a) or "", normalize(b) or ""
    for this, other in ((ca, cb), (cb, ca)):
        for node, (text, refs) in index.notes(this):
            for written, low, high in refs:
                if index.covers(low, high, other):
                    return f"{node} excludes1 {written}: {text}"
    return None
