"""CMS payment-policy tables: the real layouts (tests/data/cms), dates, import, the CLI."""

from __future__ import annotations

import datetime
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from fhir_adapter.billing import tables as t
from fhir_adapter.billing.tables import import_files, load_tables, read_table
from fhir_adapter.cli import main
from fhir_adapter.errors import TablesError

CMS = Path(__file__).parent / "data" / "cms"
PFS26 = CMS / "PPRRVU2026_Oct_nonQPP.csv"
PFS25 = CMS / "PPRRVU25_JAN.csv"
MUE_OCT = CMS / "MCR_MUE_PractitionerServices_Eff_10-01-2026.csv"
MUE_JAN = CMS / "MCR_MUE_PractitionerServices_Eff_01-01-2026.csv"
PTP = [CMS / "ccipra-v321r0-f1.txt", CMS / "ccipra-v321r0-f2.txt"]
D = datetime.date


def _dir(tmp_path: Path, *files: Path) -> Path:
    d = tmp_path / "tables"
    d.mkdir()
    for f in files:
        shutil.copy(f, d / f.name)
    return d


# -- layouts -------------------------------------------------------------------------------


def test_pprrvu_2026_with_pric_ind_column() -> None:
    table = read_table(PFS26)
    assert table.kind == "pfs"
    assert table.effective == D(2026, 10, 1)
    assert "2026 NATIONAL PHYSICIAN FEE SCHEDULE RELATIVE VALUE FILE OCTOBER" in table.title
    rows = {(r[0], r[1]): r for r in table.rows}
    # (hcpcs, mod, status, pctc, glob, mult): the quoted description with commas stays one cell
    assert rows[("47382", "")] == ("47382", "", "A", "0", "010", "2")
    assert rows[("76940", "26")] == ("76940", "26", "A", "1", "XXX", "0")
    assert rows[("77002", "")][4] == "ZZZ"
    assert len(table.rows) == 6  # the empty trailing row is not a row


def test_pprrvu_2025_layout_without_pric_ind() -> None:
    table = read_table(PFS25)
    assert table.effective == D(2025, 1, 1)
    assert ("47000", "", "A", "0", "000", "2") in table.rows


def test_mue_multiline_quoted_cells() -> None:
    table = read_table(MUE_OCT)
    assert table.kind == "mue"
    assert table.effective == D(2026, 10, 1)
    assert ("47382", 1, "2", "Code Descriptor / CPT Instruction") in table.rows
    assert ("J1885", 8, "3", "Prescribing Information") in table.rows


def test_ptp_text_layout() -> None:
    table = read_table(PTP[0])
    assert table.kind == "ptp"
    assert (
        "12001",
        "11042",
        D(1996, 1, 1),
        D(2020, 1, 1),
        "1",
        "Standards of medical / surgical practice",
        True,
    ) in table.rows
    assert (
        "47382",
        "76942",
        D(2003, 1, 1),
        None,
        "1",
        "CPT Manual or CMS manual coding instructions",
        False,
    ) in table.rows


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad-glob-PPRRVU.csv", "GLOB DAYS '10'"),
        ("bad-date-ccipra.txt", "'2003-01-01' is not a date"),
        ("header-only-ccipra.txt", "has a header but no rows"),
        ("not-a-table.csv", "not a CMS table"),
        ("excel.xlsx", "an Excel or zip file"),
        ("MCR_MUE_OutpatientHospitalServices_Eff_10-01-2026.csv", "Practitioner Services"),
    ],
)
def test_malformed_files_are_named(name: str, message: str) -> None:
    with pytest.raises(TablesError) as exc:
        read_table(CMS / name)
    assert name in str(exc.value) and message in str(exc.value)


def test_bad_row_names_its_line() -> None:
    with pytest.raises(TablesError, match=r"bad-glob-PPRRVU.csv:11: 47382"):
        read_table(CMS / "bad-glob-PPRRVU.csv")


# -- lookups and dates -----------------------------------------------------------------------


def test_lookups(tmp_path: Path) -> None:
    tables = load_tables(_dir(tmp_path, PFS26, MUE_OCT, *PTP))
    assert tables.global_days("47382") == 10
    assert tables.global_days(" 47382 ") == 10
    assert tables.global_days("76940") is None  # XXX
    assert tables.global_days("12345") is None
    row = tables.pfs("76940", "26")
    assert row is not None and row.pctc == "1" and row.modifier == "26"
    assert tables.pfs("76940", "59") is None
    mue = tables.mue("47382")
    assert mue is not None and (mue.value, mue.mai) == (1, "2")
    # files not described in SOURCES.yaml are not taken as verified
    assert mue.verified is False and "not described in SOURCES.yaml" in mue.source


def test_ptp_in_effect_window_and_either_order(tmp_path: Path) -> None:
    tables = load_tables(_dir(tmp_path, *PTP))
    edit = tables.ptp("76942", "47382", D(2026, 10, 14))
    assert edit is not None and (edit.column1, edit.column2, edit.modifier_indicator) == (
        "47382",
        "76942",
        "1",
    )
    assert tables.ptp("47382", "76942", D(2003, 1, 1)) is not None  # the effective day is covered
    assert tables.ptp("47382", "76942", D(2002, 12, 31)) is None
    # deleted on 2015-01-01, re-added 2018-04-01
    assert tables.ptp("47382", "47000", D(2014, 12, 31)).effective == D(2002, 1, 1)  # type: ignore[union-attr]
    assert tables.ptp("47382", "47000", D(2015, 1, 1)) is None  # the deletion day is not covered
    assert tables.ptp("47382", "47000", D(2017, 6, 1)) is None
    assert tables.ptp("47382", "47000", D(2018, 4, 1)).effective == D(2018, 4, 1)  # type: ignore[union-attr]
    # deleted retroactively (indicator 9, deletion == effective): never in effect
    assert tables.ptp("47382", "77002", D(2010, 1, 1)) is None
    assert tables.ptp("47382", "77002", D(2026, 1, 1)) is None
    # from the second part file
    assert tables.ptp("76940", "76942", D(2026, 10, 14)).modifier_indicator == "0"  # type: ignore[union-attr]
    assert tables.ptp("47382", "49083", D(2026, 10, 14)) is None


def test_mue_by_date_of_service(tmp_path: Path) -> None:
    tables = load_tables(_dir(tmp_path, MUE_JAN, MUE_OCT))
    assert tables.mue("47382", D(2026, 3, 1)).value == 2  # type: ignore[union-attr]
    assert tables.mue("47382", D(2026, 10, 1)).value == 1  # type: ignore[union-attr]
    assert tables.mue("47382").value == 1  # type: ignore[union-attr]  # latest
    assert tables.mue("47382", D(2025, 6, 1)).value == 2  # type: ignore[union-attr]  # earliest known
    assert tables.mue("76940", D(2026, 3, 1)) is None  # not in the January table


def test_later_pfs_release_wins(tmp_path: Path) -> None:
    tables = load_tables(_dir(tmp_path, PFS25, PFS26))
    assert tables.global_days("47382") == 10  # 2026 October over 2025 January
    assert tables.global_days("47000") == 0  # only in 2025
    assert "PPRRVU25_JAN.csv" in tables.release()["pfs"]


def test_load_is_cached_until_a_file_changes(tmp_path: Path) -> None:
    d = _dir(tmp_path, PFS26)
    first = load_tables(d)
    assert load_tables(d) is first
    shutil.copy(MUE_OCT, d / MUE_OCT.name)
    second = load_tables(d)
    assert second is not first and second.mue("47382") is not None


def test_an_unknown_file_in_the_directory_is_an_error(tmp_path: Path) -> None:
    d = _dir(tmp_path, PFS26, CMS / "not-a-table.csv")
    with pytest.raises(TablesError, match=r"not-a-table\.csv"):
        load_tables(d)


# -- the shipped tables -----------------------------------------------------------------------


def test_shipped_tables_cover_the_pack_and_say_where_each_row_comes_from() -> None:
    d = t.default_directory()
    tables = load_tables(d)
    sources = yaml.safe_load((d / "SOURCES.yaml").read_text())
    assert {p.name for p in t._table_paths(d)} == set(sources["files"])
    for code in sources["pack_codes"]:
        assert tables.pfs(code) is not None, code
        assert tables.mue(code) is not None, code
    assert tables.global_days("47382") == 10
    assert tables.mue("47382").value == 1  # type: ignore[union-attr]
    for code in ("76940", "77013", "77022"):
        assert tables.pfs(code, "26").pctc == "1"  # type: ignore[union-attr]
    for needle in ("76942", "77002", "77012", "77021"):
        assert tables.ptp("47382", needle, D(2026, 10, 14)) is not None
    rows = [tables.pfs("47382"), tables.mue("47382"), tables.ptp("47382", "76942", D(2026, 10, 14))]
    for row in rows:
        assert row is not None and row.source and row.verified is False
    # rows named in SOURCES.yaml exist in the files (no stale provenance)
    for name, entry in sources["files"].items():
        kind = t.sniff(d / name)[0]
        for key in entry.get("rows") or {}:
            parts = key.split()
            if kind == "pfs":
                assert tables.pfs(parts[0], parts[1] if len(parts) > 1 else ""), key
            elif kind == "mue":
                assert tables.mue(key), key
            else:
                assert tables.ptp(parts[0], parts[1], D(2026, 10, 14)), key


# -- import ----------------------------------------------------------------------------------


def test_import_round_trip(tmp_path: Path) -> None:
    into = tmp_path / "tables"
    counts = import_files([PFS26, MUE_OCT, *PTP], into)
    assert counts == {"pfs": 6, "mue": 4, "ptp": 6}  # PTP: only edits that name a pack code
    names = sorted(p.name for p in into.iterdir())
    assert names == [
        "MCR_MUE_PractitionerServices_Eff_10-01-2026.csv",
        "PPRRVU2026_Oct_nonQPP.csv",
        "SOURCES.yaml",
        "ccipra-v321r0.txt",
    ]
    tables = load_tables(into)
    assert tables.global_days("47382") == 10
    edit = tables.ptp("47382", "76942", D(2026, 10, 14))
    assert edit is not None and edit.verified and "ccipra-v321r0-f1.txt" in edit.source
    assert tables.ptp("99213", "36415", D(2026, 10, 14)) is None  # dropped: no pack code
    assert tables.ptp("47382", "47000", D(2016, 1, 1)) is None  # dates survive the rewrite
    assert read_table(into / "ccipra-v321r0.txt").rows == sorted(
        r for p in PTP for r in read_table(p).rows if "47382" in r[:2] or "76940" in r[:2]
    )
    sources = yaml.safe_load((into / "SOURCES.yaml").read_text())
    assert sources["files"]["PPRRVU2026_Oct_nonQPP.csv"]["verified"] is True
    assert "pack_codes" not in sources  # taken from the pack's SOURCES.yaml, not copied


def test_import_replaces_the_previous_release(tmp_path: Path) -> None:
    into = tmp_path / "tables"
    import_files([PFS25], into)
    assert load_tables(into).global_days("47382") == 90
    import_files([PFS26], into)
    assert not (into / PFS25.name).exists()
    assert load_tables(into).global_days("47382") == 10
    sources = yaml.safe_load((into / "SOURCES.yaml").read_text())
    assert list(sources["files"]) == [PFS26.name]


def test_import_into_the_shipped_layout_keeps_other_tables(tmp_path: Path) -> None:
    into = tmp_path / "tables"
    shutil.copytree(t.default_directory(), into)
    import_files([MUE_OCT], into)
    tables = load_tables(into)
    assert tables.mue("J1885").value == 8  # type: ignore[union-attr]
    assert tables.pfs("47382").verified is False  # type: ignore[union-attr]  # untouched excerpt
    sources = yaml.safe_load((into / "SOURCES.yaml").read_text())
    assert "mue-practitioner-excerpt.csv" not in sources["files"]
    assert sources["pack_codes"]


def test_failed_import_writes_nothing(tmp_path: Path) -> None:
    into = _dir(tmp_path, PFS25)
    before = {p.name: p.read_bytes() for p in into.iterdir()}
    for bad in (CMS / "bad-glob-PPRRVU.csv", CMS / "not-a-table.csv", tmp_path / "missing.csv"):
        with pytest.raises(TablesError):
            import_files([MUE_OCT, bad], into)
        assert {p.name: p.read_bytes() for p in into.iterdir()} == before
    with pytest.raises(TablesError, match="more than one PFS"):
        import_files([PFS25, PFS26], into)
    assert {p.name: p.read_bytes() for p in into.iterdir()} == before


def test_import_the_cms_zip_downloads(tmp_path: Path) -> None:
    """The PFS zip holds other files and, from 2026, a QPP twin; a PTP zip an .xlsx twin."""
    pfs_zip, ptp_zip = tmp_path / "rvu26d.zip", tmp_path / "ccipra-v321r0-f1.zip"
    with zipfile.ZipFile(pfs_zip, "w") as zf:
        zf.write(PFS26, PFS26.name)
        zf.write(PFS26, "PPRRVU2026_Oct_QPP.csv")
        zf.write(CMS / "not-a-table.csv", "GPCI2026.csv")
        zf.writestr("RVUPUF26.pdf", b"%PDF-1.4")
        zf.writestr("__MACOSX/._PPRRVU2026_Oct_nonQPP.csv", b"junk")
    with zipfile.ZipFile(ptp_zip, "w") as zf:
        zf.write(PTP[0], "ccipra-v321r0-f1.TXT")
        zf.write(CMS / "excel.xlsx", "ccipra-v321r0-f1.xlsx")
    into = tmp_path / "tables"
    assert import_files([pfs_zip, ptp_zip, PTP[1]], into) == {"pfs": 6, "ptp": 6}
    assert sorted(p.name for p in into.iterdir()) == [
        "PPRRVU2026_Oct_nonQPP.csv",
        "SOURCES.yaml",
        "ccipra-v321r0.txt",
    ]
    assert load_tables(into).ptp("76940", "76942", D(2026, 10, 14)) is not None


def test_zip_without_a_table_or_broken(tmp_path: Path) -> None:
    empty, broken = tmp_path / "empty.zip", tmp_path / "broken.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.write(CMS / "not-a-table.csv", "GPCI2026.csv")
    broken.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(TablesError, match="no PPRRVU, practitioner MUE or PTP table inside"):
        import_files([empty], tmp_path / "t")
    with pytest.raises(TablesError, match="cannot read the zip"):
        import_files([broken], tmp_path / "t")
    assert not (tmp_path / "t").exists()


# -- CLI -------------------------------------------------------------------------------------


def test_cli_import_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    into = tmp_path / "t"
    args = ["tables", "import", *map(str, [PFS26, MUE_OCT, *PTP]), "--into", str(into)]
    assert main(args) == 0
    assert "pfs 6 row(s), mue 4 row(s), ptp 6 row(s)" in capsys.readouterr().err
    assert main(["tables", "show", "--from", str(into)]) == 0
    out = capsys.readouterr().out
    assert "PPRRVU2026_Oct_nonQPP.csv" in out and "ptp\t6 row(s)" in out


def test_cli_environment_chooses_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    into = tmp_path / "t"
    monkeypatch.setenv("FHIR_ADAPTER_TABLES", str(into))
    assert main(["tables", "import", str(PFS25)]) == 0
    assert load_tables().global_days("47382") == 90
    capsys.readouterr()


@pytest.mark.parametrize(
    "bad", ["not-a-table.csv", "excel.xlsx", "bad-date-ccipra.txt", "nope.csv"]
)
def test_cli_bad_file_is_one_line_exit_2(
    tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    into = tmp_path / "t"
    assert main(["tables", "import", str(CMS / bad), "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fhir-adapter: error: ") and err.count("\n") == 1 and bad in err
    assert not into.exists() or not any(into.iterdir())


def test_broken_sources_yaml_is_named(tmp_path: Path) -> None:
    d = _dir(tmp_path, PFS26)
    (d / "SOURCES.yaml").write_text("files:\n  PPRRVU2026_Oct_nonQPP.csv: [not, a, mapping]\n")
    with pytest.raises(TablesError, match=r"SOURCES.yaml: files: PPRRVU2026_Oct_nonQPP.csv"):
        load_tables(d)
    (d / "SOURCES.yaml").write_text(
        "files: {PPRRVU2026_Oct_nonQPP.csv: {verified: true, rows: {'47382': oops}}}\n"
    )
    row = load_tables(d).pfs("47382")  # a row entry that is not a mapping: the file's word
    assert row is not None and row.verified is True and row.source == PFS26.name
    (d / "SOURCES.yaml").write_text("files: [\n")
    with pytest.raises(TablesError, match=r"SOURCES\.yaml: cannot read"):
        load_tables(d)
