"""`--out` directories are owned: someone else's files refuse them, our own are replaced whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_adapter.cli import main

from .conftest import CASES

CLEAN = str(CASES / "ex1-hcc-ct.json")
BLOCKED = str(CASES / "v01-not-completed.json")


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_a_second_run_replaces_the_first_completely(tmp_path: Path) -> None:
    """An earlier run's Bundles never sit beside a new report.html."""
    out = tmp_path / "out"
    assert main(["evaluate", BLOCKED, "--out", str(out), "--format", "json"]) == 1
    first = _names(out)
    assert "Procedure-v01-not-completed-rfa.json" in first
    assert main(["evaluate", CLEAN, "--out", str(out), "--format", "json"]) == 0
    assert _names(out) == ["Procedure-ex1-hcc-ct-rfa.json", "report.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing staged left over


def test_someone_elses_files_refuse_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["evaluate", CLEAN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "--force" in err and len(err.splitlines()) == 1
    assert _names(out) == ["notes.txt"]
    # --force writes there and leaves the other file alone, now and on the next run
    assert main(["evaluate", BLOCKED, "--out", str(out), "--force"]) == 1
    assert main(["evaluate", CLEAN, "--out", str(out), "--force"]) == 0
    assert _names(out) == ["Procedure-ex1-hcc-ct-rfa.json", "notes.txt", "report.html"]
    assert (out / "notes.txt").read_text() == "mine"


def test_an_export_directory_is_not_an_evaluate_output(tmp_path: Path) -> None:
    """The commonest slip: `--out` naming the input."""
    export = tmp_path / "export"
    assert main(["fixtures", "write", str(export), "--as", "ndjson"]) == 0
    before = _names(export)
    assert main(["evaluate", str(export), "--out", str(export)]) == 2
    assert _names(export) == before


def test_a_file_as_out_says_it_is_a_file(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fhir_adapter.cli", "evaluate", CLEAN, "--out", str(readme)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"fhir-adapter: error: --out {readme} is a file, not a directory"
    assert readme.read_text() == "# x\n"


def test_a_failed_run_leaves_the_previous_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["evaluate", CLEAN, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["evaluate", CLEAN, str(bad), "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    marker = json.loads((out / ".fhir-adapter-out.json").read_text())
    assert marker == {
        "written_by": "evaluate",
        "files": ["Procedure-ex1-hcc-ct-rfa.json", "report.html"],
    }


def test_a_rerun_keeps_the_directory_itself(tmp_path: Path) -> None:
    """Never renamed: a mount point stays usable, the mode the user chose (patient data)
    stays, and a symlink to a share still writes into the share."""
    out = tmp_path / "o1"
    out.mkdir()
    out.chmod(0o700)
    inode = out.stat().st_ino
    assert main(["evaluate", BLOCKED, "--out", str(out)]) == 1
    assert main(["evaluate", CLEAN, "--out", str(out)]) == 0
    assert out.stat().st_ino == inode
    assert out.stat().st_mode & 0o777 == 0o700
    assert _names(out) == ["Procedure-ex1-hcc-ct-rfa.json", "report.html"]

    share, link = tmp_path / "share", tmp_path / "link"
    share.mkdir()
    link.symlink_to(share)
    assert main(["evaluate", BLOCKED, "--out", str(link)]) == 1
    assert main(["evaluate", CLEAN, "--out", str(link)]) == 0
    assert link.is_symlink()
    assert _names(share) == ["Procedure-ex1-hcc-ct-rfa.json", "report.html"]


def test_a_failed_first_run_leaves_no_directory(tmp_path: Path) -> None:
    out = tmp_path / "new"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["evaluate", CLEAN, str(bad), "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("planted", ["../victim.txt", "VICTIM", "sub/../../victim.txt"])
@pytest.mark.parametrize("force", [False, True])
def test_a_planted_marker_deletes_nothing_outside(
    tmp_path: Path,
    planted: str,
    force: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = planted.replace("VICTIM", str(victim))
    out = tmp_path / "o2"
    out.mkdir()
    marker = {"written_by": "evaluate", "files": [planted, "report.html"]}
    (out / ".fhir-adapter-out.json").write_text(json.dumps(marker))
    (out / "report.html").write_text("x")
    monkeypatch.chdir(out)
    code = main(["evaluate", CLEAN, "--out", ".", *(["--force"] if force else [])])
    assert victim.read_text() == "precious"
    if force:
        assert code == 0
    else:
        assert code == 2
        err = capsys.readouterr().err
        assert ".fhir-adapter-out.json" in err and "--force" in err and len(err.splitlines()) == 1
        assert (out / "report.html").read_text() == "x"


def test_an_export_directory_with_a_planted_marker_is_refused(tmp_path: Path) -> None:
    """`export --out` checks the same marker before anything is downloaded or removed."""
    from fhir_adapter.outdir import OutputDirectoryError, check_output_directory

    out = tmp_path / "export"
    out.mkdir()
    marker = {"written_by": "export", "files": ["../victim.txt"]}
    (out / ".fhir-adapter-out.json").write_text(json.dumps(marker))
    with pytest.raises(OutputDirectoryError, match=r"\.fhir-adapter-out\.json lists files outside"):
        check_output_directory(out, "export")
    assert check_output_directory(out, "export", force=True) == set()
