"""The session's other lines, and what every line carries beside the pack's own modifiers.

- the guidance line follows its parent: not billed when its Procedure was not performed
  (in preparation, not done), reduced (52) when the parent is reduced or discontinued or the
  guidance itself was stopped (pack: claim.session_lines);
- a teaching physician's lines carry GC when a resident or fellow took part and the payer
  requires it (pack: claim.teaching_physician).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from fhir_adapter.billing import decide
from fhir_adapter.case import Case
from fhir_adapter.fhir.codings import codings
from fhir_adapter.findings import Evidence
from fhir_adapter.pack.load import Pack


def billed_guidance(pack: Pack, case: Case) -> decide.GuidanceLine | None:
    """The guidance line of the Claim: the plan's, unless its Procedure was not performed."""
    line = decide.guidance_plan(pack, case).billed
    cfg = pack.model.claim.session_lines
    if line is None or cfg is None:
        return line
    procedure = case.resource(line.reference)
    status = (procedure or {}).get("status")
    return line if status is None or status in cfg.performed_status else None


def guidance_modifiers(pack: Pack, case: Case, parent: Sequence[str]) -> list[str]:
    """What the guidance line adds to its 26: the reduced-service modifier when the
    parent line carries a reducing modifier (52, 53) or the guidance itself was stopped."""
    cfg = pack.model.claim.session_lines
    line = billed_guidance(pack, case)
    if cfg is None or line is None:
        return []
    procedure = case.resource(line.reference) or {}
    if set(parent) & set(cfg.reduced_by) or procedure.get("status") == "stopped":
        return [cfg.reduced_modifier]
    return []


@functools.lru_cache(maxsize=64)
def _words_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for a pack's word list, built once (not per case)."""
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words)
    return re.compile(rf"\b(?:{alternatives})s?\b", re.IGNORECASE)


def _texts(concept: Any) -> list[str]:
    """A CodeableConcept's text and its codings' displays and codes."""
    out = []
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        out.append(concept["text"])
    for coding in codings(concept):
        out += [str(coding[k]) for k in ("display", "code") if isinstance(coding.get(k), str)]
    return out


def trainees(pack: Pack, case: Case) -> list[Evidence]:
    """Performers other than the rendering one whose function, or whose PractitionerRole's
    code or specialty, names a resident or fellow."""
    cfg = pack.model.claim.teaching_physician
    if cfg is None:
        return []
    words = _words_pattern(tuple(cfg.trainee_words))
    rendering = decide.rendering(pack, case).keys
    out = []
    for entry in case.procedure.get("performer") or []:
        if not isinstance(entry, dict):
            continue
        ref = (entry.get("actor") or {}).get("reference")
        performer = next((p for p in case.performers if ref in (p.ref, *p.keys)), None)
        key = case.aliases.get(str(ref), str(ref))
        if performer is not None and performer.keys & rendering:
            continue
        texts = _texts(entry.get("function"))
        actor = case.resource(performer.ref if performer else key)
        roles = [actor] if (actor or {}).get("resourceType") == "PractitionerRole" else []
        if actor is not None and actor.get("resourceType") == "Practitioner":
            roles += [r for r in case.roles if decide.refers_to(case, r.get("practitioner"), actor)]
        for role in roles:
            for concept in (role or {}).get("code") or []:
                texts += _texts(concept)
        hit = next((t for t in texts if words.search(t)), None)
        if hit is not None:
            note = f"a resident or fellow took part: {hit}"
            out.append(
                Evidence(performer.ref if performer else key, "Procedure.performer", None, note)
            )
    return out


def _payer_texts(case: Case) -> list[str]:
    out: list[str] = []
    for coverage in case.coverage[:1]:
        out += _texts(coverage.get("type"))
        for cls in coverage.get("class") or []:
            if isinstance(cls, dict):
                out += [str(cls[k]) for k in ("name", "value") if isinstance(cls.get(k), str)]
    insurer = case.resource(case.insurer_ref)
    if insurer is not None and isinstance(insurer.get("name"), str):
        out.append(insurer["name"])
    return out


def teaching_modifier(pack: Pack, case: Case) -> str | None:
    """GC when a resident or fellow took part and the payer is one the pack names."""
    cfg = pack.model.claim.teaching_physician
    if cfg is None or not trainees(pack, case):
        return None
    payers = _words_pattern(tuple(cfg.payers))
    return cfg.modifier if any(payers.search(t) for t in _payer_texts(case)) else None
