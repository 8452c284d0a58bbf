"""Load payer overlays (mappings/payers/*.yaml and `--payers` directories), check them
strictly, and compile their criteria against the pack once.

A criterion's conditions compile to three-valued tests: met, not met, or not decidable
from the record (a fact that is unknown, a code or statement that is absent).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fhir_adapter.errors import PackError
from fhir_adapter.files import read_text
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.context import Context
from fhir_adapter.pack.load import MatchFn, Pack, compile_matcher, default_pack_path
from fhir_adapter.pack.schema import (
    NOUNS,
    CodesMatcher,
    FactMatcher,
    Matcher,
    TextMatcher,
    references,
)
from fhir_adapter.payers.facts import closed_values
from fhir_adapter.payers.schema import AllOf, AnyOf, Condition, Overlay
from fhir_adapter.text.index import counts
from fhir_adapter.yaml_errors import located, shape_problem, yaml_error_line

PAYERS_ENV = "FHIR_ADAPTER_PAYERS"

# met, not met, cannot be decided from the record
Verdict = bool | None


@dataclass
class Leaf:
    """One matcher of a criterion: what it tests, for the message when it decides."""

    fn: MatchFn
    label: str
    fact: str | None = None
    # a text or codes matcher that finds nothing leaves the question open; a value or
    # FHIRPath matcher answers it
    absent_is_unknown: bool = False


@dataclass
class Node:
    op: str  # all | any | leaf
    children: list[Node] = field(default_factory=list)
    leaf: Leaf | None = None


@dataclass
class Judged:
    verdict: Verdict
    evidence: list[Evidence] = field(default_factory=list)
    # why not met (the values that fail), or what is missing
    reasons: list[str] = field(default_factory=list)


def judge(node: Node, ctx: Context) -> Judged:
    """Kleene's three-valued logic: `all` fails on one failure, `any` holds on one success,
    and an open question stays open only when nothing else decides."""
    if node.leaf is not None:
        return _judge_leaf(node.leaf, ctx)
    parts = [judge(c, ctx) for c in node.children]
    decisive = node.op != "all"  # what settles it: one failure for all, one success for any
    hit = [p for p in parts if p.verdict is decisive]
    if hit:
        return Judged(decisive, _ev(hit), _why(hit))
    unknown = [p for p in parts if p.verdict is None]
    if unknown:
        return Judged(None, _ev(unknown), _why(unknown))
    return Judged(not decisive, _ev(parts), _why(parts))


def _ev(parts: list[Judged]) -> list[Evidence]:
    return list(dict.fromkeys(e for p in parts for e in p.evidence))


def _why(parts: list[Judged]) -> list[str]:
    return list(dict.fromkeys(r for p in parts for r in p.reasons))


def _judge_leaf(leaf: Leaf, ctx: Context) -> Judged:
    found = leaf.fn(ctx)
    hits = [e for e in found if counts(e)]
    if hits:
        return Judged(True, hits, [leaf.label])
    if leaf.fact is not None:
        fact = ctx.facts.get(leaf.fact)
        if fact is None or fact.value is None:
            return Judged(None, list(found), [f"{leaf.fact} is not documented"])
        value = fact.value
        shown = ", ".join(f"{v:g}" for v in value) if isinstance(value, list) else value
        if isinstance(shown, float):
            shown = f"{shown:g}"
        return Judged(False, list(fact.evidence), [f"{leaf.fact} is {shown} ({leaf.label})"])
    if leaf.absent_is_unknown:
        if any(e.status == "negated" for e in found):
            return Judged(False, list(found), [f"{leaf.label}: stated as not so"])
        return Judged(None, list(found), [f"{leaf.label}: not documented"])
    return Judged(False, list(found), [f"{leaf.label}: not found"])


@dataclass
class CompiledCriterion:
    id: str
    text: str
    source: str
    when: list[Node]
    met: list[Node]
    query: str | None


@dataclass
class CompiledOverlay:
    model: Overlay
    path: str
    criteria: list[CompiledCriterion]
    names: list[re.Pattern[str]]
    text: str  # the YAML it was compiled from: what another process compiles it again from

    @property
    def id(self) -> str:
        return self.model.policy

    def summary(self) -> dict[str, Any]:
        m = self.model
        return {
            "id": m.policy,
            "title": m.title,
            "source": m.source,
            "url": m.url,
            "date": m.date,
            "prior_authorization": m.prior_authorization,
        }


@dataclass
class Payers:
    """The overlays a run judges cases by; `forced` names the one every case gets."""

    overlays: list[CompiledOverlay] = field(default_factory=list)
    forced: CompiledOverlay | None = None

    def texts(self) -> PayerTexts:
        """What these overlays were compiled from, in order, and the forced one's id: all
        another process needs to compile the same overlays (`payers_from_texts`), without
        reading files it may not have."""
        forced = self.forced.id if self.forced is not None else None
        return tuple((o.path, o.text) for o in self.overlays), forced


PayerTexts = tuple[tuple[tuple[str, str], ...], str | None]


def payers_from_texts(pack: Pack, texts: PayerTexts) -> Payers:
    """The overlays `Payers.texts()` gave, compiled again against `pack`."""
    sources, forced = texts
    overlays = [overlay_from_text(pack, text, origin) for origin, text in sources]
    chosen = next((o for o in overlays if o.id == forced), None)
    if forced is not None and chosen is None:
        raise PackError(f"--payer {forced!r}: no such payer policy among the overlays given")
    return Payers(overlays, chosen)


def shipped_dir() -> Path:
    """mappings/payers/, beside the bundled rule pack (source tree or installed package)."""
    found = default_pack_path().parent / "payers"
    if not found.is_dir():
        raise PackError(f"{found}: the bundled payer overlays are missing from this install")
    return found


def load_payers(
    pack: Pack,
    dirs: Sequence[str | os.PathLike[str]] = (),
    *,
    forced: str | None = None,
    shipped: bool = True,
) -> Payers:
    """The shipped overlays, then those in `dirs` (`*.yaml` and `*.yml`); one in `dirs`
    with a shipped policy id replaces the shipped one, two of `dirs` with the same policy
    id are an error naming both; `forced` names the policy every case is judged by."""
    paths: list[tuple[Path, bool]] = []
    seen: set[Path] = set()
    places = [(shipped_dir(), True)] if shipped else []
    for d, ours in places + [(Path(x), False) for x in dirs]:
        if not d.is_dir():
            raise PackError(f"{d}: payer overlay directory not found")
        for path in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
            if path.resolve() not in seen:  # a directory given twice is read once
                seen.add(path.resolve())
                paths.append((path, ours))
    by_id: dict[str, CompiledOverlay] = {}
    replaceable: set[str] = set()
    for path, ours in paths:
        overlay = load_overlay(pack, path)
        earlier = by_id.pop(overlay.id, None)
        if earlier is not None and overlay.id not in replaceable:
            raise PackError(
                f"{path}: payer policy {overlay.id!r} is also in {earlier.path}; each policy "
                "id may be in one file (one in a --payers directory replaces a shipped one)"
            )
        replaceable.discard(overlay.id)
        if ours:
            replaceable.add(overlay.id)
        by_id[overlay.id] = overlay
    payers = Payers(list(by_id.values()))
    if forced is not None:
        if forced not in by_id:
            raise PackError(
                f"--payer {forced!r}: no such payer policy (one of {', '.join(sorted(by_id))})"
            )
        payers.forced = by_id[forced]
    return payers


def load_overlay(pack: Pack, path: Path) -> CompiledOverlay:
    try:
        text = read_text(path)
    except ValueError as exc:
        raise PackError(f"{path}: cannot read payer overlay: {exc}") from None
    return overlay_from_text(pack, text, str(path))


def overlay_from_text(pack: Pack, text: str, origin: str) -> CompiledOverlay:
    try:
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise PackError(yaml_error_line(origin, exc)) from None
    problem = shape_problem(text)
    if problem is not None:
        raise PackError(f"{origin}:{problem[0]}:{problem[1]}: {problem[2]}")
    try:
        model = Overlay.model_validate(raw)
    except ValidationError as exc:
        raise PackError(_describe(exc, origin, text)) from None
    return _compile(pack, model, origin, text)


def _describe(exc: ValidationError, origin: str, text: str) -> str:
    lines = []
    for err in exc.errors()[:5]:
        loc = list(err["loc"])
        where = ".".join(str(x) for x in loc)
        message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        path = loc[:-1] if err["type"] == "missing" else loc
        lines.append(f"{located(origin, text, path)}: invalid payer overlay: {where}: {message}")
    return "\n".join(lines)


def _compile(pack: Pack, model: Overlay, origin: str, text: str) -> CompiledOverlay:
    names = pack.model.names()
    names["patterns"] = set(pack.engine.cfg.targets) | set(pack.engine.cfg.patterns)
    criteria = []
    for i, crit in enumerate(model.criteria):
        # located only for an error: it parses the text again, in pure Python

        def fail(message: str, i: int = i, cid: str = crit.id) -> PackError:
            at = located(origin, text, ["criteria", i])
            return PackError(f"{at}: invalid payer overlay: criterion {cid!r}: {message}")

        for key in ("when", "met"):
            for j, cond in enumerate(getattr(crit, key)):
                for at_path, matcher in _placed(cond, ["criteria", i, key, j]):
                    _check_fact_values(pack, matcher, at_path, origin, text, crit.id)
        for cond in [*crit.when, *crit.met]:
            for matcher in _matchers(cond):
                for _, kind, value in references(matcher, "criterion"):
                    if kind == "systems" and ("://" in value or value.startswith("urn:")):
                        continue
                    if value not in names[kind]:
                        raise fail(f"unknown {NOUNS[kind]} {value!r}")
        criteria.append(
            CompiledCriterion(
                crit.id,
                crit.text,
                crit.source,
                [_node(c, pack, fail) for c in crit.when],
                [_node(c, pack, fail) for c in crit.met],
                crit.query,
            )
        )
    seen: set[str] = set()
    for crit in model.criteria:
        if crit.id in seen:
            raise PackError(f"{origin}: invalid payer overlay: criterion {crit.id!r} twice")
        seen.add(crit.id)
    patterns = []
    for j, name in enumerate(model.applies_to.names):
        try:
            patterns.append(re.compile(name, re.I))
        except re.error as exc:
            at = located(origin, text, ["applies_to", "names", j])
            raise PackError(f"{at}: invalid payer overlay: bad name pattern: {exc}") from None
    return CompiledOverlay(model, origin, criteria, patterns, text)


def _matchers(cond: Condition) -> Iterable[Matcher]:
    if isinstance(cond, AllOf):
        for c in cond.all:
            yield from _matchers(c)
    elif isinstance(cond, AnyOf):
        for c in cond.any:
            yield from _matchers(c)
    else:
        yield cond


def _placed(cond: Condition, path: list[str | int]) -> Iterable[tuple[list[str | int], Matcher]]:
    """Each matcher of `cond` with its path in the overlay's YAML."""
    if isinstance(cond, AllOf | AnyOf):
        key = "all" if isinstance(cond, AllOf) else "any"
        for k, c in enumerate(cond.all if isinstance(cond, AllOf) else cond.any):
            yield from _placed(c, [*path, key, k])
    else:
        yield path, cond


def _check_fact_values(
    pack: Pack, matcher: Matcher, path: list[str | int], origin: str, text: str, cid: str
) -> None:
    """A fact's `in` value the fact never takes would make the criterion never apply."""
    if not isinstance(matcher, FactMatcher) or not matcher.fact.in_:
        return
    takes = closed_values(pack, matcher.fact.name)
    if takes is None:
        return
    for k, value in enumerate(matcher.fact.in_):
        if value not in takes:
            at = located(origin, text, [*path, "fact", "in", k])
            raise PackError(
                f"{at}: invalid payer overlay: criterion {cid!r}: fact {matcher.fact.name} "
                f"is never {value!r}; it takes {', '.join(takes)}"
            )


def _node(cond: Condition, pack: Pack, fail: Any) -> Node:
    if isinstance(cond, AllOf):
        return Node("all", [_node(c, pack, fail) for c in cond.all])
    if isinstance(cond, AnyOf):
        return Node("any", [_node(c, pack, fail) for c in cond.any])
    fn = compile_matcher(cond, pack, [], fail)
    if isinstance(cond, FactMatcher):
        return Node("leaf", leaf=Leaf(fn, _fact_label(cond), cond.fact.name))
    if isinstance(cond, TextMatcher):
        return Node("leaf", leaf=Leaf(fn, f"stated: {cond.text.patterns}", None, True))
    if isinstance(cond, CodesMatcher):
        return Node("leaf", leaf=Leaf(fn, f"coded: {cond.codes.valueset}", None, True))
    return Node("leaf", leaf=Leaf(fn, type(cond).__name__.removesuffix("Matcher").lower()))


def _fact_label(m: FactMatcher) -> str:
    f = m.fact
    parts = []
    if f.in_:
        parts.append(" or ".join(f.in_))
    if f.valueset:
        parts.append(f"in {f.valueset}")
    if f.min is not None:
        parts.append(f">= {f.min:g}")
    if f.max is not None:
        parts.append(f"<= {f.max:g}")
    if f.below is not None:
        parts.append(f"< {f.below:g}")
    return f"{f.name} " + (" and ".join(parts) if parts else "documented")
