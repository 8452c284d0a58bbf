"""The text engine's prefilter of pattern cues: it may only ever skip work that finds nothing."""

from __future__ import annotations

from pathlib import Path

import yaml

from fhir_adapter.pack import Pack

CORPUS = Path(__file__).parent / "corpus"


def corpus_texts() -> list[str]:
    texts = []
    for f in sorted(CORPUS.glob("*.yaml")):
        texts.extend(item["text"] for item in yaml.safe_load(f.read_text())["items"])
    return texts


def test_cue_prefilter_never_hides_a_pattern_cue(pack: Pack) -> None:
    """Over every sentence of the corpus, and sentences made to hold each kind of pattern
    cue: a pattern that matches in a sentence is among those the text's prefilter kept,
    and a text without a pattern's words keeps it out."""
    engine = pack.engine
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
            engine.cues(doc, s)
            kept = doc.cue_patterns
            assert kept is not None
            for p in engine._cue_patterns:
                if p.regex.search(doc.low, s.start, s.end):
                    hits += 1
                    assert p in kept, (p.name, text)
    assert hits >= 6  # the made-up sentences do hold pattern cues
    doc = engine.document("Uneventful procedure.")
    engine.cues(doc, engine.sentences(doc)[0])
    assert doc.cue_patterns is not None
    assert len(doc.cue_patterns) < len(engine._cue_patterns)


def test_pattern_cue_still_rules_a_mention_out(pack: Pack) -> None:
    """A sentence holding a pattern cue is still read with it: the pattern's
    "lung nodules" outranks the word cue "lung" it overlaps."""
    found = pack.engine.classify("Two lung nodules were ablated.", "tumor-count")
    assert [(m.status, m.cue) for m in found] == [("other", "lung nodules")]


def test_number_word_parts_run_only_where_a_number_word_stands(pack: Pack) -> None:
    """The words form of a number pattern ("two lesions") can only match where a number
    word stands as a word of its own: over the corpus, wherever one matches (its leading
    word boundary included) the text is known to hold one; "zone" and "done" do not."""
    engine = pack.engine
    spelled = [p for t in engine.targets.values() for p in t.parts if p.spelled]
    assert spelled  # the shipped vocabulary has number patterns
    matched = 0
    for text in corpus_texts():
        doc = engine.document(text)
        engine.candidates(doc)
        for part in spelled:
            regex, _ = engine.compiled(part.source)
            for m in regex.finditer(doc.low):
                if m.start() == 0 or not (doc.low[m.start() - 1].isalnum()):
                    matched += 1
                    assert doc.number_word, text
    assert matched > 20
    doc = engine.document("The ablation zone was done; none remained.")
    engine.candidates(doc)
    assert not doc.number_word
    assert engine.classify("Two lesions were ablated.", "tumor-count")
