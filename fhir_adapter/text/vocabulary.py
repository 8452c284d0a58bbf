"""The text vocabulary of a rule pack (mappings/text/*.yaml): targets, ConText modifiers, sections.

It is data a coder maintains: what words document an element (targets), which
words around them rule a mention out and in which direction (modifiers), which
note headers change how a mention reads (sections), and the number words and
units every pattern shares. This module holds its shape and how a pack pulls
the files in; `context_engine` compiles and applies it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from fhir_adapter.yaml_errors import yaml_error_line

Status = Literal["negated", "hypothetical", "historical", "uncertain", "other"]
STATUSES: tuple[str, ...] = ("negated", "other", "historical", "hypothetical", "uncertain")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetDef(_Strict):
    """What documents one element: whole-word terms and short regexes (with {macros})."""

    description: str = ""
    keywords: list[str] = []
    terms: list[str] = []
    patterns: list[str] = []
    requires: str | None = None


class ModifierDef(_Strict):
    """Cue words that change what a nearby mention means, and which way they reach."""

    category: Status | Literal["pseudo", "terminate"]
    direction: Literal["forward", "backward", "bidirectional"] = "forward"
    cues: list[str] = []
    patterns: list[str] = []
    window: int | None = Field(default=None, ge=0, le=40)
    only: list[str] = []
    skip: list[str] = []
    stops: list[str] = []


class SectionDef(_Strict):
    """Note headers ("Past surgical history:") and the status they give what follows."""

    headers: list[str] = Field(min_length=1)
    status: Status | None = None
    only: list[str] = []
    skip: list[str] = []


class TextConfig(_Strict):
    """The `text:` section of a pack, after its `include:` files are merged in."""

    include: list[str] = []
    window: int = Field(default=6, ge=0, le=40)
    # Reading limits (cost linear in the text whatever its shape): characters read of one
    # text unit (the rest is not read, and a finding says so), and the longest sentence
    # read whole (a longer one is read in pieces cut at clause boundaries).
    max_chars: int = Field(default=1_000_000, ge=1_000)
    max_sentence_chars: int = Field(default=1_000, ge=100)
    numbers: dict[str, int] = {}
    units: dict[str, dict[str, list[str]]] = {}
    unit_factors: dict[str, float] = {}
    lexicons: dict[str, list[str]] = {}
    fillers: list[str] = []
    modifiers: dict[str, ModifierDef] = {}
    sections: dict[str, SectionDef] = {}
    targets: dict[str, TargetDef] = {}
    # Plain regex groups (name -> patterns): targets without keywords, kept for packs
    # written before the vocabulary files.
    patterns: dict[str, list[str]] = {}


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


def merge_includes(raw: Any, base: Path | None) -> bool:
    """Pull `text.include` files (relative to the pack) into the pack's `text:`; True if any.

    Keys written in the pack itself win over the included files, so a payer pack
    can override one target without copying the vocabulary. A file missing beside
    the pack is taken from the bundled mappings/ (a pack copied elsewhere keeps working).
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), dict):
        return False
    text = raw["text"]
    includes = text.get("include") or []
    if not includes:
        return False
    merged: dict[str, Any] = {}
    for name in includes:
        path = _locate(str(name), base)
        try:
            part = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader())
        except OSError as exc:
            raise ValueError(f"text.include {name!r}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"text.include {name!r}: {yaml_error_line(str(path), exc)}") from None
        if not isinstance(part, dict):
            raise ValueError(f"text.include {name!r}: not a mapping")
        for key, value in part.items():
            if key in _MERGED_DICTS and isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            elif key == "fillers" and isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    for key, value in text.items():
        if key in _MERGED_DICTS and isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        elif key != "include":
            merged[key] = value
    raw["text"] = merged
    return True


def _locate(name: str, base: Path | None) -> Path:
    here = Path(__file__).resolve().parent.parent
    bundled = (here.parent / "mappings", here / "_data" / "mappings")
    candidates = [base / name] if base is not None else []
    candidates += [d / name for d in bundled]
    return next((p for p in candidates if p.is_file()), candidates[0])


def _loader() -> type[yaml.SafeLoader]:
    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return loader
