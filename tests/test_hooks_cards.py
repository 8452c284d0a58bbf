"""Cards and the CRD extension built without a server: what record text can do in markdown,
and the coverage assertion id."""

from __future__ import annotations

import re

from fhir_adapter.findings import Evidence, Finding
from fhir_adapter.hooks import cards
from fhir_adapter.rules import Pack

EVIL = "see [x](https://evil.example) <img src=x onerror=alert(1)> **bold** `code` &amp; _u_"
_UNESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def _finding(text: str) -> Finding:
    return Finding(
        "diagnosis-unsupported",
        "high",
        "No liver-tumor diagnosis",
        (Evidence("DocumentReference/d`1", "DocumentReference.content", text, text),),
        source=text,
    )


def test_record_text_in_card_markdown_makes_no_link_or_html(pack: Pack) -> None:
    card = cards.finding_card(pack, _finding(EVIL), "ServiceRequest/sr-1")
    detail = card["detail"]
    assert "[x](" not in detail and "](https" not in detail
    assert "<img" not in detail and "<" not in detail and ">" not in detail
    assert "**bold**" not in detail and "&amp;" not in detail
    # every ASCII punctuation character of the record text is backslash-escaped
    escaped = cards._md(EVIL)
    plain = _UNESCAPE.sub(r"\1", escaped.replace("&lt;", "<").replace("&gt;", ">"))
    assert plain == EVIL
    bare = escaped.replace("\\\\", "").replace("&lt;", "").replace("&gt;", "")
    assert not re.search(r"(?<!\\)[!-/:-@\[\]^_`{-~]", bare)
    assert escaped in detail
    # a reference is a code span that its own backticks cannot close
    assert "`` DocumentReference/d`1 ``" in detail
    assert "ServiceRequest/sr-1" in detail
    assert "\n" not in cards._md("a\nb\r\nc")
