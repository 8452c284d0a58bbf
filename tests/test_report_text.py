"""The terminal table: fitted to the terminal's width, wrapped, never a finding code cut."""

from __future__ import annotations

import copy
import re

import pytest

from fhir_adapter import CaseOutput
from fhir_adapter.report import render_table
from fhir_adapter.report.text import render_table_rows


@pytest.fixture(scope="module")
def outputs(fixture_outputs: list[CaseOutput]) -> list[CaseOutput]:
    return copy.deepcopy(fixture_outputs)


@pytest.mark.parametrize("width", [80, 100, 120, 160, 240])
def test_the_table_fits_the_width_and_shows_every_finding_whole(
    outputs: list[CaseOutput], width: int
) -> None:
    table = render_table(outputs, width)
    too_wide = [line for line in table.splitlines() if len(line) > width]
    assert not too_wide, too_wide
    assert "…" not in table
    words = set(re.findall(r"[\w.-]+", table))
    for out in outputs:
        for finding in out.evaluation.findings:
            # the code whole, then its message's words, in order, across the wrapped lines
            assert finding.code in words
            flat = " ".join(table.split())
            assert f"{finding.severity} {finding.code}: {' '.join(finding.message.split())}" in flat


def test_a_code_longer_than_the_column_overruns_rather_than_being_cut(
    outputs: list[CaseOutput],
) -> None:
    table = render_table(outputs, 20).split("\n\n")[0]  # not the summary, which names them too
    codes = {f.code for o in outputs for f in o.evaluation.findings}
    assert codes <= set(re.findall(r"[\w-]+", table))


def test_cells_from_outside_reach_the_terminal_escaped() -> None:
    """An id or message with escapes or a bidi override is shown as its escape."""
    row = {
        "procedure": "x\u001b[31mFAKE\u202e",
        "patient": "p\u0007",
        "outcome": "claim",
        "findings": [{"severity": "info", "code": "C\u001b[2J", "message": "m\u2028forged"}],
    }
    for width in (200, 60, 20):
        table = render_table_rows([row], width)
        assert not any(c in table for c in "\x1b\u202e\x07\u2028"), width
    assert "\\x1b[31mFAKE\\u202e" in render_table_rows([row], 200)
