"""Run a compiled pack over one case: findings, met criteria, modifiers, and the verdict."""

from __future__ import annotations

from fhir_adapter.case import Case
from fhir_adapter.findings import Criterion, Evaluation, Evidence, Finding, Modifier
from fhir_adapter.rules.billing import verification_code
from fhir_adapter.rules.context import Context, Fact
from fhir_adapter.rules.facts import derive_facts
from fhir_adapter.rules.pack import CompiledRule, MatchFn, Pack
from fhir_adapter.rules.text import TextIndex, counts


def evaluate_case(pack: Pack, case: Case, block_on: str | None = None) -> Evaluation:
    """Evaluate `case`; findings at or above `block_on` (default: the pack's) block the Claim."""
    threshold = pack.severity_rank(block_on or pack.model.default_block_on)
    _drop_void_conditions(pack, case)
    text = TextIndex(case)
    ctx = Context(case, text)
    ctx.facts = derive_facts(pack, case, text)
    result = Evaluation(
        procedure=case.key,
        patient=case.patient_ref,
        encounter=case.encounter_ref,
        unresolved=sorted({r for refs in case.unresolved.values() for r in refs}),
    )
    pos = ctx.facts["place_of_service"].value
    result.place_of_service = pos if isinstance(pos, str) else None

    result.modifiers, conflicts = decide_modifiers(pack, ctx)
    ctx.facts["modifier_conflicts"] = (
        Fact([e.reference for e in conflicts], conflicts) if conflicts else Fact(None)
    )

    for rule in pack.rules:
        if rule.when and not all(_found(fn, ctx) for fn in rule.when):
            continue
        if any(_found(fn, ctx) for fn in rule.unless):
            result.criteria.append(Criterion(rule.finding, True, _exception(rule, ctx)))
            continue
        evidence: list[Evidence] = []
        ruled_out: list[Evidence] = []
        for fn in rule.any:
            for e in fn(ctx):
                (evidence if counts(e) else ruled_out).append(e)
        failed = not evidence if rule.kind == "require" else bool(evidence)
        if failed:
            if rule.kind == "require":
                # what was searched, and the mentions a ConText cue ruled out ("not chosen")
                evidence = _absence(rule, case) + ruled_out
            result.findings.append(
                Finding(
                    rule.finding,
                    rule.severity,
                    rule.message,
                    tuple(evidence),
                    rule.actcode,
                    rule.source,
                )
            )
            result.criteria.append(Criterion(rule.finding, False, tuple(evidence)))
        else:
            result.criteria.append(Criterion(rule.finding, True, tuple(evidence)))

    result.blocked = any(pack.severity_rank(f.severity) >= threshold for f in result.findings)
    return result


def _drop_void_conditions(pack: Pack, case: Case) -> None:
    """Conditions whose verification status the pack calls void (refuted, entered in error)
    leave the case before anything looks at it (facts.diagnoses.void_verification)."""
    dx = pack.model.facts.diagnoses
    void = set(dx.void_verification) if dx else set()
    if not void:
        return
    for name in ("conditions", "reason_conditions"):
        kept = [c for c in getattr(case, name) if verification_code(c) not in void]
        setattr(case, name, kept)


def decide_modifiers(pack: Pack, ctx: Context) -> tuple[list[Modifier], tuple[Evidence, ...]]:
    """The modifiers of the pack's line, and the evidence of those left off because another
    one that excludes them (pack: modifiers[].excludes) is documented too."""
    found: dict[str, Modifier] = {}
    excludes: dict[str, tuple[str, ...]] = {}
    for mod in pack.modifiers:
        if not all(_found(fn, ctx) for fn in mod.when) or any(_found(fn, ctx) for fn in mod.unless):
            continue
        mod_evidence: list[Evidence] = []
        for fn in mod.any:
            mod_evidence.extend(e for e in fn(ctx) if counts(e))
        if mod_evidence:
            found[mod.code] = Modifier(mod.code, mod.reason, tuple(mod_evidence))
            excludes[mod.code] = mod.excludes
    # decide a modifier once every documented one that excludes it is decided: it is left
    # off when one of those is kept (the schema forbids two that exclude each other)
    kept: dict[str, bool] = {}
    winner: dict[str, str] = {}
    pending = list(found)
    while pending:
        for code in pending:
            excluders = [o for o in found if o != code and code in excludes[o]]
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
        lost, won = found[code], found[by]
        first = lost.evidence[0]
        note = (
            f"{code} ({lost.reason}) and {by} ({won.reason}) are both documented; they do "
            f"not go together: {by} is billed, {code} is not"
        )
        conflicts.append(Evidence(first.reference, first.path, first.snippet, note))
    return [m for c, m in found.items() if kept[c]], tuple(conflicts)


def _exception(rule: CompiledRule, ctx: Context) -> tuple[Evidence, ...]:
    """The documentation that exempts a case from `rule` (its `unless` evidence)."""
    return tuple(e for fn in rule.unless for e in fn(ctx) if counts(e))


def _found(fn: MatchFn, ctx: Context) -> bool:
    """A matcher found something that counts (a ruled-out text mention does not)."""
    return any(counts(e) for e in fn(ctx))


def _absence(rule: CompiledRule, case: Case) -> list[Evidence]:
    """What was searched, plus any reference that would have been evidence but dangles."""
    looked = ", ".join(rule.looks_in) or "derived facts"
    out = [Evidence(case.key, "Procedure", None, f"searched: {looked}")]
    for collection in rule.looks_in:
        for ref in case.unresolved.get(collection, ()):
            out.append(Evidence(ref, collection, None, "referenced but not found"))
    return out
