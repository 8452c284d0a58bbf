"""Load a rule pack, check it against the schema, and compile it once to plain Python.

Compiling turns value sets into sets, text patterns into regexes, FHIRPath into
compiled functions and every matcher into a closure over dicts, so that
evaluating a case never parses YAML, regex or FHIRPath again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fhir_adapter.errors import PackError
from fhir_adapter.fhir.codings import codings, normalize_code
from fhir_adapter.fhir.elements import values_at
from fhir_adapter.files import read_text
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.context import Context
from fhir_adapter.pack.facts import FACTS
from fhir_adapter.pack.schema import (
    CodesMatcher,
    FactMatcher,
    FhirPathMatcher,
    Matcher,
    PackModel,
    TextMatcher,
    Unverified,
    ValueMatcher,
)
from fhir_adapter.pack.valuesets import ValueSet
from fhir_adapter.text.engine import ContextEngine, VocabularyError
from fhir_adapter.text.index import TEXT_SOURCES, counts, find_evidence, scope_of
from fhir_adapter.text.scope import ScopeError
from fhir_adapter.text.vocabulary import (
    Origins,
    ShapeError,
    Written,
    check_shape,
    merge_includes,
    where_written,
)
from fhir_adapter.yaml_errors import located, yaml_error_line

MatchFn = Callable[[Context], list[Evidence]]


@dataclass
class CompiledRule:
    finding: str
    kind: str
    severity: str
    actcode: str | None
    message: str
    source: str
    when: list[MatchFn]
    any: list[MatchFn]
    looks_in: tuple[str, ...]
    unless: list[MatchFn] = field(default_factory=list)
    # the facts its `any` matchers read, and how it is raised when all rest on unverified rows
    facts: tuple[str, ...] = ()
    unverified: Unverified | None = None


@dataclass
class CompiledModifier:
    code: str
    reason: str
    any: list[MatchFn]
    when: list[MatchFn] = field(default_factory=list)
    unless: list[MatchFn] = field(default_factory=list)
    excludes: tuple[str, ...] = ()


@dataclass
class Pack:
    """A compiled rule pack; build it with `load_pack`."""

    model: PackModel
    path: str
    systems: dict[str, str]
    valuesets: dict[str, ValueSet]
    engine: ContextEngine
    rules: list[CompiledRule] = field(default_factory=list)
    modifiers: list[CompiledModifier] = field(default_factory=list)
    # the pack's YAML with its includes merged, written out only when asked for (Spark
    # ships it to executors; a local run never needs it, and writing it costs ~50 ms)
    _source: str | Callable[[], str] = field(default="", repr=False)
    # what later steps compile against this pack once (the shipped payer overlays)
    compiled: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def source_text(self) -> str:
        if callable(self._source):
            self._source = self._source()
        return self._source

    @property
    def procedure_system(self) -> str:
        return self.systems[self.model.procedure.system]

    @property
    def procedure_systems(self) -> tuple[str, ...]:
        """The procedure's code system as data may write it: its URL, then its aliases."""
        return self.systems_named(self.model.procedure.system)

    def systems_named(self, alias: str) -> tuple[str, ...]:
        """A system's URL and the other URIs (`system_aliases`) that name it."""
        return (self.system(alias), *self.model.system_aliases.get(alias, ()))

    def canonical_system(self, uri: Any) -> Any:
        """The system URL an alias URI (CPT's OID) stands for; any other value unchanged."""
        return self.alias_urls.get(uri, uri) if isinstance(uri, str) else uri

    @functools.cached_property
    def alias_urls(self) -> dict[str, str]:
        """Each alias URI, and the URL of the system it names."""
        return alias_urls(self.model)

    @property
    def procedure_code(self) -> str:
        return self.model.procedure.code

    def voids(self, procedure: Mapping[str, Any]) -> bool:
        """Whether a Procedure's status says it is no record (entered in error): not a case,
        so it gets no evaluation, no Claim and no DetectedIssue."""
        return procedure.get("status") in self.model.procedure.void_status

    def system(self, alias: str) -> str:
        return self.systems.get(alias, alias)

    def severity_rank(self, severity: str) -> int:
        return self.model.severity_order.index(severity)  # type: ignore[arg-type]

    def finding_codes(self) -> list[str]:
        """Every finding code the pack may raise: its rules' and its payer overlays'."""
        payer = self.model.payer_findings
        extra = [payer.not_met, payer.undocumented, payer.prior_auth_missing] if payer else []
        return [r.finding for r in self.rules] + [f.finding for f in extra]


def alias_urls(model: PackModel) -> dict[str, str]:
    """Each alias URI of the pack's `system_aliases`, and the URL of the system it names."""
    return {
        uri: model.systems[name]
        for name, aliases in model.system_aliases.items()
        for uri in aliases
    }


def default_pack_path() -> Path:
    """mappings/cpt-47382.yaml from the source tree, else from the installed package."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "mappings", here / "_data" / "mappings"):
        path = candidate / "cpt-47382.yaml"
        if path.is_file():
            return path
    raise PackError("the bundled rule pack mappings/cpt-47382.yaml is missing from this install")


def load_pack(path: str | os.PathLike[str] | None = None) -> Pack:
    """Read, validate and compile a pack; a broken pack raises PackError naming file and rule."""
    p = Path(path) if path is not None else default_pack_path()
    try:
        text = read_text(p)
    except ValueError as exc:
        raise PackError(f"{p}: cannot read rule pack: {exc}") from None
    return pack_from_text(text, str(p), p.parent)


_CACHED: dict[Path, tuple[tuple[tuple[str, int, int], ...], Pack]] = {}


def cached_pack(path: str | os.PathLike[str] | None = None) -> Pack:
    """`load_pack(path)`, compiled once per process while the YAML files in and below its
    directory are unchanged (same size and modification time): what a caller that names
    no pack gets, so a loop over `evaluate_paths` does not compile it every time, and an
    edit to `mappings/` still takes effect on the next call."""
    p = Path(path) if path is not None else default_pack_path()
    key = p.resolve()
    try:
        stamp = tuple(
            (str(f), st.st_mtime_ns, st.st_size)
            for f in sorted(key.parent.rglob("*.yaml"))
            for st in (f.stat(),)
        )
    except OSError:  # a file going away as it is listed: no cache, load_pack says what is wrong
        return load_pack(p)
    held = _CACHED.get(key)
    if held is None or held[0] != stamp:
        held = _CACHED[key] = (stamp, load_pack(p))
    return held[1]


def pack_from_text(text: str, origin: str = "<rule pack>", base: Path | None = None) -> Pack:
    """Validate and compile a pack's YAML text (how Spark executors get the driver's pack).

    `text.include` files are read relative to `base` and merged in; the pack's
    `source_text` is then the merged YAML, so executors need no files.
    """
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present
        raw = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise PackError(yaml_error_line(origin, exc)) from None
    written = text  # the user's lines, for the positions in a schema error
    source: str | Callable[[], str] = text
    pack_file = Written(origin, text, ("text",))
    try:
        check_shape(pack_file)
        origins = merge_includes(raw, base, pack_file)
    except ShapeError as exc:
        raise PackError(str(exc)) from None
    except ValueError as exc:
        raise PackError(f"{origin}: {exc}") from None
    if origins:
        merged = raw
        source = lambda: _merged_text(merged)  # noqa: E731
    try:
        model = PackModel.model_validate(raw)
    except ValidationError as exc:
        raise PackError(_describe(exc, raw, origin, written, origins)) from None
    pack = _Compiler(model, pack_file, origins).compile()
    pack._source = source
    return pack


def _merged_text(merged: Any) -> str:
    """A merged pack's YAML (what Spark ships to its executors), written by libyaml when
    present: the pure-Python emitter took a second for the shipped pack, on the driver
    before any task starts. Never folded: a folded line could read as a list item to
    check_shape."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(
        merged, Dumper=dumper, sort_keys=False, allow_unicode=True, width=2**31 - 1
    )
    return text


def _describe(exc: ValidationError, raw: Any, origin: str, text: str, origins: Origins) -> str:
    """One line per problem (the first five): `file:line:col: invalid rule pack: where: why`."""
    lines = []
    errors = exc.errors()
    pack_file = Written(origin, text, ("text",))
    for err in errors[:5]:
        loc = list(err["loc"])
        # a matcher's union tag is its key, so pydantic says `codes.codes.path`: name it once
        shown = [x for i, x in enumerate(loc) if i == 0 or isinstance(x, int) or x != loc[i - 1]]
        where = ".".join(str(x) for x in shown)
        if len(loc) >= 2 and loc[0] in ("rules", "modifiers") and isinstance(loc[1], int):
            try:
                item = raw[loc[0]][loc[1]]
                name = item.get("finding") or item.get("code")
                where = f"{loc[0][:-1]} {name!r} ({'.'.join(str(x) for x in shown[2:]) or 'entry'})"
            except (KeyError, IndexError, TypeError, AttributeError):
                pass
        message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        path = loc[:-1] if err["type"] == "missing" else loc
        # an entry of an included vocabulary file is found in that file
        if path[:1] == ["text"]:
            at = where_written(origins, path[1:], pack_file)
        else:
            at = located(origin, text, path)
        lines.append(f"{at}: invalid rule pack: " + (f"{where}: {message}" if where else message))
    if len(errors) > 5:
        lines[-1] += f" (+{len(errors) - 5} more)"
    return "\n".join(lines)


class _Compiler:
    def __init__(self, model: PackModel, pack_file: Written, origins: Origins) -> None:
        self.model = model
        self.path = pack_file.origin
        self.pack_file = pack_file
        self.origins = origins
        self.where = "pack"

    def fail(self, message: str) -> PackError:
        return PackError(f"{self.path}: {self.where}: {message}")

    def compile(self) -> Pack:
        m = self.model
        valuesets = {name: self._valueset(name) for name in m.valuesets}
        self.where = "text"
        try:
            engine = ContextEngine(m.text)
            scope_of(engine)  # the whole-note scope rules, checked now
        except ScopeError as exc:
            raise self.fail(str(exc)) from None
        except VocabularyError as exc:
            if not exc.path:
                raise self.fail(str(exc)) from None
            raise PackError(
                f"{where_written(self.origins, exc.path, self.pack_file)}: {exc}"
            ) from None
        pack = Pack(m, self.path, dict(m.systems), valuesets, engine)
        for rule in m.rules:
            self.where = f"rule {rule.finding!r}"
            looks: list[str] = []
            pack.rules.append(
                CompiledRule(
                    rule.finding,
                    rule.kind,
                    rule.severity,
                    rule.actcode,
                    rule.message,
                    rule.source,
                    [self._matcher(x, pack, []) for x in rule.when],
                    [self._matcher(x, pack, looks) for x in rule.any],
                    tuple(dict.fromkeys(looks)),
                    [self._matcher(x, pack, []) for x in rule.unless],
                    tuple(x.fact.name for x in rule.any if isinstance(x, FactMatcher)),
                    rule.unverified,
                )
            )
        for mod in m.modifiers:
            self.where = f"modifier {mod.code!r}"
            pack.modifiers.append(
                CompiledModifier(
                    mod.code,
                    mod.reason,
                    [self._matcher(x, pack, []) for x in mod.any],
                    [self._matcher(x, pack, []) for x in mod.when],
                    [self._matcher(x, pack, []) for x in mod.unless],
                    tuple(mod.excludes),
                )
            )
        return pack

    def _system(self, alias: str) -> str:
        if alias in self.model.systems:
            return self.model.systems[alias]
        if "://" in alias or alias.startswith("urn:"):
            return alias
        raise self.fail(f"unknown system alias {alias!r}")

    def _valueset(self, name: str) -> ValueSet:
        self.where = f"value set {name!r}"
        d = self.model.valuesets[name]
        vs = ValueSet(name, aliases=alias_urls(self.model))
        for group in d.include:
            system = self._system(group.system)
            vs.codes.setdefault(system, set()).update(
                normalize_code(system, c) for c in group.codes
            )
            for lo, hi in group.ranges:
                if not (lo.isdigit() and hi.isdigit()):
                    raise self.fail(f"range {lo}-{hi} is not numeric")
                vs.ranges.setdefault(system, []).append((int(lo), int(hi)))
        for group in d.exclude:
            system = self._system(group.system)
            vs.excluded.setdefault(system, set()).update(
                normalize_code(system, c) for c in group.codes
            )
        return vs

    def _matcher(self, m: Matcher, pack: Pack, looks: list[str]) -> MatchFn:
        return compile_matcher(m, pack, looks, self.fail)


def compile_matcher(
    m: Matcher, pack: Pack, looks: list[str], fail: Callable[[str], PackError]
) -> MatchFn:
    """One closure per matcher (names were resolved by the schema's validator); `looks`
    gathers the collections it searches. Payer overlays compile theirs here too, so a
    criterion speaks the pack's matcher language."""
    if isinstance(m, CodesMatcher):
        looks.extend(m.codes.from_)
        return _codes_matcher(
            tuple(m.codes.from_), tuple(m.codes.path), pack.valuesets[m.codes.valueset]
        )
    if isinstance(m, TextMatcher):
        sources = tuple(m.text.in_ or TEXT_SOURCES)
        looks.extend(sources)
        return _text_matcher(sources, m.text.patterns, pack.engine)
    if isinstance(m, FhirPathMatcher):
        looks.extend(m.fhirpath.from_)
        return _fhirpath_matcher(tuple(m.fhirpath.from_), m.fhirpath.expression, fail)
    if isinstance(m, ValueMatcher):
        v = m.value
        looks.extend(v.from_)
        if v.in_ is not None:
            return _value_matcher(tuple(v.from_), tuple(v.path), frozenset(v.in_))
        return _value_matcher(tuple(v.from_), tuple(v.path), frozenset(v.not_in or ()), absent=True)
    fact = m.fact
    looks.extend(FACTS.get(fact.name, ()))
    vs = pack.valuesets[fact.valueset] if fact.valueset is not None else None
    return _fact_matcher(fact.name, vs, fact.min, fact.max, fact.below, frozenset(fact.in_ or ()))


def _at(ctx: Context, resource: dict[str, Any], label: str, note: str) -> Evidence:
    """Evidence pointing at an element of a gathered resource."""
    return Evidence(ctx.case.ref(resource), f"{resource['resourceType']}.{label}", None, note)


def _codes_matcher(sources: tuple[str, ...], path: tuple[str, ...], vs: ValueSet) -> MatchFn:
    label = ".".join(path)

    def match(ctx: Context) -> list[Evidence]:
        out = []
        for source in sources:
            for resource in ctx.case.collection(source):
                for coding in codings(list(values_at(resource, path))):
                    if vs.contains(coding.get("system"), coding.get("code")):
                        note = f"{coding.get('code')} {coding.get('display') or ''}".strip()
                        out.append(_at(ctx, resource, label, note))
                        break
        return out

    return match


def _text_matcher(sources: tuple[str, ...], element: str, engine: ContextEngine) -> MatchFn:
    """Affirmed mentions of a target; ruled-out ones follow, marked, to explain an absence."""

    def match(ctx: Context) -> list[Evidence]:
        return find_evidence(ctx.text, engine, element, sources)

    return match


def check_fhirpath_syntax(expression: str) -> None:
    """Raise ValueError on a syntax error: fhirpathpy's own parser silently recovers from them."""
    from antlr4 import CommonTokenStream, InputStream, Token
    from antlr4.error.ErrorListener import ErrorListener
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    class _Raise(ErrorListener):  # type: ignore[misc]
        def syntaxError(
            self, recognizer: Any, symbol: Any, line: int, col: int, msg: str, e: Any
        ) -> None:
            raise ValueError(f"column {col + 1}: {msg}")

    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    parser.expression()
    if tokens.LA(1) != Token.EOF:
        raise ValueError(f"unexpected {tokens.LT(1).text!r} after the expression")


def _fhirpath_matcher(
    sources: tuple[str, ...], expression: str, fail: Callable[[str], PackError]
) -> MatchFn:
    import fhirpathpy

    try:
        check_fhirpath_syntax(expression)
        from fhirpathpy.models import models

        compiled = fhirpathpy.compile(expression, models["r4"])
    except Exception as exc:  # fhirpathpy raises bare Exceptions on unknown functions
        raise fail(f"bad FHIRPath {expression!r}: {exc}") from None

    def match(ctx: Context) -> list[Evidence]:
        out = []
        for source in sources:
            for resource in ctx.case.collection(source):
                result = compiled(resource, {})
                if result and result != [False]:
                    out.append(
                        Evidence(
                            ctx.case.ref(resource), f"{resource['resourceType']}", None, expression
                        )
                    )
        return out

    return match


def _value_matcher(
    sources: tuple[str, ...], path: tuple[str, ...], values: frozenset[str], *, absent: bool = False
) -> MatchFn:
    """Matches a primitive in `values`; with `absent`, one that is missing or none of them."""
    label = ".".join(path)

    def match(ctx: Context) -> list[Evidence]:
        out: list[Evidence] = []
        for source in sources:
            for resource in ctx.case.collection(source):
                found = [v.strip() for v in values_at(resource, path) if isinstance(v, str)]
                if absent:
                    hits = [] if set(found) & values else [", ".join(found) or "absent"]
                else:
                    hits = [v for v in found if v in values]
                out.extend(_at(ctx, resource, label, note) for note in hits)
        return out

    return match


def _fact_matcher(
    name: str,
    vs: ValueSet | None,
    lo: float | None,
    hi: float | None,
    below: float | None = None,
    among: frozenset[str] = frozenset(),
) -> MatchFn:
    bounded = lo is not None or hi is not None or below is not None

    def match(ctx: Context) -> list[Evidence]:
        fact = ctx.facts.get(name)
        if fact is None:
            return []
        if fact.value is None or fact.value == [] or fact.value is False:
            # why an absent fact is absent (ruled-out evidence, shown with a finding)
            return [e for e in fact.evidence if not counts(e)]
        if vs is not None and not vs.contains(fact.system, str(fact.value)):
            return []
        if among and str(fact.value) not in among:
            return []
        if bounded and (isinstance(fact.value, bool) or not isinstance(fact.value, int | float)):
            return []
        if below is not None and fact.value >= below:
            return []
        if lo is not None and fact.value < lo:
            return []
        if hi is not None and fact.value > hi:
            return []
        evidence = list(fact.evidence)
        if not any(counts(e) for e in evidence):
            # known by what it rules out ("no extrahepatic disease": absent) or by nothing
            # that is evidence of its own: the value itself is what was found
            evidence.append(Evidence(ctx.case.key, "fact", None, f"{name}: {fact.value}"))
        return evidence

    return match
