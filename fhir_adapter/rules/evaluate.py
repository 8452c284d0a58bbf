"""Run a compiled pack over one case: findings, met criteria, modifiers, and the verdict."""

from __future__ import annotations

from fhir_adapter.billing.decide import claim_diagnoses, clinical_code, verification_code
from fhir_adapter.billing.modifiers import decide_modifiers
from fhir_adapter.case import Case
from fhir_adapter.findings import Criterion, Evaluation, Evidence, Finding
from fhir_adapter.pack.context import Context, found
from fhir_adapter.pack.load import CompiledRule, Pack
from fhir_adapter.payers import Payers, load_payers
from fhir_adapter.payers.evaluate import evaluate_payer
from fhir_adapter.payers.match import choose
from fhir_adapter.rules.facts import derive_facts, names_payer_facts
from fhir_adapter.text.index import counts, text_index


def shipped_payers(pack: Pack) -> Payers:
    """The overlays in mappings/payers/, compiled once per pack."""
    found = pack.compiled.get("payers")
    if not isinstance(found, Payers):
        found = pack.compiled["payers"] = load_payers(pack)
    return found


def evaluate_case(
    pack: Pack, case: Case, block_on: str | None = None, payers: Payers | None = None
) -> Evaluation:
    """Evaluate `case`; findings at or above `block_on` (default: the pack's) block the Claim.
    The case's payer is judged by its overlay among `payers` (default: the shipped ones)."""
    threshold = pack.severity_rank(block_on or pack.model.default_block_on)
    # what an earlier evaluation of this case worked out (another pack, or the case since
    # changed) is not this one's: the memo starts empty, and the Claim builder reuses it
    case.derived.clear()
    _drop_conditions(pack, case)
    text = text_index(case, pack.engine)
    ctx = Context(case, text)
    choice = choose(payers if payers is not None else shipped_payers(pack), case)
    derive_facts(pack, ctx, payer=choice.overlay is not None or names_payer_facts(pack))
    result = Evaluation(
        procedure=case.label,
        patient=case.patient_ref,
        encounter=case.encounter_ref,
        unresolved=sorted({r for refs in case.unresolved.values() for r in refs}),
    )
    pos = ctx.facts["place_of_service"].value
    result.place_of_service = pos if isinstance(pos, str) else None
    result.code_sets = {"icd10cm": claim_diagnoses(pack, case).code_set_release}

    result.modifiers = list(decide_modifiers(pack, ctx).kept)

    for rule in pack.rules:
        if rule.when and not all(found(fn, ctx) for fn in rule.when):
            continue
        if any(found(fn, ctx) for fn in rule.unless):
            result.criteria.append(
                Criterion(rule.finding, True, _exception(rule, ctx), exempt=True)
            )
            continue
        evidence: list[Evidence] = []
        ruled_out: list[Evidence] = []
        for fn in rule.any:
            for e in fn(ctx):
                (evidence if counts(e) else ruled_out).append(e)
        failed = not evidence if rule.kind == "require" else bool(evidence)
        if failed:
            if rule.kind == "require":
                # what made the rule apply (the POS 11 on a Location), what was searched,
                # and the mentions a ConText cue ruled out ("not chosen")
                evidence = _applies(rule, ctx) + _absence(rule, case) + ruled_out
            severity, message = rule.severity, rule.message
            if rule.unverified is not None and _unverified_ground(rule, ctx):
                severity, message = rule.unverified.severity, rule.unverified.message
            result.findings.append(
                Finding(rule.finding, severity, message, tuple(evidence), rule.actcode, rule.source)
            )
            result.criteria.append(Criterion(rule.finding, False, tuple(evidence)))
        else:
            result.criteria.append(Criterion(rule.finding, True, tuple(evidence)))

    evaluate_payer(pack, choice, ctx, result)
    result.blocked = any(pack.severity_rank(f.severity) >= threshold for f in result.findings)
    return result


def _drop_conditions(pack: Pack, case: Case) -> None:
    """Conditions leave the case before anything looks at them when the pack calls their
    verification void (facts.diagnoses.void_verification: refuted, entered in error), and
    when they are no longer active (inactive_clinical: resolved...) and only came along
    because they point at the encounter: a stated reason or an encounter diagnosis stays,
    for the Claim's diagnosis rules to judge."""
    dx = pack.model.facts.diagnoses
    if dx is None:
        return
    void = set(dx.void_verification)
    inactive = set(dx.inactive_clinical)
    stated = {id(c) for c in case.stated_conditions}
    case.conditions = [
        c
        for c in case.conditions
        if verification_code(c) not in void
        and (id(c) in stated or clinical_code(c) not in inactive)
    ]
    for name in ("reason_conditions", "stated_conditions"):
        setattr(case, name, [c for c in getattr(case, name) if verification_code(c) not in void])


def _unverified_ground(rule: CompiledRule, ctx: Context) -> bool:
    """Every fact the rule found rests on unverified rows: no verified ground to block on."""
    found = [ctx.facts[name] for name in rule.facts if name in ctx.facts]
    present = [f for f in found if f.value not in (None, [], False)]
    return bool(present) and not any(f.verified for f in present)


def _exception(rule: CompiledRule, ctx: Context) -> tuple[Evidence, ...]:
    """The documentation that exempts a case from `rule` (its `unless` evidence)."""
    return tuple(e for fn in rule.unless for e in fn(ctx) if counts(e))


def _applies(rule: CompiledRule, ctx: Context) -> list[Evidence]:
    """The evidence of a rule's `when`: a requirement that fails is shown with the facts
    that made it one (where the place of service came from), not only with what was searched."""
    return list(dict.fromkeys(e for fn in rule.when for e in fn(ctx) if counts(e)))


def _absence(rule: CompiledRule, case: Case) -> list[Evidence]:
    """What was searched, plus any reference that would have been evidence but dangles."""
    looked = ", ".join(rule.looks_in) or "derived facts"
    out = [Evidence(case.key, "Procedure", None, f"searched: {looked}")]
    for collection in rule.looks_in:
        for ref in case.unresolved.get(collection, ()):
            out.append(Evidence(ref, collection, None, "referenced but not found"))
    return out
