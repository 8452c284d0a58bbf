"""ConText over clinical sentences: is a mention affirmed, negated, hypothetical, historical...?

ConText (Harkema et al., 2009) reads a mention the way a coder does: cue words
before it ("no", "prior"), after it ("was not chosen", "is planned") or on
either side ("family history") change what it means, within the clause they
stand in. This is our own small implementation of that algorithm, measured
against medspaCy's in benchmarks/bench_text.py (same answers where its default
rules apply, post-negations such as "considered, but not chosen" added, and a
small fraction of the cost, which is why it is the engine).

Cost model: a text is lower-cased once; a target is looked for only in texts
containing one of its keywords, and its regex runs only on the sentences around
those keywords. Sentences are split and sectioned once per text, and the cues of
a sentence are found once (a dictionary walk over its words, not a regex per
cue), then shared by every element.

Linear in the text's length whatever its shape (a pasted table, an OCR'd fax, a
1 MB note without a full stop): a mention looks only at the cues within reach of
it (no cue reaches further than its window of words), found by bisection over
per-sentence word counts instead of a walk over every cue and token of the
sentence, and a sentence longer than `max_sentence_chars` is quoted and grouped
as pieces cut at clause boundaries. A cut changes no mention's reading: cues,
their reach and a target's `requires` are still worked out over the whole
sentence, so a run-on note reads as it did. The mentions of one piece share one
copy of it.
"""

from __future__ import annotations

import bisect
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from fhir_adapter.deadline import check_deadline
from fhir_adapter.text.document import Outline, scan, scan_first, stretches
from fhir_adapter.text.prefilter import opens_with_boundary, required_sets
from fhir_adapter.text.vocabulary import STATUSES, ModifierDef, TargetDef, TextConfig

_TOKEN = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s-]")
_MACRO = re.compile(r"\{([A-Za-z_][\w-]*)\}")
# Every branch starts with a character class, so the regex engine skips ahead to
# the next ".", "!", "?" or newline instead of trying each branch at each character.
_SENTENCE = re.compile(
    r"[.!?][ \t\r\f\v]*\n"
    # (a form's dot leader, "Guidance ........ CT", runs on to its value)
    r"|[.!?](?<!\.\.\.)[ \t]+(?=[A-Z0-9(\"'\[\u2022*-])"
    # a quotation that ends its sentence: 'said: "No enhancing nodularity." Complete ...'
    r"|[.!?][\"\u201d')\]][ \t]+(?=[A-Z0-9(\"'\[\u2022*-])"
    r"|[:;][ \t]*\n"
    r"|\n[ \t]*\n"
    # (not a table's ruler, "---+------+---", which joins its header to its rows)
    r"|\n(?=[ \t]*(?:[-*\u2022](?!-*[+|])|\d+[.)][ \t]|[A-Z][A-Za-z /&-]{1,40}:))"
    # the next field of a form whose labels run to their values on dot leaders
    r"|\n(?=[^\n.]{1,60}\.{3,}[ \t]*\S)"
    # the next field on the same line, set apart by a wide gap: "LESIONS PLANNED: 3      LESIONS
    # TREATED: 2      NOT TREATED: 1"
    r"|[ \t]{3,}(?=[A-Z][A-Za-z /&#-]{1,40}:[ \t]*\S)"
)
_SHARED_MAX = 200
_BLOCK = 65_536  # characters tokenized between two deadline checks
_SPACE = re.compile(r"\s")
_BREAK_CHARS = re.compile(r"[.!?:;\n]")
_NO_BREAK = ("dr", "vs", "approx", "e.g", "i.e", "fig", "no", "seg", "segs")
_RANK = {status: i for i, status in enumerate(STATUSES)}
_DIGITS = r"\d+(?:\.\d+)?"
_NUMBER_OR_WORD = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+|[\u00b0\u00b5][^\W\d_]*")
_WORD = re.compile(r"[^\W\d_]+|\d+")
_KEYWORD = re.compile(r"[^\W_]+")
_GENERIC_HEADER = re.compile(r"[ \t]*[A-Z][A-Za-z/&']*(?: [A-Za-z/&']+){0,3}[ \t]*:")


class VocabularyError(ValueError):
    """A vocabulary entry that cannot be compiled; the message names it, and `path` (below
    the pack's `text:`) finds its line in the file that wrote it."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


@dataclass(slots=True, unsafe_hash=True)  # never mutated: see fhir_adapter.findings
class Cue:
    """A modifier found in a sentence: its words' [start, end) and token range."""

    start: int
    end: int
    first: int
    last: int
    name: str
    category: str
    direction: str
    window: int
    only: frozenset[str]
    skip: frozenset[str]
    stops: frozenset[str]
    text: str

    def reaches(self, element: str) -> bool:
        return (not self.only or element in self.only) and element not in self.skip


@dataclass(slots=True)
class Sentence:
    """One sentence of a text: its span, its section, and (lazily) its tokens and cues."""

    start: int
    end: int
    section: str | None
    header: str | None
    rule: _SectionRule | None = None  # the section's rule, looked up once per sentence
    tokens: list[tuple[int, int, str]] | None = None
    starts: list[int] | None = None
    cues: list[Cue] | None = None
    terminators: list[Cue] | None = None
    layout: _Layout | None = None
    text: str | None = None  # the sentence's words, one copy shared by its mentions
    # a piece of an over-long sentence: the whole sentence, whose words, cues and reach
    # the piece's mentions are read with (the piece is what evidence quotes)
    whole: Sentence | None = None


@dataclass(slots=True)
class _Layout:
    """What classifying a mention asks of its sentence, as arrays to bisect: how many
    words (and content words, fillers aside) precede each token, the cues that can rule a
    mention out with the furthest token each reaches so far, and the terminators."""

    words: list[int]  # words[i]: word tokens among tokens[:i]
    content: list[int]  # the same, fillers not counted
    active: list[Cue]  # cues that can rule a mention out (not pseudo, not terminate)
    active_first: list[int]
    active_reach: list[int]  # the greatest `last` of active[: i + 1]
    terms: list[Cue]
    term_first: list[int]
    block_first: list[int]  # terminators that end a forward cue's reach (not a label colon)
    block_min_last: list[int]  # the least `last` of those from i on
    stops: dict[frozenset[str], list[int]] = field(default_factory=dict)

    def stop_positions(
        self, tokens: list[tuple[int, int, str]], stops: frozenset[str]
    ) -> list[int]:
        found = self.stops.get(stops)
        if found is None:
            found = self.stops[stops] = [i for i, t in enumerate(tokens) if t[2] in stops]
        return found


@dataclass(slots=True)
class Document:
    """A text prepared once: lower-cased, and split into sentences on first use."""

    text: str
    low: str
    sentences: list[Sentence] | None = None
    sentence_starts: list[int] = field(default_factory=list)
    elements: frozenset[str] | None = None
    keywords: frozenset[str] | None = None
    found: dict[str, list[Mention]] = field(default_factory=dict)
    # the scope reader's outline of the text and its rulings per element (text.index):
    # made once per text, so a short text shared by many cases is ruled once
    outline: Outline | None = None
    # an element's mentions as the scope rules left them, per date of service (a short text
    # is shared by cases of other dates)
    scoped: dict[tuple[str, str | None], list[Mention]] = field(default_factory=dict)
    dated: bool | None = None  # whether the text writes a date (known once it is scoped)
    # cues looked at: in classification, and against each pattern cue while finding them
    # (a deterministic measure of the work, which tests hold to linear growth)
    work: int = 0
    # the pattern cues the prefilter lets by for this text (the rest cannot match in it)
    cue_patterns: list[_CuePattern] | None = None
    # whether a number word of the vocabulary stands in the text as a word of its own
    # (known with its keywords; until then, as if it did)
    number_word: bool = True
    # the stretches worth scanning (document.stretches: the whole of an ordinary text), and
    # what they hold, joined, for the prefilter's substring tests
    spans: tuple[tuple[int, int], ...] = ()
    held: str = ""

    def __post_init__(self) -> None:
        self.spans = stretches(self.low)
        self.held = (
            self.low if len(self.spans) == 1 else "\n".join(self.low[a:b] for a, b in self.spans)
        )


@dataclass(slots=True, unsafe_hash=True)  # never mutated: see fhir_adapter.findings
class Mention:
    """A target found in a text, with the ConText status that decides whether it counts."""

    element: str
    sentence: str
    start: int
    end: int
    status: str
    cue: str | None
    section: str | None
    sentence_index: int = 0
    reason: str | None = None  # the ruling modifier's `reason`, for the evidence

    @property
    def affirmed(self) -> bool:
        return self.status == "affirmed"

    @property
    def words(self) -> str:
        return self.sentence[self.start : self.end]


_COUNT = r"(?<!\d\.)\d{1,2}(?!\d|\.\d)"  # a small whole number, not a decimal's digits
_NO_CUES = _Layout([0], [0], [], [], [], [], [], [], [])


class _CuePattern(NamedTuple):
    """A modifier's pattern: its regex, without a leading \\b when `bounded` (which is then
    checked at each match)."""

    regex: re.Pattern[str]
    bounded: bool
    name: str
    # the prefilter: a text holding no string of one of these sets holds no match
    required: tuple[frozenset[str], ...] = ()

    def finditer(self, low: str, start: int, end: int) -> Iterator[re.Match[str]]:
        """The matches the pattern with its \\b would give in low[start:end], empty ones aside."""
        pos = start
        while pos < end:
            for m in self.regex.finditer(low, pos, end):
                at = m.start()
                if m.end() == at:
                    continue
                if self.bounded and _is_word(low, at - 1) == _is_word(low, at):
                    pos = at + 1  # no boundary here: look again from the next character
                    break
                yield m
            else:
                return


def _is_word(text: str, i: int) -> bool:
    """Whether text[i] is a regex word character (\\w); False outside the text."""
    return 0 <= i < len(text) and (text[i].isalnum() or text[i] == "_")


class Part(NamedTuple):
    """One term or pattern of a target, as a regex for lower-cased text (compiled, with
    its prefilter, the first time a text could match it: see ContextEngine.compiled)."""

    source: str
    bounded: bool  # the leading word boundary is checked by the caller (see _lower_part)
    # every match opens with a number word standing as a word of its own ("two lesions",
    # not the "one" of "zone"): a text without one as a word cannot hold a match
    spelled: bool = False


@dataclass(frozen=True, slots=True)
class _Target:
    keywords: frozenset[str]
    source: str  # all terms and patterns as one regex (used when there are no keywords)
    requires: _Lexicon | None
    # each term/pattern, and per keyword the terms/patterns containing it: a term or
    # pattern runs only on the sentences that have one of its keywords
    parts: tuple[Part, ...] = ()
    by_keyword: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Lexicon:
    """A word list checked against a sentence's tokens (a set lookup, not a regex scan)."""

    words: frozenset[str]
    phrases: tuple[tuple[str, ...], ...]

    def found_in(self, tokens: list[tuple[int, int, str]]) -> bool:
        words = [t[2] for t in tokens]
        if not self.words.isdisjoint(words):
            return True
        # a machine export's key holds its words joined by "_" ("LESION_1_SIZE_CM=2.2")
        if any(not self.words.isdisjoint(w.split("_")) for w in words if "_" in w):
            return True
        return any(
            tuple(words[i : i + len(p)]) == p
            for p in self.phrases
            for i in range(len(words) - len(p) + 1)
            if words[i] == p[0]
        )


@dataclass(frozen=True, slots=True)
class _SectionRule:
    name: str
    status: str | None
    only: frozenset[str]
    skip: frozenset[str]
    # a header given with its value heads that sentence only ("Family history: father with
    # HCC." does not reach the prose after it on the line)
    sentence_only: bool = False


class ContextEngine:
    """A compiled vocabulary: finds an element's mentions in a text and classifies them."""

    def __init__(self, cfg: TextConfig) -> None:
        self.cfg = cfg
        self.numbers = {k.lower(): v for k, v in cfg.numbers.items()}
        # number words as a text's words show them (letters only), else None: not known
        self._number_words = (
            frozenset(self.numbers) if all(w.isalpha() for w in self.numbers) else None
        )
        self._unit_of: dict[str, str] = {}
        for kind in cfg.units.values():
            for canonical, spellings in kind.items():
                for s in [canonical, *spellings]:
                    self._unit_of[s.lower()] = canonical
        self._macros = self._build_macros()
        self._fillers = frozenset(f.lower() for f in cfg.fillers)
        self._reasons = {name: mod.reason for name, mod in cfg.modifiers.items() if mod.reason}
        self._stops: dict[str, frozenset[str]] = {}
        for name, mod in cfg.modifiers.items():
            words: set[str] = set()
            for stop in mod.stops:
                for item in cfg.lexicons.get(stop, [stop]):
                    # the head word of each entry ("target lesion" -> "lesion"; not "LR-5")
                    toks = [t.lower() for t in _TOKEN.findall(item)]
                    if toks and toks[-1].isalpha():
                        words.add(toks[-1])
            self._stops[name] = frozenset(words)
        # what every occurrence of a modifier's cue shares, worked out once here
        self._cue_settings: dict[
            str, tuple[str, str, int, frozenset[str], frozenset[str], frozenset[str]]
        ] = {
            name: (
                mod.category,
                "terminate" if mod.category == "terminate" else mod.direction,
                cfg.window if mod.window is None else mod.window,
                frozenset(mod.only),
                frozenset(mod.skip),
                self._stops.get(name, frozenset()),
            )
            for name, mod in cfg.modifiers.items()
        }
        # the furthest any cue reaches, in words: a mention looks at no cue further away
        self._reach = max((w for _, _, w, *_ in self._cue_settings.values()), default=0)
        self._cue_index: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        # several modifiers may share a cue ("previously"): all of them apply
        self._cue_patterns: list[_CuePattern] = []
        for name, mod in cfg.modifiers.items():
            self._index_modifier(name, mod)
        for lst in self._cue_index.values():
            lst.sort(key=lambda item: -len(item[0]))
        self._sections: dict[str, _SectionRule] = {}
        headers: list[str] = []
        for name, sec in cfg.sections.items():
            for h in sec.headers:
                self._sections[_norm_header(h)] = _SectionRule(
                    name,
                    sec.status,
                    frozenset(sec.only),
                    frozenset(sec.skip),
                    sec.reach == "sentence",
                )
                headers.append(h)
        alternation = "|".join(_term_regex(h, {}) for h in sorted(headers, key=len, reverse=True))
        self._compiled: dict[str, tuple[re.Pattern[str], tuple[frozenset[str], ...]]] = {}
        self._checked: dict[str, re.Pattern[str]] = {}  # patterns compiled to check them
        self._header = (
            re.compile(rf"[ \t]*(?:[-*#]+[ \t]*)?({alternation})[ \t]*(?::|\n|$)[ \t]*", re.I)
            if headers
            else None
        )
        # a header's value that reports a study already had: read as findings (scope.reported)
        reported = cfg.scope.reported
        self._reported = re.compile("|".join(f"(?:{p})" for p in reported)) if reported else None
        findings = cfg.sections.get("findings")
        self._findings_rule = (
            _SectionRule(
                "findings", findings.status, frozenset(findings.only), frozenset(findings.skip)
            )
            if findings is not None
            else None
        )
        self.targets: dict[str, _Target] = {
            name: self._compile_target(name, t, ("targets", name, "patterns"))
            for name, t in cfg.targets.items()
        }
        for name, group in cfg.patterns.items():
            if name in self.targets:
                raise VocabularyError(
                    f"text pattern {name!r}: also defined as a target", ("patterns", name)
                )
            self.targets[name] = self._compile_target(
                name, TargetDef(patterns=group), ("patterns", name)
            )
        self._keywords = sorted({k for t in self.targets.values() for k in t.keywords})
        self._by_keyword: dict[str, frozenset[str]] = {
            k: frozenset(n for n, t in self.targets.items() if k in t.keywords)
            for k in self._keywords
        }
        self._always = frozenset(n for n, t in self.targets.items() if not t.keywords)
        # word -> the keywords it contains; texts share most of their words, so after a
        # few cases the screen is a dictionary lookup per word.
        self._word_keywords: dict[str, frozenset[str]] = {}
        # short texts recur across cases (code texts, values): prepared and matched once
        self._shared: dict[str, Document] = {}

    def compiled(self, source: str) -> tuple[re.Pattern[str], tuple[frozenset[str], ...]]:
        """A target's regex and its prefilter, made on first use: compiling the whole
        vocabulary up front was most of the cost of evaluating one file. (A term is built
        by escaping; a pattern was compiled when it was checked, in the form that runs.)"""
        found = self._compiled.get(source)
        if found is None:
            regex = self._checked.pop(source, None) or re.compile(source)
            found = self._compiled[source] = (regex, required_sets(source))
        return found

    def compile_all(self) -> None:
        """Compile every target's terms now (they are compiled on first use otherwise): for
        a process about to fork workers, which then inherit them instead of each compiling
        its own."""
        for target in self.targets.values():
            for part in target.parts:
                self.compiled(part.source)

    def _check_regex(self, expanded: str, problem: str) -> None:
        """A pattern must compile in the form that runs (lower-cased, no leading boundary),
        and match some text: one that can match nothing at all would be a mention of
        nothing everywhere."""
        source = _lower_part(expanded).source
        try:
            self._checked[source] = rx = re.compile(source)
        except re.error as exc:
            raise VocabularyError(f"{problem}: {exc}") from None
        _check_not_empty(rx, problem)

    # -- compiling ----------------------------------------------------------
    def _build_macros(self) -> dict[str, str]:
        cfg = self.cfg
        words = sorted(self.numbers, key=len, reverse=True)
        word_alt = "|".join(re.escape(w) for w in words)
        macros = {
            "number": f"(?:{_DIGITS}|{word_alt})" if words else _DIGITS,
            # (not the digits after a decimal point: "C78.7")
            "count": rf"(?:{_COUNT}|{word_alt})" if words else _COUNT,
        }
        no_negation = r"(?!\b(?:not|no|never|without|cannot|incomplete\w*|failed|unable)\b)"
        # one character of the same clause: a period ends it, unless it is a decimal point
        # ("ablation zone 4.0 x 3.5 cm encompassing the tumor")
        clause_char = r"(?:[^.;]|(?<=\d)\.(?=\d))"
        macros["gap"] = rf"(?:{no_negation}{clause_char}){{0,60}}"
        macros["near"] = rf"(?:{no_negation}{clause_char}){{0,25}}"
        for kind, units in cfg.units.items():
            spellings = {s for canonical, sp in units.items() for s in [canonical, *sp]}
            alts = sorted(spellings, key=len, reverse=True)
            macros[kind] = "(?:" + "|".join(_unit_regex(s) for s in alts) + ")"
        for name, items in cfg.lexicons.items():
            if name in macros:
                raise VocabularyError(f"lexicon {name!r}: the name is taken by a unit kind")
            alts = sorted(items, key=len, reverse=True)
            body = "|".join(_literal(t.strip()) for t in alts)
            macros[name] = rf"(?<!\w)(?:{body})(?!\w)"
        return macros

    def _expand(self, source: str, where: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self._macros:
                raise VocabularyError(
                    f"{where}: unknown {{{name}}} (one of {sorted(self._macros)})"
                )
            return self._macros[name]

        return _MACRO.sub(sub, source)

    def _compile_target(
        self, name: str, t: TargetDef, patterns_at: tuple[str | int, ...]
    ) -> _Target:
        """`patterns_at`: where its patterns are written, for an error's line."""
        try:
            return self._compile_target_entries(name, t, patterns_at)
        except VocabularyError as exc:
            raise VocabularyError(str(exc), exc.path or patterns_at[:2]) from None

    def _compile_target_entries(
        self, name: str, t: TargetDef, patterns_at: tuple[str | int, ...]
    ) -> _Target:
        where = f"text target {name!r}"
        terms_at = (*patterns_at[:2], "terms")
        alternatives: list[str] = []
        own_keys: dict[int, tuple[str, ...]] = {}  # alternative -> its keywords, when not derived
        keywords = tuple(k.lower() for k in t.keywords)
        for i, k in enumerate(keywords):
            if not _KEYWORD.fullmatch(k):
                raise VocabularyError(
                    f"{where}: keyword {k!r} is not one word (letters or digits)",
                    (*patterns_at[:2], "keywords", i),
                )
        for i, term in enumerate(t.terms):
            with _at((*terms_at, i)):
                if not _MACRO.search(term) and not any(ch.isalnum() for ch in term):
                    raise VocabularyError(f"{where}: term {term!r} has no letter or digit")
                expanded = _term_regex(term, self._macros, f"{where}, term {term!r}")
                alternatives.append(expanded)
                if keywords:
                    _check_keyword(expanded, term, keywords, where)
        for i, pattern in enumerate(t.patterns):
            with _at((*patterns_at, i)):
                expanded = self._expand(pattern, f"{where}, pattern {pattern!r}")
                split = self._split_leading_number(pattern, where) if keywords else None
                # "{number} cm": digits and number words as two patterns, each of which the
                # regex engine can skip to (a digit; a word's first letter)
                for alt in split or (expanded,):
                    self._check_regex(alt, f"{where}: bad regular expression {pattern!r}")
                if keywords:
                    _check_keyword(expanded, pattern, keywords, where)
            if split is None:
                alternatives.append(expanded)
                continue
            digits, spelled = split
            alternatives.append(digits)
            own_keys[len(alternatives)] = tuple(self.numbers)
            alternatives.append(spelled)
        if not alternatives:
            raise VocabularyError(f"{where}: no terms or patterns")
        requires = None
        if t.requires is not None:
            names = [t.requires] if isinstance(t.requires, str) else t.requires
            for name in names:
                if name not in self.cfg.lexicons:
                    raise VocabularyError(
                        f"{where}: requires unknown lexicon {name!r}",
                        (*patterns_at[:2], "requires"),
                    )
            entries = [
                tuple(w.lower() for w in _TOKEN.findall(e))
                for name in names
                for e in self.cfg.lexicons[name]
            ]
            requires = _Lexicon(
                frozenset(e[0] for e in entries if len(e) == 1),
                tuple(e for e in entries if len(e) > 1),
            )
        source = _lower_pattern("|".join(f"(?:{a})" for a in alternatives))
        if not keywords:
            self.compiled(source)  # used on every text: compiled now, and checked now
        parts: list[Part] = []
        by_keyword: dict[str, list[int]] = {}
        if keywords:
            for i, alt in enumerate(alternatives):
                low = _source_text(alt)
                part = _lower_part(alt)
                if i in own_keys and part.bounded and self._number_words is not None:
                    # "\b(?:one|two|...)\b ...": the words alternative of a number pattern
                    part = part._replace(spelled=True)
                parts.append(part)
                for k in own_keys.get(i) or [k for k in keywords if k in low]:
                    by_keyword.setdefault(k, []).append(i)
        return _Target(
            frozenset(keywords) | frozenset(k for keys in own_keys.values() for k in keys),
            source,
            requires,
            tuple(parts),
            {k: tuple(v) for k, v in by_keyword.items()},
        )

    def _split_leading_number(self, pattern: str, where: str) -> tuple[str, str] | None:
        """A pattern opening with {number} or {count}, as a digits and a words pattern."""
        body = pattern[2:] if pattern.startswith("\\b") else pattern
        for macro, digits in (("{number}", _DIGITS), ("{count}", _COUNT)):
            if body.startswith(macro) and self.numbers:
                rest = body[len(macro) :]
                words = "|".join(re.escape(w) for w in sorted(self.numbers, key=len, reverse=True))
                return (
                    self._expand(rf"\b{digits}{rest}", where),
                    self._expand(rf"\b(?:{words})\b{rest}", where),
                )
        return None

    def _index_modifier(self, name: str, mod: ModifierDef) -> None:
        for i, cue in enumerate(mod.cues):
            words = tuple(t.lower() for t in _TOKEN.findall(cue))
            if not words:
                raise VocabularyError(
                    f"text modifier {name!r}: empty cue {cue!r}", ("modifiers", name, "cues", i)
                )
            self._cue_index.setdefault(words[0], []).append((words, name))
        for i, pattern in enumerate(mod.patterns):
            problem = f"text modifier {name!r}: bad regular expression {pattern!r}"
            with _at(("modifiers", name, "patterns", i)):
                source = _lower_pattern(self._expand(pattern, f"text modifier {name!r}"))
                try:
                    rx = re.compile(source)
                except re.error as exc:
                    raise VocabularyError(f"{problem}: {exc}") from None
                _check_not_empty(rx, problem)
            # a leading \b keeps the regex engine from skipping ahead to where a match can
            # start (10x slower): the rest runs alone, the boundary is checked at each match
            bounded = opens_with_boundary(source)
            rest = source[2:] if bounded else source
            self._cue_patterns.append(
                _CuePattern(re.compile(rest), bounded, name, required_sets(rest))
            )

    # -- documents ----------------------------------------------------------
    def document(self, text: str) -> Document:
        """A text prepared for matching; short texts (a code's text, a value) are shared."""
        if len(text) <= _SHARED_MAX:
            doc = self._shared.get(text)
            if doc is None:
                if len(self._shared) >= 20_000:
                    self._shared.clear()
                doc = self._shared[text] = self._document(text)
            return doc
        return self._document(text)

    def forget(self) -> None:
        """Drop the shared short texts (a benchmark measures a first pass over its cases)."""
        self._shared.clear()

    def _document(self, text: str) -> Document:
        low = text.lower()
        if len(low) != len(text):  # a few characters lower-case to two ("İ"): keep offsets
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        if _LONG_WORD.search(low) is not None:
            low = _LONG_WORD.sub(_blank, low)
        return Document(text, low)

    def sentences(self, doc: Document) -> list[Sentence]:
        """Split once: sentence spans, each with the section header in force."""
        if doc.sentences is not None:
            return doc.sentences
        text = doc.text
        out: list[Sentence] = []
        section: str | None = None
        header: str | None = None
        rule: _SectionRule | None = None
        # a header that heads its sentence only: its line's indent and its section, for the
        # lines set further in under it
        held: tuple[int, str | None, str | None, _SectionRule | None] | None = None
        pos = 0
        if len(text) < 60 and not _BREAK_CHARS.search(text):
            # a code's text, a short value: one sentence, no header
            start = len(text) - len(text.lstrip())
            end = len(text.rstrip())
            doc.sentences = [Sentence(start, end, None, None)] if start < end else []
            doc.sentence_starts = [s.start for s in doc.sentences]
            return doc.sentences
        bounds = []
        for m in _SENTENCE.finditer(text):
            cut = m.start()
            if text[cut] == "." and text[max(0, cut - 7) : cut].lower().endswith(_NO_BREAK):
                before = text[max(0, cut - 7) : cut].lower()
                if not before[-1:].isdigit() and _abbreviation(before):
                    continue  # "approx. 3 cm", "Dr. Lee"
            # the punctuation stays with its sentence
            bounds.append((cut + 1 if text[cut] in ".!?:;" else cut, m.end()))
        bounds.append((len(text), len(text)))
        inline = False  # the sentence is the next field on its line: no heading
        for cut_start, cut_end in bounds:
            check_deadline()
            start, end = pos, cut_start
            pos = cut_end
            after_gap, inline = (
                inline,
                (
                    0 < cut_start < len(text)
                    and text[cut_start] in " \t"
                    and text[cut_start - 1] not in ".!?:;"
                ),
            )
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if start >= end:
                continue
            # a header is a short line or ends in a colon near the start: test only those
            maybe = end - start <= 60 or ":" in text[start : start + 60]
            if after_gap:
                maybe = False
            hm = self._header.match(text, start, end) if maybe and self._header else None
            if hm is not None and self._is_header(hm, end):
                held = None
                outer = (section, header, rule)
                rule = self._sections.get(_norm_header(hm.group(1)))
                if (
                    rule is not None
                    and rule.status is not None
                    and self._reported is not None
                    and ":" in hm.group(0)
                    and self._reported.match(text[hm.end() : end].lower())
                ):
                    rule = self._findings_rule  # "Follow-up: CT 08/27/2024 - no residual"
                section = rule.name if rule else None
                header = hm.group(1)
                start = hm.end()
                if start >= end:
                    continue
                if rule is not None and rule.sentence_only:
                    # a header given with its value heads its sentence, or its line, and the
                    # lines set further in under it; what follows is read in the section
                    # around it ("Family history: father with HCC. RF energy was applied ...")
                    indent = _indent(text, text.rfind("\n", 0, hm.start()) + 1)
                    held = (indent, section, header, rule)
                    section, header, rule = outer
                    line_end = text.find("\n", start, end)
                    while line_end >= 0 and _indent(text, line_end + 1) > indent:
                        line_end = text.find("\n", line_end + 1, end)
                    if line_end < 0:
                        self._add_sentence(out, text, start, end, *held[1:])
                        continue
                    # the sentence runs on past its line ("FH: noncontributory" over "RF
                    # energy was applied at 150 W ..."): the rest is read in the section around
                    cut = line_end
                    while cut > start and text[cut - 1].isspace():
                        cut -= 1
                    self._add_sentence(out, text, start, cut, *held[1:])
                    held = None
                    start = line_end + 1
                    while start < end and text[start].isspace():
                        start += 1
            elif maybe and _GENERIC_HEADER.match(text, start, end):
                # a header we do not know ends the last one
                section, header, rule = None, None, None
                held = None
            elif held is not None:
                if _indent(text, text.rfind("\n", 0, start) + 1) > held[0]:
                    self._add_sentence(out, text, start, end, *held[1:])
                    continue
                held = None
            if start < end:
                self._add_sentence(out, text, start, end, section, header, rule)
        doc.sentences = out
        doc.sentence_starts = [s.start for s in out]
        return out

    def _add_sentence(
        self,
        out: list[Sentence],
        text: str,
        start: int,
        end: int,
        section: str | None,
        header: str | None,
        rule: _SectionRule | None,
    ) -> None:
        """A sentence, or an over-long one's pieces, each reading the whole sentence."""
        if end - start <= self.cfg.max_sentence_chars:
            out.append(Sentence(start, end, section, header, rule))
            return
        whole = Sentence(start, end, section, header, rule)
        for piece_start, piece_end in _pieces(text, start, end, self.cfg.max_sentence_chars):
            out.append(Sentence(piece_start, piece_end, section, header, rule, whole=whole))

    @staticmethod
    def _is_header(m: re.Match[str], end: int) -> bool:
        # "History: ..." or a header alone on its line; not "history of" inside a sentence.
        tail = m.group(0)
        return ":" in tail or m.end() >= end or "\n" in tail

    def tokens(self, doc: Document, s: Sentence) -> list[tuple[int, int, str]]:
        if s.tokens is None:
            low = doc.low
            s.tokens = []
            # a block at a time, the deadline checked between (a sentence may be a megabyte);
            # blocks end at a space, which no token holds
            a = s.start
            while a < s.end:
                check_deadline()
                space = _SPACE.search(doc.text, a + _BLOCK, s.end) if s.end - a > _BLOCK else None
                b = space.start() if space else s.end
                s.tokens += [
                    (m.start(), m.end(), low[m.start() : m.end()])
                    for m in _TOKEN.finditer(doc.text, a, b)
                ]
                a = b
            s.starts = [t[0] for t in s.tokens]
        return s.tokens

    def cues(self, doc: Document, s: Sentence) -> list[Cue]:
        """Every modifier in the sentence, longest cue first at each word (computed once)."""
        if s.cues is not None:
            return s.cues
        tokens = self.tokens(doc, s)
        words = [t[2] for t in tokens]
        found: list[Cue] = []
        i = 0
        while i < len(words):
            if not i & 4095:
                check_deadline()
            n = 0
            for cue_words, name in self._cue_index.get(words[i], ()):
                if n and len(cue_words) < n:
                    break  # sorted longest first: only equally long cues share the place
                if tuple(words[i : i + len(cue_words)]) == cue_words:
                    n = len(cue_words)
                    found.append(self._cue(doc, tokens, i, i + n - 1, name))
            i += n or 1
        # `found` stays in order and without overlaps (equal spans aside: one cue of two
        # modifiers), so its ends are in order too, and a pattern's match finds the cues
        # it overlaps by bisection
        ends = [c.end for c in found]
        # the pattern cues are prefiltered once per text, not per sentence: most texts
        # hold none of the words most of them need
        patterns = doc.cue_patterns
        if patterns is None:
            patterns = doc.cue_patterns = [
                p
                for p in self._cue_patterns
                if not (p.required and _cannot_match(p.required, doc.held))
            ]
        for pattern in patterns:
            name = pattern.name
            for m in pattern.finditer(doc.low, s.start, s.end):
                m_start, m_end = m.span()
                # overlapping cues: the longest wins, whether it is words or a pattern
                # ("abutting the gallbladder" keeps "gallbladder" from being another organ)
                lo = hi = bisect.bisect_right(ends, m_start)
                while hi < len(found) and found[hi].start < m_end:
                    hi += 1
                doc.work += hi - lo + 1
                if any(c.end - c.start >= m_end - m_start for c in found[lo:hi]):
                    continue
                first = bisect.bisect_left(s.starts or [], m_start)
                last = max(first, bisect.bisect_left(s.starts or [], m_end) - 1)
                found[lo:hi] = [self._cue(doc, tokens, first, last, name, m)]
                ends[lo:hi] = [m_end]
        s.cues = found
        s.terminators = [c for c in found if c.direction == "terminate"]
        return found

    def _cue(
        self,
        doc: Document,
        tokens: list[tuple[int, int, str]],
        first: int,
        last: int,
        name: str,
        m: re.Match[str] | None = None,
    ) -> Cue:
        start = m.start() if m else tokens[first][0]
        end = m.end() if m else tokens[last][1]
        return Cue(start, end, first, last, name, *self._cue_settings[name], doc.text[start:end])

    # -- mentions -----------------------------------------------------------
    def mentions(self, doc: Document, element: str) -> list[Mention]:
        """Every mention of `element` in the text, classified; keyword screen first."""
        if element not in self.candidates(doc):
            return []
        found = doc.found.get(element)
        if found is None:
            found = doc.found[element] = self._mentions(doc, element)
        return found

    def _mentions(self, doc: Document, element: str) -> list[Mention]:
        target = self.targets[element]
        low = doc.low
        if not target.keywords:
            # No keywords (a plain pattern group): one search of the text is the screen.
            regex, required = self.compiled(target.source)
            if _cannot_match(required, doc.held) or scan_first(regex, low, doc.spans) is None:
                return []
            parts = [Part(target.source, False)]
        else:
            wanted: set[int] = set()
            for k in target.keywords & (doc.keywords or frozenset()):
                wanted.update(target.by_keyword.get(k, ()))
            parts = [target.parts[i] for i in sorted(wanted)]
        sentences = self.sentences(doc)
        starts = doc.sentence_starts
        out: list[Mention] = []
        seen: set[tuple[int, int]] = set()
        checked: dict[int, bool] = {}
        classified = 0
        ready = self._compiled
        number_word = doc.number_word
        for source, bounded, spelled in parts:
            if spelled and not number_word:
                continue
            regex, required = ready.get(source) or self.compiled(source)
            if required and _cannot_match(required, doc.held):
                continue
            # one scan of the whole text per term/pattern whose keyword it has
            for m in scan(regex, low, doc.spans):
                span = (m.start(), m.end())
                idx = bisect.bisect_right(starts, span[0]) - 1
                if idx < 0 or span[0] == span[1] or span in seen:
                    continue
                s = sentences[idx]
                whole = s.whole or s
                if span[1] > whole.end:  # ran past the sentence: look inside it only
                    inner = regex.search(low, span[0], whole.end)
                    if inner is None:
                        continue
                    span = (inner.start(), inner.end())
                if (
                    bounded
                    and span[0] > 0
                    and (low[span[0] - 1].isalnum() or low[span[0] - 1] == "_")
                ):
                    continue  # the leading word boundary, checked here (see _lower_part)
                if target.requires is not None:
                    ok = checked.get(whole.start)
                    if ok is None:
                        tokens = self.tokens(doc, whole)
                        ok = checked[whole.start] = target.requires.found_in(tokens)
                    if not ok:
                        continue
                seen.add(span)
                classified += 1
                if not classified & 63:
                    check_deadline()  # a run-on note may hold a million words
                out.append(self._classify(doc, s, idx, element, span[0], span[1]))
        out.sort(key=lambda m: (m.sentence_index, m.start))
        return out

    def candidates(self, doc: Document) -> frozenset[str]:
        """The targets that may occur in a text: those with a keyword in one of its words."""
        if doc.elements is None:
            cache = self._word_keywords
            found: set[str] = set()
            words = set(_WORD.findall(doc.held))
            numbers = self._number_words
            doc.number_word = numbers is None or not numbers.isdisjoint(words)
            for word in words:
                hit = cache.get(word)
                if hit is None:
                    if len(cache) > 200_000:
                        cache.clear()
                    hit = cache[word] = frozenset(
                        k for k in self._keywords if (k == word if len(k) <= 2 else k in word)
                    )
                found |= hit
            doc.keywords = frozenset(found)
            elements = set(self._always)
            for k in found:
                elements |= self._by_keyword[k]
            doc.elements = frozenset(elements)
        return doc.elements

    def _classify(
        self, doc: Document, s: Sentence, idx: int, element: str, start: int, end: int
    ) -> Mention:
        whole = s.whole or s
        tokens = self.tokens(doc, whole)
        lay = whole.layout or self._layout(doc, whole)
        best: Cue | None = None
        best_key = (len(_RANK), 0)
        lo = hi = 0
        if lay.active:
            starts = whole.starts or []
            n = len(tokens)
            t_first = bisect.bisect_left(starts, start)
            t_last = max(t_first, bisect.bisect_left(starts, end) - 1)
            # Only the cues within reach: one before the mention ends at most `_reach` words
            # before it, one after it starts at most `_reach` content words after it (a cue
            # inside the mention is within both bounds).
            words, content = lay.words, lay.content
            near = bisect.bisect_left(words, words[min(t_first, n)] - self._reach)
            lo = bisect.bisect_left(lay.active_reach, near - 1)
            far = bisect.bisect_right(content, content[min(t_last + 1, n)] + self._reach) - 1
            hi = bisect.bisect_right(lay.active_first, far, lo)
            doc.work += hi - lo
        for c in lay.active[lo:hi]:
            if (c.only and element not in c.only) or element in c.skip:
                continue  # Cue.reaches, inlined: this runs per cue and mention
            ok = False
            if c.start < end and start < c.end:
                # A negation or time inside the mention is part of it ("not a surgical
                # candidate", "tumor board rejected resection", "unrelated to the prior
                # procedure"); a plan or doubt inside it still counts ("RF energy will
                # be applied at 150 W"), as does another organ ("two lung nodules", a
                # cue reaching both ways).
                ok = (c.category == "other" and c.direction == "bidirectional") or (
                    c.category in ("hypothetical", "uncertain")
                    and c.first > t_first
                    and c.last < t_last
                )
                # a cue that begins before the mention and runs into it precedes it
                # ("Prior RFA in 2019 ..., 12 min": the mention starts at "RFA")
                ok = ok or (c.start < start and c.direction in ("forward", "bidirectional"))
            elif c.end <= start and c.direction in ("forward", "bidirectional"):
                ok = self._forward(lay, c, t_first, n) and not self._stopped(
                    lay, tokens, c, c.last + 1, t_last + 1
                )
            elif c.start >= end and c.direction in ("backward", "bidirectional"):
                ok = self._backward(lay, c, t_last, n) and not self._stopped(
                    lay, tokens, c, t_first, c.first
                )
            if ok:
                # the strongest category wins; between equals, the nearest cue
                key = (_RANK[c.category], max(c.start - end, start - c.end, 0))
                if key < best_key:
                    best, best_key = c, key
        text = s.text
        if text is None:
            text = s.text = doc.text[s.start : s.end]
        if end > s.end:  # a match across the cut after a piece: quoted with its words
            text = doc.text[s.start : end]
        rel_start, rel_end = start - s.start, end - s.start
        if best is not None:
            return Mention(
                element,
                text,
                rel_start,
                rel_end,
                best.category,
                best.text,
                s.section,
                idx,
                self._reasons.get(best.name),
            )
        rule = s.rule
        if (
            rule is not None
            and s.header is not None
            and rule.status is not None
            and (not rule.only or element in rule.only)
            and element not in rule.skip
        ):
            cue = f"{s.header}:"
            return Mention(element, text, rel_start, rel_end, rule.status, cue, s.section, idx)
        return Mention(element, text, rel_start, rel_end, "affirmed", None, s.section, idx)

    def _layout(self, doc: Document, s: Sentence) -> _Layout:
        """The sentence's word counts, cues and terminators as arrays (built once)."""
        if s.layout is not None:
            return s.layout
        tokens = self.tokens(doc, s)
        cues = self.cues(doc, s)
        active = [c for c in cues if c.category not in ("pseudo", "terminate")]
        if not active:  # most sentences: nothing can rule a mention out, nothing to count
            s.layout = _NO_CUES
            return s.layout
        fillers = self._fillers
        words = [0]
        content = [0]
        w = k = 0
        for i, t in enumerate(tokens):
            if not i & 4095:
                check_deadline()
            if t[2][:1].isalnum():
                w += 1
                if t[2] not in fillers:
                    k += 1
            words.append(w)
            content.append(k)
        reach: list[int] = []
        furthest = -1
        for c in active:
            furthest = max(furthest, c.last)
            reach.append(furthest)
        terms = s.terminators or []
        # the colon of a short label opening the sentence ("Planned ablation: ...") passes
        # the label's cue on to what follows; other terminators end a forward cue's reach
        blocking = [
            t for t in terms if not (t.text == ":" and words[min(t.first, len(tokens))] <= 4)
        ]
        min_last: list[int] = []
        least = len(tokens) + 1
        for b in reversed(blocking):
            least = min(least, b.last)
            min_last.append(least)
        min_last.reverse()
        s.layout = _Layout(
            words,
            content,
            active,
            [c.first for c in active],
            reach,
            terms,
            [t.first for t in terms],
            [t.first for t in blocking],
            min_last,
        )
        return s.layout

    @staticmethod
    def _stopped(lay: _Layout, tokens: list[tuple[int, int, str]], c: Cue, a: int, b: int) -> bool:
        """A stop word between cue and mention (or in it) ends the cue's reach ("lung ... liver")."""
        if not c.stops:
            return False
        positions = lay.stop_positions(tokens, c.stops)
        i = bisect.bisect_left(positions, a)
        return i < len(positions) and positions[i] < b

    @staticmethod
    def _between(counts: list[int], a: int, b: int, n: int) -> int:
        """How many of the counted tokens lie in tokens[a:b]."""
        return counts[min(b, n)] - counts[min(a, n)] if b > a else 0

    def _forward(self, lay: _Layout, c: Cue, t_first: int, n: int) -> bool:
        # a terminator after the cue and before the mention ends the cue's reach
        i = bisect.bisect_right(lay.block_first, c.last)
        if i < len(lay.block_first) and lay.block_min_last[i] < t_first:
            return False
        return self._between(lay.words, c.last + 1, t_first, n) <= c.window

    def _backward(self, lay: _Layout, c: Cue, t_last: int, n: int) -> bool:
        terms = lay.terms
        between: Cue | None = None
        i = bisect.bisect_right(lay.term_first, t_last)
        while i < len(terms) and terms[i].first < c.first:
            if terms[i].last < c.first:
                if between is not None:
                    return False  # two terminators between: out of reach
                between = terms[i]
            i += 1
        # "X was considered, but not chosen": a cue opening a clause of its own
        # (only fillers before it) reaches back over one conjunction.
        if between is not None and self._between(lay.content, between.last + 1, c.first, n):
            return False
        return self._between(lay.content, t_last + 1, c.first, n) <= c.window

    # -- convenience --------------------------------------------------------
    def classify(self, text: str, element: str) -> list[Mention]:
        """Mentions of `element` in a standalone text (corpus and benchmark use)."""
        return self.mentions(self.document(text), element)

    def documents(self, text: str, element: str) -> bool:
        return any(m.affirmed for m in self.classify(text, element))

    def number(self, words: str) -> float | None:
        """The first number in `words`, as digits or a number word from the vocabulary."""
        for tok in _NUMBER_OR_WORD.findall(words.lower()):
            if tok[0].isdigit():
                return float(tok)
            if tok in self.numbers:
                return float(self.numbers[tok])
        return None

    def lengths_cm(self, words: str) -> Iterator[float]:
        """Each length in `words` converted to centimetres ("2.1 x 1.8 cm", "21mm", "two cm")."""
        factors = self.cfg.unit_factors
        values: list[float] = []
        for tok in _NUMBER_OR_WORD.findall(words.lower()):
            if tok[0].isdigit():
                values.append(float(tok))
            elif tok in self.numbers:
                values.append(float(self.numbers[tok]))
            else:
                canonical = self._unit_of.get(tok)
                if canonical is not None and canonical in factors:
                    for v in values:
                        yield v * factors[canonical]
                    values = []


# A "word" of more than 32 characters ("esophagogastroduodenoscopy" has 26: a pasted blob,
# a run of one letter) or a number of more than 16 digits says nothing, yet `\d+...` and
# `\w*...` patterns are tried from each of its positions to its end: quadratic in its
# length. The scanned text holds NULs in its place (offsets kept), and the cost of a text
# is linear in its length.
_LONG_WORD = re.compile(r"\w{33,}|\d{17,}")


def _blank(m: re.Match[str]) -> str:
    return "\0" * (m.end() - m.start())


def _cannot_match(required: tuple[frozenset[str], ...], low: str) -> bool:
    """The prefilter: for one of the sets of strings a regex cannot match without, none of
    them is in the text."""
    for strings in required:
        for r in strings:
            if r in low:
                break
        else:
            return True
    return False


# a few short texts: a pattern that matches none of them, or only some of them, is
# fine; one that matches an empty stretch of any of them matches nothing
_EMPTY_PROBES = ("", " ", "a", "1", "a b", "a. b")


def _check_not_empty(rx: re.Pattern[str], problem: str) -> None:
    for probe in _EMPTY_PROBES:
        for m in rx.finditer(probe):
            if m.start() == m.end():
                raise VocabularyError(f"{problem}: it matches the empty string")


@contextlib.contextmanager
def _at(path: tuple[str | int, ...]) -> Iterator[None]:
    """A VocabularyError raised inside, without a path of its own, is at `path`."""
    try:
        yield
    except VocabularyError as exc:
        if exc.path:
            raise
        raise VocabularyError(str(exc), path) from None


def _pieces(text: str, start: int, end: int, longest: int) -> Iterator[tuple[int, int]]:
    """A sentence's span, cut into pieces of at most `longest` characters when it is longer:
    each cut in the piece's second half, after the last semicolon, else full stop (or ! ?)
    before a space, else comma, else space (a clause boundary where there is one),
    whitespace trimmed."""
    while end - start > longest:
        lo, hi = start + longest // 2, start + longest
        cut = text.rfind(";", lo, hi)
        if cut < 0:
            cut = max(text.rfind(m + " ", lo, hi) for m in ".!?")
        if cut < 0:
            cut = text.rfind(",", lo, hi)
        if cut < 0:
            cut = max(text.rfind(c, lo, hi) for c in " \t\n")
        cut = cut + 1 if cut >= 0 else hi
        piece_end = cut
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        yield start, piece_end
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        yield start, end


def _indent(text: str, line_start: int) -> int:
    """How far the line starting at `line_start` is set in (spaces and tabs)."""
    end = line_start
    while end < len(text) and text[end] in " \t":
        end += 1
    return end - line_start


def _abbreviation(before: str) -> bool:
    word = re.split(r"[^a-z.]", before)[-1]
    return word in _NO_BREAK


def _norm_header(h: str) -> str:
    return " ".join(_TOKEN.findall(h.lower()))


def _unit_regex(spelling: str) -> str:
    body = re.escape(spelling).replace(r"\ ", r"\s*")
    return body + (r"(?!\w)" if spelling[-1:].isalnum() else "")


def _term_regex(term: str, macros: dict[str, str], where: str = "") -> str:
    """A whole-words regex for a term: spaces and hyphens interchangeable, {macros} expanded."""
    parts: list[str] = []
    pos = 0
    for m in _MACRO.finditer(term):
        parts.append(_literal(term[pos : m.start()]))
        name = m.group(1)
        if name not in macros:
            raise VocabularyError(f"{where}: unknown {{{name}}} (one of {sorted(macros)})")
        parts.append(macros[name])
        pos = m.end()
    parts.append(_literal(term[pos:]))
    body = "".join(parts)
    stripped = term.strip()
    head = r"(?<!\w)" if stripped[:1].isalnum() or stripped.startswith("{") else ""
    tail = r"(?!\w)" if stripped[-1:].isalnum() or stripped.endswith("}") else ""
    return head + body + tail


def _literal(text: str) -> str:
    out: list[str] = []
    for ch in text:
        if ch.isspace():
            if not out or out[-1] != r"[\s-]+":
                out.append(r"[\s-]+")
        elif ch == "-":
            out.append(r"[\s-]?")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _lower_pattern(source: str) -> str:
    """A regex for lower-cased text: literals lower-cased, escapes (\\W, \\S, \\D) kept."""
    out: list[str] = []
    escaped = False
    for ch in source:
        out.append(ch if escaped else ch.lower())
        escaped = not escaped and ch == "\\"
    return "".join(out)


_LEADING_BOUNDARY = (r"\b", r"(?<!\w)")


def _lower_part(expanded: str) -> Part:
    """A regex for lower-cased text, without re.I and without a leading word boundary.

    Python's regex engine skips quickly to places where a pattern can start only
    when the pattern begins with plain characters: ignore-case and a leading `\\b`
    both defeat that (measured 3-40x slower), so the text is lower-cased once and
    the leading boundary is checked by the caller (the bool).
    """
    src = _lower_pattern(expanded)
    bounded = False
    for lead in _LEADING_BOUNDARY:
        if src.startswith(lead):
            src, bounded = src[len(lead) :], True
            break
    return Part(src, bounded)


def _source_text(expanded: str) -> str:
    """A regex's source as the words it can match, roughly: for keyword checks."""
    return expanded.lower().replace("\\d", "0123456789").replace("\\", "")


def _check_keyword(expanded: str, source: str, keywords: tuple[str, ...], where: str) -> None:
    low = _source_text(expanded)
    if not any(k in low for k in keywords):
        raise VocabularyError(
            f"{where}: {source!r} contains none of the target's keywords {list(keywords)}; "
            "a mention is only looked for in text that has one"
        )
