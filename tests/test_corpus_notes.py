"""Whole-note excerpts (tests/corpus-notes/): sections, sessions, organs and results read as
a coder reads them, through the whole rule pack; and the document model's own pieces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_adapter.pack import Pack
from fhir_adapter.rules import evaluate_case
from fhir_adapter.testing.corpus import RULES, documented_elements, note_case
from fhir_adapter.text.scope import Scope, ScopeError
from fhir_adapter.text.vocabulary import TextConfig
from fhir_adapter.writeback.bundle import build_output

NOTES = Path(__file__).parent / "corpus-notes"


def excerpts() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(NOTES.glob("*.yaml")):
        for i, item in enumerate(yaml.safe_load(path.read_text(encoding="utf-8"))):
            out.append((f"{path.stem}[{i}]", item))
    return out


def test_the_excerpts_are_labelled() -> None:
    items = excerpts()
    assert len(items) >= 15
    for name, item in items:
        assert set(item["elements"]) <= set(RULES), name
        assert item["why"], name


@pytest.mark.parametrize(("name", "item"), excerpts(), ids=[n for n, _ in excerpts()])
def test_excerpt(pack: Pack, name: str, item: dict[str, Any]) -> None:
    # `date`: the case's date of service (Procedure.performed), where the excerpt needs one
    date = item.get("date")
    found = documented_elements(pack, item["note"], str(date) if date else None)
    wrong = {e: found[e] for e, want in item["elements"].items() if found[e] is not want}
    assert not wrong, f"{name}: {wrong} ({item['why']})"


def _finding_evidence(pack: Pack, note: str, code: str) -> list[str]:
    evaluation = evaluate_case(pack, note_case(pack, note))
    finding = next(f for f in evaluation.findings if f.code == code)
    return [f"{e.status}|{e.cue}|{e.note}" for e in finding.evidence]


def test_evidence_says_why_a_mention_was_ruled_out(pack: Pack) -> None:
    note = next(i for n, i in excerpts() if n == "sessions[0]")["note"]
    evidence = _finding_evidence(pack, note, "doc-energy")
    assert any("copied from an earlier note (09/23/2025)" in e for e in evidence), evidence
    # generator set, never activated: nothing was ablated, so the energy requirement is
    # waived (the Claim's 53 says why) rather than reported as a documentation gap
    note = next(i for n, i in excerpts() if n == "sessions[2]")["note"]
    evaluation = evaluate_case(pack, note_case(pack, note))
    assert "doc-energy" not in {f.code for f in evaluation.findings}
    assert any(c.rule == "doc-energy" and c.exempt for c in evaluation.criteria)
    note = next(i for n, i in excerpts() if n == "organs[0]")["note"]
    evidence = _finding_evidence(pack, note, "doc-tumor-size")
    assert any("kidney, not liver" in e or "kidney" in e for e in evidence), evidence


def test_a_paragraph_about_another_organ_says_so(pack: Pack) -> None:
    note = next(i for n, i in excerpts() if n == "organs[2]")["note"]
    evidence = _finding_evidence(pack, note, "doc-energy")
    assert 'other|lung, not liver (paragraph "Prone for the lung component.")|ruled out' in (
        evidence
    ), evidence


@pytest.mark.parametrize(
    ("note", "why"),
    [
        (
            "RFA of the segment 6 HCC, 200 W x 12 min.\n"
            "The 1.5 cm segment 2 lesion was not treated today (no safe window).\n",
            'other|a lesion not treated in this session ("was not treated")|ruled out',
        ),
        (
            "RFA of the segment 6 HCC, 200 W x 12 min. "
            "Cryoablation of the 2.8 cm left upper pole renal mass.\n",
            "other|another organ's lesion, not the liver's (\"renal mass\")|ruled out",
        ),
    ],
    ids=["deferred", "another-organ"],
)
def test_a_lesion_ruled_out_says_why(pack: Pack, note: str, why: str) -> None:
    assert why in _finding_evidence(pack, note, "doc-tumor-size")
    # the DetectedIssue written for the case says it too
    case = note_case(pack, note)
    output = build_output(pack, case, evaluate_case(pack, case), "2026-10-15T00:00:00Z")
    [issue] = [
        r
        for r in output.resources
        if r["resourceType"] == "DetectedIssue" and r["code"]["text"] == "doc-tumor-size"
    ]
    assert why.split("|")[1] in issue["detail"], issue["detail"]


def test_treated_counts_that_differ_say_so(pack: Pack) -> None:
    note = next(i for n, i in excerpts() if n == "counts-and-results[19]")["note"]
    evaluation = evaluate_case(pack, note_case(pack, note))
    finding = next(f for f in evaluation.findings if f.code == "doc-tumor-count")
    notes = [e.note for e in finding.evidence]
    assert "counts differ (2 vs 3), counts of the lesions treated, none a correction" in notes


def test_affirmed_evidence_names_its_section(pack: Pack) -> None:
    note = "PROCEDURE:\nRFA of the segment 7 tumor.\n\nFINDINGS:\nAblation 12 min at 150 W.\n"
    evaluation = evaluate_case(pack, note_case(pack, note))
    assert not any(f.code == "doc-energy" for f in evaluation.findings)
    from fhir_adapter.text.index import find_evidence, text_index

    case = note_case(pack, note)
    found = find_evidence(
        text_index(case, pack.engine), pack.engine, "energy-applied", ("procedure",)
    )
    assert found and found[0].note == "section: FINDINGS (findings)", found


def test_outline_headings_fields_and_copied_blocks(pack: Pack) -> None:
    scope = Scope(pack.engine.cfg)
    text = (
        "--- OPERATOR SUMMARY ---\nDone.\n"
        "PLAN:\n- MRI in 6 weeks\nIf RFA: 200 W\n"
        "Consent: signed.\nMode: impedance\n"
        "HISTORY (copied from IR note 01/12/2026):\n>> old text\n(end copied text)\nToday.\n"
    )
    outline = scope.outline(text)
    roles = {s.heading: s.role for s in outline.sections}
    assert roles["OPERATOR SUMMARY"] == "impression"
    assert outline.section_at(text.index("If RFA")).role == "plan"  # type: ignore[union-attr]
    assert outline.section_at(text.index("Mode:")).role != "consent"  # type: ignore[union-attr]
    copied = outline.copied_at(text.index("old text"))
    assert copied is not None and "01/12/2026" in copied.reason
    assert outline.copied_at(text.index("Today.")) is None


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ({"roles": {"nonsense": ["x"]}}, "text.scope.roles: 'nonsense'"),
        (
            {"cues": {"bad": {"status": "negated", "reason": "r", "patterns": ["("]}}},
            "text.scope.cues.bad",
        ),
        (
            {"cues": {"d": {"status": "negated", "reason": "r", "dated": True, "cues": ["x"]}}},
            "{date}",
        ),
        (
            {"cues": {"d": {"status": "negated", "reason": "r", "dated": "after", "cues": ["x"]}}},
            "{date}",
        ),
        ({"dated_entries": {"opens": "({date}", "holds": ["rfa"]}}, "dated_entries.opens"),
        ({"dated_entries": {"opens": "{date}:", "holds": ["(rfa"]}}, "dated_entries.holds"),
        (
            {"cues": {"s": {"status": "negated", "reason": "r", "cues": ["x"], "spares": ["y"]}}},
            "`spares` is for a cue of `reach: note`",
        ),
        (
            {
                "cues": {
                    "f": {
                        "status": "negated",
                        "reason": "r",
                        "reach": "note",
                        "cues": ["x"],
                        "followed_by": ["y"],
                    }
                }
            },
            "`followed_by` is for a cue of `reach: sentence`",
        ),
        ({"latest_treatment": ["rfa"]}, "text.scope.latest_treatment: each pattern holds a {date}"),
        ({"own_organ": "liver"}, "own_organ"),
        ({"own_marks": ["(liver"]}, "text.scope.own_marks: bad regular expression"),
    ],
)
def test_scope_rules_are_checked_when_loaded(
    pack: Pack, scope: dict[str, Any], message: str
) -> None:
    cfg = TextConfig.model_validate({"sections": {"plan": {"headers": ["plan"]}}, "scope": scope})
    with pytest.raises(ScopeError) as err:
        Scope(cfg)
    assert message in str(err.value)


def test_a_note_shared_by_cases_of_other_dates_is_scoped_per_date(pack: Pack) -> None:
    """A short text is prepared once and shared; what its dated words rule out depends on
    each case's date of service, so one case's ruling never leaks into another's."""
    note = "RFA of the 2.1 cm segment 6 HCC on 03/02/2026, 150 W x 12 min."
    that_day = documented_elements(pack, note, "2026-03-02")
    later = documented_elements(pack, note, "2026-06-01")
    again = documented_elements(pack, note, "2026-03-02")
    assert that_day["energy-applied"] and that_day["tumor-size"]
    assert not later["energy-applied"] and not later["tumor-size"]
    assert again == that_day


def test_an_unknown_key_of_dated_entries_is_refused() -> None:
    with pytest.raises(ValueError, match="dated_entries"):
        TextConfig.model_validate(
            {"scope": {"dated_entries": {"opens": "{date}:", "holds": ["rfa"], "when": "x"}}}
        )
