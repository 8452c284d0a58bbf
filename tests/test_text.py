"""ConText in free text: mentioned is not documented, and the evidence says why."""

from __future__ import annotations

import base64

import pytest

from fhir_adapter.pack import Pack
from fhir_adapter.text.index import attachment_text, snippet, xhtml_text


def status(pack: Pack, element: str, text: str) -> list[tuple[str, str, str | None]]:
    return [(m.words, m.status, m.cue) for m in pack.engine.classify(text, element)]


@pytest.mark.parametrize(
    ("element", "text", "expected"),
    [
        (
            "non-rf-energy",
            "Cryoablation was considered, but not chosen.",
            [("Cryoablation", "negated", "not chosen")],
        ),
        (
            "non-rf-energy",
            "Cryoablation was considered, but this option was not pursued.",
            [("Cryoablation", "negated", "not pursued")],
        ),
        (
            "non-rf-energy",
            "Cryoablation was considered.",
            [("Cryoablation", "hypothetical", "was considered")],
        ),
        (
            "non-rf-energy",
            "History of cryoablation in 2021.",
            [("cryoablation", "historical", "History of")],
        ),
        (
            "necessity-rationale",
            "The tumor is not unresectable.",
            [("unresectable", "negated", "not")],
        ),
        (
            "necessity-rationale",
            "He is not a surgical candidate.",
            [("not a surgical candidate", "affirmed", None)],
        ),
        (
            "necessity-rationale",
            "If the tumor grows it may become unresectable.",
            [("unresectable", "hypothetical", "may become")],
        ),
        (
            "ablation-confirmation",
            "Follow-up CT in 4 weeks to confirm complete ablation.",
            [("complete ablation", "hypothetical", "to confirm")],
        ),
        (
            "ablation-confirmation",
            "Complete ablation could not be confirmed.",
            [("Complete ablation", "negated", "could not be confirmed")],
        ),
        (
            "ablation-confirmation",
            "Possible residual enhancement; probable complete ablation.",
            [("complete ablation", "uncertain", "probable")],
        ),
        (
            "tumor-count",
            "Two lung nodules are stable.",
            [("Two lung nodules", "other", "lung nodules")],
        ),
        (
            "non-rf-energy",
            "Her mother had cryoablation of a liver tumor.",
            [("cryoablation", "other", "mother")],
        ),
    ],
)
def test_each_cue_category(
    pack: Pack, element: str, text: str, expected: list[tuple[str, str, str | None]]
) -> None:
    assert status(pack, element, text) == expected


def test_a_device_measurement_is_not_the_tumor(pack: Pack) -> None:
    got = status(
        pack,
        "tumor-size",
        "A 17-gauge electrode with a 3 cm active tip was placed into the 2.1 cm lesion.",
    )
    assert got == [("3 cm", "other", "active tip"), ("2.1 cm", "affirmed", None)]


def test_a_clause_boundary_ends_negation(pack: Pack) -> None:
    assert status(
        pack, "necessity-rationale", "No ascites was seen; the lesion is unresectable."
    ) == [("unresectable", "affirmed", None)]


def test_sections_change_what_follows(pack: Pack) -> None:
    note = "PAST SURGICAL HISTORY: Open right hepatectomy.\nPROCEDURE: Laparoscopic ablation of segment 7."
    got = status(pack, "open-or-laparoscopic-approach", note)
    assert got == [
        ("Open right hepatectomy", "historical", "PAST SURGICAL HISTORY:"),
        ("Laparoscopic", "affirmed", None),
    ]
    plan = "Plan:\nRepeat microwave or cryoablation if residual disease."
    assert [s for _, s, _ in status(pack, "non-rf-energy", plan)] == ["hypothetical"]


def test_snippet_span_points_at_the_words() -> None:
    sentence = "Under   CT\nguidance the electrode was placed " + "x" * 300
    text, (a, b) = snippet(sentence, 0, len("Under   CT\nguidance"))
    assert text[a:b] == "Under CT guidance"
    long = "y " * 200 + "complete ablation" + " z" * 200
    start = long.index("complete")
    text, (a, b) = snippet(long, start, start + len("complete ablation"))
    assert text[a:b] == "complete ablation" and len(text) <= 242


def test_xhtml_narrative_is_text() -> None:
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>Segment&nbsp;VII lesion</p>'
        "<script>alert(1)</script><!-- hidden cryoablation --><p>Ablated under CT guidance.</p></div>"
    )
    text = xhtml_text(div)
    assert "Segment\xa0VII lesion" in text and "alert" not in text and "cryoablation" not in text
    assert "\n\n" in text


def test_attachments_plain_html_and_others() -> None:
    html = "<p>Segment&nbsp;VII lesion</p><script>x()</script><p>done</p>"
    att = {"contentType": "text/html", "data": base64.b64encode(html.encode()).decode()}
    text = attachment_text(att)
    assert text is not None and "Segment\xa0VII lesion" in text and "x()" not in text
    latin = {
        "contentType": "text/plain; charset=latin-1",
        "data": base64.b64encode("tumeur 3 cm, côté droit".encode("latin-1")).decode(),
    }
    assert attachment_text(latin) == "tumeur 3 cm, côté droit"
    assert attachment_text({"contentType": "application/pdf", "data": "JVBERi0="}) is None
    assert attachment_text({"contentType": "text/plain", "url": "http://x/y"}) is None
    assert attachment_text({"contentType": "text/plain", "data": "!!!not base64"}) is None


def test_a_missing_element_says_which_cue_ruled_it_out(pack: Pack) -> None:
    from fhir_adapter.rules import evaluate_case
    from fhir_adapter.testing.corpus import note_case

    note = "Percutaneous RFA. Complete ablation could not be confirmed because of gas artifact."
    case = note_case(pack, note)
    finding = next(
        f for f in evaluate_case(pack, case).findings if f.code == "doc-ablation-confirmation"
    )
    ruled = [e for e in finding.evidence if e.status is not None]
    assert len(ruled) == 1
    ev = ruled[0]
    assert (ev.status, ev.cue, ev.note) == ("negated", "could not be confirmed", "ruled out")
    assert ev.snippet == "Complete ablation could not be confirmed because of gas artifact."
    assert ev.span is not None and ev.snippet[ev.span[0] : ev.span[1]] == "Complete ablation"
    assert ev.reference == "Procedure/rfa" and ev.path == "Procedure.note[0].text"


def test_the_detected_issue_names_the_ruling_cue(pack: Pack) -> None:
    from fhir_adapter import ResourceStore, evaluate_store

    store = ResourceStore()
    store.add({"resourceType": "Patient", "id": "p"})
    store.add(
        {
            "resourceType": "Procedure",
            "id": "rfa",
            "status": "completed",
            "code": {"coding": [{"system": pack.procedure_system, "code": pack.procedure_code}]},
            "subject": {"reference": "Patient/p"},
            "note": [{"text": "Follow-up CT in 4 weeks to confirm complete ablation."}],
        }
    )
    [out] = evaluate_store(store, pack)
    issues = [r for r in out.resources if r["resourceType"] == "DetectedIssue"]
    detail = next(i["detail"] for i in issues if i["code"]["text"] == "doc-ablation-confirmation")
    assert '(ruled out) [hypothetical by "to confirm"]' in detail


def test_a_cue_that_runs_into_the_mention_precedes_it(pack: Pack) -> None:
    """The mention starts at "RFA", inside the cue "Prior RFA": the cue still rules it out."""
    got = status(
        pack, "energy-applied", "Prior RFA in 2019 to a segment 4 lesion, 12 min at 200 W."
    )
    assert got == [
        ("RFA in 2019 to a segment 4 lesion, 12 min", "historical", "Prior RFA"),
        ("12 min at 200", "historical", "in 2019"),
        ("200 W", "historical", "Prior RFA"),
    ]


def test_a_decimal_point_does_not_end_the_clause_of_a_gap(pack: Pack) -> None:
    got = status(
        pack,
        "ablation-confirmation",
        "CT shows an ablation zone 4.0 x 3.5 cm fully encompassing the tumor.",
    )
    assert got == [("ablation zone 4.0 x 3.5 cm fully encompassing", "affirmed", None)]


def test_a_longer_pattern_cue_wins_over_the_word_cue_it_covers(pack: Pack) -> None:
    """ "abutting the gallbladder" (a pseudo pattern) keeps "gallbladder" (another organ,
    a word cue) from ruling the size out; the organ alone still does."""
    assert status(pack, "tumor-size", "A 9 mm lesion abutting the gallbladder.") == [
        ("9 mm", "affirmed", None)
    ]
    assert status(pack, "tumor-size", "A 9 mm lesion in the gallbladder.") == [
        ("9 mm", "other", "gallbladder")
    ]


def test_a_template_rule_line_does_not_stall_the_reader(pack: Pack) -> None:
    """A separator line of dashes after a number ('2 ------...') once sent the tumor-count
    pattern into catastrophic backtracking (a word and a gap could both take a hyphen): a
    whole IR template note took minutes. The alarm is a hang guard, not a speed measure."""
    import signal

    from fhir_adapter.testing.corpus import documented_elements

    rule = "-" * 48
    note = f"Two lesions in segment 6 ablated.\nSpecimens: 2 {rule} none sent\n{rule}"

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("the reader did not finish a short note in 10 s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        found = documented_elements(pack, note)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert found["tumor-count"] and found["tumor-location"]
