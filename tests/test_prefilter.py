"""The regex prefilter: which literals it requires, and that it never hides a match."""

from __future__ import annotations

import re

import pytest

from fhir_adapter.pack import Pack
from fhir_adapter.text.prefilter import required_literals

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


def test_the_prefilter_never_hides_a_match(pack: Pack) -> None:
    """Every term and pattern of the vocabulary, over every sentence of the labelled corpus:
    when the regex matches, one of its required literals is in the text."""
    texts = [item["text"].lower() for items in load_corpus().values() for item in items]
    engine = pack.engine
    checked = 0
    for target in engine.targets.values():
        for source in [*(p.source for p in target.parts), target.source]:
            regex, required = engine.compiled(source)
            if required is None:
                continue
            for text in texts:
                if regex.search(text):
                    checked += 1
                    assert any(r in text for r in required), (regex.pattern, text)
    assert checked > 300
