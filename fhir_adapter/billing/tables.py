"""CMS payment-policy tables read in CMS's own file layouts.

The PFS relative value file (PPRRVU: global days, PC/TC indicator, multiple-procedure
indicator), the practitioner MUE table and the NCCI practitioner PTP edits change
every quarter and are not on PyPI, so the tables live as files in a directory
(default: the pack's `mappings/tables/`) in exactly the layouts CMS publishes: a user
refreshes them by dropping in the new quarter's files or with `fhir-adapter tables
import`. Each file's kind is recognised from its header, never from its name, and
columns are found by their header names, because CMS moves them (2026 added PRIC IND
in the middle of the PPRRVU file). `SOURCES.yaml` in the directory records where each
file and row comes from and whether it was verified.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import os
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fhir_adapter.errors import TablesError

SOURCES_FILE = "SOURCES.yaml"
KINDS = ("pfs", "mue", "ptp")
KIND_NAMES = {
    "pfs": "PFS relative value file (PPRRVU)",
    "mue": "practitioner MUE table",
    "ptp": "NCCI practitioner PTP edits",
}
GLOBAL_DAYS = ("000", "010", "090", "MMM", "XXX", "YYY", "ZZZ")
_HEAD_BYTES = 65536
_CODE = re.compile(r"[0-9A-Z]{5}")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}


@dataclass(frozen=True)
class PfsRow:
    """One PPRRVU row: indicators as CMS writes them ("010", "1", "2")."""

    hcpcs: str
    modifier: str
    status: str
    pctc: str
    global_days: str
    mult_proc: str
    source: str
    verified: bool


@dataclass(frozen=True)
class MueRow:
    """One practitioner MUE: `mai` is the adjudication indicator digit (1 line, 2/3 date of service)."""

    hcpcs: str
    value: int
    mai: str
    rationale: str
    source: str
    verified: bool


@dataclass(frozen=True)
class PtpEdit:
    """One PTP edit; in effect for dates `effective <= date < deletion` (see `PaymentTables.ptp`)."""

    column1: str
    column2: str
    effective: datetime.date
    deletion: datetime.date | None
    modifier_indicator: str
    rationale: str
    source: str
    verified: bool


@dataclass
class TableFile:
    """One parsed file: its kind, release and rows (tuples of strings/dates, per kind)."""

    kind: str
    path: Path
    title: str
    effective: datetime.date | None
    rows: list[tuple[Any, ...]] = field(default_factory=list)


# -- reading the layouts -------------------------------------------------------------------


def _norm(cell: str) -> str:
    return re.sub(r"\s+", " ", cell.replace("\ufeff", "").replace("ï»¿", "")).strip().upper()


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise TablesError(f"{path}: cannot read: {exc.strerror}") from None
    if raw.startswith(b"PK"):
        raise TablesError(
            f"{path}: an Excel or zip file; import the CMS .zip download itself, or the .csv "
            "(PFS, MUE) or .txt (PTP) file inside it"
        )
    if b"\0" in raw:
        raise TablesError(f"{path}: a binary file, not a CMS table in CSV or text layout")
    return raw.decode("latin-1")


def _is_header(kind: str, row: list[str]) -> bool:
    cells = [_norm(c) for c in row]
    if kind == "pfs":
        return len(cells) > 2 and cells[0] == "HCPCS" and cells[1] == "MOD"
    if kind == "mue":
        return len(cells) > 1 and "CPT CODE" in cells[0] and "MUE" in cells[1]
    return len(cells) > 1 and cells[0] == "COLUMN 1" and cells[1] == "COLUMN 2"


def sniff(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(kind, delimiter) of a table file, from its header; TablesError if it is none of them."""
    p = Path(path)
    head = _head(p)
    for delimiter in ("\t", ","):
        reader = csv.reader(io.StringIO(head), delimiter=delimiter)
        with contextlib.suppress(csv.Error):  # a record cut off at the end of the head
            for _, row in zip(range(60), reader, strict=False):
                for kind in KINDS:
                    if _is_header(kind, row):
                        return kind, delimiter
    raise TablesError(
        f"{p}: not a CMS table this adapter reads (expected the header of a PPRRVU relative "
        "value file, a practitioner MUE table or NCCI practitioner PTP edits)"
    )


def _records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, record); CMS files are cp1252/latin-1, some with a UTF-8 BOM."""
    with open(path, encoding="latin-1", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise TablesError(f"{path}:{reader.line_num}: {exc}") from None


def _column(names: list[str], path: Path, *needles: str, exact: bool = False) -> int:
    for j, name in enumerate(names):
        if (name == needles[0]) if exact else all(n in name for n in needles):
            return j
    raise TablesError(f"{path}: no column {' '.join(needles)!r} in the header")


def _cell(row: list[str], j: int) -> str:
    return row[j].strip() if j < len(row) else ""


def read_table(path: str | os.PathLike[str]) -> TableFile:
    """Parse one file in any of the three layouts; TablesError names file and line on a bad row."""
    p = Path(path)
    kind, delimiter = sniff(p)
    reader = {"pfs": _read_pfs, "mue": _read_mue, "ptp": _read_ptp}[kind]
    table = reader(p, delimiter)
    if not table.rows:
        raise TablesError(f"{p}: the {KIND_NAMES[kind]} has a header but no rows")
    return table


def _read_pfs(path: Path, delimiter: str) -> TableFile:
    above: list[list[str]] = []
    names: list[str] | None = None
    table = TableFile("pfs", path, "", None)
    for line, row in _records(path, delimiter):
        if names is None:
            if not _is_header("pfs", row):
                above.append(row)
                continue
            # The header is stacked: the HCPCS row ends each name, the rows just above
            # (those with more than one filled cell) begin them ("PCTC" over "IND").
            stack = [row]
            for prev in reversed(above):
                if sum(1 for c in prev if c.strip()) < 2:
                    break
                stack.insert(0, prev)
            names = [
                " ".join(_norm(r[j]) for r in stack if j < len(r) and r[j].strip())
                for j in range(len(row))
            ]
            ix = (
                0,
                _column(names, path, "MOD", exact=True),
                _column(names, path, "STATUS"),
                _column(names, path, "PCTC"),
                _column(names, path, "GLOB"),
                _column(names, path, "MULT", "PROC"),
            )
            title = next(
                (_norm(c) for r in above for c in r if "RELATIVE VALUE FILE" in _norm(c)), ""
            )
            table.title = title or path.name
            table.effective = _pfs_effective(title, path.name)
            continue
        code = _cell(row, 0).upper()
        if not _CODE.fullmatch(code):
            continue  # blank lines, footnotes
        hcpcs, mod, status, pctc, glob, mult = (_cell(row, j).upper() for j in ix)
        if glob not in GLOBAL_DAYS:
            raise TablesError(
                f"{path}:{line}: {hcpcs} GLOB DAYS {glob!r} is not one of {GLOBAL_DAYS}"
            )
        table.rows.append((hcpcs, mod, status, pctc, glob, mult))
    if names is None:
        raise TablesError(f"{path}: no PPRRVU header row (first cells HCPCS, MOD)")
    return table


def _pfs_effective(title: str, name: str) -> datetime.date | None:
    m = re.search(r"(\d{4}) NATIONAL PHYSICIAN FEE SCHEDULE RELATIVE VALUE FILE (\w{3})", title)
    if m and m.group(2) in _MONTHS:
        return datetime.date(int(m.group(1)), _MONTHS[m.group(2)], 1)
    m = re.search(r"PPRRVU(\d{4}|\d{2})_?([A-Z]{3})", name.upper())
    if m and m.group(2) in _MONTHS:
        year = int(m.group(1))
        return datetime.date(year + 2000 if year < 100 else year, _MONTHS[m.group(2)], 1)
    return None


def _read_mue(path: Path, delimiter: str) -> TableFile:
    ix: tuple[int, int, int, int] | None = None
    table = TableFile("mue", path, path.name, None)
    for line, row in _records(path, delimiter):
        if ix is None:
            if _is_header("mue", row):
                names = [_norm(c) for c in row]
                if "PRACTITIONER" not in names[1]:
                    raise TablesError(
                        f"{path}: this MUE table is {row[1].strip()!r}; the adapter needs the "
                        "Practitioner Services MUE table"
                    )
                ix = (
                    0,
                    _column(names, path, "MUE VALUES"),
                    _column(names, path, "ADJUDICATION"),
                    _column(names, path, "RATIONALE"),
                )
            continue
        code = _cell(row, 0).upper()
        if not code:
            continue
        value, mai, rationale = (_cell(row, j) for j in ix[1:])
        if not _CODE.fullmatch(code) or not value.isdigit() or mai[:1] not in ("1", "2", "3"):
            raise TablesError(
                f"{path}:{line}: not an MUE row (code, units, adjudication indicator 1-3): {row}"
            )
        table.rows.append((code, int(value), mai[:1], rationale))
    if ix is None:
        raise TablesError(f"{path}: no MUE header row")
    m = re.search(r"EFF_(\d{2})-(\d{2})-(\d{4})", path.name.upper())
    if m:
        table.effective = datetime.date(int(m.group(3)), int(m.group(1)), int(m.group(2)))
    return table


def _date(text: str, path: Path, line: int) -> datetime.date | None:
    text = text.strip()
    if text in ("", "*"):
        return None
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise TablesError(f"{path}:{line}: {text!r} is not a date (YYYYMMDD)") from None


def _read_ptp(path: Path, delimiter: str) -> TableFile:
    if "CCIOPH" in path.name.upper():
        raise TablesError(
            f"{path}: hospital outpatient PTP edits; the adapter needs practitioner edits (ccipra)"
        )
    ix: tuple[int, ...] | None = None
    table = TableFile("ptp", path, path.name, None)
    for line, row in _records(path, delimiter):
        if ix is None:
            if _is_header("ptp", row):
                names = [_norm(c) for c in row]
                prior = next((j for j, n in enumerate(names) if "1996" in n), -1)
                ix = (
                    0,
                    1,
                    _column(names, path, "EFFECTIVE"),
                    _column(names, path, "DELETION"),
                    _column(names, path, "MODIFIER"),
                    _column(names, path, "RATIONALE"),
                )
            continue
        col1 = _cell(row, 0).upper()
        if not _CODE.fullmatch(col1):
            continue  # the rest of a multi-row header ("*=no data", "0=not allowed"), blanks
        col2, eff, dele, mod, why = (_cell(row, j) for j in ix[1:])
        effective = _date(eff, path, line)
        if not _CODE.fullmatch(col2.upper()) or effective is None or mod not in ("0", "1", "9"):
            raise TablesError(
                f"{path}:{line}: not a PTP row (column 1, column 2, effective date, "
                f"modifier indicator 0/1/9): {row}"
            )
        deletion = _date(dele, path, line)
        flag = _cell(row, prior) == "*" if prior >= 0 else False
        table.rows.append((col1, col2.upper(), effective, deletion, mod, why, flag))
    if ix is None:
        raise TablesError(f"{path}: no PTP header row (Column 1, Column 2)")
    return table


# -- provenance (SOURCES.yaml) -------------------------------------------------------------


def _read_sources(directory: Path) -> dict[str, Any]:
    path = directory / SOURCES_FILE
    if not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TablesError(f"{path}: cannot read: {exc}") from None
    if isinstance(doc, dict) and doc.get("files") is None:
        doc["files"] = {}
    if not isinstance(doc, dict) or not isinstance(doc["files"], dict):
        raise TablesError(f"{path}: expected a mapping with 'files:'")
    for name, entry in doc["files"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("rows") or {}, dict):
            raise TablesError(f"{path}: files: {name}: expected a mapping (release, source, rows)")
    return doc


@dataclass(frozen=True)
class _Provenance:
    source: str
    verified: bool
    rows: dict[str, Any]

    def of(self, key: str) -> tuple[str, bool]:
        row = self.rows.get(key)
        if not isinstance(row, dict):
            row = {}
        return str(row.get("source", self.source)), bool(row.get("verified", self.verified))


def _provenance(sources: dict[str, Any], name: str) -> _Provenance:
    entry = sources.get("files", {}).get(name)
    if not isinstance(entry, dict):
        return _Provenance(f"{name} (not described in {SOURCES_FILE})", False, {})
    return _Provenance(
        str(entry.get("source", name)), bool(entry.get("verified", False)), entry.get("rows") or {}
    )


# -- the tables ----------------------------------------------------------------------------


class PaymentTables:
    """The three tables of one directory, indexed for lookups by code (and date)."""

    def __init__(self, files: Sequence[TableFile], sources: dict[str, Any]) -> None:
        entries = sources.get("files") or {}
        for f in files:
            entry = entries.get(f.path.name)
            if f.effective is None and isinstance(entry, dict):
                f.effective = _as_date(entry.get("effective"))
        self._files = sorted(files, key=lambda f: (f.kind, f.effective or datetime.date.min))
        self._pfs: dict[tuple[str, str], PfsRow] = {}
        self._mue: list[tuple[datetime.date | None, dict[str, MueRow]]] = []
        self._ptp: dict[tuple[str, str], list[PtpEdit]] = {}
        self._release: dict[str, list[str]] = {k: [] for k in KINDS}
        for f in self._files:
            prov = _provenance(sources, f.path.name)
            entry = entries.get(f.path.name)
            label = str(entry.get("release") or f.title) if isinstance(entry, dict) else f.title
            effective = f.effective
            self._release[f.kind].append(
                f"{f.path.name}: {label}" + (f", effective {effective}" if effective else "")
            )
            if f.kind == "pfs":  # files ordered by release: a later one overrides
                for hcpcs, mod, status, pctc, glob, mult in f.rows:
                    src, ok = prov.of(f"{hcpcs} {mod}".strip())
                    self._pfs[(hcpcs, mod)] = PfsRow(hcpcs, mod, status, pctc, glob, mult, src, ok)
            elif f.kind == "mue":
                rows = {}
                for code, value, mai, why in f.rows:
                    src, ok = prov.of(code)
                    rows[code] = MueRow(code, value, mai, why, src, ok)
                self._mue.append((effective, rows))
            else:
                for col1, col2, eff, dele, mod, why, _prior in f.rows:
                    src, ok = prov.of(f"{col1} {col2}")
                    edit = PtpEdit(col1, col2, eff, dele, mod, why, src, ok)
                    edits = self._ptp.setdefault((col1, col2), [])
                    # The same edit from two quarters: keep the later word (a deletion date).
                    same = [e for e in edits if e.effective == eff]
                    if not same:
                        edits.append(edit)
                    elif dele is not None and same[0].deletion is None:
                        edits[edits.index(same[0])] = edit
        self._mue.sort(key=lambda r: r[0] or datetime.date.min)

    def pfs(self, hcpcs: str, modifier: str = "") -> PfsRow | None:
        """The PPRRVU row for the code and modifier ("" global, "26", "TC", "53")."""
        return self._pfs.get((_code(hcpcs), modifier.strip().upper()))

    def pfs_row(self, hcpcs: str) -> PfsRow | None:
        """The code's global PPRRVU row, else its row with any modifier (None: not in the file)."""
        return self.pfs(hcpcs) or next(
            (r for (c, _), r in self._pfs.items() if c == _code(hcpcs)), None
        )

    def global_days(self, hcpcs: str) -> int | None:
        """Days of the global surgical period ("010" -> 10); None for XXX/YYY/ZZZ/MMM or unknown."""
        row = self.pfs_row(hcpcs)
        return int(row.global_days) if row and row.global_days.isdigit() else None

    def mue(self, hcpcs: str, on: datetime.date | None = None) -> MueRow | None:
        """The practitioner MUE in effect on `on` (default: the latest table).

        MUE rows carry no dates: a table applies from its effective date (file name
        `..._Eff_MM-DD-YYYY.csv` or SOURCES.yaml). With several tables the one in effect
        is used; a date before all of them gets the earliest (MUEs rarely change).
        """
        if not self._mue:
            return None
        rows = self._mue[-1][1]
        if on is not None:
            in_effect = [r for eff, r in self._mue if eff is None or eff <= on]
            rows = in_effect[-1] if in_effect else self._mue[0][1]
        return rows.get(_code(hcpcs))

    def ptp(self, a: str, b: str, on: datetime.date) -> PtpEdit | None:
        """The PTP edit between a and b (either may be column 1) in effect on `on`.

        In effect means effective <= on < deletion: CMS deletes an edit retroactively by
        giving it a deletion date equal to its effective date (modifier indicator 9), which
        must mean "never in effect", so the deletion date itself is not covered.
        """
        ca, cb = _code(a), _code(b)
        edits = self._ptp.get((ca, cb), []) + self._ptp.get((cb, ca), [])
        live = [e for e in edits if e.effective <= on and (e.deletion is None or on < e.deletion)]
        return max(live, key=lambda e: e.effective) if live else None

    def release(self) -> dict[str, str]:
        """Which file (and CMS release) each table came from."""
        return {k: "; ".join(v) or "none" for k, v in self._release.items()}

    def counts(self) -> dict[str, int]:
        return {
            "pfs": len(self._pfs),
            "mue": sum(len(r) for _, r in self._mue),
            "ptp": sum(len(e) for e in self._ptp.values()),
        }


def _code(code: str) -> str:
    return code.strip().upper()


def _as_date(value: Any) -> datetime.date | None:
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.date.fromisoformat(value)
    return None


def default_directory() -> Path:
    """mappings/tables from the source tree, else from the installed package."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "mappings", here / "_data" / "mappings"):
        if (candidate / "tables").is_dir():
            return candidate / "tables"
    raise TablesError("the bundled tables mappings/tables are missing from this install")


def _table_paths(directory: Path) -> list[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise TablesError(
            f"{directory}: cannot read the tables directory: {exc.strerror}"
        ) from None
    return [
        p
        for p in entries
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".csv", ".txt")
    ]


_cache: dict[Path, tuple[tuple[Any, ...], PaymentTables]] = {}
_cache_lock = threading.Lock()


def load_tables(directory: str | os.PathLike[str] | None = None) -> PaymentTables:
    """Every table file of the directory (default: $FHIR_ADAPTER_TABLES, else the pack's).

    Cached per directory until a file in it changes (name, size or mtime).
    """
    chosen = directory if directory is not None else os.environ.get("FHIR_ADAPTER_TABLES")
    d = Path(chosen).resolve() if chosen else default_directory()
    paths = _table_paths(d)
    fingerprint = tuple(
        (p.name, st.st_size, st.st_mtime_ns)
        for p in [*paths, d / SOURCES_FILE]
        if (st := _stat(p)) is not None
    )
    with _cache_lock:
        hit = _cache.get(d)
        if hit and hit[0] == fingerprint:
            return hit[1]
    tables = PaymentTables([read_table(p) for p in paths], _read_sources(d))
    with _cache_lock:
        _cache[d] = (fingerprint, tables)
    return tables


def _stat(p: Path) -> os.stat_result | None:
    try:
        return p.stat()
    except OSError:
        return None


# -- importing a CMS release ---------------------------------------------------------------


def pack_codes(directory: Path) -> set[str]:
    """The codes whose PTP edits are kept on import (SOURCES.yaml `pack_codes`)."""
    for d in (directory, default_directory()):
        codes = _read_sources(d).get("pack_codes") if d.is_dir() else None
        if codes:
            return {str(c).strip().upper() for c in codes}
    raise TablesError(f"no pack_codes in {SOURCES_FILE}: cannot tell which PTP edits to keep")


def import_files(
    paths: Sequence[str | os.PathLike[str]], directory: str | os.PathLike[str]
) -> dict[str, int]:
    """Read CMS release files and make them the tables of `directory`.

    Every file is parsed first: an unrecognised or malformed one raises TablesError
    and nothing is written. A PFS or MUE file is copied as it is (it is already in
    the layout, and small); the PTP files of a release (CMS splits them in four) are
    merged into one file in the same layout, keeping only edits that name one of the
    pack's codes (a full release has millions). Files of the same kinds already in the
    directory are replaced, and SOURCES.yaml records the new files as verified CMS data.
    Returns the rows written per table.
    """
    if not paths:
        raise TablesError("no files to import")
    with tempfile.TemporaryDirectory(prefix="fhir-adapter-import-") as scratch:
        tables = [read_table(p) for p in _expand(paths, Path(scratch))]
        return _import(tables, Path(directory))


def _expand(paths: Sequence[str | os.PathLike[str]], scratch: Path) -> list[Path]:
    """The files to read: each path as given, or the CMS tables inside a .zip download.

    A zip holds more than the tables (GPCI, anesthesia, OPPS cap files, PDFs, .xlsx
    twins): members that are not a table this adapter reads are skipped.
    """
    out: list[Path] = []
    for given in map(Path, paths):
        if given.suffix.lower() != ".zip":
            out.append(given)
            continue
        found: list[Path] = []
        try:
            with zipfile.ZipFile(given) as zf:
                for n, info in enumerate(zf.infolist()):
                    name = Path(info.filename).name
                    if info.is_dir() or info.filename.startswith("__MACOSX/"):
                        continue
                    if Path(name).suffix.lower() not in (".csv", ".txt"):
                        continue
                    member = scratch / f"{len(out)}-{n}" / name
                    member.parent.mkdir(parents=True)
                    with zf.open(info) as src, open(member, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    with contextlib.suppress(TablesError):
                        sniff(member)
                        found.append(member)
        except (OSError, zipfile.BadZipFile) as exc:
            raise TablesError(f"{given}: cannot read the zip: {exc}") from None
        if not found:
            raise TablesError(f"{given}: no PPRRVU, practitioner MUE or PTP table inside")
        out += found
    return out


def _import(tables: list[TableFile], target: Path) -> dict[str, int]:
    by_kind: dict[str, list[TableFile]] = {}
    for t in tables:
        by_kind.setdefault(t.kind, []).append(t)
    pfs = by_kind.get("pfs", [])
    non_qpp = [t for t in pfs if "NONQPP" in t.path.name.upper()]
    if len(pfs) > 1 and len(non_qpp) == 1 and len({t.effective for t in pfs}) == 1:
        # From 2026 the release has a QPP and a non-QPP file; they differ only in the
        # conversion factor, not in the indicators read here.
        by_kind["pfs"] = non_qpp
    for kind in ("pfs", "mue"):
        if len(by_kind.get(kind, [])) > 1:
            names = ", ".join(t.path.name for t in by_kind[kind])
            raise TablesError(
                f"more than one {KIND_NAMES[kind]} given ({names}): import one release"
            )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TablesError(f"{target}: cannot create the directory: {exc.strerror}") from None
    keep = pack_codes(target) if "ptp" in by_kind else set()
    sources = _read_sources(target)
    files: dict[str, Any] = dict(sources.get("files") or {})
    old = {p.name: sniff(p)[0] for p in _table_paths(target)}
    counts: dict[str, int] = {}
    today = datetime.date.today().isoformat()
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=target))
    try:
        written: list[str] = []
        for kind in ("pfs", "mue"):
            for t in by_kind.get(kind, []):
                shutil.copyfile(t.path, staging / t.path.name)
                written.append(t.path.name)
                counts[kind] = len(t.rows)
                files[t.path.name] = _entry(t.title, t.effective, [t.path.name], today)
        if "ptp" in by_kind:
            parts = by_kind["ptp"]
            name = re.sub(r"-f\d+$", "", parts[0].path.stem, flags=re.IGNORECASE) + ".txt"
            rows = sorted(
                {r for t in parts for r in t.rows if r[0] in keep or r[1] in keep},
                key=lambda r: (r[0], r[1], r[2]),
            )
            _write_ptp(staging / name, rows)
            written.append(name)
            counts["ptp"] = len(rows)
            files[name] = _entry(
                f"{name}: edits naming a pack code", None, [t.path.name for t in parts], today
            )
        for gone in [n for n, k in old.items() if k in by_kind and n not in written]:
            files.pop(gone, None)
        doc = {**sources, "files": files}
        (staging / SOURCES_FILE).write_text(
            yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8"
        )
        for name in [*written, SOURCES_FILE]:
            os.replace(staging / name, target / name)
        for gone, kind in old.items():
            if kind in by_kind and gone not in written:
                (target / gone).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _entry(
    title: str, effective: datetime.date | None, originals: list[str], today: str
) -> dict[str, Any]:
    entry: dict[str, Any] = {"release": title}
    if effective:
        entry["effective"] = effective.isoformat()
    entry["source"] = f"CMS release file(s) {', '.join(originals)}, imported {today}"
    entry["verified"] = True
    return entry


def _write_ptp(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """The practitioner PTP text layout: copyright line, blank lines, header, tab-separated rows."""

    def day(d: datetime.date | None) -> str:
        return d.strftime("%Y%m%d") if d else "*"

    with open(path, "w", encoding="latin-1", newline="") as fh:
        fh.write("CPT only copyright American Medical Association. All rights reserved.\r\n")
        fh.write("\r\n" * 5)
        fh.write(
            "Column 1\tColumn 2\t*=in existence prior to 1996\tEffective Date\t"
            "Deletion Date *=no data\tModifier 0=not allowed 1=allowed 9=not applicable\t"
            "PTP Edit Rationale\r\n"
        )
        for col1, col2, eff, dele, mod, why, prior in rows:
            fh.write(
                f"{col1}\t{col2}\t{'*' if prior else ''}\t{day(eff)}\t{day(dele)}\t{mod}\t{why}\r\n"
            )
