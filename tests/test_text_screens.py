"""The text engine's one-pass screens: a screen may only ever skip work that finds nothing."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from fhir_adapter.pack import Pack
from fhir_adapter.text.engine import _screen

CORPUS = Path(__file__).parent / "corpus"


def corpus_texts() -> list[str]:
    texts = []
    for f in sorted(CORPUS.glob("*.yaml")):
        texts.extend(item["text"] for item in yaml.safe_load(f.read_text())["items"])
    return texts


def test_cue_screen_agrees_with_every_cue_pattern(pack: Pack) -> None:
    """Over every sentence of the corpus, and sentences made to hold each kind of pattern
    cue, the screen finds nothing exactly where no pattern cue finds anything."""
    engine = pack.engine
    screen = engine._cue_screen
    assert screen is not None
    texts = [
        *corpus_texts(),
        "The tumor abutting the gallbladder was ablated.",
        "Tumor board recommended ablation.",
        "Known renal cell carcinoma liver metastases.",
        "Lesion 2/3 measured 2 cm.",
        "Ablation in 2019 of segment 4.",
        "Indication: ***",
    ]
    hits = 0
    for text in texts:
        doc = engine.document(text)
        for s in engine.sentences(doc):
            any_pattern = any(p.regex.search(doc.low, s.start, s.end) for p in engine._cue_patterns)
            assert (screen.search(doc.low, s.start, s.end) is not None) == any_pattern, text
            hits += any_pattern
    assert hits >= 6  # the made-up sentences do hold pattern cues


def test_pattern_cue_still_rules_a_mention_out(pack: Pack) -> None:
    """A sentence holding a pattern cue is still read with it (the screen lets it by): the
    pattern's "lung nodules" outranks the word cue "lung" it overlaps."""
    found = pack.engine.classify("Two lung nodules were ablated.", "tumor-count")
    assert [(m.status, m.cue) for m in found] == [("other", "lung nodules")]


def test_screen_refuses_what_an_alternation_would_change() -> None:
    one = re.compile("a+b")
    assert _screen([one]) is None  # one pattern: nothing to save
    assert _screen([one, re.compile(r"(x)\1")]) is None  # group numbers shift
    assert _screen([one, re.compile(r"(?P<n>x)(?P=n)")]) is None
    assert _screen([one, re.compile("(?i)x")]) is None  # a global flag
    joined = _screen([one, re.compile(r"(?<!\w)cd\b")])
    assert joined is not None
    assert joined.search("xx aab") and joined.search("cd") and not joined.search("acd")
