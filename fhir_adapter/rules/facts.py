"""Facts derived once per case that rules test: setting, coverage, tumor count and size.

The code knows how to find each fact in FHIR; which codes and patterns count
comes from the pack.
"""

from __future__ import annotations

import re
from typing import Any

from fhir_adapter.case import Case
from fhir_adapter.fhir.codings import codings
from fhir_adapter.fhir.elements import Resource
from fhir_adapter.findings import Evidence
from fhir_adapter.rules.context import Fact
from fhir_adapter.rules.pack import Pack
from fhir_adapter.rules.text import TEXT_SOURCES, TextIndex, iter_affirmed, snippet

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LESION = re.compile(
    r"\b(?:lesions?|tumou?rs?|nodules?|metastas[ie]s|mass(?:es)?|HCC|carcinoma)\b", re.I
)
_NOT_TUMOR_SIZE = re.compile(r"\b(?:margin|zone|needle|probe|electrode|antenna|gauge)\b", re.I)


def derive_facts(pack: Pack, case: Case, text: TextIndex) -> dict[str, Fact]:
    facts = {
        "place_of_service": place_of_service(pack, case),
        "coverage": _ref_fact(case, case.coverage[:1], "Coverage", "active on the date of service"),
        "provider": _provider(case),
        "earlier_same_session": _ref_fact(
            case,
            case.same_code_earlier,
            "Procedure.code",
            "same patient and session, performed first",
        ),
        "tumor_count": tumor_count(pack, case, text),
        "tumor_max_size_cm": tumor_max_size_cm(pack, case, text),
    }
    return facts


def _ref_fact(case: Case, resources: list[Resource], path: str, note: str) -> Fact:
    if not resources:
        return Fact(None)
    evidence = tuple(Evidence(case.ref(r), path, None, note) for r in resources)
    return Fact([case.ref(r) for r in resources], evidence)


def _provider(case: Case) -> Fact:
    if not case.provider_ref:
        return Fact(None)
    path = (
        "Procedure.performer.actor"
        if case.practitioners or case.roles
        else "Encounter.serviceProvider"
    )
    return Fact(case.provider_ref, (Evidence(case.provider_ref, path),))


def place_of_service(pack: Pack, case: Case) -> Fact:
    """An explicit CMS POS coding wins; otherwise infer from Encounter.class (and say so)."""
    pos = pack.system("pos")
    places: list[tuple[Resource, str, Any]] = []
    if case.encounter:
        places.append((case.encounter, "Encounter.serviceType", case.encounter.get("serviceType")))
        places.append((case.encounter, "Encounter.extension", _extension_values(case.encounter)))
    places.append((case.procedure, "Procedure.extension", _extension_values(case.procedure)))
    for loc in case.locations:
        places.append((loc, "Location.type", loc.get("type")))
        places.append((loc, "Location.extension", _extension_values(loc)))
    for resource, path, value in places:
        for coding in codings(value):
            if coding.get("system") == pos and isinstance(coding.get("code"), str):
                code = coding["code"].strip()
                return Fact(code, (Evidence(case.ref(resource), path, None, f"POS {code}"),), pos)
    inference = pack.model.place_of_service.infer_from_encounter_class
    if case.encounter:
        for coding in codings(case.encounter.get("class")):
            code = coding.get("code")
            system = coding.get("system")
            if system in (None, inference.system) and code in inference.map:
                inferred = inference.map[code]
                note = f"inferred: Encounter.class {code} -> POS {inferred}"
                ev = Evidence(case.ref(case.encounter), "Encounter.class", None, note)
                return Fact(inferred, (ev,), pos)
    return Fact(None)


def _extension_values(resource: Resource) -> list[Any]:
    out: list[Any] = []
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict):
            out.extend(v for k, v in ext.items() if k in ("valueCodeableConcept", "valueCoding"))
    return out


def tumor_count(pack: Pack, case: Case, text: TextIndex) -> Fact:
    """The largest count documented: lesion Observations, Couinaud sites, or text."""
    cfg = pack.model.facts.tumor_count
    obs_vs = pack.valuesets[cfg.observations]
    site_vs = pack.valuesets[cfg.body_sites]
    best = 0
    evidence: list[Evidence] = []
    lesions = [
        o
        for o in case.observations
        if any(obs_vs.contains(c.get("system"), c.get("code")) for c in codings(o.get("code")))
    ]
    if lesions:
        best = len(lesions)
        evidence.extend(
            Evidence(case.ref(o), "Observation.code", None, "one tumor-size observation per lesion")
            for o in lesions
        )
    sites = {
        c.get("code")
        for c in codings(case.procedure.get("bodySite"))
        if site_vs.contains(c.get("system"), c.get("code"))
    }
    if len(sites) > best:
        best = len(sites)
        evidence.append(Evidence(case.key, "Procedure.bodySite", None, f"{len(sites)} segment(s)"))
    numbers = pack.model.text.numbers
    for unit, sentence, m in iter_affirmed(
        text, TEXT_SOURCES, pack.patterns[cfg.patterns], pack.scope
    ):
        word = m.group(0).split()[0].lower()
        n = int(word) if word.isdigit() else numbers.get(word)
        if n is None or n > 50:
            continue
        evidence.append(Evidence(unit.reference, unit.path, snippet(sentence, m.start(), m.end())))
        best = max(best, n)
    return Fact(best if best else None, tuple(evidence[:5]))


def tumor_max_size_cm(pack: Pack, case: Case, text: TextIndex) -> Fact:
    """The greatest tumor dimension in cm, from Observations or lesion sentences."""
    cfg = pack.model.facts.tumor_max_size_cm
    obs_vs = pack.valuesets[cfg.observations]
    best: float | None = None
    evidence: list[Evidence] = []
    for obs in case.observations:
        if not any(
            obs_vs.contains(c.get("system"), c.get("code")) for c in codings(obs.get("code"))
        ):
            continue
        quantities = [obs.get("valueQuantity")] + [
            comp.get("valueQuantity")
            for comp in obs.get("component") or []
            if isinstance(comp, dict)
        ]
        for q in quantities:
            cm = _centimetres(q)
            if cm is not None and (best is None or cm > best):
                best = cm
                evidence = [
                    Evidence(case.ref(obs), "Observation.valueQuantity", None, f"{cm:g} cm")
                ]
    for unit, sentence, m in iter_affirmed(
        text, TEXT_SOURCES, pack.patterns[cfg.patterns], pack.scope
    ):
        tail = sentence[m.end() : m.end() + 30]
        if not _LESION.search(sentence) or _NOT_TUMOR_SIZE.search(tail):
            continue
        unit_mm = m.group(0).lower().rstrip().endswith("mm")
        values = [float(x) for x in _NUMBER.findall(m.group(0))]
        if not values:
            continue
        cm = max(values) / (10 if unit_mm else 1)
        if best is None or cm > best:
            best = cm
            evidence = [Evidence(unit.reference, unit.path, snippet(sentence, m.start(), m.end()))]
    return Fact(best, tuple(evidence))


def _centimetres(q: Any) -> float | None:
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
        return None
    unit = str(q.get("code") or q.get("unit") or "cm").lower()
    factor = {"cm": 1.0, "mm": 0.1, "m": 100.0}.get(unit)
    return float(q["value"]) * factor if factor else None
