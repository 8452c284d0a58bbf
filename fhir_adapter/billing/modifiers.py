"""Which modifiers the 47382 line carries: each one the documentation supports, less those
that another documented one excludes (pack: modifiers[].excludes)."""

from __future__ import annotations

from typing import NamedTuple

from fhir_adapter.findings import Evidence, Modifier
from fhir_adapter.pack.context import Context, found
from fhir_adapter.pack.load import Pack
from fhir_adapter.text.index import counts


class ModifierDecision(NamedTuple):
    kept: tuple[Modifier, ...]
    # evidence of each modifier left off because one that excludes it is documented too
    conflicts: tuple[Evidence, ...]


def decide_modifiers(pack: Pack, ctx: Context) -> ModifierDecision:
    """Decided once per case and pack: the modifier_conflicts fact and the evaluation's
    modifiers read the same decision. Its matchers may read any other fact, so the fact
    is derived last (billing.facts)."""
    return ctx.case.derive(("modifiers", id(pack)), lambda: _decide(pack, ctx))


def _decide(pack: Pack, ctx: Context) -> ModifierDecision:
    """The modifiers of the pack's line, and the evidence of those left off because another
    one that excludes them (pack: modifiers[].excludes) is documented too."""
    documented: dict[str, Modifier] = {}
    excludes: dict[str, tuple[str, ...]] = {}
    for mod in pack.modifiers:
        if not all(found(fn, ctx) for fn in mod.when) or any(found(fn, ctx) for fn in mod.unless):
            continue
        mod_evidence: list[Evidence] = []
        for fn in mod.any:
            mod_evidence.extend(e for e in fn(ctx) if counts(e))
        if mod_evidence:
            documented[mod.code] = Modifier(mod.code, mod.reason, tuple(mod_evidence))
            excludes[mod.code] = mod.excludes
    # decide a modifier once every documented one that excludes it is decided: it is left
    # off when one of those is kept (the schema forbids two that exclude each other)
    kept: dict[str, bool] = {}
    winner: dict[str, str] = {}
    pending = list(documented)
    while pending:
        for code in pending:
            excluders = [o for o in documented if o != code and code in excludes[o]]
            if any(o in pending for o in excluders):
                continue
            by = next((o for o in excluders if kept[o]), None)
            kept[code] = by is None
            if by is not None:
                winner[code] = by
            pending.remove(code)
            break
        else:  # a longer cycle of exclusions: keep the rest as documented
            kept.update((code, True) for code in pending)
            pending = []
    conflicts = []
    for code, by in winner.items():
        lost, won = documented[code], documented[by]
        first = lost.evidence[0]
        note = (
            f"{code} ({lost.reason}) and {by} ({won.reason}) are both documented; they do "
            f"not go together: {by} is billed, {code} is not"
        )
        conflicts.append(Evidence(first.reference, first.path, first.snippet, note))
    return ModifierDecision(tuple(m for c, m in documented.items() if kept[c]), tuple(conflicts))
