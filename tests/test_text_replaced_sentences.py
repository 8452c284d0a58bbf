"""A complete, claimable case (guidance example 1) with one sentence of its procedure note
replaced: what the new sentence tells of another person, another lesion or another session
documents nothing for the session billed, and what a family history's field says does not
reach past its sentence (issue #17)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.pack import Pack

from .conftest import by_id, findings_of

RATIONALE = (
    "The tumor is unresectable because of its central location abutting the right hepatic "
    "vein; laparoscopic or open surgery was not chosen."
)
ENERGY = "RF energy was applied at 150 W for 12 minutes with a 3 cm electrode."


def _findings(pack: Pack, case: list[dict[str, Any]], old: str, new: str) -> set[str]:
    rfa = by_id(case, "ex1-hcc-ct-rfa")
    note = rfa["note"][0]["text"]
    assert old in note
    rfa["note"] = [{"text": note.replace(old, new)}]
    return findings_of(pack, case)["Procedure/ex1-hcc-ct-rfa"]


def test_the_case_as_written_is_claimable(pack: Pack, good_case: list[dict[str, Any]]) -> None:
    assert not _findings(pack, good_case, ENERGY, ENERGY)


@pytest.mark.parametrize(
    "reason",
    [
        "His brother's tumor was unresectable.",
        "The brother's tumor was unresectable.",
        "Her sister's liver lesion had been deemed unresectable.",
        "The segment VI lesion is resectable; a separate segment II lesion is unresectable.",
        "Unlike the lesion treated today, the segment II metastasis is unresectable.",
        "Her mother had an unresectable liver tumor.",
    ],
)
def test_a_reason_told_of_someone_or_something_else(
    pack: Pack, good_case: list[dict[str, Any]], reason: str
) -> None:
    assert "necessity-rationale-missing" in _findings(pack, good_case, RATIONALE, reason)


@pytest.mark.parametrize(
    "energy",
    [
        "At the 2024 ablation of segment II, 150 W for 12 minutes was delivered.",
        "Last time we used 150 W for 12 min.",
    ],
)
def test_an_earlier_sessions_energy(
    pack: Pack, good_case: list[dict[str, Any]], energy: str
) -> None:
    assert "doc-energy" in _findings(pack, good_case, ENERGY, energy)


def test_a_family_history_field_ends_at_its_sentence(
    pack: Pack, good_case: list[dict[str, Any]]
) -> None:
    family = "Family history: father with unresectable HCC. " + ENERGY
    assert not _findings(pack, good_case, ENERGY, family)
