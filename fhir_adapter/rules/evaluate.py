"""Run a compiled pack over one case: findings, met criteria, modifiers, and the verdict."""

from __future__ import annotations

from fhir_adapter.case import Case
from fhir_adapter.findings import Criterion, Evaluation, Evidence, Finding, Modifier
from fhir_adapter.rules.context import Context
from fhir_adapter.rules.facts import derive_facts
from fhir_adapter.rules.pack import CompiledRule, MatchFn, Pack
from fhir_adapter.rules.text import TextIndex, counts


def evaluate_case(pack: Pack, case: Case, block_on: str | None = None) -> Evaluation:
    """Evaluate `case`; findings at or above `block_on` (default: the pack's) block the Claim."""
    threshold = pack.severity_rank(block_on or pack.model.default_block_on)
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

    for mod in pack.modifiers:
        if not all(_found(fn, ctx) for fn in mod.when) or any(_found(fn, ctx) for fn in mod.unless):
            continue
        mod_evidence: list[Evidence] = []
        for fn in mod.any:
            mod_evidence.extend(e for e in fn(ctx) if counts(e))
        if mod_evidence:
            result.modifiers.append(Modifier(mod.code, mod.reason, tuple(mod_evidence)))

    result.blocked = any(pack.severity_rank(f.severity) >= threshold for f in result.findings)
    return result


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
