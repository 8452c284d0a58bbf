"""The regex prefilter: which literals it requires, and that it never hides a match."""

from __future__ import annotations

import re

import pytest

from fhir_adapter.pack import Pack
from fhir_adapter.text.engine import _cannot_match
from fhir_adapter.text.prefilter import required_literals, required_sets

from .test_corpus import load_corpus


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"(?:poor|marginal|high[\s-]risk) (?:surgical|operative) candidate\b", {" candidate"}),
        (r"unresectable", {"unresectable"}),
        (r"(?<!\w)(?:unresectable|inoperable)(?!\w)", {"unresectable", "inoperable"}),
        (r"\d+(?:\.\d+)?\s*(?:cm|mm)", None),  # two letters: in nearly every text
        (r"(?:tumou?r|lesion)s?", {"tumo", "lesion"}),
        (r"ablat\w* (?:zone|margin)", {"ablat"}),
        (r"(?:abc|x)yz", None),  # not concatenated: "yz" alone is too short to help
        (r"(?:abc|xyz)def", {"def"}),  # equally long: the single string wins
        (r"(?:foo)?bar", {"bar"}),
        (r"(?:foo)*", None),
        (r"(?:foo|)bar", {"bar"}),
        (r"(?i)unresectable", None),
        (r"(?i:unre)sectable", {"sectable"}),
        (r"(a)\1bcd", {"bcd"}),
    ],
)
def test_required_literals(pattern: str, expected: set[str] | None) -> None:
    found = required_literals(pattern)
    assert (set(found) if found is not None else None) == expected


def test_ignore_case_is_never_prefiltered() -> None:
    assert required_literals("unresectable", re.IGNORECASE) is None
    assert required_sets("unresectable", re.IGNORECASE) == ()


def test_every_required_set_is_checked() -> None:
    """Each part of a pattern's sequence is required: a text holding one part's words but
    not the other's is ruled out (the best set alone would let it by)."""
    sets = required_sets(r"(?:computed|ultrasound) guidance")
    assert sets == (frozenset({" guidance"}), frozenset({"computed", "ultrasound"}))
    assert required_literals(r"(?:computed|ultrasound) guidance") == sets[0]
    assert _cannot_match(sets, "under fluoroscopic guidance")
    assert not _cannot_match(sets, "under ultrasound guidance")
    assert required_sets(r"\d+(?:\.\d+)?\s*(?:cm|mm)") == ()


def test_the_prefilter_never_hides_a_match(pack: Pack) -> None:
    """Every term and pattern of the vocabulary, over every sentence of the labelled corpus:
    when the regex matches, one string of each of its required sets is in the text."""
    texts = [item["text"].lower() for items in load_corpus().values() for item in items]
    engine = pack.engine
    checked = 0
    for target in engine.targets.values():
        for source in [*(p.source for p in target.parts), target.source]:
            regex, required = engine.compiled(source)
            if not required:
                continue
            for text in texts:
                if regex.search(text):
                    checked += 1
                    for strings in required:
                        assert any(r in text for r in strings), (regex.pattern, text)
    assert checked > 300
