"""The terminal table: fitted to the terminal's width, wrapped, never a finding code cut."""

from __future__ import annotations

import re

import pytest

from fhir_adapter import CaseOutput, evaluate_paths
from fhir_adapter.report import render_table

from .conftest import CASES


@pytest.fixture(scope="module")
def outputs() -> list[CaseOutput]:
    return evaluate_paths([CASES])


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
