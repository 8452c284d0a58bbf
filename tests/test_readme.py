"""The README's numbers and examples, checked against what the adapter says and does."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fhir_adapter.cli import main
from fhir_adapter.testing.catalog import README_COUNTS

from .conftest import ROOT

README = ROOT / "README.md"
CMS = Path(__file__).parent / "data" / "cms"


def test_the_fixture_counts_are_those_fixtures_list_gives(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fixtures", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    bundles, cases = len(listed), sum(len(c["cases"]) for c in listed)
    marked = README_COUNTS.findall(README.read_text())
    assert marked == [f"{bundles} FHIR R4 Bundles ({cases} cases)"]


def _stand_in(path: Path) -> None:
    """A file named as in the README, holding a table of the kind its name says."""
    name = path.name
    inner = name.removesuffix(".zip")
    if name.startswith("rvu"):
        source, inner = CMS / "PPRRVU2026_Oct_nonQPP.csv", "PPRRVU2026_Oct_nonQPP.csv"
    elif name.startswith(("mue", "MCR_MUE")):
        source = CMS / "MCR_MUE_PractitionerServices_Eff_10-01-2026.csv"
        inner = source.name if name.endswith(".zip") else inner
    elif name.startswith("PPRRVU"):
        source = CMS / "PPRRVU2026_Oct_nonQPP.csv"
    else:
        part = int(re.search(r"-f(\d)", name).group(1))  # type: ignore[union-attr]
        source = CMS / f"ccipra-v321r0-f{2 - part % 2}.txt"
        inner = inner if inner.endswith(".txt") else inner + ".txt"
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            zf.write(source, inner)
    else:
        shutil.copy(source, path)


def test_the_tables_import_examples_run(tmp_path: Path) -> None:
    text = README.read_text()
    commands = re.findall(
        r"^(fhir-adapter tables import .*?)(?:\s+#.*)?$", text.replace("\\\n", ""), re.M
    )
    assert len(commands) == 2
    for n, command in enumerate(commands):
        work = tmp_path / str(n)
        work.mkdir()
        names = subprocess.run(
            ["bash", "-c", f"printf '%s\\n' {command.removeprefix('fhir-adapter tables import ')}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for name in names:
            _stand_in(work / name)
        exe = Path(sys.executable).parent / "fhir-adapter"
        out = subprocess.run(
            ["bash", "-c", f"{exe}{command.removeprefix('fhir-adapter')} --into tables"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert re.search(
            r"imported pfs \d+ row\(s\), mue \d+ row\(s\), ptp \d+ row\(s\)", out.stderr
        )


def test_the_tables_import_examples_name_one_release() -> None:
    """The PFS, MUE and PTP files of the example are of the same quarter (CMS names them
    differently: PPRRVU2026_Oct, Eff_10-01-2026, rvu26d, ccipra-v323 = version 32.3)."""
    text = README.read_text()
    quarters = set()
    months = ["Jan", "Apr", "Jul", "Oct"]
    for m in re.finditer(r"PPRRVU(\d{4})_(\w{3})_", text):
        quarters.add((int(m[1]), months.index(m[2]) + 1))
    for m in re.finditer(r"MCR_MUE_PractitionerServices_Eff_(\d\d)-01-(\d{4})", text):
        quarters.add((int(m[2]), (int(m[1]) - 1) // 3 + 1))
    for m in re.finditer(r"\brvu(\d\d)([a-d])\.zip", text):
        quarters.add((2000 + int(m[1]), "abcd".index(m[2]) + 1))
    for m in re.finditer(r"ccipra-v(\d\d)(\d)r\d", text):
        quarters.add((1994 + int(m[1]), int(m[2]) + 1))  # NCCI version 32.3: 2026, October
    assert len(quarters) == 1, quarters
