"""The CSV report: one row per finding, every case present, safe to open in a spreadsheet."""

from __future__ import annotations

import copy
import csv
import io
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter import CaseOutput, evaluate_paths
from fhir_adapter.cli import main
from fhir_adapter.report import render_csv
from fhir_adapter.report.csv import HEADER

from .conftest import CASES, load_expected


@pytest.fixture(scope="module")
def outputs(fixture_outputs: list[CaseOutput]) -> list[CaseOutput]:
    return copy.deepcopy(fixture_outputs)


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_one_row_per_finding_and_one_for_each_clean_case(outputs: list[CaseOutput]) -> None:
    rows = parse(render_csv(outputs))
    expected = Counter(
        (o.evaluation.procedure, f.code, f.severity, f.message)
        for o in outputs
        for f in o.evaluation.findings
    )
    got = Counter((r["procedure"], r["finding"], r["severity"], r["message"]) for r in rows)
    clean = [o.evaluation.procedure for o in outputs if not o.evaluation.findings]
    assert got == expected + Counter((p, "", "", "") for p in clean)
    assert clean and expected, "the fixtures have both clean and flagged cases"
    by_procedure = {o.evaluation.procedure: o for o in outputs}
    for r in rows:
        e = by_procedure[r["procedure"]].evaluation
        assert r["outcome"] == e.outcome
        assert r["patient"] == (e.patient or "")
        assert r["place_of_service"] == (e.place_of_service or "")
        assert r["modifiers"] == ";".join(m.code for m in e.modifiers)
        if r["finding"]:
            finding = next(f for f in e.findings if f.code == r["finding"])
            refs = [f"{ev.reference} {ev.path}" for ev in finding.evidence]
            assert r["evidence"].split(" | ") == (refs or [""])


def test_header_and_row_order_follow_the_cases(outputs: list[CaseOutput]) -> None:
    text = render_csv(outputs)
    assert text.splitlines()[0].split(",") == list(HEADER)
    order = list(dict.fromkeys(r["procedure"] for r in parse(text)))
    assert order == [o.evaluation.procedure for o in outputs]


def test_quotes_commas_newlines_and_formulas_survive_a_spreadsheet(
    outputs: list[CaseOutput],
) -> None:
    row: dict[str, Any] = copy.deepcopy(outputs[0].report())
    snippet = 'He said "stop", then\nleft; 3,5 cm'
    row["findings"] = [
        {
            "code": "doc-energy",
            "severity": "moderate",
            "message": '=HYPERLINK("http://evil.example","click")',
            "evidence": [
                {"reference": "Procedure/x", "path": "Procedure.note", "snippet": snippet}
            ],
        }
    ]
    row["patient"] = "@SUM(A1:A9)"
    (parsed,) = parse(render_csv([row]))
    assert parsed["message"] == "'" + '=HYPERLINK("http://evil.example","click")'
    assert parsed["patient"] == "'@SUM(A1:A9)"
    assert parsed["snippets"] == snippet
    assert parsed["evidence"] == "Procedure/x Procedure.note"


def test_cli_format_csv(
    outputs: list[CaseOutput], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The CLI prints what render_csv renders (a few fixtures: claims, findings, two in one
    session; every fixture's rows are the other tests')."""
    names = ("ex1-hcc-ct", "v06-two-in-session", "v12-doc-gaps")
    for name in names:
        shutil.copy(CASES / f"{name}.json", tmp_path)
    assert main(["evaluate", str(tmp_path), "--format", "csv"]) == 1
    printed = parse(capsys.readouterr().out)
    wanted = {c["procedure"] for name in names for c in load_expected(name)["cases"]}
    expected = parse(render_csv([o for o in outputs if o.evaluation.procedure in wanted]))
    assert len(wanted) >= len(names) and {r["procedure"] for r in expected} == wanted
    assert [r["procedure"] for r in printed] == [r["procedure"] for r in expected]


@pytest.mark.parametrize(
    "value",
    [
        "=1+1",
        " =1+1",
        "  +SUM(A1:A9)",
        "\t=HYPERLINK()",
        "\r=1",
        "\n-2+3",
        "\u3000@SUM(A1)",
        "\uff1dHYPERLINK()",  # full-width =
        "\uff0b1",  # full-width +
        "\uff0d1",  # full-width -
        "\uff20SUM(A1)",  # full-width @
        " \uff1d1",
        "\ufe661",  # small equals sign
    ],
)
def test_formula_guard_sees_through_leading_whitespace_and_full_width_signs(
    outputs: list[CaseOutput], value: str
) -> None:
    row: dict[str, Any] = copy.deepcopy(outputs[0].report())
    row["patient"] = value
    (parsed, *_) = parse(render_csv([row]))
    assert parsed["patient"] == "'" + value


@pytest.mark.parametrize("value", ["Patient/1", "a = b", "3-4 cm", "", "  Patient/2", "\uff21"])
def test_ordinary_text_is_left_alone(outputs: list[CaseOutput], value: str) -> None:
    row: dict[str, Any] = copy.deepcopy(outputs[0].report())
    row["patient"] = value
    (parsed, *_) = parse(render_csv([row]))
    assert parsed["patient"] == value


def test_the_payer_policy_and_its_verdict_have_columns() -> None:
    """Which payer policy judged the case, and its verdict, as the JSON and HTML reports say."""
    outputs = evaluate_paths(sorted(CASES.glob("v43-same-case-*.json")))
    rows = parse(render_csv(outputs))
    got = {(r["procedure"], r["policy"], r["policy_verdict"]) for r in rows}
    want = {
        (
            o.evaluation.procedure,
            (o.evaluation.payer_policy or {}).get("id", ""),
            (o.evaluation.payer_policy or {}).get("verdict") or "",
        )
        for o in outputs
    }
    assert got == want
    assert {"aetna-cpb-0274", "bcbsa-7.01.91"} <= {r["policy"] for r in rows}
