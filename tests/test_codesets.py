"""ICD-10-CM from simple-icd-10-cm through the cached index, and the code-set release in reports."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapter.billing import code_set_versions, icd10cm
from fhir_adapter.billing.icd10cm import excludes1_conflict, is_billable, is_valid, release
from fhir_adapter.billing.tabular_notes import package_notes


@pytest.fixture(scope="module")
def index_doc() -> dict[str, Any]:
    """The index as built from the package (the slow path, once for this module)."""
    return icd10cm.build_index()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private cache directory, and no index loaded before or after the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    icd10cm.reset()
    yield tmp_path / "xdg" / "fhir-adapter" / icd10cm.cache_name()
    icd10cm.reset()


def test_release_names_the_tabular_and_the_package() -> None:
    assert release() == "ICD-10-CM FY2026 (April 1, 2026 tabular; simple-icd-10-cm 1.5.0)"


@pytest.mark.parametrize(
    ("code", "valid", "billable"),
    [
        ("C22", True, False),  # category header
        ("C22.0", True, True),
        ("C220", True, True),
        ("c22.0", True, True),
        (" C22.0 ", True, True),
        ("C 22.0", True, True),
        ("C22.00", False, False),  # does not exist
        ("K74.6", True, False),  # subcategory with children
        ("K74.60", True, True),
        ("C78.7", True, True),
        ("C7B.0", True, False),
        ("C7B.02", True, True),
        ("D37.6", True, True),
        ("S00.00XA", True, True),  # 7th character with placeholder
        ("T36.0X1A", True, True),
        ("T36.0X1", True, False),
        ("B10", True, False),  # a name that is also a block: the category counts
        ("C15-C26", False, False),  # block
        ("2", False, False),  # chapter
        ("C2.20", False, False),  # dot in the wrong place
        ("C22..0", False, False),
        ("", False, False),
        ("C22.0;DROP", False, False),
    ],
)
def test_valid_and_billable(code: str, valid: bool, billable: bool) -> None:
    assert is_valid(code) is valid
    assert is_billable(code) is billable


def test_excludes1_both_directions_and_inherited() -> None:
    expected = (
        "C22 excludes1 C78.7: secondary malignant neoplasm of liver and intrahepatic bile duct"
    )
    assert excludes1_conflict("C22.0", "C78.7") == expected  # C22.0 inherits C22's note
    assert excludes1_conflict("C78.7", "C22.8") == expected  # C78.7 has no note: the other way
    assert excludes1_conflict("c220", " c78.7") == expected
    assert excludes1_conflict("C78.7", "C7B.02") == (
        "C78 excludes1 C7B.02: secondary carcinoid tumors of liver"
    )
    assert (
        excludes1_conflict("K74.60", "K70.30")
        == "K74 excludes1 K70.3: alcoholic cirrhosis (of liver)"
    )
    # a block's note (C15-C26) applies to every code in it
    assert excludes1_conflict("C22.0", "C46.4") == (
        "C15-C26 excludes1 C46.4: Kaposi's sarcoma of gastrointestinal sites"
    )
    # "D03.-" names a whole category; "P36.0-P36.1" a range of subcategories (both ends
    # included, with their children); "C82-C85" a range of categories
    assert excludes1_conflict("D01.5", "D03.59") == "D01 excludes1 D03.-: melanoma in situ"
    assert excludes1_conflict("A40.0", "P36.0") == "A40 excludes1 P36.0-P36.1: neonatal"
    assert excludes1_conflict("A40.0", "P36.19") == "A40 excludes1 P36.0-P36.1: neonatal"
    assert excludes1_conflict("A40.0", "P36.2") is None
    assert excludes1_conflict("C26.1", "C83.30") == "C26.1 excludes1 C82-C85: non-Hodgkin lymphoma"
    assert excludes1_conflict("C26.1", "C86.0") is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("C22.0", "K74.60"),
        ("C22.0", "C22.0"),
        ("C78.7", "C78.6"),
        ("C22.00", "C78.7"),
        ("x", "C78.7"),
    ],
)
def test_no_excludes1(a: str, b: str) -> None:
    assert excludes1_conflict(a, b) is None


def test_notes_keep_descriptions_in_parentheses() -> None:
    text, refs = icd10cm.parse_refs(
        "glucose-6-phosphate dehydrogenase (G6PD) deficiency with anemia (D55.0)"
    )
    assert text == "glucose-6-phosphate dehydrogenase (G6PD) deficiency with anemia"
    assert refs == [("D55.0", "D550", "D550")]
    assert icd10cm.parse_refs("hepatitis B (B16.-, B18.0-B18.1)")[1] == [
        ("B16.-", "B16", "B16"),
        ("B18.0-B18.1", "B180", "B181"),
    ]
    assert icd10cm.parse_refs("angiostrongyliasis due to:") == ("angiostrongyliasis due to:", [])


def test_a_range_naming_a_block_covers_its_odd_categories() -> None:
    """C4A is filed in block C43-C44 though it sorts after C44."""
    index = icd10cm._Index(
        {
            "release": "test",
            "leaf": icd10cm._CodeSet.pack(["C4A0", "X011"]),
            "inner": icd10cm._CodeSet.pack(["C4A", "X01"]),
            "up": {"C4A": ["C43-C44", "2"], "X01": ["X00-X09", "20"]},
            "code_notes": {"X01": [["merkel", [["C43-C44", "C43", "C44"]]]]},
            "group_notes": {},
        }
    )
    assert index.covers("C43", "C44", "C4A0")
    assert not index.covers("C45", "C49", "C4A0")
    assert "C4A0" in index.leaves and "C4A" not in index.leaves and "C4A" in index.inner


def test_index_answers_what_the_package_answers(index_doc: dict[str, Any]) -> None:
    """Every code's validity, billability and Excludes1 notes (own and inherited) as the package says."""
    import simple_icd_10_cm as cm  # type: ignore[import-untyped]

    index = icd10cm._Index(index_doc)
    codes = [
        c
        for c in dict.fromkeys(cm.get_all_codes(with_dots=True))
        if cm.is_category_or_subcategory(c)
    ]
    assert len(codes) > 98_000
    for c in codes:
        u = c.replace(".", "")
        assert (u in index.leaves) is cm.is_leaf(c), c
        assert (u in index.inner) is not cm.is_leaf(c), c
    for c in codes[::5]:
        ancestors = cm.get_ancestors(c)  # subcategories, category, block, chapter
        expected = cm.get_excludes1(c)
        for n, node in enumerate(ancestors):
            expected += cm.get_excludes1(node, prioritize_blocks=n >= len(ancestors) - 2)
        u = c.replace(".", "")
        got = [(text, [tuple(r) for r in refs]) for _, (text, refs) in index.notes(u)]
        assert got == [icd10cm.parse_refs(e) for e in expected], c


def test_additional_code_notes_are_what_the_package_says(index_doc: dict[str, Any]) -> None:
    """Every code's "use additional code" and "code also" notes, its own and its ancestors',
    from the index as from the package (billing.tabular_notes read the package until
    the index held them)."""
    import simple_icd_10_cm as cm  # type: ignore[import-untyped]

    index = icd10cm._Index(index_doc)
    codes = [
        c
        for c in dict.fromkeys(cm.get_all_codes(with_dots=True))
        if cm.is_category_or_subcategory(c)
    ]
    noted = 0
    for c in codes:
        expected = package_notes(c)
        assert index.additional(c.replace(".", "")) == expected, c
        noted += bool(expected)
    assert noted > 60_000  # chapter notes reach most codes


def test_cache_is_built_once_then_read_without_the_package(cache: Path) -> None:
    assert not cache.exists()
    assert is_billable("C22.0")
    assert cache.is_file()
    with gzip.open(cache) as fh:
        assert orjson.loads(fh.read())["release"] == release()
    # a fresh process answers from the cache and never imports the 200 MB package
    probe = (
        "import sys; from fhir_adapter.billing import icd10cm as i; "
        "from fhir_adapter.billing.tabular_notes import additional_code_notes as notes; "
        "print(i.is_billable('K74.60'), i.is_billable('K74.6'), bool(notes('C22.0')), "
        "'simple_icd_10_cm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"XDG_CACHE_HOME": str(cache.parent.parent), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert out.split() == ["True", "False", "True", "False"]


def test_corrupt_or_stale_cache_is_rebuilt(cache: Path, index_doc: dict[str, Any]) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\x1f\x8b not really gzip")
    assert is_valid("C78.7")
    with gzip.open(cache) as fh:
        assert json.loads(fh.read())["format"] == icd10cm.INDEX_FORMAT
    icd10cm.reset()
    with gzip.open(cache, "wb") as fh:  # an older index format
        fh.write(orjson.dumps({**index_doc, "format": 0, "release": "old"}))
    assert release() == index_doc["release"]


def test_unwritable_cache_falls_back_to_the_temp_dir(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "xdg").write_text("a file where the cache directory should be")
    assert is_billable("C22.8")
    assert not cache.exists()
    assert (tmp_path / "tmp").glob("fhir-adapter-*/icd10cm-*.json.gz")
    assert len(list((tmp_path / "tmp").glob("fhir-adapter-*/icd10cm-*.json.gz"))) == 1


def test_json_report_names_the_code_sets() -> None:
    from fhir_adapter.report import render_json

    document = orjson.loads(render_json([]))
    assert document["code_sets"] == code_set_versions()
    assert document["code_sets"]["icd10cm"].startswith("ICD-10-CM FY2026")
    assert set(document["code_sets"]["cms_tables"]) == {"pfs", "mue", "ptp"}


def test_relative_xdg_cache_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert icd10cm.cache_dir() == Path.home() / ".cache" / "fhir-adapter"
    monkeypatch.setenv("XDG_CACHE_HOME", "/srv/cache")
    assert icd10cm.cache_dir() == Path("/srv/cache/fhir-adapter")


def test_concurrent_first_runs_build_the_index_once(tmp_path: Path) -> None:
    """Two processes on an empty cache (parallel workers): one builds, the other waits and reads."""
    probe = (
        "import sys; from fhir_adapter.billing import icd10cm as i; "
        "i.release(); print('simple_icd_10_cm' in sys.modules)"
    )
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    built = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(built) == ["False", "True"]
