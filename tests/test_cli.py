"""The command line: exit codes, the JSON contract, --out, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_adapter.cli import main

from .conftest import CASES, fixture_names, load_expected

CLEAN = str(CASES / "ex1-hcc-ct.json")
BLOCKED = str(CASES / "v01-not-completed.json")
MODERATE = str(CASES / "v12-doc-gaps.json")


def test_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", CLEAN]) == 0
    assert main(["evaluate", CLEAN, BLOCKED]) == 1
    assert main(["evaluate", MODERATE]) == 0
    assert main(["evaluate", MODERATE, "--block-on", "moderate"]) == 1
    out = capsys.readouterr().out
    assert "PROCEDURE" in out and "procedure-not-completed" in out


def test_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", BLOCKED, MODERATE, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["code_sets", "cases"]
    for case in doc["cases"]:
        assert {
            "procedure",
            "patient",
            "encounter",
            "outcome",
            "findings",
            "modifiers",
            "resources",
        } <= set(case)
        assert case["procedure"].startswith("Procedure/")
        assert case["outcome"] in ("claim", "issues")
        for f in case["findings"]:
            assert set(f) == {"code", "severity", "message", "evidence"}
            assert all({"reference", "path"} <= set(e) for e in f["evidence"])
    blocked, moderate = doc["cases"]
    assert [r["resourceType"] for r in blocked["resources"]] == ["DetectedIssue"]
    assert [r["resourceType"] for r in moderate["resources"]] == ["Claim"] + ["DetectedIssue"] * 6


def test_out_writes_one_transaction_per_case(tmp_path: Path) -> None:
    assert main(["evaluate", str(CASES), "--out", str(tmp_path / "b"), "--format", "json"]) == 1
    files = sorted((tmp_path / "b").glob("*.json"))
    assert len(files) == sum(len(load_expected(n)["cases"]) for n in fixture_names())
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.suffix != ".json") == [
        "report.html"
    ]
    assert all(json.loads(f.read_text())["type"] == "transaction" for f in files)
    assert not [f for f in files if f.name.startswith(".")]


def test_validate_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", CLEAN, "--validate"]) == 0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_adapter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [("{not json", "malformed JSON"), ('{"resourceType": "Nope"}', "unknown resourceType")],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, content: str, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out_dir = tmp_path / "out"
    proc = _run("evaluate", CLEAN, str(bad), "--out", str(out_dir))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr and str(bad) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out_dir.exists() or not any(out_dir.iterdir())  # nothing half-written


def test_broken_rules_file_is_exit_2(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("pack: x\n")
    proc = _run("evaluate", CLEAN, "--rules", str(rules))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(rules) in proc.stderr


def test_usage_errors_are_exit_2() -> None:
    assert _run().returncode == 2
    assert _run("evaluate").returncode == 2
    assert _run("evaluate", CLEAN, "--block-on", "severe").returncode == 2


def test_no_cases_is_exit_0_with_a_note(tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text('{"resourceType": "Patient", "id": "x"}')
    proc = _run("evaluate", str(p))
    assert proc.returncode == 0 and "no Procedure coded CPT 47382" in proc.stderr


def test_unwritable_output_is_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _run("synth", str(blocker / "sub"), "--patients", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = _run("evaluate", CLEAN, "--out", str(blocker / "sub"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _run("evaluate", CLEAN, "--workers", "-1").returncode == 2
