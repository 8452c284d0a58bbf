"""Free-text evidence: where a case's narrative lives, and which of its mentions count.

Every text unit of a case (a note, a report conclusion, a narrative `text.div`,
an attachment) is split and sectioned once, and each element's mentions are
found and classified once (ConText, see `text.engine`); rule matchers and
facts (tumor count and size) share those results. A mention counts only when
it is affirmed: "cryoablation was considered, but not chosen", "prior open
resection" or "follow-up CT to confirm complete ablation" do not document what
they mention, and the evidence says which cue ruled them out.

A unit is read up to the pack's `text.max_chars` characters: the rest is not read,
and `TextIndex.truncated` lists the units cut (a finding reports them).
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_adapter.case import Case
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.findings import Evidence
from fhir_adapter.text.engine import ContextEngine, Document, Mention
from fhir_adapter.text.scope import Scope

TEXT_SOURCES = ("procedure", "reports", "documents", "observations", "conditions")

# What XHTML hides: comments, scripts and styles, CDATA. Each opening is looked for by
# regex and its end by `str.find`; an opening without an end means no later one of its
# kind has one (one scan each, not one per opening: a lazy `.*?` per opening is
# quadratic on a text of unclosed "<!--").
_HIDDEN_OPEN = re.compile(r"<!--|<(script|style)\b|<!\[CDATA\[", re.I)
_HIDDEN_CLOSE = {
    "script": re.compile(r"</script\s*>", re.I),
    "style": re.compile(r"</style\s*>", re.I),
}
_BREAK = re.compile(r"<br\s*/?>|</(?:p|li|div|h\d|tr|table|ul|ol|blockquote|pre)\s*>", re.I)
_TAG = re.compile(r"<[^>]*>?")
_SPACE = re.compile(r"\s+")
# a match starts only where a run of spaces starts, and the run is taken whole (`*+`):
# linear on a long run of spaces
_BLANKS = re.compile(r"(?<![ \t\r\f\v])[ \t\r\f\v]*+\n[ \t\r\f\v\n]*\n\s*")
_SNIPPET_MAX = 240


@dataclass(slots=True)
class TextUnit:
    """One piece of narrative, where it sits, and its prepared form (built on first use)."""

    source: str
    reference: str
    path: str
    text: str  # at most the pack's text.max_chars characters
    doc: Document | None = None
    length: int = 0  # the characters the narrative had (more than len(text) when it was cut)


class TextIndex:
    """The narrative of one case: units per source, and each element's mentions, built once."""

    def __init__(self, case: Case, max_chars: int | None = None) -> None:
        self._case = case
        self.max_chars = max_chars
        # the session's date: a dated mention before it is an earlier session's, when the
        # note itself names no date of service
        self.service_date = case.date
        self._units: dict[str, list[TextUnit]] = {}
        # per source, each unit with its document and the elements it may mention, and
        # the elements any of them may mention
        self._read: dict[str, tuple[list[tuple[TextUnit, Document, frozenset[str]]], set[str]]]
        self._read = {}
        self._mentions: dict[tuple[str, str], list[tuple[TextUnit, Mention]]] = {}
        self._combined: dict[tuple[str, tuple[str, ...]], list[tuple[TextUnit, Mention]]] = {}
        self.evidence: dict[tuple[str, tuple[str, ...], int], list[Evidence]] = {}

    def units(self, source: str) -> list[TextUnit]:
        if source not in self._units:
            self._units[source] = list(units_for(self._case, source, self.max_chars))
        return self._units[source]

    def truncated(self, sources: tuple[str, ...] = TEXT_SOURCES) -> list[TextUnit]:
        """The units of those sources that were cut at max_chars (their rest is not read)."""
        return [u for source in sources for u in self.units(source) if u.length > len(u.text)]

    def mentions(
        self, engine: ContextEngine, element: str, sources: tuple[str, ...] = TEXT_SOURCES
    ) -> list[tuple[TextUnit, Mention]]:
        """Every mention of `element` in those sources' text, in order, classified once
        (per source, and per combination of sources the rules ask about)."""
        combined = self._combined.get((element, sources))
        if combined is not None:
            return combined
        combined = []
        for source in sources:
            found = self._mentions.get((element, source))
            if found is None:
                found = []
                read, anywhere = self._prepared(engine, source)
                if element in anywhere:
                    for unit, doc, elements in read:
                        if element in elements:
                            found.extend(
                                (unit, m)
                                for m in scoped(engine, unit, doc, element, self.service_date)
                            )
                self._mentions[(element, source)] = found
            combined.extend(found)
        self._combined[(element, sources)] = combined
        return combined

    def _prepared(
        self, engine: ContextEngine, source: str
    ) -> tuple[list[tuple[TextUnit, Document, frozenset[str]]], set[str]]:
        """A source's units, each with its document and candidate elements, and their union
        (made once: every element asked about looks here; one absent from the union skips
        the units)."""
        prepared = self._read.get(source)
        if prepared is None:
            read = []
            anywhere: set[str] = set()
            for unit in self.units(source):
                doc = unit.doc
                if doc is None:
                    doc = unit.doc = engine.document(unit.text)
                elements = engine.candidates(doc)
                anywhere |= elements
                read.append((unit, doc, elements))
            prepared = self._read[source] = (read, anywhere)
        return prepared

    def affirmed(
        self, engine: ContextEngine, element: str, sources: tuple[str, ...] = TEXT_SOURCES
    ) -> Iterator[tuple[TextUnit, Mention]]:
        for unit, m in self.mentions(engine, element, sources):
            if m.affirmed:
                yield unit, m


_SCOPES: weakref.WeakKeyDictionary[ContextEngine, Scope] = weakref.WeakKeyDictionary()


def scope_of(engine: ContextEngine) -> Scope:
    """The engine's vocabulary's scope rules, compiled once per engine."""
    scope = _SCOPES.get(engine)
    if scope is None:
        scope = _SCOPES[engine] = Scope(engine.cfg)
    return scope


def scoped(
    engine: ContextEngine,
    unit: TextUnit,
    doc: Document,
    element: str,
    service_date: str | None = None,
) -> list[Mention]:
    """An element's mentions in a unit, classified sentence by sentence, then scoped by the
    whole text (its sections, copied blocks, other organs, scope cues) and the session's
    date (`service_date`, ISO, when the note names none)."""
    if service_date is not None:
        if doc.dated is None:
            doc.dated = scope_of(engine).dated(doc)
        if not doc.dated:
            service_date = None  # nothing in the text is placed against it
    key = (element, service_date)
    ruled = doc.scoped.get(key)
    if ruled is not None:
        return ruled
    found = engine.mentions(doc, element)
    if not any(m.affirmed or (m.cue or "").endswith(":") for m in found):
        ruled = found  # nothing a scope rule could change
    else:
        scope = scope_of(engine)
        ruled = scope.rule(doc, scope.outline_of(doc), element, found, service_date)
    doc.scoped[key] = ruled
    return ruled


def amends(engine: ContextEngine, unit: TextUnit, m: Mention) -> bool:
    """Whether a mention stands where its note corrects itself (an addendum, a correction)."""
    doc = unit.doc
    if doc is None:
        return False
    scope = scope_of(engine)
    return scope.amends(doc, scope.outline_of(doc), m)


def text_index(case: Case, engine: ContextEngine) -> TextIndex:
    """The case's TextIndex for an engine, built once: the rules and the Claim builder share
    its mentions (another pack's engine finds other mentions: it gets its own)."""
    return case.derive((TextIndex, id(engine)), lambda: TextIndex(case, engine.cfg.max_chars))


def mention_evidence(unit: TextUnit, m: Mention) -> Evidence:
    """Evidence for a mention: the sentence, the matched words' span, status and ruling cue."""
    text, span = snippet(m.sentence, m.start, m.end)
    if m.affirmed:
        where = _where(unit, m)
        note = f"section: {where}" if where else None
        return Evidence(unit.reference, unit.path, text, note, "affirmed", None, span)
    cue = f'{m.reason} ("{m.cue}")' if m.reason else m.cue
    return Evidence(unit.reference, unit.path, text, "ruled out", m.status, cue, span)


def _where(unit: TextUnit, m: Mention) -> str | None:
    """The section a mention stands in, as the note heads it (else the engine's name)."""
    doc = unit.doc
    if doc is None or doc.outline is None:
        return m.section
    sentences = doc.sentences
    if not sentences or m.sentence_index >= len(sentences):
        return m.section
    at = sentences[m.sentence_index].start + m.start
    return doc.outline.where(at) or m.section


def find_evidence(
    index: TextIndex,
    engine: ContextEngine,
    element: str,
    sources: tuple[str, ...],
    limit: int = 3,
) -> list[Evidence]:
    """Affirmed mentions (one per sentence, at most `limit`), then the ruled-out ones.

    Ruled-out evidence (status other than affirmed) never satisfies a rule; it
    explains a missing element ("cryoablation ... not chosen": negated by "not chosen").
    """
    key_ = (element, sources, limit)
    cached = index.evidence.get(key_)
    if cached is not None:  # a rule's `when`, `any` and `unless` may ask the same question
        return list(cached)
    affirmed: list[Evidence] = []
    ruled_out: list[Evidence] = []
    found = index.mentions(engine, element, sources)
    # one piece of evidence per sentence; a sentence with an affirmed mention is not "ruled out"
    settled = {(id(u), m.sentence) for u, m in found if m.affirmed}
    seen: set[tuple[int, str]] = set()
    for unit, m in found:
        key = (id(unit), m.sentence)
        if key in seen or (not m.affirmed and key in settled):
            continue
        bucket = affirmed if m.affirmed else ruled_out
        if len(bucket) < limit:
            seen.add(key)
            bucket.append(mention_evidence(unit, m))
    index.evidence[key_] = affirmed + ruled_out
    return list(index.evidence[key_])


def affirmed_evidence(
    index: TextIndex,
    engine: ContextEngine,
    element: str,
    sources: tuple[str, ...] = TEXT_SOURCES,
    limit: int = 3,
) -> list[Evidence]:
    """Only the affirmed mentions, as evidence (for facts that need a yes)."""
    return [e for e in find_evidence(index, engine, element, sources, limit) if counts(e)]


def counts(evidence: Evidence) -> bool:
    """Whether evidence satisfies a matcher: anything but a ruled-out text mention."""
    return evidence.status is None or evidence.status == "affirmed"


@functools.lru_cache(maxsize=4096)
def snippet(sentence: str, start: int, end: int) -> tuple[str, tuple[int, int]]:
    """The sentence with whitespace collapsed, cut to a window around [start, end); new span.
    (Remembered: a text shared by many cases is quoted in each case's evidence.)"""
    pre = _SPACE.sub(" ", sentence[:start])
    mid = _SPACE.sub(" ", sentence[start:end])
    text = pre + mid + _SPACE.sub(" ", sentence[end:])
    lo, hi = len(pre), len(pre) + len(mid)
    if len(text) <= _SNIPPET_MAX:
        return text, (lo, hi)
    cut = max(0, min((lo + hi) // 2 - _SNIPPET_MAX // 2, len(text) - _SNIPPET_MAX))
    prefix = "…" if cut else ""
    body = text[cut : cut + _SNIPPET_MAX]
    suffix = "…" if cut + _SNIPPET_MAX < len(text) else ""
    shift = len(prefix) - cut
    return prefix + body + suffix, (max(lo + shift, 0), min(hi + shift, len(prefix) + len(body)))


def units_for(case: Case, source: str, max_chars: int | None = None) -> Iterator[TextUnit]:
    """The narrative of one text source of a case, with element paths; each text cut at
    `max_chars` characters."""
    for resource in case.collection(source):
        ref = case.ref(resource)
        rtype = resource.get("resourceType", "")
        for path, text in narrative(resource, rtype):
            if text.strip():
                read = text if max_chars is None else text[:max_chars]
                yield TextUnit(source, ref, path, read, length=len(text))


def narrative(resource: Resource, rtype: str) -> Iterator[tuple[str, str]]:
    """(element path, text) for every narrative element the rules read in a resource."""

    def strings(field: str, sub: str | None = None) -> Iterator[tuple[str, str]]:
        value = resource.get(field)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            text = item.get(sub) if (sub and isinstance(item, dict)) else item
            if isinstance(text, str):
                idx = f"[{i}]" if isinstance(value, list) else ""
                yield f"{rtype}.{field}{idx}" + (f".{sub}" if sub else ""), text

    def concepts(field: str) -> Iterator[tuple[str, str]]:
        """CodeableConcept text, else its codings' displays (a coded-only statusReason)."""
        value = resource.get(field)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            idx = f"[{i}]" if isinstance(value, list) else ""
            if isinstance(item.get("text"), str):
                yield f"{rtype}.{field}{idx}.text", item["text"]
                continue
            shown = [
                c["display"]
                for c in item.get("coding") or []
                if isinstance(c, dict) and isinstance(c.get("display"), str)
            ]
            if shown:
                yield f"{rtype}.{field}{idx}.coding.display", "; ".join(shown)

    yield from strings("code", "text")
    yield from strings("note", "text")
    if rtype == "Procedure":
        for name in ("outcome", "statusReason", "bodySite", "complication", "followUp"):
            yield from concepts(name)
        yield from _div(resource, rtype)
    elif rtype == "DiagnosticReport":
        yield from strings("conclusion")
        yield from strings("conclusionCode", "text")
        for i, att in enumerate(resource.get("presentedForm") or []):
            text = attachment_text(att)
            if text:
                yield f"DiagnosticReport.presentedForm[{i}]", text
        yield from _div(resource, rtype)
    elif rtype == "DocumentReference":
        yield from strings("description")
        for i, content in enumerate(resource.get("content") or []):
            text = attachment_text((content or {}).get("attachment"))
            if text:
                yield f"DocumentReference.content[{i}].attachment", text
    elif rtype == "Observation":
        yield from strings("valueString")
        yield from strings("valueCodeableConcept", "text")
        yield from strings("bodySite", "text")
    elif rtype == "Condition":
        yield from strings("bodySite", "text")


def _div(resource: Resource, rtype: str) -> Iterator[tuple[str, str]]:
    """The narrative, unless it is `generated`: then, by definition, it says only what the
    structured elements say (which the rules read already), and reading it costs time."""
    narrative_ = resource.get("text")
    if not isinstance(narrative_, dict) or narrative_.get("status") == "generated":
        return
    div = narrative_.get("div")
    if isinstance(div, str) and div:
        yield f"{rtype}.text.div", xhtml_text(div)


def xhtml_text(markup: str) -> str:
    """Readable text of XHTML narrative: no script/style/comments, tags out, entities decoded.

    Block ends become blank lines so that paragraphs stay separate sentences.
    """
    text = _drop_hidden(markup)
    text = _BREAK.sub("\n\n", text)
    text = html.unescape(_TAG.sub(" ", text))
    return _BLANKS.sub("\n\n", text)


def _drop_hidden(markup: str) -> str:
    """The markup with each comment, script, style and CDATA section replaced by a space."""
    out: list[str] = []
    pos = 0  # what is copied so far
    at = 0  # where to look for the next opening
    unclosed: set[str] = set()  # kinds with no end after some opening: none later either
    while (m := _HIDDEN_OPEN.search(markup, at)) is not None:
        kind = (m.group(1) or m.group(0)[:3]).lower()
        end = -1
        if kind not in unclosed:
            if kind == "<!-":
                end = markup.find("-->", m.end())
                end = end + 3 if end >= 0 else -1
            elif kind == "<![":
                end = markup.find("]]>", m.end())
                end = end + 3 if end >= 0 else -1
            else:
                close = _HIDDEN_CLOSE[kind].search(markup, m.end())
                end = close.end() if close else -1
        if end < 0:
            unclosed.add(kind)
            at = m.start() + 1
            continue
        out.append(markup[pos : m.start()])
        out.append(" ")
        pos = at = end
    out.append(markup[pos:])
    return "".join(out)


# the attachments whose text is read (others are named by `attachment_unread`)
READ_TYPES = ("text/plain", "text/html", "application/xhtml")


def attachment_text(attachment: Any) -> str | None:
    """Inline text/plain or text/html attachment data, decoded; None otherwise."""
    if not isinstance(attachment, dict) or not isinstance(attachment.get("data"), str):
        return None
    ctype = str(attachment.get("contentType") or "text/plain").lower()
    if not ctype.startswith(READ_TYPES):
        return None
    try:
        raw = base64.b64decode(attachment["data"], validate=False)
    except (binascii.Error, ValueError):
        return None
    return decode_text(raw, ctype)


def attachment_unread(attachment: Any) -> str | None:
    """Why `attachment_text` reads nothing of an attachment (its content type, no data, a
    url only, data that is not base64), with its size where it gives one; None when it
    is read."""
    if not isinstance(attachment, dict):
        return "it is not an Attachment"
    size = attachment.get("size")
    sized = f" ({size:,} bytes)" if type(size) is int else ""
    ctype = attachment.get("contentType")
    data, url = attachment.get("data"), attachment.get("url")
    if isinstance(ctype, str) and not ctype.lower().startswith(READ_TYPES):
        return (
            f"content type {ctype}{sized}: only text/plain, text/html and "
            "application/xhtml+xml attachments are read"
        )
    if isinstance(data, str) and data:
        try:
            base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            return f"its data is not base64{sized}"
        return None
    if data is not None and not isinstance(data, str):
        return f"its data is not a base64 string{sized}"
    if isinstance(url, str) and url:
        return (
            f"given by url only ({url}){sized}: its content was not fetched (from files no "
            "url is fetched; from a server, only one on the server's own origin)"
        )
    return "it has no data and no url"


def unread_attachments(resource: Resource) -> Iterator[tuple[str, str]]:
    """(element path, why) of each attachment of a DocumentReference or DiagnosticReport
    whose text is not read."""
    rtype = resource.get("resourceType")
    if rtype == "DocumentReference":
        for i, content in enumerate(resource.get("content") or []):
            if isinstance(content, dict) and "attachment" in content:
                why = attachment_unread(content["attachment"])
                if why is not None:
                    yield f"DocumentReference.content[{i}].attachment", why
    elif rtype == "DiagnosticReport":
        for i, att in enumerate(resource.get("presentedForm") or []):
            why = attachment_unread(att)
            if why is not None:
                yield f"DiagnosticReport.presentedForm[{i}]", why


def decode_text(raw: bytes, content_type: str) -> str:
    """Bytes of a text/plain or text/html document as text (charset from the content type)."""
    ctype = content_type.lower()
    charset = "utf-8"
    if "charset=" in ctype:
        charset = ctype.split("charset=", 1)[1].split(";")[0].strip().strip('"') or "utf-8"
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:
        text = raw.decode("utf-8", errors="replace")
    if ctype.startswith(("text/html", "application/xhtml")):
        text = xhtml_text(text)
    return text
