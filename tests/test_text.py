"""Negation and context in free text: mentioned is not documented."""

from __future__ import annotations

import base64

import pytest

from fhir_adapter.rules import Pack
from fhir_adapter.rules.text import attachment_text, split_sentences


def affirmed(pack: Pack, group: str, sentence: str) -> bool:
    for pattern in pack.patterns[group]:
        for m in pattern.finditer(sentence):
            if pack.scope.affirmed(sentence, m.start(), m.end()):
                return True
    return False


@pytest.mark.parametrize(
    ("group", "sentence", "expected"),
    [
        ("open-or-laparoscopic-approach", "Laparoscopic or open surgery was not chosen.", False),
        ("open-or-laparoscopic-approach", "Laparoscopic ablation of segment VI.", True),
        ("open-or-laparoscopic-approach", "Percutaneous rather than open surgery.", False),
        ("open-or-laparoscopic-approach", "History of open resection in 2019.", False),
        ("open-or-laparoscopic-approach", "Prior laparoscopic cholecystectomy.", False),
        ("open-or-laparoscopic-approach", "Converted to open surgery because of bleeding.", True),
        ("non-rf-energy", "Cryoablation was considered and not chosen.", False),
        ("non-rf-energy", "Cryoablation was considered, but not chosen.", False),
        ("non-rf-energy", "Cryoablation was performed with two probes.", True),
        ("non-rf-energy", "No cryoablation.", False),
        ("non-rf-energy", "Microwave ablation at 100 W.", False),
        ("necessity-rationale", "The tumor is unresectable.", True),
        ("necessity-rationale", "The tumor is not unresectable.", False),
        ("necessity-rationale", "She is not a surgical candidate given COPD.", True),
        ("necessity-rationale", "Patient declined surgical resection.", True),
        ("necessity-rationale", "Cirrhosis with portal hypertension precludes resection.", True),
        ("necessity-rationale", "No complications.", False),
        ("ablation-confirmation", "Post-ablation CT showed complete ablation.", True),
        ("ablation-confirmation", "Ablation was incomplete.", False),
        ("ablation-confirmation", "No residual enhancement.", True),
    ],
)
def test_negation_and_context(pack: Pack, group: str, sentence: str, expected: bool) -> None:
    assert affirmed(pack, group, sentence) is expected


def test_negation_does_not_leak_across_clauses(pack: Pack) -> None:
    sentence = "No ascites was seen; the lesion is unresectable."
    assert affirmed(pack, "necessity-rationale", sentence)


def test_sentences_keep_decimals_together() -> None:
    assert split_sentences("A 2.5 cm lesion. Under CT guidance.") == [
        "A 2.5 cm lesion.",
        "Under CT guidance.",
    ]


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
    assert attachment_text({"contentType": "text/plain", "data": "!!!not base64"}) in (None, "")
