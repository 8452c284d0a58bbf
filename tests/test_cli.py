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
    files = sorted(f for f in (tmp_path / "b").glob("*.json") if not f.name.startswith("."))
    assert len(files) == sum(len(load_expected(n)["cases"]) for n in fixture_names())
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.suffix != ".json") == [
        "report.html"
    ]
    assert all(json.loads(f.read_text())["type"] == "transaction" for f in files)
    hidden = [f.name for f in (tmp_path / "b").iterdir() if f.name.startswith(".")]
    assert hidden == [".fhir-adapter-out.json"]  # the marker saying the directory is ours
    assert not [f for f in tmp_path.iterdir() if f.name != "b"]  # no staging left behind


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


def test_synth_replaces_its_own_export_and_refuses_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mix = tmp_path / "mix"
    assert main(["synth", str(mix), "--patients", "3", "--seed", "1", "--gzip"]) == 0
    assert main(["synth", str(mix), "--patients", "3", "--seed", "2"]) == 0
    names = sorted(p.name for p in mix.iterdir() if not p.name.startswith("."))
    assert names and all(n.endswith(".ndjson") for n in names)  # no .ndjson.gz left beside
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    assert main(["synth", str(other), "--patients", "3"]) == 2
    err = capsys.readouterr().err
    assert "synth DIR" in err and "mine.txt" in err and "--force" in err
    assert sorted(p.name for p in other.iterdir()) == ["mine.txt"]
    assert main(["synth", str(other), "--patients", "3", "--force"]) == 0
    assert (other / "mine.txt").read_text() == "keep" and (other / "Patient.ndjson").exists()


@pytest.mark.parametrize("count", ["0", "-5"])
def test_synth_refuses_fewer_than_one_patient(
    count: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "x"), "--patients", count])
    assert exc.value.code == 2 and "--patients" in capsys.readouterr().err
    monkeypatch.setenv("FHIR_ADAPTER_PATIENTS", count)
    assert main(["synth", str(tmp_path / "x")]) == 2
    assert "FHIR_ADAPTER_PATIENTS" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_pipe_or_device_is_named_for_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not 'no such file or directory': inputs are read more than once, which a pipe
    cannot be, so it is refused for what it is, given alone or inside a directory."""
    import os

    pipe = tmp_path / "cases.ndjson"
    os.mkfifo(pipe)
    for given in (pipe, tmp_path):
        assert main(["evaluate", str(given)]) == 2
        err = capsys.readouterr().err
        assert f"{pipe}: a named pipe (FIFO), not a file or directory" in err, err
    assert main(["evaluate", os.devnull]) == 2
    assert "a character device" in capsys.readouterr().err
    (tmp_path / "gone.json").symlink_to(tmp_path / "nowhere.json")
    pipe.unlink()
    assert main(["evaluate", str(tmp_path / "gone.json")]) == 2
    assert "a symbolic link to" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file or directory" in capsys.readouterr().err


def _pack_with(edit: dict[str, str]) -> str:
    """The bundled pack with whole lines replaced (`old line` -> `new line`, first match)."""
    from fhir_adapter.pack import default_pack_path

    text = default_pack_path().read_text(encoding="utf-8")
    for old, new in edit.items():
        assert f"\n{old}\n" in text
        text = text.replace(f"\n{old}\n", f"\n{new}\n", 1)
    return text


def _line_of(text: str, line: str) -> int:
    return text.splitlines().index(line) + 1


def test_a_broken_rules_file_is_one_line_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Syntax: where the parser stopped and what it was reading; schema: each problem's line,
    column and field path, one `fhir-adapter: error:` line each (was a multi-line YAML dump)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("pack: cpt-47382\ntitle: 'unterminated\n")
    assert main(["evaluate", CLEAN, "--rules", str(rules)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"fhir-adapter: error: {rules}:3:1: not valid YAML: found unexpected end of stream "
        "(while scanning a quoted scalar at 2:8)"
    ]
    text = _pack_with({'version: "2026.11.1"': "version: [1, 2]"})
    energy = _line_of(text, "  - finding: doc-energy")
    severity = energy + text.splitlines()[energy:].index("    severity: moderate") + 1
    lines = text.splitlines()
    lines[severity - 1] = "    severity: huge"
    rules.write_text("\n".join(lines) + "\n")
    assert main(["evaluate", CLEAN, "--rules", str(rules)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"fhir-adapter: error: {rules}:{_line_of(text, 'version: [1, 2]')}:1: invalid rule pack: "
        "version: Input should be a valid string",
        f"fhir-adapter: error: {rules}:{severity}:5: invalid rule pack: rule 'doc-energy' "
        "(severity): Input should be 'low', 'moderate' or 'high'",
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "cm.yaml",
            "47382: 4200\n76940: '310\n",
            "3:1: not valid YAML: found unexpected end of stream (while scanning a quoted scalar "
            "at 2:8)",
        ),
        ("cm.yaml", "47382: 4200\n76940: [310]\n", "2:1: charge for 76940 is not an amount: [310]"),
        ("cm.json", '{"47382": 4200,\n "76940": }\n', "2:11: not valid JSON: Expecting value"),
        (
            "cm.json",
            '{"47382": 4200,\n "76940": "lots"}\n',
            "2:2: charge for 76940 is not an amount: 'lots'",
        ),
        (
            "cm.yaml",
            "47382: 4200\n'4738': 10\n",
            "2:1: '4738' is not a CPT/HCPCS code (or code-modifier)",
        ),
    ],
)
@pytest.mark.parametrize("command", [["evaluate", CLEAN], ["run"]])
def test_a_broken_charges_file_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    name: str,
    content: str,
    message: str,
) -> None:
    """`--charges` of evaluate and run: file:line:col and the entry, on one line, exit 2."""
    charges = tmp_path / name
    charges.write_text(content)
    assert main([*command, "--charges", str(charges)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"fhir-adapter: error: {charges}:{message}"]


@pytest.mark.parametrize("bad_id", ["x_bad id", "x\u001b[31mFAKE\u202e", "a" * 65])
def test_a_resource_id_that_is_not_a_fhir_id_is_an_input_error(
    bad_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Such an id once got a Claim, and its escapes reached the table raw."""
    procedure = {
        "resourceType": "Procedure",
        "id": bad_id,
        "status": "completed",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "47382"}]},
    }
    patient = {"resourceType": "Patient", "id": "p"}
    path = tmp_path / "in.ndjson"
    path.write_text(json.dumps(patient) + "\n" + json.dumps(procedure) + "\n")
    assert main(["evaluate", str(path)]) == 2
    captured = capsys.readouterr()
    assert f"{path}:2: Procedure.id" in captured.err and "not a FHIR id" in captured.err
    assert "\x1b" not in captured.err + captured.out and "Claim" not in captured.out
