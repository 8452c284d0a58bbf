"""The text vocabulary of a rule pack (mappings/text/*.yaml): targets, ConText modifiers, sections.

It is data a coder maintains: what words document an element (targets), which
words around them rule a mention out and in which direction (modifiers), which
note headers change how a mention reads (sections), and the number words and
units every pattern shares. This module holds its shape and how a pack pulls
the files in; `context_engine` compiles and applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fhir_adapter.files import read_text
from fhir_adapter.yaml_errors import located, shape_problem, yaml_error_line

Status = Literal["negated", "hypothetical", "historical", "uncertain", "other"]
STATUSES: tuple[str, ...] = ("negated", "other", "historical", "hypothetical", "uncertain")


class _Strict(BaseModel):
    # strict: a string is not a list, a number not a string; a mis-indented line that
    # turns a list into one string is a load error, not a vocabulary that never matches
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# A word, term, cue or pattern: not blank. A list of them, when written, has one at least
# (an empty `terms: []` is a list whose items went astray); left out, it is empty.
Entry = Annotated[str, StringConstraints(pattern=r"\S")]
Entries = Annotated[list[Entry], Field(min_length=1)]


class TargetDef(_Strict):
    """What documents one element: whole-word terms and short regexes (with {macros})."""

    description: str = ""
    keywords: Entries = []
    terms: Entries = []
    patterns: Entries = []
    # a lexicon (or several, any of which will do) one of whose words the sentence must hold
    requires: str | Entries | None = None


class ModifierDef(_Strict):
    """Cue words that change what a nearby mention means, and which way they reach."""

    category: Status | Literal["pseudo", "terminate"]
    direction: Literal["forward", "backward", "bidirectional"] = "forward"
    cues: Entries = []
    patterns: Entries = []
    window: int | None = Field(default=None, ge=0, le=40)
    only: Entries = []
    skip: Entries = []
    stops: Entries = []
    # what the evidence says a mention it rules out is ("a lesion not treated in this
    # session"), before the cue's words; without it, the cue's words alone
    reason: str | None = Field(default=None, min_length=1)


class SectionDef(_Strict):
    """Note headers ("Past surgical history:") and the status they give what follows."""

    headers: Entries
    status: Status | None = None
    only: Entries = []
    skip: Entries = []
    # `sentence`: a header given with its value ("Family history: father with HCC.") heads
    # that sentence only, the text after it being read in the section around it (a header
    # alone on its line still heads the lines under it)
    reach: Literal["sentence"] | None = None


class ScopeCue(_Strict):
    """Words that put a mention's sentence out of this session, this organ or what was done
    ("plan for session 2", "generator not activated"); `reason` is what the evidence says."""

    status: Status
    reason: str = Field(min_length=1)
    cues: list[str] = []
    patterns: list[str] = []
    only: list[str] = []
    skip: list[str] = []
    # `sentence`: the sentence holding the cue; `before`: the mention the cue ends right
    # before ("[ ] Cryo", an unticked box); `note`: every mention in the text, once the
    # cue is found anywhere in it (a session stopped before any energy was delivered);
    # `previous`: the lesion named a few sentences before the one the cue opens
    # ("... segment 3 lesion, 1.4 cm. This lesion was NOT ablated today")
    # `line`: the whole line (or table row) holding the mention's sentence (a timeline's
    # "10/04/2022  Cryo - L2. CT-guided, 2 probes" is dated in each of its sentences);
    # `block`: the lines of the paragraph holding the mention, from its first line down to
    # the mention's own (a study's dated heading over the findings it lists)
    reach: Literal["sentence", "before", "note", "previous", "line", "block"] = "sentence"
    # a note-wide cue holds unless one of these is found too ("one lesion ablated today")
    unless: list[str] = []
    # a sentence cue holds only when the text right after its sentence starts with one of
    # these: a label "Technical success:" followed by a blank line is left empty
    followed_by: list[str] = []
    # a note-wide cue leaves alone the mentions whose own words match one of these (lower
    # case): "see procedure log" rules out a track ablation, not the "150 W" beside it
    spares: list[str] = []
    # `true`: the cue holds only when the date it names ({date} in a pattern) is before
    # the date of service ("RFA of a 2.8 cm HCC on 01/12/2026", today 04/14/2026);
    # `after`: only when it is after it ("12/02/2025 re-ablation", today 07/22/2025)
    dated: bool | Literal["after"] = False


class CopiedBlock(_Strict):
    """Text copied forward from another note: what opens it and, optionally, what closes it
    (without a closing line it runs to the next blank line)."""

    opens: list[str] = Field(min_length=1)
    closes: list[str] = []
    # a later sentence that says the text above it was copied from another note ("the
    # indication and procedure details above were carried forward from my note of
    # 10/14/2024"): everything before its paragraph is copied
    disowns: list[str] = []
    status: Status = "historical"
    reason: str = "copied from an earlier note"
    # elements a copied block still documents (the reason a copied H&P gives for the ablation)
    skip: list[str] = []


class SameValue(_Strict):
    """A value ruled out as another lesion's (one not treated today, another organ's) rules
    out the same value written elsewhere in the note: a worksheet's "2.8 cm" that the note
    later says is the size of the tumor not treated today."""

    elements: list[str] = Field(min_length=1)
    # the rulings that make a value another lesion's (a ruling's reason opens with one)
    reasons: list[str] = Field(min_length=1)
    # elements whose words, once the note denies them outright ("No cryoablation was
    # performed"), are denied wherever else they stand (a payer's letter quoting "hepatic
    # cryoablation")
    denied: list[str] = []
    # the cues that deny outright ("no", "not"); not a verdict on one lesion ("not possible")
    denied_by: list[str] = []


class LaterStudies(_Strict):
    """The entries of a dated list that report an imaging study ("- MRI liver 01/12/2024:
    ...", "- 08/2024 MRI: new multifocal disease ..."): one dated after the date of service
    shows the liver after the session, so the sizes, sites and counts it gives are not the
    treated tumor's."""

    # what opens such an entry, at the start of a line; `{date}` stands for the study's date
    opens: str = Field(min_length=1)
    # the elements it does not document when dated after the date of service
    only: list[str] = Field(min_length=1)
    reason: str = "a study after the session"


class DatedEntries(_Strict):
    """The entries of a dated list (a line that opens with its date, with the lines set
    further in under it) that tell of a treatment: each is that date's session, so what it
    holds is not the billed session's when its date is another day."""

    # what opens an entry, at the start of a line; `{date}` stands for the entry's date
    opens: str = Field(min_length=1)
    # an entry counts only when it holds one of these (a treatment, not an imaging study)
    holds: list[str] = Field(min_length=1)
    before: str = "an entry dated before the date of service"
    after: str = "an entry dated after the date of service"
    # elements such an entry still documents (a board's dated reason for the ablation)
    skip: list[str] = []
    later_studies: LaterStudies | None = None


class ScopeConfig(_Strict):
    """How a whole note is read: its headings' roles, copied blocks, other organs, scope cues."""

    # role -> words of a heading (in capitals, decorated, numbered or a known header) that
    # give the section that role, when the heading is not one of `sections`' headers
    roles: dict[str, list[str]] = {}
    copied: CopiedBlock | None = None
    # organ -> heading words: a section or field headed by another organ is not the liver's
    organs: dict[str, list[str]] = {}
    organ_elements: list[str] = []
    own_organ: str | None = None  # the organ the pack's procedure treats (one of `organs`)
    # regular expressions that name the own organ beyond doubt (a lung has segments and
    # lobes too): a paragraph that opens on another organ and holds none of them is that
    # organ's ("Prone for the lung component. ... Ablation 60 W x 4 min.")
    own_marks: list[str] = []
    # labels of the note's date of service ("DOS:", "Date of service:"); the date follows
    service_date: list[str] = []
    dated_entries: DatedEntries | None = None
    # A note without a date of service that dates several treatments (a lesion-tracking
    # sheet, a timeline) bills its latest: each of these patterns holds a {date} of a
    # treatment, and the latest found (not on a line with one of `latest_treatment_unless`,
    # a plan) stands for the date of service
    latest_treatment: list[str] = []
    latest_treatment_unless: list[str] = []
    cues: dict[str, ScopeCue] = {}
    # A sentence that takes back what the note said ("The \"12 min, 100 W\" above was an
    # error"): the words it quotes no longer count where they stood before it.
    corrections: list[str] = []
    # Text the note marks as deleted ("~~Ablation was performed at 100 W~~", "<del>...</del>",
    # a tracked change's "[deleted: ...]"): each regular expression matches one struck span,
    # and nothing in it is documented.
    struck: list[str] = []
    # words of a heading whose section corrects what the note said before it ("ADDENDUM"):
    # of two counts of the lesions treated that differ, only such a section's settles it
    amending: list[str] = []
    same_value: SameValue | None = None
    # what a field's value opens with when it reports a study already had ("Follow-up: CT
    # 08/27/2024 - no residual enhancement"): the field is then a finding, whatever role
    # its label gives (regular expressions on the lower-cased value)
    reported: list[str] = []


class TextConfig(_Strict):
    """The `text:` section of a pack, after its `include:` files are merged in."""

    include: Entries = []
    window: int = Field(default=6, ge=0, le=40)
    # Reading limits (cost linear in the text whatever its shape): characters read of one
    # text unit (the rest is not read, and a finding says so), and the longest sentence
    # read whole (a longer one is read in pieces cut at clause boundaries).
    max_chars: int = Field(default=1_000_000, ge=1_000)
    max_sentence_chars: int = Field(default=1_000, ge=100)
    numbers: dict[str, int] = {}
    units: dict[str, dict[str, Entries]] = {}
    unit_factors: dict[str, float] = {}
    lexicons: dict[str, Entries] = {}
    fillers: Entries = []
    modifiers: dict[str, ModifierDef] = {}
    sections: dict[str, SectionDef] = {}
    targets: dict[str, TargetDef] = {}
    scope: ScopeConfig = ScopeConfig()
    # Plain regex groups (name -> patterns): targets without keywords, kept for packs
    # written before the vocabulary files.
    patterns: dict[str, Entries] = {}


@dataclass(frozen=True)
class Written:
    """A file that wrote part of the vocabulary: its name, its text, and where in it the
    `text:` section starts (`("text",)` in a pack, nothing in an included file)."""

    origin: str
    text: str
    prefix: tuple[str, ...] = ()


# (key,) or (key, name) of the merged `text:` -> the file whose entry won
Origins = dict[tuple[str, ...], Written]


def where_written(origins: Origins, path: Sequence[str | int], pack: Written) -> str:
    """`file:line:col` of the entry at `path` (below `text:`), in the file that wrote it
    (the pack's own `text:` when no included file did)."""
    written = next(
        (w for depth in (2, 1) if (w := origins.get(tuple(str(p) for p in path[:depth])))),
        pack,
    )
    return located(written.origin, written.text, [*written.prefix, *path])


_MERGED_DICTS = (
    "numbers",
    "units",
    "unit_factors",
    "lexicons",
    "modifiers",
    "sections",
    "targets",
    "patterns",
)


def merge_includes(raw: Any, base: Path | None, pack: Written) -> Origins:
    """Pull `text.include` files (relative to the pack) into the pack's `text:`, and say
    which file wrote each entry (empty when there was nothing to include).

    Keys written in the pack itself win over the included files, so a payer pack
    can override one target without copying the vocabulary. A file missing beside
    the pack is taken from the bundled mappings/ (a pack copied elsewhere keeps working).
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), dict):
        return {}
    text = raw["text"]
    includes = text.get("include") or []
    if not isinstance(includes, list) or not includes:
        return {}
    merged: dict[str, Any] = {}
    origins: Origins = {}
    for name in includes:
        path = _locate(str(name), base)
        try:
            written = Written(str(path), read_text(path))
        except ValueError as exc:
            raise ValueError(f"text.include {name!r}: {path}: cannot read: {exc}") from None
        try:
            part = yaml.load(written.text, Loader=_loader())
        except yaml.YAMLError as exc:
            raise ValueError(f"text.include {name!r}: {yaml_error_line(str(path), exc)}") from None
        if not isinstance(part, dict):
            raise ValueError(f"text.include {name!r}: not a mapping")
        check_shape(written)
        _merge(merged, origins, part, written)
    _merge(merged, origins, {k: v for k, v in text.items() if k != "include"}, pack)
    raw["text"] = merged
    return origins


class ShapeError(ValueError):
    """A YAML mistake that still parses (a folded list item, a key written twice): the
    message names file and line."""


def check_shape(written: Written) -> None:
    """A list item folded into the text above it, or a key written twice, is an error."""
    problem = shape_problem(written.text)
    if problem is not None:
        line, column, what = problem
        raise ShapeError(f"{written.origin}:{line}:{column}: {what}")


def _merge(merged: dict[str, Any], origins: Origins, part: dict[str, Any], by: Written) -> None:
    for key, value in part.items():
        if key in _MERGED_DICTS and isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
            origins.update({(str(key), str(name)): by for name in value})
        elif key == "fillers" and isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key].extend(value)
        else:
            merged[key] = value
        origins[(str(key),)] = by


def _locate(name: str, base: Path | None) -> Path:
    here = Path(__file__).resolve().parent.parent
    bundled = (here.parent / "mappings", here / "_data" / "mappings")
    candidates = [base / name] if base is not None else []
    candidates += [d / name for d in bundled]
    return next((p for p in candidates if p.is_file()), candidates[0])


def _loader() -> type[yaml.SafeLoader]:
    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return loader
