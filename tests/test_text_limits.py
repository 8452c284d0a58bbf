"""Hostile and oversized text: reading costs work in proportion to the text, whatever its
shape; a run-on note reads as the same note in sentences; text beyond the pack's cap is not
read, and a finding says so. Work is counted (function calls, cue comparisons), not timed."""

from __future__ import annotations

import html
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from fhir_adapter.pack import default_pack_path, pack_from_text
from fhir_adapter.rules import Pack, evaluate_case
from fhir_adapter.testing.corpus import note_case
from fhir_adapter.text.engine import Document
from fhir_adapter.text.index import text_index, xhtml_text
from fhir_adapter.writeback import build_output

# Shapes of text that grew faster than their length: the attack of issue 24 (one run of
# clauses with clinical terms), a semicolon-separated note, cues packed together, words
# without punctuation, one endless word, a pasted table.
SHAPES = {
    "clauses": "tumor size not measured, ablation of segment 4 lesion with microwave energy, ",
    "semicolons": "no ablation; 3 cm lesion in segment 4; RF at 150 W for 12 min; ",
    "cues": "? no lung ? prior ? tumor 2 cm ? not ? possible ? liver lesion ",
    "words": "radiofrequency ablation of the segment 4 tumor under CT guidance ",
    "one word": "ablation",
    "table": "| lesion 2.1 cm | segment 4 | 150 W | 12 min | complete ablation |\n",
}


def run_on(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def read_all(pack: Pack, text: str) -> Document:
    """Every element's mentions in `text` (the document keeps the cues it compared)."""
    engine = pack.engine
    doc = engine.document(text)
    for element in sorted(engine.targets):
        engine.mentions(doc, element)
    return doc


def calls(fn: Callable[[], Any]) -> int:
    """Python and C function calls made by fn(): a deterministic count of its work."""
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_reading_work_doubles_with_the_text(pack: Pack, shape: str) -> None:
    unit = SHAPES[shape]
    read_all(pack, run_on(unit, 2_500))  # regexes compiled, word screen filled
    small = calls(lambda: read_all(pack, run_on(unit, 3_000)))
    large = calls(lambda: read_all(pack, run_on(unit, 6_000)))
    assert large <= 2.5 * small, (shape, small, large)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_cue_comparisons_double_with_the_text(pack: Pack, shape: str) -> None:
    unit = SHAPES[shape]
    small = read_all(pack, run_on(unit, 20_000)).work
    large = read_all(pack, run_on(unit, 40_000)).work
    assert large <= 2.5 * max(small, 1), (shape, small, large)


def test_a_long_sentence_is_read_in_pieces_cut_at_clause_boundaries(pack: Pack) -> None:
    engine = pack.engine
    longest = engine.cfg.max_sentence_chars
    text = run_on(SHAPES["clauses"], 10 * longest)
    doc = engine.document(text)
    pieces = engine.sentences(doc)
    assert len(pieces) >= 10
    assert all(s.end - s.start <= longest for s in pieces)
    assert all(text[s.end - 1] == "," for s in pieces[:-1])  # cut after a comma
    # nothing left out: the pieces hold every word of the text, in order
    words = [w for s in pieces for w in text[s.start : s.end].split()]
    assert words == text.split()
    # without punctuation, at a space
    plain = run_on(SHAPES["words"], 5 * longest)
    for s in engine.sentences(engine.document(plain))[:-1]:
        assert s.end - s.start <= longest
        assert plain[s.end].isspace()


def test_the_mentions_of_a_sentence_share_one_copy_of_it(pack: Pack) -> None:
    text = run_on(SHAPES["clauses"], 50_000)
    mentions = pack.engine.classify(text, "tumor-location")
    assert len(mentions) > 100
    assert len({id(m.sentence) for m in mentions}) == len({m.sentence_index for m in mentions})
    assert max(len(m.sentence) for m in mentions) <= pack.engine.cfg.max_sentence_chars


NOTE = [
    "The patient has a 3.2 cm hepatocellular carcinoma in segment 7",
    "She is not a surgical candidate because of portal hypertension",
    "Cryoablation was considered, but not chosen",
    "Under CT guidance a radiofrequency electrode was placed into the tumor",
    "Radiofrequency energy was applied at 150 W for 12 minutes",
    "A laparoscopic approach was not used",
    "Post-ablation CT showed complete ablation with no residual enhancement",
    "History of open right hepatectomy in 2018",
    "Follow-up MRI in 4 weeks to confirm complete ablation",
    "Her mother had a liver lesion treated with cryotherapy",
]


def reading(pack: Pack, text: str) -> tuple[list[str], list[str], Counter[tuple[str, str, str]]]:
    """What the rules conclude from a note, and every mention with its status."""
    case = note_case(pack, text)
    evaluation = evaluate_case(pack, case)
    index = text_index(case, pack.engine)
    mentions: Counter[tuple[str, str, str]] = Counter()
    for element in pack.engine.targets:
        for _, m in index.mentions(pack.engine, element):
            mentions[(element, " ".join(m.words.split()), m.status)] += 1
    return (
        sorted(f.code for f in evaluation.findings),
        [m.code for m in evaluation.modifiers],
        mentions,
    )


@pytest.mark.parametrize("repeat", [1, 40])
def test_a_run_on_note_reads_as_the_same_note_in_sentences(pack: Pack, repeat: int) -> None:
    sentences = ". ".join(NOTE * repeat) + "."
    run_on_note = "; ".join(NOTE * repeat) + "."
    if repeat > 1:
        assert len(run_on_note) > 10 * pack.engine.cfg.max_sentence_chars
    split = reading(pack, sentences)
    assert split == reading(pack, run_on_note)
    # one tumor, named in the singular with its segment ("a 3.2 cm hepatocellular carcinoma
    # in segment 7"), and no count stated: a coder counts one, in either form
    assert "doc-tumor-count" not in split[0]
    assert "modality-mismatch" not in split[0]  # every cryoablation mention was ruled out
    statuses = {status for (_, _, status) in split[2]}
    assert {"affirmed", "negated", "historical", "hypothetical", "other"} <= statuses


def test_the_attack_text_reads_the_same_as_clauses_or_sentences(pack: Pack) -> None:
    clause = SHAPES["clauses"].rstrip(", ")
    as_sentences = ". ".join([clause] * 300) + "."
    as_one_run = ", ".join([clause] * 300) + "."
    assert reading(pack, as_sentences)[:2] == reading(pack, as_one_run)[:2]


# Long runs without a letter or digit between a note's paragraphs: a ruler pasted many times,
# blank padding, a signature line of underscores.
BARE_RUNS = ("-" * 30_000, "\n" + " \n" * 10_000, "_" * 5_000 + "*" * 5_000)


def test_a_long_run_without_words_is_stepped_over_and_the_note_reads_the_same(
    pack: Pack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long text is scanned between its runs of 2,000 or more characters without a letter
    or digit (a pattern opening on a lookbehind would otherwise be tried at each of their
    positions); it reads exactly as when scanned whole."""
    paragraph = ". ".join(NOTE) + "."
    text = "\n".join([paragraph, BARE_RUNS[0], paragraph, BARE_RUNS[1], paragraph, BARE_RUNS[2]])
    text += "\nDr. Ames"
    assert len(pack.engine.document(text).spans) == len(BARE_RUNS) + 1
    stepped = reading(pack, text)
    whole = ((0, len(text)),)
    for module in ("fhir_adapter.text.engine", "fhir_adapter.text.document"):
        monkeypatch.setattr(f"{module}.stretches", lambda t: ((0, len(t)),))
    pack.engine.forget()
    assert pack.engine.document(text).spans == whole
    assert reading(pack, text) == stepped
    assert {status for (_, _, status) in stepped[2]} >= {"affirmed", "negated", "historical"}


def test_a_word_longer_than_any_word_is_read_as_nothing(pack: Pack) -> None:
    """A pasted number of 20,000 digits or "word" of 40,000 letters is blanked out of the
    scanned text (patterns opening on \\d+ or \\w* would be tried from each of its
    positions to its end); the note reads as it does without it, its offsets kept."""
    paragraph = ". ".join(NOTE) + "."
    plain = reading(pack, paragraph + "\n\n" + paragraph)
    for blob in ("7" * 20_000, "x" * 40_000, "segment7" * 5):
        text = paragraph + "\n\n" + blob + "\n\n" + paragraph
        doc = pack.engine.document(text)
        assert len(doc.low) == len(text) and doc.low.count("\0") == len(blob)
        assert reading(pack, text) == plain
    kept = "esophagogastroduodenoscopy 1234567890123456"  # 26 letters, 16 digits: words
    assert "\0" not in pack.engine.document(kept).low


def test_an_ordinary_text_is_scanned_whole(pack: Pack) -> None:
    text = ". ".join(NOTE * 40) + "\n" + "-" * 80 + "\n" + "_" * 3_000
    assert len(text) < 50_000
    assert pack.engine.document(text).spans == ((0, len(text)),)


@pytest.fixture(scope="module")
def capped_pack() -> Pack:
    path = default_pack_path()
    text, n = re.subn(r"max_chars: \d+", "max_chars: 2000", path.read_text(encoding="utf-8"))
    assert n == 1
    return pack_from_text(text, str(path), path.parent)


def test_text_beyond_the_cap_is_not_read_and_a_finding_says_so(capped_pack: Pack) -> None:
    filler = run_on("Ultrasound of the liver was reviewed before the procedure. ", 3_000)
    text = filler + "Cryoablation of the segment 7 tumor was performed."
    case = note_case(capped_pack, text)
    evaluation = evaluate_case(capped_pack, case)
    codes = {f.code: f for f in evaluation.findings}
    # what lies beyond the cap is not read: the cryoablation there goes unseen ...
    assert "modality-mismatch" not in codes
    # ... and the finding says which narrative was cut, and at what size
    finding = codes["text-truncated"]
    assert finding.severity in ("low", "moderate")
    [evidence] = finding.evidence
    assert (evidence.reference, evidence.path) == ("Procedure/rfa", "Procedure.note[0].text")
    assert evidence.note == f"procedure text of {len(text):,} characters: the first 2,000 were read"
    output = build_output(capped_pack, case, evaluation, "2026-12-01T00:00:00Z")
    issues = [r for r in output.resources if r["resourceType"] == "DetectedIssue"]
    assert "text-truncated" in {i["code"]["coding"][0]["code"] for i in issues}


def test_text_within_the_cap_gives_no_truncation_finding(capped_pack: Pack) -> None:
    text = run_on("Cryoablation of the segment 7 tumor was performed. ", 2_000)
    codes = {f.code for f in evaluate_case(capped_pack, note_case(capped_pack, text)).findings}
    assert "text-truncated" not in codes
    assert "modality-mismatch" in codes


# The definition the XHTML reader keeps (as it was written: one regex each, quadratic on
# unclosed openings and on long runs of spaces).
HIDDEN = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>|<!\[CDATA\[.*?\]\]>", re.S | re.I)
BREAK = re.compile(r"<br\s*/?>|</(?:p|li|div|h\d|tr|table|ul|ol|blockquote|pre)\s*>", re.I)
TAG = re.compile(r"<[^>]*>?")
BLANKS = re.compile(r"[ \t\r\f\v]*\n[ \t\r\f\v\n]*\n\s*")
PARTS = ["<!--", "-->", "<script>", "</script >", "<SCRIPT", "</Script>", "<style x>", "</style>"]
PARTS += ["<![CDATA[", "<![cdata[", "]]>", "a", " ", "\n", "\t", "\xa0", "<p>", "</p>", "-", ">"]
PARTS += ["</scriptx>", "&amp;"]


def xhtml_by_definition(markup: str) -> str:
    text = BREAK.sub("\n\n", HIDDEN.sub(" ", markup))
    return BLANKS.sub("\n\n", html.unescape(TAG.sub(" ", text)))


def test_xhtml_reading_keeps_its_definition() -> None:
    rng = random.Random(24)
    for _ in range(5_000):
        markup = "".join(rng.choice(PARTS) for _ in range(rng.randint(0, 25)))
        assert xhtml_text(markup) == xhtml_by_definition(markup), markup


@pytest.mark.parametrize(
    "markup", ["<!--" * 250_000, "<script>" * 125_000, "<![CDATA[" * 100_000, "x" + " " * 10**6]
)
def test_xhtml_of_unclosed_openings_or_endless_spaces_is_read(markup: str) -> None:
    # A megabyte each: a lazy regex per opening (or per space) would run for hours.
    text = xhtml_text(f"<div>{markup}</div>")
    assert text.strip() == ("x" if markup.startswith("x") else "")


# Shapes that the whole-note rules read (counts compared, paragraphs about another organ,
# template fields, copied blocks): the case's evaluation, not only its sentences.
NOTE_SHAPES = {
    "counts": "Lesion: segment 6, 2.2 cm, single | 1 of 2 known lesions ablated today | ",
    "organ paragraphs": "Prone for the lung component. Ablation 60 W x 4 min.\n\n",
    "fields": "Not a resection candidate: *** | residual was left | Size: 1.9 cm\n",
}


@pytest.mark.parametrize("shape", sorted(NOTE_SHAPES))
def test_whole_note_work_doubles_with_the_text(pack: Pack, shape: str) -> None:
    unit = NOTE_SHAPES[shape]

    def evaluate(size: int) -> None:
        evaluate_case(pack, note_case(pack, run_on(unit, size)))

    evaluate(2_500)
    small = calls(lambda: evaluate(6_000))
    large = calls(lambda: evaluate(12_000))
    assert large <= 2.5 * small, (shape, small, large)
