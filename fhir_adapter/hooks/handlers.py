"""What each service does with a call: gather the case(s), run the engine, build cards.

Orders and appointments are evaluated as the Procedure they ask for: the draft
order becomes a planned Procedure (its code, patient, encounter, reasons,
performer, location, date) and goes through `assemble` and `evaluate_case` like
any recorded one; only the findings that can already be known before the
procedure happens are shown. Discharge evaluates the encounter's recorded 47382
Procedures in full, exactly as `evaluate` and `run` do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from fhir_adapter.case import Case, assemble, find_procedures
from fhir_adapter.deadline import check_deadline
from fhir_adapter.errors import HookError, PreconditionFailed, ServerError
from fhir_adapter.fhir.codings import has_coding
from fhir_adapter.fhir.elements import FHIR_ID
from fhir_adapter.fhir.references import reference_string
from fhir_adapter.gather import ServerSource
from fhir_adapter.hooks import cards
from fhir_adapter.hooks.data import Entry, HookData, HookRequest, add_entries, bundle_entries
from fhir_adapter.pack import Pack
from fhir_adapter.pipeline import now_iso
from fhir_adapter.rules import evaluate_case
from fhir_adapter.sources.store import ResourceStore
from fhir_adapter.writeback import CaseOutput, build_output

# Findings an order can already show: each would block the claim later.
ORDER_CHECKS = ("diagnosis-unsupported", "coverage-missing", "place-of-service-not-covered")
REQUESTED_SETTING = "http://fhir-adapter.org/fhir/StructureDefinition/requested-setting"
ORDER_PREFIX = "order-"


# What of an encounter says where care happens (read by the place-of-service fact).
_SETTING_ELEMENTS = ("class", "serviceType", "location", "extension")


def _evaluate(
    pack: Pack,
    data: HookData,
    store: ResourceStore,
    procedure: dict[str, Any],
    block_on: str | None,
    setting_from_encounter: bool = True,
) -> tuple[Case, CaseOutput]:
    check_deadline()
    case = assemble(store, procedure, pack.procedure_systems, pack.procedure_code)
    if case.unresolved and data.resolve_leftovers(store, case):
        case = assemble(store, procedure, pack.procedure_systems, pack.procedure_code)
    if not setting_from_encounter:
        _setting_from_order_only(store, case)
    evaluation = evaluate_case(pack, case, block_on, data.payers)
    return case, build_output(pack, case, evaluation, now_iso())


def _setting_from_order_only(store: ResourceStore, case: Case) -> None:
    """The encounter an order is signed in (an ED visit, a clinic) is not where the
    procedure will happen: it still brings diagnoses and the date, but not the setting,
    which then comes from the order's own location (or stays unknown)."""
    if case.encounter is not None:
        case.encounter = {k: v for k, v in case.encounter.items() if k not in _SETTING_ELEMENTS}
    own = store.resolve(case.procedure.get("location"), case.procedure)
    case.locations = [loc for loc in case.locations if own is not None and loc == own]


# -- encounter-discharge ----------------------------------------------------------


def encounter_discharge(
    pack: Pack, request: HookRequest, data: HookData, block_on: str | None = None
) -> dict[str, Any]:
    """Every 47382 Procedure of the encounter: a card per finding, a Claim card when billable."""
    request.context_id("patientId")
    encounter = request.context_id("encounterId")
    encounter_key = f"Encounter/{encounter}"
    outputs: list[CaseOutput] = []
    if not request.prefetch and data.can_fetch:
        outputs = _discharge_from_server(pack, data, encounter_key, block_on)
    else:
        store = data.prefetched_store()
        for procedure in find_procedures(store, pack.procedure_systems, pack.procedure_code):
            if store.canonical(procedure.get("encounter")) != encounter_key or pack.voids(
                procedure
            ):
                continue
            outputs.append(_evaluate(pack, data, store, procedure, block_on)[1])
    result: list[dict[str, Any]] = []
    for output in outputs:
        subject = output.evaluation.procedure
        for finding in output.evaluation.findings:
            result.append(cards.finding_card(pack, finding, subject))
        claim = cards.claim_card(output, subject)
        if claim is not None:
            result.append(claim)
    return {"cards": result}


def _discharge_from_server(
    pack: Pack, data: HookData, encounter_key: str, block_on: str | None
) -> list[CaseOutput]:
    """Nothing prefetched: the same reads as `run` (a search page, then ≤ 2 batches per case)."""
    client = data.client("the encounter's procedures")
    source = ServerSource(client, pack.procedure_systems, pack.procedure_code)
    outputs = []
    try:
        for procedures, included in source.procedure_pages(encounter=encounter_key):
            data.reads += 1
            for procedure in procedures:
                if pack.voids(procedure):
                    continue
                check_deadline()
                gathered = source.gather(procedure, included)
                data.reads += gathered.reads
                evaluation = evaluate_case(pack, gathered.case, block_on, data.payers)
                outputs.append(build_output(pack, gathered.case, evaluation, now_iso()))
    except ServerError as exc:
        raise PreconditionFailed(f"reading the encounter's procedures: {exc}") from None
    return outputs


# -- order-sign / order-select / appointment-book --------------------------------


def _order_entries(value: Any, what: str) -> list[Entry]:
    """The resources of context.draftOrders / context.appointments; a malformed Bundle is
    the caller's error (422 naming the element), never skipped in silence."""
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        raise HookError(f"context.{what} must be a FHIR Bundle", 422)
    entries = bundle_entries(value, f"context.{what}")
    for i, (res, _) in enumerate(entries):
        at = f"context.{what}.entry[{i}].resource"
        _check_shape(res, at)
        if not FHIR_ID.fullmatch(res.get("id") or ""):  # without one it would pass unchecked
            raise HookError(
                f"{at}.id is required and must be a FHIR id (A-Z, a-z, 0-9, '-', '.')", 422
            )
    return entries


# The elements of an order or appointment the service reads, by the JSON shape FHIR gives them.
_OBJECTS = ("code", "encounter", "occurrencePeriod", "subject")
_ARRAYS_OF_OBJECTS = (
    "performer",
    "locationReference",
    "locationCode",
    "reasonCode",
    "reasonReference",
    "bodySite",
    "note",
    "extension",
    "serviceType",
    "requestedPeriod",
    "participant",
)
_STRINGS = ("id", "occurrenceDateTime", "start", "authoredOn")


def _check_shape(res: dict[str, Any], at: str) -> None:
    """422 for an element of the wrong JSON type (an object, an array of objects, a string)."""
    for name in _OBJECTS:
        if name in res and not isinstance(res[name], dict):
            raise HookError(f"{at}.{name} must be an object", 422)
    for name in _ARRAYS_OF_OBJECTS:
        if name not in res:
            continue
        value = res[name]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise HookError(f"{at}.{name} must be an array of objects", 422)
    for name in _STRINGS:
        if name in res and not isinstance(res[name], str):
            raise HookError(f"{at}.{name} must be a string", 422)
    for i, participant in enumerate(res.get("participant") or []):
        if "actor" in participant and not isinstance(participant["actor"], dict):
            raise HookError(f"{at}.participant[{i}].actor must be a Reference (an object)", 422)


def _requested_date(resource: dict[str, Any]) -> str:
    """When the procedure is to happen: the order's occurrence or the appointment's start,
    else when it was ordered, else today (the date coverage is checked for)."""
    periods = resource.get("requestedPeriod")
    first_period = periods[0] if isinstance(periods, list) and periods else {}
    for value in (
        resource.get("occurrenceDateTime"),
        (resource.get("occurrencePeriod") or {}).get("start"),
        resource.get("start"),
        first_period.get("start") if isinstance(first_period, dict) else None,
        resource.get("authoredOn"),
    ):
        if isinstance(value, str) and len(value) >= 10:
            return value[:10]
    return dt.datetime.now(dt.UTC).date().isoformat()


def _as_procedure(order: dict[str, Any], request: HookRequest, pack: Pack) -> dict[str, Any] | None:
    """The planned Procedure an order or appointment asks for (None when it is not 47382)."""
    rtype = order.get("resourceType")
    rid = order.get("id")
    if not isinstance(rid, str) or not rid:
        return None
    patient = request.context.get("patientId")
    encounter = request.context.get("encounterId")
    system, code = pack.procedure_systems, pack.procedure_code
    proc: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": f"{ORDER_PREFIX}{rid}",
        "status": "preparation",
        "subject": {"reference": f"Patient/{patient}"},
    }
    performers: list[Any] = []
    locations: list[Any] = []
    if rtype == "ServiceRequest":
        if not has_coding(order, ("code",), system, code):
            return None
        proc["code"] = order["code"]
        performers = list(order.get("performer") or [])
        locations = list(order.get("locationReference") or [])
        settings = [cc for cc in order.get("locationCode") or [] if isinstance(cc, dict)]
        proc["extension"] = [
            {"url": REQUESTED_SETTING, "valueCodeableConcept": cc} for cc in settings
        ]
        if order.get("encounter"):
            proc["encounter"] = order["encounter"]
    elif rtype == "Appointment":
        if not (
            has_coding(order, ("serviceType",), system, code)
            or has_coding(order, ("reasonCode",), system, code)
        ):
            return None
        proc["code"] = {"coding": [{"system": pack.procedure_system, "code": code}]}
        for participant in order.get("participant") or []:
            ref = reference_string((participant or {}).get("actor"))
            if ref and ref.split("/")[-2:-1] in (["Practitioner"], ["PractitionerRole"]):
                performers.append(participant["actor"])
            elif ref and ref.split("/")[-2:-1] == ["Location"]:
                locations.append(participant["actor"])
    else:
        return None
    if "encounter" not in proc and isinstance(encounter, str) and encounter:
        proc["encounter"] = {"reference": f"Encounter/{encounter}"}
    for name in ("reasonCode", "reasonReference", "bodySite", "note"):
        if order.get(name):
            proc[name] = order[name]
    if performers:
        proc["performer"] = [{"actor": p} for p in performers]
    if locations:
        proc["location"] = locations[0]
    proc["performedDateTime"] = _requested_date(order)
    return {k: v for k, v in proc.items() if v not in ([], None)}


# Called with each order's coverage action (and its case and output) before the answer
# goes out: the DTR endpoints add the questionnaire to the assertion and keep the
# pre-populated answers under its coverage-assertion-id (pas.service).
CoverageHook = Callable[[dict[str, Any], Case, CaseOutput, dict[str, Any]], None]


def order_check(
    pack: Pack,
    request: HookRequest,
    data: HookData,
    block_on: str | None = None,
    on_coverage: CoverageHook | None = None,
) -> dict[str, Any]:
    """A 47382 order or appointment: blocking findings known now, documentation, CRD action."""
    request.context_id("patientId")
    request.context_id("encounterId", required=False)
    what = "appointments" if request.hook == "appointment-book" else "draftOrders"
    entries = _order_entries(request.context.get(what), what)
    orders = [res for res, _ in entries]
    selections = request.context.get("selections")
    if request.hook == "order-select" and isinstance(selections, list):
        chosen = {s for s in selections if isinstance(s, str)}
        orders = [o for o in orders if f"{o['resourceType']}/{o.get('id')}" in chosen]
    planned = [(o, p) for o in orders if (p := _as_procedure(o, request, pack)) is not None]
    if not planned:
        return {"cards": []}
    store = data.prefetched_store()
    add_entries(store, entries)
    result: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    for order, procedure in planned:
        store.add(procedure)
        order_ref = f"{order['resourceType']}/{order['id']}"
        # The setting is the order's own: its locationCode / locationReference, an
        # Appointment's Location participant, or an encounter the order itself names;
        # never the encounter it is being signed in (context.encounterId).
        own_encounter = order["resourceType"] == "ServiceRequest" and bool(order.get("encounter"))
        case, output = _evaluate(pack, data, store, procedure, block_on, own_encounter)
        rename = {case.key: order_ref}
        shown = [f for f in output.evaluation.findings if f.code in ORDER_CHECKS]
        for finding in shown:
            result.append(cards.finding_card(pack, finding, order_ref, rename))
        setting_known = output.evaluation.place_of_service is not None
        action = _coverage_action(
            pack,
            order,
            case,
            {f.code for f in shown},
            request.hook,
            setting_known,
            output.evaluation.payer_policy,
            output.evaluation.payer_criteria,
        )
        if action is not None:
            if on_coverage is not None and doc_needed_here(request.hook):
                on_coverage(order, case, output, action)
            actions.append(action)
    result.append(cards.documentation_card(pack))
    response: dict[str, Any] = {"cards": result}
    if actions:
        response["systemActions"] = actions
    return response


def doc_needed_here(hook: str) -> bool:
    """CRD: on a secondary hook (order-select) doc-needed, hence a questionnaire, is not set."""
    return hook != "order-select"


# an overlay's prior_authorization setting -> CRD pa-needed
_PA_NEEDED = {"required": "auth-needed", "not-required": "no-auth", "unknown": "conditional"}


def _coverage_action(
    pack: Pack,
    order: dict[str, Any],
    case: Case,
    shown: set[str],
    hook: str,
    setting_known: bool = True,
    policy: dict[str, Any] | None = None,
    criteria: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """`update` of the draft order with the CRD coverage-information extension, when the
    patient has a Coverage to name and the order does not carry this assertion already.
    The payer's overlay (payers.evaluate) decides covered and pa-needed where it has one;
    its undocumented criteria are the reason documentation or information is needed."""
    if not case.coverage:
        return None
    coverage_ref = case.ref(case.coverage[0])
    verdict = (policy or {}).get("verdict")
    if "place-of-service-not-covered" in shown or verdict == "not-covered":
        covered, pa_needed = "not-covered", None
    elif "diagnosis-unsupported" in shown or not setting_known or verdict == "conditional":
        # no supporting diagnosis yet, or no setting known: covered only if it is a covered one
        covered, pa_needed = "conditional", "conditional"
    else:
        covered, pa_needed = "covered", "conditional"
    authorization = (policy or {}).get("authorization")
    if pa_needed is not None and verdict is not None:
        pa_needed = _PA_NEEDED.get(str((policy or {}).get("prior_authorization")), pa_needed)
        if pa_needed == "auth-needed" and authorization:
            pa_needed = "satisfied"
    open_ = [c for c in criteria or [] if c.get("result") == "undocumented"]
    reason = (
        f"{(policy or {}).get('title')}: not documented: "
        + "; ".join(f"{c['id']} ({c['text']})" for c in open_)
        if open_
        else None
    )
    info_needed = "location" if not setting_known else "OTH" if open_ else None
    order_ref = f"{order['resourceType']}/{order['id']}"
    ext = cards.coverage_information(
        order=order_ref,
        coverage=coverage_ref,
        covered=covered,
        pa_needed=pa_needed,
        # CRD: on a secondary hook (order-select) doc-needed must not be clinical or admin
        doc_needed="clinical" if doc_needed_here(hook) else None,
        date=dt.datetime.now(dt.UTC).date().isoformat(),
        billing_code={"system": pack.procedure_system, "code": pack.procedure_code},
        info_needed=info_needed,
        reason=reason,
        satisfied_pa_id=authorization if pa_needed == "satisfied" else None,
    )
    existing = [e for e in order.get("extension") or [] if isinstance(e, dict)]
    if any(cards.same_assertion(e, ext) for e in existing):
        return None  # CRD: no system action unless something is new (date and id aside)
    updated = dict(order)
    updated["extension"] = [e for e in existing if e.get("url") != cards.CRD_COVERAGE_INFO] + [ext]
    return {
        "type": "update",
        "description": cards.plain(f"Record coverage information ({covered}) on {order_ref}"),
        "resource": updated,
    }
