"""A whole note as a coder reads it: headed sections with a role, and blocks copied from
another note.

Clinicians head a note's parts in many ways: "PLAN:", "--- OPERATOR SUMMARY ---",
"3. Impression:", "Indication: ..." on one line, or a heading alone on its line. A
heading in capitals, a decorated or numbered one, or one of the pack's known headers
opens a section that runs to the next heading; a field label in ordinary case
("Mode: impedance", "If RFA: 200 W") is part of the section it stands in, so a plan's
list keeps reading as a plan. Each section gets a role from its heading's words
(`text.sections` headers first, then `text.scope.roles`), and a block introduced as
copied from an earlier note ("HISTORY (copied from IR note 01/12/2026)") is marked
as another session's text up to its closing line or, without one, its quoted lines.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

_DECORATED = re.compile(r"^[-=*#_~]{2,}\s*([^-=*#_~].*?)\s*[-=*#_~]{2,}$")
_NUMBERED = re.compile(r"^(?:\d{1,2}|[IVX]{1,4}|[A-H])[.)]\s+")
_LABEL = re.compile(r"^([A-Za-z][A-Za-z0-9 /&'(),.+-]{0,60}?)\s*:(?:\s|$)")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_DATE = re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b\d{1,2}/\d{4}\b|\b(?:19|20)\d\d-\d\d-\d\d\b")
_RULE = re.compile(r"^[-=*_~#]{5,}$")
_QUOTED = re.compile(r"^\s*(?:\||>)")
# where a field's first sentence ends with more text after it on its line
_FIELD_SENTENCE_END = re.compile(r"(?<=[.!?])[ \t]+(?=[A-Z0-9(\"'\[])")
_PARAGRAPH = re.compile(r"[^\n]+(?:\n[ \t]*\S[^\n]*)*")  # lines up to a blank line
_BULLET = re.compile(r"[-*\u2022][ \t]+")
# a list item: its numbered, lettered or bulleted line and the lines set further in under it
_LIST_ITEM = re.compile(
    r"(?m)^([ \t]*)(?:\(?(?:\d{1,2}|[a-z])[.)]|[-*\u2022])[ \t]+(\S[^\n]*)(?:\n\1[ \t]+\S[^\n]*)*"
)
# an entry of a running case note opened by its date and time ("14/09/2023 -- PROCEDURE NOTE
# (Radiology Suite 2)", "2025-03-02 1800hrs - WARD ROUND"): the heading is what follows
_DATED_LEAD = re.compile(
    r"^(?:\d{1,2}/\d{1,2}/\d{2,4}|(?:19|20)\d\d-\d\d-\d\d)[ \t]*"
    r"(?:(?:--|-|\u2013|\u2014|:)[ \t]*)?(?:\d{3,4}[ \t]*h(?:rs?)?|\d{1,2}:\d\d)?[ \t]*"
    r"(?:--|-|\u2013|\u2014|:)[ \t]*"
)
_ITEM = re.compile(r"^(?:\(?\d{1,2}[.)]|\(?[a-hA-H][.)]|[-*\u2022])")


_Head = tuple[str | None, str | None, str | None]  # heading, role, organ


# A run of this many characters without a letter or a digit (a ruler of dashes pasted a
# thousand times, a megabyte of padding) holds nothing the vocabulary reads, yet a pattern
# that opens on a lookbehind is tried at each of its positions. A long text is therefore
# scanned stretch by stretch between such runs; each stretch reaches _MARGIN characters
# into the run on either side, so a lookaround sees what it would in the whole text.
_BARE = re.compile(r"[\W_]+")
_BARE_RUN = 2_000
_MARGIN = 200
_LONG = 50_000  # shorter texts are scanned whole, as they always were


def stretches(text: str) -> tuple[tuple[int, int], ...]:
    """The [start, end) stretches of `text` worth scanning: the whole of an ordinary text."""
    if len(text) < _LONG:
        return ((0, len(text)),)
    out: list[tuple[int, int]] = []
    pos = 0
    for run in _BARE.finditer(text):
        if run.end() - run.start() >= _BARE_RUN:
            out.append((pos, run.start() + _MARGIN))
            pos = run.end() - _MARGIN
    out.append((pos, len(text)))
    return tuple(out)


def scan(
    regex: re.Pattern[str], text: str, spans: tuple[tuple[int, int], ...]
) -> Iterator[re.Match[str]]:
    """`regex.finditer(text)` over the stretches `spans` (from `stretches`)."""
    for start, end in spans:
        yield from regex.finditer(text, start, end)


def scan_first(
    regex: re.Pattern[str], text: str, spans: tuple[tuple[int, int], ...]
) -> re.Match[str] | None:
    """`regex.search(text)` over the stretches `spans` (from `stretches`)."""
    for start, end in spans:
        found = regex.search(text, start, end)
        if found is not None:
            return found
    return None


@dataclass(frozen=True, slots=True)
class Section:
    """A part of a note: its [start, end) offsets, its heading as written, and its role."""

    start: int
    end: int
    heading: str | None
    role: str | None
    organ: str | None = None  # another organ the section is about ("-- KIDNEY --")
    # a field's: the heading of the section it stands in ("AMENDED IMPRESSION" over
    # "2. NUMBER OF LESIONS: ONE lesion was treated")
    outer: str | None = None


@dataclass(frozen=True, slots=True)
class Copied:
    """Text copied from another note, and what the evidence says about it."""

    start: int
    end: int
    reason: str


@dataclass(frozen=True, slots=True)
class Outline:
    """A note's sections in order, and its copied blocks."""

    sections: tuple[Section, ...]
    copied: tuple[Copied, ...]
    starts: tuple[int, ...] = ()
    # paragraphs about another organ (`heading` their opening words), outside the sections
    organ_paragraphs: tuple[Section, ...] = ()
    # what the scope rules found in this text, worked out once and shared by every element
    memo: dict[object, object] = field(default_factory=dict, compare=False)

    def section_at(self, pos: int) -> Section | None:
        i = bisect.bisect_right(self.starts, pos) - 1
        return self.sections[i] if i >= 0 and pos < self.sections[i].end else None

    def organ_paragraph_at(self, pos: int) -> Section | None:
        paragraphs = self.organ_paragraphs  # in order, none overlapping
        if not paragraphs:
            return None
        i = bisect.bisect_right(paragraphs, pos, key=lambda p: p.start) - 1
        return paragraphs[i] if i >= 0 and pos < paragraphs[i].end else None

    def copied_at(self, pos: int) -> Copied | None:
        return next((c for c in self.copied if c.start <= pos < c.end), None)

    def where(self, pos: int) -> str | None:
        """How evidence names where an offset stands: a copied block, or its section."""
        copied = self.copied_at(pos)
        if copied is not None:
            return copied.reason
        section = self.section_at(pos)
        if section is None or section.heading is None:
            return None
        return section.heading + (f" ({section.role})" if section.role else "")


_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# a part of a note named in quotes ("the "Procedure Details" paragraph", 'the 'HPI' section')
_NAMED_PART = re.compile(
    r"[\"\u201c\u201d']([A-Za-z][A-Za-z /&-]{1,38}[A-Za-z])[\"\u201c\u201d']"
    # or unquoted before the word for a part: "The TECHNIQUE paragraph of this report"
    r"|\b(?i:the)\s+([A-Za-z][A-Za-z /&-]{0,38}?[A-Za-z])\s+(?i:paragraph|section|portion)\b"
)


def _named_part(text: str, at: int, before: int) -> tuple[int, int] | None:
    """(start, end) of the part of `text` before `before` that the sentence at `at` names
    by its heading, in quotes or before "paragraph" or "section" (a line opening on it, then a
    colon or the line's end)."""
    # the sentence's words before the disowning words, and its line's after them
    opens = max(text.rfind(". ", 0, at) + 2, text.rfind(":", 0, at) + 1, at - 120, 0)
    line_end = text.find("\n", at)
    named = _NAMED_PART.search(text, opens, len(text) if line_end < 0 else line_end)
    if named is None:
        return None
    head = re.compile(
        r"(?:^|\n)[ \t]*" + re.escape(named.group(1) or named.group(2)) + r"[ \t]*(?::|\n)",
        re.IGNORECASE,
    )
    found = list(head.finditer(text, 0, before))
    if not found:
        return None
    start = found[-1].start() + (text[found[-1].start()] == "\n")
    blank = _BLANK_LINE.search(text, found[-1].end(), before)
    return start, blank.end() if blank else before


_FIRST_CLAUSE = re.compile(r"(?<=[.;:])\s")


def _opening(first_line: str) -> str:
    """What names an organ's paragraph or list item as a heading: its first clause, short."""
    return _FIRST_CLAUSE.split(first_line.strip(), maxsplit=1)[0][:60]


class Outliner:
    """Headings and roles compiled once per vocabulary; `outline` splits one text."""

    def __init__(
        self,
        known: dict[str, str],
        roles: dict[str, list[str]],
        organs: dict[str, list[str]],
        opens: list[str],
        closes: list[str],
        reason: str,
        own_organ: str | None = None,
        ruling_roles: frozenset[str] = frozenset(),
        own_marks: re.Pattern[str] | None = None,
        reported: re.Pattern[str] | None = None,
        disowns: list[str] | None = None,
        sentence_roles: frozenset[str] = frozenset(),
    ) -> None:
        self._known = {_norm(h): role for h, role in known.items()}
        # roles whose field heads its first sentence only ("Family history: father with HCC.
        # RF energy was applied ...": the energy is the patient's)
        self._sentence_roles = sentence_roles
        self._roles = [
            (role, [tuple(_WORD.findall(w.lower())) for w in words])
            for role, words in roles.items()
        ]
        self._organs = [
            (organ, [tuple(_WORD.findall(w.lower())) for w in words])
            for organ, words in organs.items()
        ]
        self._opens = [re.compile(p, re.I) for p in opens]
        self._closes = [re.compile(p, re.I) for p in closes]
        self._disowns = [re.compile(p, re.I) for p in disowns or []]
        self._reason = reason
        self._own_organ = own_organ
        # roles that rule what they head (a plan, options discussed): a label of ordinary
        # case ending its line opens such a section ("Options discussed with the patient:")
        self._ruling_roles = ruling_roles
        own = [w for o, ws in organs.items() if o == own_organ for w in ws]
        self._own = re.compile(
            r"\b(?:" + "|".join(re.escape(w) for w in own) + r")\b" if own else r"(?!)", re.I
        )
        self._own_marks = own_marks
        self._reported = reported
        others = [w for o, ws in organs.items() if o != own_organ for w in ws]
        self._others = re.compile(
            r"\b(?:" + "|".join(re.escape(w) for w in others) + r")\b" if others else r"(?!)",
            re.I,
        )

    def outline(self, text: str, spans: tuple[tuple[int, int], ...] | None = None) -> Outline:
        """`spans`: the stretches of `text` worth scanning, when its reader worked them out."""
        spans = spans or stretches(text)
        if "\n" not in text and not _capitals(_lead(text)) and ":" not in text:
            # one line of prose (a code's text, a short note): one section, nothing copied
            return Outline((Section(0, len(text), None, None),), self._copied(text, spans), (0,))
        sections: list[Section] = []
        outer: _Head = (None, None, None)  # the section a field stands in
        head: _Head = outer
        field = False
        listing: int | None = None  # the indent of a list's opening label ("Options:")
        item: int | None = None  # the indent of a bulleted organ field ("- KIDNEY: ...")
        # a field that heads its first sentence only ("Family history: father with HCC."):
        # its line's indent and its heading, for the lines set further in under it
        held: tuple[int, _Head] | None = None
        start = pos = 0
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines):
            found = self._heading(line)
            if found is not None and not found[3] and _empty_field(line, lines[i + 1 :]):
                found = (*found[:3], True, False)
            if found is not None and found[3] and found[1] != "findings" and self._reported:
                # a field that reports a study already had ("Follow-up: CT 08/27/2024 - no
                # residual enhancement") is a finding, whatever its label's role
                value = line.partition(":")[2]
                if self._reported.match(value.lower()):
                    found = (found[0], "findings", found[2], True, False)
            if listing is not None and found is None:
                # a list runs over its items and their indented lines, to a blank line or
                # a line of prose set no further in than its label ("He chose MWA.")
                body = line.strip()
                indent = len(line) - len(line.lstrip())
                if not body or (indent <= listing and not _ITEM.match(body)):
                    found = (*outer, False, False)
            if held is not None:
                deeper = (
                    found is None
                    and bool(line.strip())
                    and len(line) - len(line.lstrip(" \t")) > held[0]
                )
                if deeper != (head == held[1]):
                    if pos > start:
                        sections.append(Section(start, pos, *head))
                    start, head = pos, held[1] if deeper else outer
                if not deeper:
                    held = None
            if head[2] is not None and field:
                # an organ's field ("Adrenal: ...") runs on over its own labelled lines
                # ("Two freeze-thaw cycles: ...") until a line names the liver again; a
                # bulleted one ("- KIDNEY: ...") over its item, to a line set no further in
                ends_field = (
                    not line.strip()
                    or self._own.search(line) is not None
                    or (item is not None and len(line) - len(line.lstrip()) <= item)
                )
            else:
                ends_field = field and (not line.strip() or bool(_LABEL.match(line.strip())))
            if found is not None or ends_field:
                if pos > start:
                    sections.append(Section(start, pos, *head, outer[0] if field else None))
                start = pos
                if found is not None:
                    head, field = found[:3], found[3]
                    if field and head[1] is None:
                        # a field with no role of its own ("Liver: RFA 200 W in two weeks"
                        # under PLAN) is read in the section it stands in
                        head = (head[0], outer[1], head[2])
                    bulleted = _BULLET.match(line.lstrip()) is not None and field
                    item = len(line) - len(line.lstrip()) if bulleted and head[2] else None
                    listing = len(line) - len(line.lstrip()) if found[4] else None
                    if not field and not found[4]:
                        outer = head
                    elif field and head[1] in self._sentence_roles:
                        # the field is its first sentence, or its line: what follows is read in
                        # the section around it
                        cut = _FIELD_SENTENCE_END.search(line, line.find(":") + 1)
                        end = pos + (cut.start() if cut is not None else len(line))
                        sections.append(Section(pos, end, *head))
                        held = (len(line) - len(line.lstrip(" \t")), head)
                        start = end
                        head, field = outer, False
                else:
                    head, field, listing = outer, False, None
            pos += len(line)
        sections.append(Section(start, len(text), *head, outer[0] if field else None))
        kept = tuple(s for s in sections if s.end > s.start)
        return Outline(
            kept,
            self._copied(text, spans),
            tuple(s.start for s in kept),
            self._organ_paragraphs(text),
        )

    def _organ_paragraphs(self, text: str) -> tuple[Section, ...]:
        """Paragraphs whose first line names another organ and that never name the own organ
        beyond doubt (`own_marks`): "Prone for the lung component. ... Ablation 60 W x 4 min."
        is the lung's, whatever its lung segment or lobe; so is a list item (its numbered,
        lettered or bulleted line and the lines set further in under it) that does."""
        if self._own_marks is None or self._others.search(text) is None:
            return ()  # most notes name no other organ: nothing to look for
        out: list[Section] = []
        rows = self._organ_rows(text) if "|" in text else []
        for para in _PARAGRAPH.finditer(text):
            if rows and any(r.start <= para.start() < r.end for r in rows):
                continue  # a table: its rows are read one by one
            start = para.start()
            first, _, rest = para.group(0).partition("\n")
            found = self._heading(first)
            if found is not None and not found[3] and rest.strip():
                # a heading alone on its line ("Procedure:"): the paragraph is what it heads
                start += len(first) + 1
                first = rest.lstrip().partition("\n")[0]
            organ = self._organ_of(first) if self._others.search(first) else None
            if organ is None or organ == self._own_organ:
                continue
            if self._own_marks.search(text[start : para.end()].lower()) is None:
                out.append(Section(start, para.end(), _opening(first), None, organ))
        # a list item that opens on another organ ("1. CT-guided cryoablation, LEFT kidney
        # lower pole mass 2.6 cm" over its lines "2 cryoprobes ... 10 min freeze") is that
        # organ's, though the paragraph holding it names the liver in another item
        for item in _LIST_ITEM.finditer(text):
            if any(p.start <= item.start() < p.end for p in out) or (
                rows and any(r.start <= item.start() < r.end for r in rows)
            ):
                continue
            first = item.group(2)
            organ = self._organ_of(first) if self._others.search(first) else None
            if organ is None or organ == self._own_organ:
                continue
            if self._own_marks.search(item.group(0).lower()) is None:
                out.append(Section(item.start(), item.end(), _opening(first), None, organ))
        out.sort(key=lambda s: s.start)
        paragraphs = list(out)
        for row in rows:
            if row.organ is not None and not any(p.start <= row.start < p.end for p in paragraphs):
                out.append(row)
        return tuple(sorted(out, key=lambda s: s.start))

    def _organ_rows(self, text: str) -> list[Section]:
        """The rows of a `|` table, each with the other organ one of its cells names alone
        ("A-24-0198 | 2024-05-29 | Kidney | Cryo | ..."): such a row is that organ's, unless
        it names the liver beyond doubt. A row is a line of three cells or more; a table's
        rows that name no other organ come back with no organ (read as usual)."""
        out: list[Section] = []
        pos = 0
        for line in text.splitlines(keepends=True):
            start, pos = pos, pos + len(line)
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3:
                continue
            organ = None
            for cell in cells:
                words = _WORD.findall(cell.lower())
                if 0 < len(words) <= 3 and self._others.search(cell):
                    found = self._organ_of(cell)
                    if found is not None and found != self._own_organ:
                        organ = found
                        break
            assert self._own_marks is not None
            if organ is not None and self._own_marks.search(line.lower()) is not None:
                organ = None
            out.append(Section(start, pos, cells[0][:60] or None, None, organ))
        return out

    def _heading(self, line: str) -> tuple[str | None, str | None, str | None, bool, bool] | None:
        """(heading, role, organ, field, listing) when the line opens a section, else None;
        `field`: a label with its value on the line ("Consent: obtained", "PMH: HTN"), whose
        section ends at the next label or blank line; `listing`: a label of ordinary case
        that opens a list ("Options discussed with the patient:"), whose section is its items."""
        body = line.strip()
        # a long line is prose, unless another organ's label opens it ("Kidney: small renal
        # mass; urology ... partial nephrectomy not recommended ...")
        long = len(body) > 200
        if not body or (long and self._others.search(body[:40]) is None):
            return None
        if _RULE.match(body):
            return None, None, None, False, False  # a rule line ("-----") closes the section above
        deco = _DECORATED.match(body)
        field = listing = False
        if deco and long:
            return None
        if deco:
            label = deco.group(1).strip(" :")
        else:
            body = _DATED_LEAD.sub("", _NUMBERED.sub("", body))
            m = _LABEL.match(body)
            bullet = _BULLET.match(body) if m is None else None
            if bullet is not None:
                # a bulleted organ label ("- KIDNEY: cryoablation of the renal mass") opens
                # that organ's field; other bulleted labels stay items of their section
                item = _LABEL.match(body[bullet.end() :])
                if item is not None and self._organ_of(item.group(1)) is not None:
                    body, m = body[bullet.end() :], item
            if m:
                label = m.group(1).strip()
            elif _capitals(_lead(body)):
                label = _lead(body)
            else:
                return None
            known = _norm(label) in self._known or _norm(_bare(label)) in self._known
            organ_field = m is not None and self._organ_of(label) is not None
            # a label of ordinary case ending its line heads a section only when it has a
            # role that rules what it heads ("Options discussed with the patient:")
            ruling = (
                m is not None
                and not body[m.end() :].strip()
                and self._role_of(label) in self._ruling_roles
            )
            if not (known or organ_field or _capitals(label) or ruling) or (
                long and not organ_field
            ):
                return None
            listing = ruling and not (known or organ_field or _capitals(label))
            field = m is not None and bool(body[m.end() :].strip())
        words = tuple(_WORD.findall(label.lower()))
        if not words or len(words) > 8:
            return None
        role = self._known.get(_norm(label)) or self._known.get(_norm(_bare(label)))
        if role is None:
            role = self._role_of(label)
        organ = self._organ_of(label)
        return label, role, None if organ == self._own_organ else organ, field, listing

    def _role_of(self, label: str) -> str | None:
        words = tuple(_WORD.findall(label.lower()))
        return next((r for r, ws in self._roles if any(has_phrase(words, w) for w in ws)), None)

    def _organ_of(self, label: str) -> str | None:
        words = tuple(_WORD.findall(label.lower()))
        return next((o for o, ws in self._organs if any(has_phrase(words, w) for w in ws)), None)

    def _copied(self, text: str, spans: tuple[tuple[int, int], ...]) -> tuple[Copied, ...]:
        out: list[Copied] = []
        # a sentence that disowns the text above it ("the procedure details above were
        # carried forward from my note of 10/14/2024"): all before its paragraph is copied,
        # and the sentence itself opens no copy of what follows it
        said: list[tuple[int, int]] = []
        for rx in self._disowns:
            for m in scan(rx, text, spans):
                said.append((m.start(), m.end()))
        if said:
            at = max(s for s, _ in said)
            blank = [b.end() for b in _BLANK_LINE.finditer(text, 0, at)]
            end = blank[-1] if blank else text.rfind("\n", 0, at) + 1
            if end > 0:
                date = _DATE.search(text, at, min(len(text), at + 200))
                reason = self._reason + (f" ({date.group(0)})" if date else "")
                # the sentence names the part it disowns by its heading ('The "Procedure
                # Details" paragraph above was carried forward from ...'): that part only,
                # from its heading to the next blank line
                part = _named_part(text, at, end)
                out.append(Copied(*(part or (0, end)), reason))
        for rx in self._opens:
            for m in scan(rx, text, spans):
                if any(c.start <= m.start() < c.end for c in out):
                    continue
                if any(s <= m.start() < e for s, e in said):
                    continue
                line_start = text.rfind("\n", 0, m.start()) + 1
                line_end = text.find("\n", m.end())
                line_end = len(text) if line_end < 0 else line_end + 1
                # "HPI (pulled forward from 1/5 clinic note): 3.1 cm HCC": the copy is that
                # line (and lines set further in), not what follows it
                inline = re.search(r":[ \t]*\S", text[m.end() : line_end]) is not None
                indent = len(text[line_start:line_end]) - len(text[line_start:line_end].lstrip())
                end = self._close(text, line_end, indent if inline else None)
                date = _DATE.search(text, m.start(), min(end, m.end() + 80))
                reason = self._reason + (f" ({date.group(0)})" if date else "")
                out.append(Copied(line_start, end, reason))
        return tuple(sorted(out, key=lambda c: c.start))

    def _close(self, text: str, after: int, inline: int | None = None) -> int:
        """Where a copied block ends: its closing line, else the end of its quoted lines
        (or of its paragraph when nothing is quoted; or, for a copy that opens on its own
        line's text, of the lines set further in than that line, `inline` its indent)."""
        closing = [m for rx in self._closes if (m := rx.search(text, after))]
        pos, quoted = after, False
        for line in text[after:].splitlines(keepends=True):
            if _QUOTED.match(line):
                quoted = True
            else:
                shallow = inline is not None and len(line) - len(line.lstrip()) <= inline
                if quoted or not line.strip() or shallow:
                    break
            pos += len(line)
        if closing:
            first = min(closing, key=lambda m: m.start())
            # a closing line further on than the quoted lines still ends the block there
            end = text.find("\n", first.end())
            return len(text) if end < 0 else end + 1
        return pos


def _empty_field(line: str, after: list[str]) -> bool:
    """A label of ordinary case left empty on a form ("  Alternatives Discussed:" followed by
    the form's next label, or by a heading set further left): it heads nothing."""
    body = line.strip()
    label = _LABEL.match(body)
    if label is None or body[label.end() :].strip() or _capitals(label.group(1)):
        return False
    indent = len(line) - len(line.lstrip())
    following = next((x for x in after if x.strip()), None)
    if following is None:
        return True
    inset = len(following) - len(following.lstrip())
    if inset < indent:
        return True
    nxt = after[0]
    return bool(nxt.strip()) and inset == indent and _LABEL.match(nxt.strip()) is not None


def _lead(line: str) -> str:
    """A heading line's words before a date, a time, a parenthesis or a wide gap
    ("ADDENDUM - IR PROCEDURE  02/17/2026 14:30  (Dr. A. Sandoval)", "ADDENDUM 17:05: ...")."""
    return re.split(r"\s*\(|\s{2,}|\s+\d{1,2}[/:]\d", line, maxsplit=1)[0].strip(" -:")


def _capitals(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 3 and all(c.isupper() for c in letters)


def _bare(label: str) -> str:
    """A heading without what follows it in parentheses ("PROCEDURE (TODAY)")."""
    return re.sub(r"\s*\(.*", "", label)


def _norm(h: str) -> str:
    return " ".join(_WORD.findall(h.lower()))


def has_phrase(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    """Whether `phrase` occurs in `words` as a run of whole words."""
    n = len(phrase)
    return n > 0 and any(words[i : i + n] == phrase for i in range(len(words) - n + 1))
