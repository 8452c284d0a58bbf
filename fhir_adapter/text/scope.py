"""Which session, organ and act a mention belongs to: the scope rules of mappings/text/scope.yaml.

ConText decides what the words around a mention do to it within its sentence. A
whole note needs more: a block copied forward from the 2023 session, the energy
settings listed under PLAN for session 2, the size of the adrenal mass in a combined
liver and adrenal session, a generator set but never activated. A mention the
sentence reader affirmed is ruled out here, in this order, by the first rule that
holds: it stands in a copied block; in a section headed by another organ; in a
section whose role gives it a status (a plan); in a sentence with a scope cue; in a
note with a note-wide cue (no energy delivered at all). The ruling says why, for
the evidence ("copied from an earlier note (09/23/2025)", "plan for a later session").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from fhir_adapter.text.document import Outline, Outliner, Section, has_phrase, scan, scan_first
from fhir_adapter.text.engine import Document, Mention
from fhir_adapter.text.vocabulary import LaterStudies, ScopeCue, SectionDef, TextConfig


class ScopeError(ValueError):
    """A scope rule that cannot be compiled; the message names it."""


@dataclass(frozen=True, slots=True)
class _Cue:
    name: str
    rule: ScopeCue
    regex: re.Pattern[str]
    unless: re.Pattern[str] | None
    dated: tuple[re.Pattern[str], ...] = ()  # each {date} pattern, its date a named group
    anywhere: re.Pattern[str] | None = None  # a previous/before cue, unanchored
    spares: re.Pattern[str] | None = None  # the mentions a note-wide cue leaves alone
    followed_by: re.Pattern[str] | None = None  # what must follow a sentence cue's sentence

    def reaches(self, element: str) -> bool:
        return (not self.rule.only or element in self.rule.only) and element not in self.rule.skip


class Scope:
    """A pack's scope rules, compiled once: outlines a text and rules its mentions."""

    def __init__(self, cfg: TextConfig) -> None:
        sc = cfg.scope
        self._sections: dict[str, SectionDef] = dict(cfg.sections)
        known = {h: name for name, sec in cfg.sections.items() for h in sec.headers}
        if sc.own_organ is not None and sc.own_organ not in sc.organs:
            raise ScopeError(
                f"text.scope.own_organ: {sc.own_organ!r} is not one of text.scope.organs"
            )
        for role in sc.roles:
            if role not in cfg.sections:
                raise ScopeError(f"text.scope.roles: {role!r} is not one of text.sections")
        copied = sc.copied
        self._outliner = Outliner(
            known,
            sc.roles,
            sc.organs,
            _compile_all(copied.opens if copied else [], "text.scope.copied.opens"),
            _compile_all(copied.closes if copied else [], "text.scope.copied.closes"),
            copied.reason if copied else "",
            sc.own_organ,
            frozenset(name for name, sec in cfg.sections.items() if sec.status is not None),
            _compile("|".join(f"(?:{p})" for p in sc.own_marks), "text.scope.own_marks")
            if sc.own_marks
            else None,
            _compile("|".join(f"(?:{p})" for p in sc.reported), "text.scope.reported")
            if sc.reported
            else None,
            disowns=_compile_all(copied.disowns if copied else [], "text.scope.copied.disowns"),
            sentence_roles=frozenset(
                name for name, sec in cfg.sections.items() if sec.reach == "sentence"
            ),
        )
        self._copied_status = copied.status if copied else "historical"
        self._copied_skip = frozenset(copied.skip if copied else ())
        self._organ_elements = frozenset(sc.organ_elements)
        self._cues: list[_Cue] = []
        for name, rule in sc.cues.items():
            where = f"text.scope.cues.{name}"
            alternatives = [_phrase(c) for c in rule.cues] + list(rule.patterns)
            if not alternatives:
                raise ScopeError(f"{where}: no cues or patterns")
            unless = "|".join(f"(?:{p})" for p in rule.unless)
            spares = "|".join(f"(?:{p})" for p in rule.spares)
            if spares and rule.reach != "note":
                raise ScopeError(f"{where}: `spares` is for a cue of `reach: note`")
            followed = "|".join(f"(?:{p})" for p in rule.followed_by)
            if followed and rule.reach != "sentence":
                raise ScopeError(f"{where}: `followed_by` is for a cue of `reach: sentence`")
            source = "|".join(f"(?:{a})" for a in alternatives)
            if bool(rule.dated) != ("{date}" in source):
                raise ScopeError(f"{where}: `dated` and a {{date}} in its patterns go together")
            dated = tuple(
                _compile(a.replace("{date}", _DATE_GROUP, 1).replace("{date}", _DATE_ANY), where)
                for a in alternatives
                if "{date}" in a
            )
            source = source.replace("{date}", _DATE_ANY)
            # a `previous` cue found anywhere in a text; a `before` cue anywhere in a sentence
            anywhere = _compile(source, where) if rule.reach in ("previous", "before") else None
            if rule.reach == "before":
                source = f"(?:{source})\\s*$"
            elif rule.reach == "previous":
                source = f"^(?:[-*\u2022]\\s*)?(?:{source})"
            self._cues.append(
                _Cue(
                    name,
                    rule,
                    _compile(source, where),
                    _compile(unless, f"{where}.unless") if unless else None,
                    dated,
                    anywhere,
                    _compile(spares, f"{where}.spares") if spares else None,
                    _compile(followed, f"{where}.followed_by") if followed else None,
                )
            )
        self._sentence_cues = [c for c in self._cues if c.rule.reach in ("sentence", "before")]
        self._line_cues = [c for c in self._cues if c.rule.reach in ("line", "block")]
        for p in sc.latest_treatment:
            if "{date}" not in p:
                raise ScopeError("text.scope.latest_treatment: each pattern holds a {date}")
        self._latest = tuple(
            _compile(p.replace("{date}", _DATE_GROUP, 1), "text.scope.latest_treatment")
            for p in sc.latest_treatment
        )
        latest_unless = "|".join(f"(?:{p})" for p in sc.latest_treatment_unless)
        self._latest_unless = (
            _compile(latest_unless, "text.scope.latest_treatment_unless") if latest_unless else None
        )
        self._previous_cues = [c for c in self._cues if c.rule.reach == "previous"]
        # a cue of words is looked for only in a sentence holding its first word
        self._first_words = {
            c.name: frozenset(w.lower().split()[0] for w in c.rule.cues if w.split())
            for c in self._sentence_cues
        }
        struck = "|".join(f"(?:{p})" for p in sc.struck)
        self._struck = _compile(struck, "text.scope.struck") if struck else None
        corrections = "|".join(f"(?:{p})" for p in sc.corrections)
        self._corrections = _compile(corrections, "text.scope.corrections") if corrections else None
        labels = "|".join(f"(?:{p})" for p in sc.service_date)
        self._service_date = (
            _compile(rf"(?:{labels})\s*[:=(-]?\s*({_DATE_ANY})", "text.scope.service_date")
            if labels
            else None
        )
        entries = sc.dated_entries
        self._entries = entries
        self._entry_opens = self._entry_holds = None
        self._studies: LaterStudies | None = None
        self._study_opens: re.Pattern[str] | None = None
        if entries is not None:
            where = "text.scope.dated_entries"
            opens = entries.opens.replace("{date}", _DATE_GROUP, 1).replace("{date}", _DATE_ANY)
            self._entry_opens = _compile(rf"(?m)^[ \t]*(?:{opens})", f"{where}.opens")
            holds = "|".join(f"(?:{p})" for p in entries.holds)
            self._entry_holds = _compile(holds, f"{where}.holds")
        studies = entries.later_studies if entries is not None else None
        self._studies = studies
        if studies is not None:
            if "{date}" not in studies.opens:
                raise ScopeError("text.scope.dated_entries.later_studies.opens: it holds a {date}")
            # (the study's date is the first one its opening words hold, in either order)
            opens = studies.opens.replace("{date}", _DATE_ANY)
            self._study_opens = _compile(
                rf"(?m)^[ \t]*(?:{opens})", "text.scope.dated_entries.later_studies.opens"
            )
        self._note_cues = [c for c in self._cues if c.rule.reach == "note"]
        self._amending = [tuple(_TOKEN.findall(w.lower())) for w in sc.amending]
        self._same_value = sc.same_value

    def outline(self, text: str, spans: tuple[tuple[int, int], ...] | None = None) -> Outline:
        return self._outliner.outline(text, spans)

    def outline_of(self, doc: Document) -> Outline:
        """A text's outline, made once and kept with it (over the stretches its reader scans)."""
        if doc.outline is None:
            doc.outline = self.outline(doc.text, doc.spans)
        return doc.outline

    @staticmethod
    def dated(doc: Document) -> bool:
        """Whether a text writes a date at all: one that does not is ruled alike on every
        date of service."""
        return scan_first(_ANY_DATE, doc.low, doc.spans) is not None

    def rule(
        self,
        doc: Document,
        outline: Outline,
        element: str,
        mentions: list[Mention],
        service_date: str | None = None,
    ) -> list[Mention]:
        """The mentions, each affirmed one ruled out when a scope rule holds for it; a
        dated cue is judged against `service_date` (the case's, ISO), else the note's own."""
        sentences = doc.sentences or []
        note_wide = self._note_wide(doc, outline, element)
        retracted = outline.memo.get("retracted")
        if retracted is None:
            retracted = outline.memo["retracted"] = self._retracted(doc)
        assert isinstance(retracted, list)
        out: list[Mention] = []
        back = self._pointing_back(doc, outline, element)
        named = {m.sentence_index for m in mentions} if back else set()
        for m in mentions:
            if m.sentence_index < len(sentences):
                at = sentences[m.sentence_index].start + m.start
                if self._superseded(doc, outline, m, at) or (
                    m.status == "historical"
                    and (m.cue or "").endswith(":")
                    and self._in_session_history(doc, outline, element, at, service_date)
                ):
                    m = replace(m, status="affirmed", cue=None, section=None, reason=None)
                if m.affirmed:
                    ruling = (
                        _taken_back(retracted, m, at)
                        or self._ruling(doc, outline, element, m, at, service_date)
                        or (self._pointed_back(doc, back, m, named) if back else None)
                        or (
                            next((r for r, spares in note_wide if not _spared(spares, m)), None)
                            if note_wide
                            else None
                        )
                    )
                    if ruling is not None:
                        m = replace(m, status=ruling[0], cue=ruling[1], reason=None)
            out.append(m)
        same = self._same_value
        if same is not None and element in same.elements:
            return _same_value(out, same.reasons)
        if same is not None and element in same.denied:
            return _same_value(out, [], denied=frozenset(c.lower() for c in same.denied_by))
        return out

    def amends(self, doc: Document, outline: Outline, m: Mention) -> bool:
        """Whether a mention stands where the note corrects itself: a section headed as an
        addendum or a correction, or a sentence that takes back what was said."""
        sentences = doc.sentences or []
        if m.sentence_index < len(sentences):
            section = outline.section_at(sentences[m.sentence_index].start + m.start)
            # (a field's own label, or the heading of the section it stands in: "2. NUMBER OF
            # LESIONS: ONE lesion was treated" under "AMENDED IMPRESSION")
            for heading in (section.heading, section.outer) if section else ():
                words = tuple(_TOKEN.findall((heading or "").lower()))
                if any(has_phrase(words, w) for w in self._amending):
                    return True
        return self._corrections is not None and bool(self._corrections.search(m.sentence.lower()))

    def _retracted(self, doc: Document) -> list[tuple[int, int, str]]:
        """(start, end, quoted words) of each sentence that takes back what the note said,
        and (start, end, "") of each span of text the note marks as deleted."""
        out = (
            [(m.start(), m.end(), "") for m in scan(self._struck, doc.low, doc.spans)]
            if self._struck is not None
            else []
        )
        if self._corrections is None or scan_first(self._corrections, doc.low, doc.spans) is None:
            return out
        for s in doc.sentences or []:
            low = doc.low[s.start : s.end]
            if self._corrections.search(low):
                for q in _QUOTED.finditer(low):
                    words = _SPACES.sub(" ", q.group(1)).strip()
                    # (a short quotation counts when it is a count or a label: '"x3"', '"#2"')
                    if len(words) >= 3 or _SHORT_QUOTE.fullmatch(words):
                        out.append((s.start, s.end, words))
        return out

    def _superseded(self, doc: Document, outline: Outline, m: Mention, at: int) -> bool:
        """A mention ruled by a section header the sentence reader saw, when the note has a
        later heading it did not see ("INTRA-OPERATIVE RECORD" after "Plan: GETA")."""
        if m.affirmed or m.section is None or not (m.cue or "").endswith(":"):
            return False
        sec = self._sections.get(m.section)
        if sec is None or sec.status != m.status:
            return False
        header = re.escape((m.cue or "")[:-1].lower())
        heads = re.finditer(
            rf"(?:^|\n|[.;]\s)[ \t]*(?:[-*#]+[ \t]*)?{header}[ \t]*(?::|\n)", doc.low[:at]
        )
        seen = max((h.start() for h in heads), default=-1)
        section = outline.section_at(at)
        return (
            seen >= 0
            and section is not None
            and outline.section_at(seen) is not section
            and section.role != m.section
        )

    def _ruling(
        self,
        doc: Document,
        outline: Outline,
        element: str,
        m: Mention,
        at: int,
        service_date: str | None = None,
    ) -> tuple[str, str] | None:
        copied = outline.copied_at(at)
        if copied is not None and element not in self._copied_skip:
            return self._copied_status, copied.reason
        entries = outline.memo.get("entries")
        if entries is None:
            entries = outline.memo["entries"] = self._dated_entries(doc, outline)
        if entries:  # most texts hold no dated list
            entry = self._entry_ruling(doc, outline, element, at, service_date, entries)
            if entry is not None:
                return entry
        if self._studies is not None and element in self._studies.only:
            studies = outline.memo.get("studies")
            if studies is None:
                studies = outline.memo["studies"] = self._study_entries(doc, outline)
            if studies:  # most texts list no dated study
                study = self._study_ruling(doc, outline, at, service_date, studies)
                if study is not None:
                    return study
        if element in self._organ_elements:
            paragraph = outline.organ_paragraph_at(at)
            if paragraph is not None:
                return "other", f'{paragraph.organ}, not liver (paragraph "{paragraph.heading}")'
        section = outline.section_at(at)
        if section is not None:
            ruling = self._section_ruling(section, element, m)
            if ruling is not None and not (
                ruling[0] == "historical"
                and self._in_session_history(doc, outline, element, at, service_date)
            ):
                return ruling
        low = m.sentence.lower()
        # which cues a sentence holds is worked out once per sentence, for every element
        key = ("cues", m.sentence_index)
        present = outline.memo.get(key)
        if present is None:
            words = frozenset(_TOKEN.findall(low))
            present = outline.memo[key] = [
                c
                for c in self._sentence_cues
                if (c.rule.reach == "before" and c.anywhere is not None and c.anywhere.search(low))
                or (
                    (c.rule.patterns or not self._first_words[c.name].isdisjoint(words))
                    and c.regex.search(low)
                )
            ]
        assert isinstance(present, list)
        for cue in present:
            if cue.reaches(element):
                before = cue.rule.reach == "before"
                found = cue.regex.search(low[: m.start]) if before else cue.regex.search(low)
                if found is not None and cue.rule.dated:
                    found = self._dated(doc, outline, cue, low, service_date)
                if found is not None and cue.followed_by is not None:
                    end = (doc.sentences or [])[m.sentence_index].end
                    if cue.followed_by.match(doc.low, end) is None:
                        found = None
                if found is not None:
                    return cue.rule.status, f'{cue.rule.reason} ("{found.group(0)}")'
        lines = outline.memo.get("line")
        if lines is None:
            lines = outline.memo["line"] = [
                c for c in self._line_cues if scan_first(c.regex, doc.low, doc.spans)
            ]
        # most texts hold no dated line at all
        return self._line_ruling(doc, outline, element, m, lines, service_date) if lines else None

    def _line_ruling(
        self,
        doc: Document,
        outline: Outline,
        element: str,
        m: Mention,
        lines: object,
        service_date: str | None = None,
    ) -> tuple[str, str] | None:
        """A line cue found on the line (or table row) that holds the mention's sentence; a
        block cue on that line or the lines above it in its paragraph."""
        assert isinstance(lines, list)
        cues = [c for c in lines if c.reaches(element)]
        s = (doc.sentences or [])[m.sentence_index]
        end = doc.low.find("\n", s.end)
        end = end if end >= 0 else len(doc.low)
        start = doc.low.rfind("\n", 0, s.start) + 1
        line = doc.low[start:end]
        block = doc.low[_paragraph_start(doc.low, start) : end]
        for cue in cues:
            low = block if cue.rule.reach == "block" else line
            found = cue.regex.search(low)
            if found is not None and cue.rule.dated:
                found = self._dated(doc, outline, cue, low, service_date)
            if found is not None:
                return cue.rule.status, f'{cue.rule.reason} ("{found.group(0)}")'
        return None

    def _pointing_back(self, doc: Document, outline: Outline, element: str) -> list[_Cue]:
        """The pointing-back cues that reach the element and are found in the text at all
        (most notes hold none: their mentions are not looked at one by one)."""
        found = outline.memo.get("back")
        if found is None:
            found = outline.memo["back"] = [
                c
                for c in self._previous_cues
                if c.anywhere and scan_first(c.anywhere, doc.low, doc.spans)
            ]
        assert isinstance(found, list)
        return [c for c in found if c.reaches(element)]

    @staticmethod
    def _pointed_back(
        doc: Document, cues: list[_Cue], m: Mention, named: set[int]
    ) -> tuple[str, str] | None:
        """A ruling from one of the next few sentences that opens by pointing back at the
        lesion last named ("This lesion was NOT ablated today"), none of them naming another."""
        sentences = doc.sentences or []
        for i in range(m.sentence_index + 1, min(m.sentence_index + 1 + _BACK, len(sentences))):
            if i in named:
                return None  # the sentence names a lesion of its own: it points at that one
            low = doc.low[sentences[i].start : sentences[i].end]
            for cue in cues:
                found = cue.regex.match(low)
                if found is not None:
                    return cue.rule.status, f'{cue.rule.reason} ("{found.group(0)}")'
        return None

    def _dated(
        self,
        doc: Document,
        outline: Outline,
        cue: _Cue,
        low: str,
        service_date: str | None = None,
    ) -> re.Match[str] | None:
        """A dated cue's match whose date is before the date of service (after it, for a
        cue `dated: after`), if any."""
        today = self._today(doc, outline, service_date)
        if today is None:
            return None
        after = cue.rule.dated == "after"
        dayfirst = self._dayfirst(doc, outline)
        for regex in cue.dated:
            for found in regex.finditer(low):
                when = _date(found.group("date") or "", dayfirst)
                if when is not None and (_before(today, when) if after else _before(when, today)):
                    return found
        return None

    def _today(self, doc: Document, outline: Outline, service_date: str | None) -> _Day | None:
        """The date of service: the case's (ISO) when it has one, else the note's own (a POD1
        note is dated the day after the session it tells of)."""
        if service_date:
            return _date(service_date[:10])
        if "today" not in outline.memo:
            label = (
                scan_first(self._service_date, doc.low, doc.spans) if self._service_date else None
            )
            dayfirst = self._dayfirst(doc, outline)
            outline.memo["today"] = (
                _date(label.group(1), dayfirst) if label else self._latest_treatment(doc, dayfirst)
            )
        today = outline.memo["today"]
        return today if isinstance(today, tuple) else None

    @staticmethod
    def _dayfirst(doc: Document, outline: Outline) -> bool:
        """Whether the note writes its dates day first: one that writes one date so
        ("23/09/2025") writes them all so."""
        dayfirst = outline.memo.get("dayfirst")
        if dayfirst is None:
            dayfirst = outline.memo["dayfirst"] = (
                scan_first(_DAY_FIRST, doc.low, doc.spans) is not None
            )
        return dayfirst is True

    def _in_session_history(
        self, doc: Document, outline: Outline, element: str, at: int, service_date: str | None
    ) -> bool:
        """Whether a history's heading should not rule out a mention: it stands in the entry
        of the session billed, or it is a size in the study that entry's list dates within
        two months before it ("- 02/20/2024 CT: Residual seg IVa 1.3 cm and seg VI 0.9 cm"
        over "- 03/14/2024: Percutaneous RFA of both residual lesions")."""
        if self._session_entry(doc, outline, at, service_date):
            return True
        return element == "tumor-size" and self._lead_up_study(doc, outline, at, service_date)

    def _lead_up_study(
        self, doc: Document, outline: Outline, at: int, service_date: str | None
    ) -> bool:
        entries = outline.memo.get("entries")
        if entries is None:
            entries = outline.memo["entries"] = self._dated_entries(doc, outline)
        assert isinstance(entries, list)
        today = self._today(doc, outline, service_date) if entries else None
        if today is None or None in today:
            return False
        if not any(when == today and start > at for start, _, when, _ in entries):
            return False
        listed = outline.memo.get("listed")
        if listed is None:
            listed = outline.memo["listed"] = self._list_entries(doc, outline)
        assert isinstance(listed, list)
        for start, end, when in listed:
            if start <= at < end:
                months = (today[0] - when[0]) * 12 + (today[1] or 0) - (when[1] or 0)
                return when[1] is not None and _before(when, today) and months <= 2
        return False

    def _list_entries(self, doc: Document, outline: Outline) -> list[tuple[int, int, _Day]]:
        """(start, end, date) of each entry of a dated list, whatever it tells of."""
        dayfirst = self._dayfirst(doc, outline)
        out = []
        for m in scan(_LIST_DATED, doc.low, doc.spans):
            when = _date(m.group("date"), dayfirst)
            if when is not None:
                out.append((m.start(), _entry_end(doc.low, m.start(), m.end()), when))
        return out

    def _session_entry(
        self, doc: Document, outline: Outline, at: int, service_date: str | None
    ) -> bool:
        """Whether a place stands in an entry of a dated list that tells of a treatment on
        the date of service (an oncology note's history, "- 03/14/2024: Percutaneous RFA of
        both residual lesions (seg IVa and seg VI)", for the session of 03/14/2024): that
        entry is the session billed, not the history its heading makes it."""
        entries = outline.memo.get("entries")
        if entries is None:
            entries = outline.memo["entries"] = self._dated_entries(doc, outline)
        assert isinstance(entries, list)
        for start, end, when, _ in entries:
            if start <= at < end:
                today = self._today(doc, outline, service_date)
                return today is not None and None not in when and when == today
        return False

    def _entry_ruling(
        self,
        doc: Document,
        outline: Outline,
        element: str,
        at: int,
        service_date: str | None,
        found: object,
    ) -> tuple[str, str] | None:
        """The ruling of a dated list's entry that holds the mention and tells of a
        treatment on another day than the date of service."""
        entries = self._entries
        if entries is None or element in entries.skip:
            return None
        assert isinstance(found, list)
        for start, end, when, written in found:
            if start <= at < end:
                today = self._today(doc, outline, service_date)
                if today is None:
                    return None
                if _before(when, today):
                    return "historical", f"{entries.before} ({written})"
                if _before(today, when):
                    return "hypothetical", f"{entries.after} ({written})"
                return None
        return None

    def _study_ruling(
        self,
        doc: Document,
        outline: Outline,
        at: int,
        service_date: str | None,
        found: object,
    ) -> tuple[str, str] | None:
        """The ruling of a dated list's entry of an imaging study after the date of service
        that holds the mention."""
        assert isinstance(found, list) and self._studies is not None
        for start, end, when, written in found:
            if start <= at < end:
                today = self._today(doc, outline, service_date)
                if today is not None and _before(today, when):
                    return "other", f"{self._studies.reason} ({written})"
                return None
        return None

    def _study_entries(self, doc: Document, outline: Outline) -> list[tuple[int, int, _Day, str]]:
        """(start, end, date, the date as written) of each entry of a dated list that
        reports an imaging study: its opening line and the lines set further in under it."""
        if self._study_opens is None:
            return []
        dayfirst = self._dayfirst(doc, outline)
        out = []
        for m in scan(self._study_opens, doc.low, doc.spans):
            written = _ANY_DATE.search(doc.low, m.start(), m.end())
            when = _date(written.group(0), dayfirst) if written else None
            if written is not None and when is not None:
                end = _entry_end(doc.low, m.start(), m.end())
                out.append((m.start(), end, when, doc.text[written.start() : written.end()]))
        return out

    def _dated_entries(self, doc: Document, outline: Outline) -> list[tuple[int, int, _Day, str]]:
        """(start, end, date, the date as written) of each entry of a dated list that tells
        of a treatment: its opening line and the lines set further in under it."""
        opens, holds = self._entry_opens, self._entry_holds
        if opens is None or holds is None:
            return []
        dayfirst = self._dayfirst(doc, outline)
        low, out = doc.low, []
        for m in scan(opens, low, doc.spans):
            when = _date(m.group("date"), dayfirst)
            if when is None:
                continue
            start = m.start()
            end = _entry_end(low, start, m.end())
            if holds.search(low, start, end):
                out.append((start, end, when, doc.text[m.start("date") : m.end("date")]))
        return out

    def _latest_treatment(self, doc: Document, dayfirst: bool) -> _Day | None:
        """The latest date of a treatment the note dates (not a planned one), if it dates two
        or more: the session a record of several sessions bills."""
        dates = []
        for regex in self._latest:
            for found in scan(regex, doc.low, doc.spans):
                start = doc.low.rfind("\n", 0, found.start()) + 1
                end = doc.low.find("\n", found.end())
                line = doc.low[start : end if end >= 0 else len(doc.low)]
                if self._latest_unless is not None and self._latest_unless.search(line):
                    continue
                when = _date(found.group("date") or "", dayfirst)
                if when is not None and when[1] is not None:
                    dates.append(when)
        if len(set(dates)) < 2:
            return None
        return max(dates, key=lambda d: (d[0], d[1] or 0, d[2] or 0))

    def _section_ruling(self, section: Section, element: str, m: Mention) -> tuple[str, str] | None:
        if section.organ is not None and element in self._organ_elements:
            return "other", f'{section.organ}, not liver (under "{section.heading}")'
        sec = self._sections.get(section.role or "")
        if (
            sec is not None
            and sec.status is not None
            and m.section != section.role
            and (not sec.only or element in sec.only)
            and element not in sec.skip
        ):
            return sec.status, f"{section.heading}:"
        return None

    def _note_wide(
        self, doc: Document, outline: Outline, element: str
    ) -> list[tuple[tuple[str, str], re.Pattern[str] | None]]:
        """Each note-wide cue found in the text that reaches the element: its ruling, and the
        mentions it spares (the cues are looked for once per text; most texts hold none)."""
        found = outline.memo.get("note")
        if found is None:
            found = outline.memo["note"] = [
                (cue, hit)
                for cue in self._note_cues
                for hit in [scan_first(cue.regex, doc.low, doc.spans)]
                if hit is not None
                and (cue.unless is None or scan_first(cue.unless, doc.low, doc.spans) is None)
            ]
        assert isinstance(found, list)
        return [
            (
                (cue.rule.status, f'{cue.rule.reason} ("{doc.text[hit.start() : hit.end()]}")'),
                cue.spares,
            )
            for cue, hit in found
            if cue.reaches(element)
        ]


def _spared(spares: re.Pattern[str] | None, m: Mention) -> bool:
    """Whether a note-wide cue leaves this mention alone (its words carry a value)."""
    return spares is not None and spares.search(m.words.lower()) is not None


_BACK = 3  # how many sentences on a pointing-back cue ("This lesion ...") may stand

# (a quotation may wrap onto the next line, not past a blank one)
_QUOTED = re.compile(
    r"[\"\u201c\u201d]((?:[^\"\u201c\u201d\n]|\n(?![ \t]*\n)){2,80})[\"\u201c\u201d]"
)
_SPACES = re.compile(r"\s+")
_SHORT_QUOTE = re.compile(r"[a-z#]\d|\d[a-z]")
_TOKEN = re.compile(r"[\w/-]+")


def _paragraph_start(text: str, line_start: int) -> int:
    """Where the paragraph holding the line that starts at `line_start` begins: after the
    nearest blank (or whitespace-only) line above it, else at the text's start."""
    pos = line_start
    while pos > 0:
        above = text.rfind("\n", 0, pos - 1) + 1
        if not text[above : pos - 1].strip():
            return pos
        pos = above
    return 0


def _same_value(
    mentions: list[Mention], reasons: list[str], denied: frozenset[str] = frozenset()
) -> list[Mention]:
    """The mentions, each affirmed one ruled out when the same value ("2.8 cm") stands
    elsewhere in the note ruled out as another lesion's (one of `reasons`), or, with
    `denied`, denied outright ("No cryoablation was performed")."""
    ruled: dict[str, str] = {}
    for m in mentions:
        why = m.reason or m.cue or ""
        if denied and m.status == "negated" and why.lower() in denied:
            ruled.setdefault(_SPACES.sub(" ", m.words.lower()), f'denied in the note ("{why}")')
        elif not m.affirmed:
            reason = next((r for r in reasons if why.startswith(r)), None)
            if reason is not None:
                ruled.setdefault(_SPACES.sub(" ", m.words.lower()), reason)
    if not ruled:  # most notes rule no lesion out
        return mentions
    out = []
    for m in mentions:
        value = _SPACES.sub(" ", m.words.lower())
        if m.affirmed and value in ruled:
            status = "negated" if denied else "other"
            cue = f'{ruled[value]} (the same "{value}" elsewhere)'
            m = replace(m, status=status, cue=cue, reason=None)
        out.append(m)
    return out


def _entry_end(low: str, start: int, opened: int) -> int:
    """Where an entry of a list ends: its opening line (from `start`, opened up to
    `opened`) and the lines set further in under it."""
    indent = len(low[start:opened]) - len(low[start:opened].lstrip(" \t"))
    end = low.find("\n", opened)
    end = len(low) if end < 0 else end
    while end < len(low):  # the lines under it, set further in
        nxt = low.find("\n", end + 1)
        nxt = len(low) if nxt < 0 else nxt
        line = low[end + 1 : nxt]
        if not line.strip() or len(line) - len(line.lstrip(" \t")) <= indent:
            break
        end = nxt
    return end


def _taken_back(
    retracted: list[tuple[int, int, str]], m: Mention, at: int
) -> tuple[str, str] | None:
    """Ruled out when a later sentence takes back the words it stands in (or it is that
    sentence, quoting what was wrong), or when it stands in text the note struck through, or
    takes in some ("Energy: [deleted: 200 W for 12 minutes]")."""
    if not retracted:  # most notes take nothing back
        return None
    sentence = _SPACES.sub(" ", m.sentence.lower())
    mention = _SPACES.sub(" ", m.words.lower())
    for start, end, words in retracted:
        if not words:  # a struck span
            if at < end and start < at + m.end - m.start:
                return "negated", "struck through in the note (deleted text)"
            continue
        if (start <= at < end and mention in words) or (at < start and words in sentence):
            return "negated", f'corrected later in the note ("{words}" was an error)'
    return None


_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DATE_ANY = (
    r"(?:\d{1,2}/\d{1,2}/(?:19|20)?\d\d|\d{1,2}/(?:19|20)\d\d|(?:19|20)\d\d-\d\d-\d\d"
    # "January 12, 2026", "12 Jan 2026", "JUN 12, 2025", "March 2025"
    rf"|\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d\d|\d{{1,2}}\s+{_MONTH},?\s+(?:19|20)\d\d"
    rf"|\b{_MONTH},?\s+(?:19|20)\d\d"
    r"|(?:19|20)\d\d)\b"
)
_DATE_GROUP = f"(?P<date>{_DATE_ANY})"
_ANY_DATE = re.compile(_DATE_ANY)
# a list's line that opens on its date after a bullet or a number: "- 02/20/2024 CT C/A/P: ..."
_LIST_DATED = re.compile(rf"(?m)^[ \t]*(?:\(?\d{{1,2}}[.)][ \t]*|[-*\u2022][ \t]*){_DATE_GROUP}")
_NAMED_MONTH = re.compile(r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b")


_DAY_FIRST = re.compile(r"\b(?:1[3-9]|2\d|3[01])/(?:0?[1-9]|1[0-2])/(?:19|20)?\d\d\b")


_Day = tuple[int, int | None, int | None]


def _date(text: str, dayfirst: bool = False) -> _Day | None:
    """(year, month, day) of "04/14/2026", "11/2024", "2026-04-14" or "2019"; day first
    ("23/09/2025") when the note writes its dates so."""
    named = _NAMED_MONTH.search(text.lower())
    if named is not None:
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        year = next((n for n in numbers if n >= 1900), None)
        day = next((n for n in numbers if n < 32), None)
        month = _MONTHS[named.group(1)]
        return (year, month, day) if year is not None else None
    parts = re.split(r"[/-]", text.strip())
    try:
        if len(parts) == 3 and len(parts[0]) == 4:
            return int(parts[0]), int(parts[1]), int(parts[2])
        if len(parts) == 3:
            year = int(parts[2])
            first, second = int(parts[0]), int(parts[1])
            month, day = (second, first) if dayfirst or first > 12 else (first, second)
            return (year + 2000 if year < 100 else year), month, day
        if len(parts) == 2:
            return int(parts[1]), int(parts[0]), None
        if len(parts) == 1 and len(parts[0]) == 4:
            return int(parts[0]), None, None
    except ValueError:
        return None
    return None


def _before(a: _Day, b: _Day) -> bool:
    """Whether date `a` is before `b`, at the precision both have."""
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            return False
        if x != y:
            return x < y
    return False


def _phrase(cue: str) -> str:
    words = [re.escape(w) for w in cue.lower().split()]
    body = r"[\s-]+".join(words)
    head = r"(?<!\w)" if cue[:1].isalnum() else ""
    tail = r"(?!\w)" if cue[-1:].isalnum() else ""
    return head + body + tail


def _compile(source: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(source)
    except re.error as exc:
        raise ScopeError(f"{where}: bad regular expression: {exc}") from None


def _compile_all(patterns: list[str], where: str) -> list[str]:
    for p in patterns:
        _compile(p, where)
    return patterns
