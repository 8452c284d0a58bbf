"""The text engine on labelled clinical sentences (tests/corpus/): accuracy per element.

Each sentence is the note of a minimal 47382 case and goes through the whole rule
pack, so what is measured is the product's answer (the finding), not an engine
internal. An element under 95 % fails, listing the sentences it got wrong.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.pack import Pack
from fhir_adapter.testing.corpus import RULES, documented, load_sentences

CORPUS = Path(__file__).parent / "corpus"
THRESHOLD = 0.95


def load_corpus() -> dict[str, list[dict[str, Any]]]:
    return load_sentences(CORPUS)


def test_the_corpus_is_large_and_varied() -> None:
    corpus = load_corpus()
    items = [i for items in corpus.values() for i in items]
    assert len(items) >= 150
    assert set(corpus) == set(RULES)
    categories = Counter(i["category"] for i in items)
    for needed in (
        "affirmed",
        "negated",
        "post-negated",
        "hypothetical",
        "planned",
        "considered-rejected",
        "historical",
        "family",
        "other-organ",
        "device",
        "margin",
        "uncertain",
        "section",
    ):
        assert categories[needed] > 0, needed
    for element, element_items in corpus.items():
        labels = Counter(i["documents"] for i in element_items)
        assert labels[True] >= 5 and labels[False] >= 5, element


@pytest.mark.parametrize("element", sorted(RULES))
def test_accuracy_per_element(pack: Pack, element: str) -> None:
    items = load_corpus()[element]
    misses = [
        f"  expected {i['documents']!s:5} ({i['category']}): {i['text']!r}"
        for i in items
        if documented(pack, element, i["text"]) is not i["documents"]
    ]
    accuracy = 1 - len(misses) / len(items)
    print(f"{element}: {len(items) - len(misses)}/{len(items)} = {accuracy:.1%}")
    assert accuracy >= THRESHOLD, f"{element}: {accuracy:.1%} < {THRESHOLD:.0%}\n" + "\n".join(
        misses
    )
