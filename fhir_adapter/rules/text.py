"""Free-text evidence: where a case's narrative lives, and negation-aware matching.

A pattern counts only when it is affirmed: "no complications", "laparoscopic or
open surgery was not chosen", "cryoablation was considered but not chosen" and
"prior open resection" do not document the thing they mention. The cue words
come from the pack; this module only knows how to apply them (NegEx-style, one
sentence and clause at a time).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_adapter.case import Case
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.findings import Evidence
from fhir_adapter.rules.schema import TextConfig

TEXT_SOURCES = ("procedure", "reports", "documents", "observations", "conditions")

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])|\n\s*\n|\n(?=\s*[-*\u2022])|(?<=[.!?])$")
_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_SPACE = re.compile(r"\s+")
_SNIPPET_MAX = 240


@dataclass(frozen=True, slots=True)
class TextUnit:
    """One piece of narrative and where it sits."""

    reference: str
    path: str
    text: str


def _alternation(cues: list[str]) -> str:
    return "|".join(re.escape(c) for c in sorted(cues, key=len, reverse=True))


class NegationScope:
    """Decides whether a match inside a sentence is affirmed."""

    def __init__(self, cfg: TextConfig) -> None:
        pre = cfg.negation_pre + cfg.history_pre
        self._pre = (
            re.compile(
                rf"(?<![\w/])(?:{_alternation(pre)})(?![\w/])(?:\W+\w+){{0,{cfg.window}}}\W*$",
                re.I,
            )
            if pre
            else None
        )
        self._post = (
            re.compile(rf"(?<!\w)(?:{_alternation(cfg.negation_post)})(?!\w)", re.I)
            if cfg.negation_post
            else None
        )
        self._post_start = (
            re.compile(rf"^\W*(?:not\b|(?:{_alternation(cfg.negation_post)})(?!\w))", re.I)
            if cfg.negation_post
            else None
        )
        terms = [re.escape(t) for t in cfg.terminators]
        self._terminator = re.compile(
            r";|:|" + "|".join(rf"\b{t}\b" for t in terms) if terms else r";|:", re.I
        )

    def affirmed(self, sentence: str, start: int, end: int) -> bool:
        before = sentence[:start]
        cuts = list(self._terminator.finditer(before))
        if cuts:
            before = before[cuts[-1].end() :]
        if self._pre is not None and self._pre.search(before):
            return False
        after = sentence[end:]
        cut = self._terminator.search(after)
        clause = after[: cut.start()] if cut else after
        if self._post is not None and self._post.search(clause):
            return False
        # "X was considered, but not chosen": the negation opens the next clause.
        return not (
            cut is not None
            and self._post_start is not None
            and self._post_start.search(after[cut.end() :])
        )


class TextIndex:
    """The sentences of one case, by text source, built once per case."""

    def __init__(self, case: Case) -> None:
        self._case = case
        self._units: dict[str, list[tuple[TextUnit, list[str]]]] = {}

    def sentences(self, source: str) -> list[tuple[TextUnit, list[str]]]:
        if source not in self._units:
            units = list(units_for(self._case, source))
            self._units[source] = [(u, split_sentences(u.text)) for u in units]
        return self._units[source]


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def snippet(sentence: str, start: int, end: int) -> str:
    """The sentence, cut to a readable window around the match."""
    text = _SPACE.sub(" ", sentence)
    if len(text) <= _SNIPPET_MAX:
        return text
    middle = (start + end) // 2
    lo = max(0, middle - _SNIPPET_MAX // 2)
    return ("…" if lo else "") + text[lo : lo + _SNIPPET_MAX] + "…"


def any_of(patterns: list[re.Pattern[str]]) -> re.Pattern[str]:
    """One regex that matches where any of the group does: a cheap first screen."""
    return re.compile("|".join(f"(?:{p.pattern})" for p in patterns), re.I)


def iter_affirmed(
    index: TextIndex,
    sources: tuple[str, ...],
    patterns: list[re.Pattern[str]],
    scope: NegationScope,
    screen: re.Pattern[str] | None = None,
) -> Iterator[tuple[TextUnit, str, re.Match[str]]]:
    """Every affirmed match, in source order, with its unit and sentence."""
    screen = screen or any_of(patterns)
    for source in sources:
        for unit, sentences in index.sentences(source):
            # Most narrative mentions none of a group: one search of the whole text settles it.
            if not screen.search(unit.text):
                continue
            for sentence in sentences:
                for pattern in patterns:
                    for m in pattern.finditer(sentence):
                        if scope.affirmed(sentence, m.start(), m.end()):
                            yield unit, sentence, m


def find_affirmed(
    index: TextIndex,
    sources: tuple[str, ...],
    patterns: list[re.Pattern[str]],
    scope: NegationScope,
    limit: int = 3,
    screen: re.Pattern[str] | None = None,
) -> list[Evidence]:
    """Evidence for affirmed matches (one per sentence, at most `limit`)."""
    found: list[Evidence] = []
    last: tuple[int, str] | None = None
    for unit, sentence, m in iter_affirmed(index, sources, patterns, scope, screen):
        if last == (id(unit), sentence):
            continue
        last = (id(unit), sentence)
        found.append(Evidence(unit.reference, unit.path, snippet(sentence, m.start(), m.end())))
        if len(found) >= limit:
            break
    return found


def units_for(case: Case, source: str) -> Iterator[TextUnit]:
    """The narrative of one text source of a case, with element paths."""
    for resource in case.collection(source):
        ref = case.ref(resource)
        rtype = resource.get("resourceType", "")
        for path, text in _narrative(resource, rtype):
            if text.strip():
                yield TextUnit(ref, path, text)


def _narrative(resource: Resource, rtype: str) -> Iterator[tuple[str, str]]:
    def strings(field: str, sub: str | None = None) -> Iterator[tuple[str, str]]:
        value = resource.get(field)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            text = item.get(sub) if (sub and isinstance(item, dict)) else item
            if isinstance(text, str):
                idx = f"[{i}]" if isinstance(value, list) else ""
                yield f"{rtype}.{field}{idx}" + (f".{sub}" if sub else ""), text

    yield from strings("code", "text")
    yield from strings("note", "text")
    if rtype == "Procedure":
        for name in ("outcome", "statusReason", "bodySite", "complication", "followUp"):
            yield from strings(name, "text")
    elif rtype == "DiagnosticReport":
        yield from strings("conclusion")
        yield from strings("conclusionCode", "text")
        for i, att in enumerate(resource.get("presentedForm") or []):
            text = attachment_text(att)
            if text:
                yield f"DiagnosticReport.presentedForm[{i}].data", text
    elif rtype == "DocumentReference":
        yield from strings("description")
        for i, content in enumerate(resource.get("content") or []):
            text = attachment_text((content or {}).get("attachment"))
            if text:
                yield f"DocumentReference.content[{i}].attachment.data", text
    elif rtype == "Observation":
        yield from strings("valueString")
        yield from strings("valueCodeableConcept", "text")
        yield from strings("bodySite", "text")
    elif rtype == "Condition":
        yield from strings("bodySite", "text")


def attachment_text(attachment: Any) -> str | None:
    """Inline text/plain or text/html attachment data, decoded; None otherwise."""
    if not isinstance(attachment, dict) or not isinstance(attachment.get("data"), str):
        return None
    ctype = str(attachment.get("contentType") or "text/plain").lower()
    if not ctype.startswith(("text/plain", "text/html")):
        return None
    try:
        raw = base64.b64decode(attachment["data"], validate=False)
    except (binascii.Error, ValueError):
        return None
    charset = "utf-8"
    if "charset=" in ctype:
        charset = ctype.split("charset=", 1)[1].split(";")[0].strip() or "utf-8"
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:
        text = raw.decode("utf-8", errors="replace")
    if ctype.startswith("text/html"):
        text = re.sub(r"(?i)<br\s*/?>|</p>|</li>|</div>|</h\d>", "\n\n", text)
        text = html.unescape(_TAG.sub(" ", text))
    return text
