"""Each rule on its own: fires on the defect, stays quiet on every other way of documenting."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter import evaluate_store
from fhir_adapter.errors import InputError
from fhir_adapter.pack import Pack

from .conftest import by_id, findings_of, store_of

P = "ex1-hcc-ct"
PROC = f"Procedure/{P}-rfa"
Resources = list[dict[str, Any]]


def proc(rs: Resources) -> dict[str, Any]:
    return by_id(rs, f"{P}-rfa")


def set_note(text: str) -> Callable[[Resources], None]:
    def edit(rs: Resources) -> None:
        proc(rs)["note"] = [{"text": text}]

    return edit


FULL = (
    "Single 2.1 cm HCC in segment VI, unresectable, ablated under CT guidance at 150 W. "
    "Post-ablation CT: complete ablation."
)


def test_clean_case_has_no_findings(pack: Pack, good_case: Resources) -> None:
    assert findings_of(pack, good_case) == {PROC: set()}


def _drop(rid: str) -> Callable[[Resources], None]:
    def edit(rs: Resources) -> None:
        rs[:] = [r for r in rs if r.get("id") != rid]

    return edit


def _set(rid: str, key: str, value: Any) -> Callable[[Resources], None]:
    def edit(rs: Resources) -> None:
        by_id(rs, rid)[key] = value

    return edit


def _both(*edits: Callable[[Resources], None]) -> Callable[[Resources], None]:
    def edit(rs: Resources) -> None:
        for e in edits:
            e(rs)

    return edit


ICD = "http://hl7.org/fhir/sid/icd-10-cm"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"


@pytest.mark.parametrize(
    ("edit", "fires", "quiet"),
    [
        # status
        (_set(f"{P}-rfa", "status", "preparation"), {"procedure-not-completed"}, set()),
        (_set(f"{P}-rfa", "status", "stopped"), set(), {"procedure-not-completed"}),
        # diagnosis: undotted ICD, reasonCode only, SNOMED only
        (
            _both(_set(f"{P}-dx", "code", {"coding": [{"system": ICD, "code": "C787"}]})),
            set(),
            {"diagnosis-unsupported"},
        ),
        (
            _both(
                _set(f"{P}-dx", "code", {"coding": [{"system": ICD, "code": "K74.60"}]}),
                _set(f"{P}-rfa", "reasonCode", [{"coding": [{"system": ICD, "code": "C22.1"}]}]),
            ),
            set(),
            {"diagnosis-unsupported"},
        ),
        (
            _set(f"{P}-dx", "code", {"coding": [{"system": ICD, "code": "C22"}]}),
            {"diagnosis-unsupported"},
            set(),
        ),
        (
            _set(f"{P}-dx", "verificationStatus", {"coding": [{"code": "entered-in-error"}]}),
            {"diagnosis-unsupported"},
            set(),
        ),
        # rationale from a coded reason (cirrhosis given as reason) with no narrative
        (
            _both(
                set_note(
                    "Single 2.1 cm HCC in segment VI ablated under CT guidance at 150 W. Complete ablation."
                ),
                _set(
                    f"{P}-dx",
                    "code",
                    {
                        "coding": [
                            {"system": ICD, "code": "C22.0"},
                            {"system": ICD, "code": "K76.6"},
                        ]
                    },
                ),
            ),
            set(),
            {"necessity-rationale-missing"},
        ),
        (
            set_note(
                "Single 2.1 cm HCC in segment VI ablated under CT guidance at 150 W. Complete ablation."
            ),
            {"necessity-rationale-missing"},
            set(),
        ),
        # place of service: explicit on Encounter extension; inferred from class; office
        (
            _both(
                _set(f"{P}-loc", "type", []),
                _set(
                    f"{P}-enc",
                    "extension",
                    [
                        {
                            "url": "http://example.org/pos",
                            "valueCoding": {"system": POS, "code": "24"},
                        }
                    ],
                ),
            ),
            set(),
            {"place-of-service-unknown", "place-of-service-not-covered"},
        ),
        (
            _both(
                _set(f"{P}-loc", "type", []),
                _set(
                    f"{P}-enc",
                    "class",
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
                ),
            ),
            {"place-of-service-not-covered"},
            {"place-of-service-unknown"},
        ),
        (
            _set(f"{P}-loc", "type", []),
            {"place-of-service-unknown"},
            {"place-of-service-not-covered"},
        ),
        # coverage: cancelled, or starting after the date of service
        (_set(f"{P}-cov", "status", "cancelled"), {"coverage-missing"}, set()),
        (_set(f"{P}-cov", "period", {"start": "2026-11-01"}), {"coverage-missing"}, set()),
        (_set(f"{P}-cov", "period", {"start": "2026-10-14"}), set(), {"coverage-missing"}),
        # documentation: only in text vs only structured
        (
            _both(
                _drop(f"{P}-size"),
                _drop(f"{P}-guide"),
                _set(f"{P}-rfa", "bodySite", []),
                _set(f"{P}-rfa", "outcome", {"text": "ok"}),
                set_note(FULL),
            ),
            set(),
            {
                "doc-tumor-size",
                "doc-tumor-count",
                "doc-tumor-location",
                "doc-imaging-guidance",
                "doc-energy",
                "doc-ablation-confirmation",
            },
        ),
        (
            set_note("Unresectable."),
            {"doc-energy"},
            {
                "doc-tumor-size",
                "doc-tumor-count",
                "doc-tumor-location",
                "doc-imaging-guidance",
                "doc-ablation-confirmation",
            },
        ),
        (
            _both(_drop(f"{P}-guide"), set_note("Unresectable. 150 W.")),
            {"doc-imaging-guidance"},
            set(),
        ),
        # specialty from a PractitionerRole found through the Practitioner
        (_drop(f"{P}-role"), {"specialty-unexpected"}, set()),
    ],
)
def test_rule_alternatives(
    pack: Pack,
    good_case: Resources,
    edit: Callable[[Resources], None],
    fires: set[str],
    quiet: set[str],
) -> None:
    edit(good_case)
    got = findings_of(pack, good_case)[PROC]
    assert fires <= got
    assert not (quiet & got)


def test_dangling_reason_is_named_in_the_finding(pack: Pack, good_case: Resources) -> None:
    good_case[:] = [r for r in good_case if r.get("id") != f"{P}-dx"]
    by_id(good_case, f"{P}-enc").pop("diagnosis")
    outs = evaluate_store(store_of(good_case), pack)
    finding = next(f for f in outs[0].evaluation.findings if f.code == "diagnosis-unsupported")
    notes = {(e.reference, e.note) for e in finding.evidence}
    assert (f"Condition/{P}-dx", "referenced but not found") in notes
    assert f"Condition/{P}-dx" in outs[0].evaluation.unresolved


def test_block_on_moderate_blocks_documentation_gaps(pack: Pack, good_case: Resources) -> None:
    set_note("Unresectable HCC in segment VI, 2.1 cm, CT guided; complete ablation.")(good_case)
    assert findings_of(pack, good_case)[PROC] == {"doc-energy"}
    high = evaluate_store(store_of(good_case), pack)[0]
    moderate = evaluate_store(store_of(good_case), pack, block_on="moderate")[0]
    assert (high.evaluation.outcome, moderate.evaluation.outcome) == ("claim", "issues")
    assert [r["resourceType"] for r in moderate.resources] == ["DetectedIssue"]


def test_modifier_evidence_and_claim_line(pack: Pack, good_case: Resources) -> None:
    proc(good_case)["status"] = "stopped"
    proc(good_case)["statusReason"] = {"text": "Procedure terminated early."}
    out = evaluate_store(store_of(good_case), pack)[0]
    [mod] = out.evaluation.modifiers
    assert mod.code == "52"
    assert {e.path for e in mod.evidence} >= {"Procedure.status", "Procedure.statusReason.text"}
    claim = out.resources[0]
    assert claim["item"][0]["modifier"][0]["coding"][0]["code"] == "52"
    # the guidance line follows its reduced parent: its professional component, then 52
    assert [m["coding"][0]["code"] for m in claim["item"][1]["modifier"]] == ["26", "52"]


def test_claim_diagnoses_dotted_liver_first(pack: Pack, good_case: Resources) -> None:
    by_id(good_case, f"{P}-dx")["code"] = {"coding": [{"system": ICD, "code": "K7460"}]}
    extra = dict(
        by_id(good_case, f"{P}-dx"), id="dx2", code={"coding": [{"system": ICD, "code": "c787"}]}
    )
    good_case.append(extra)
    by_id(good_case, f"{P}-enc")["diagnosis"].append({"condition": {"reference": "Condition/dx2"}})
    claim = evaluate_store(store_of(good_case), pack)[0].resources[0]
    codes = [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]]
    assert codes == ["C78.7", "K74.60"]
    assert claim["diagnosis"][0]["type"][0]["coding"][0]["code"] == "principal"
    assert claim["item"][0]["diagnosisSequence"] == [1, 2]


def test_identifiers_are_deterministic_and_independent_of_time(
    pack: Pack, good_case: Resources
) -> None:
    good_case.append(dict(by_id(good_case, f"{P}-size")))  # harmless duplicate
    a = evaluate_store(store_of(good_case), pack, now="2026-01-01T00:00:00+00:00")[0]
    b = evaluate_store(store_of(good_case), pack, now="2026-02-02T00:00:00+00:00")[0]
    assert [r["identifier"] for r in a.resources] == [r["identifier"] for r in b.resources]
    assert [e["fullUrl"] for e in a.bundle()["entry"]] == [
        e["fullUrl"] for e in b.bundle()["entry"]
    ]
    entry = a.bundle()["entry"][0]
    ident = entry["resource"]["identifier"][0]
    assert entry["request"] == {
        "method": "POST",
        "url": "Claim",
        "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
    }
    assert a.bundle("upsert")["entry"][0]["request"]["method"] == "PUT"


def test_detected_issue_points_at_evidence(pack: Pack, good_case: Resources) -> None:
    by_id(good_case, f"{P}-role")["specialty"] = []
    out = evaluate_store(store_of(good_case), pack)[0]
    claim, issue = out.resources
    assert issue["code"]["coding"][0]["code"] == "specialty-unexpected"
    assert issue["severity"] == "low"
    assert {"reference": out.full_urls[0]} in issue["implicated"]
    assert {"reference": PROC} in issue["implicated"]
    assert issue["patient"] == {"reference": f"Patient/{P}-pt"}
    assert claim["resourceType"] == "Claim"


def test_messy_real_world_values_are_accepted(pack: Pack, good_case: Resources) -> None:
    """What the R4B models reject on read (stray spaces, no timezone, vendor elements) still works."""
    by_id(good_case, f"{P}-dx")["code"] = {"coding": [{"system": ICD, "code": " c220 "}]}
    proc(good_case)["performedDateTime"] = "2026-10-14T09:30:00"
    proc(good_case)["vendorElement"] = {"x": 1}
    proc(good_case)["code"]["coding"][0]["code"] = "47382 "
    outs = evaluate_store(store_of(good_case), pack)
    assert [o.evaluation.procedure for o in outs] == [PROC]
    assert outs[0].evaluation.findings == []
    claim = outs[0].resources[0]
    assert claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"] == "C22.0"
    assert claim["item"][0]["servicedDate"] == "2026-10-14"


# -- the Claim a coder would sign -------------------------------------------------------------


def outputs_of(pack: Pack, resources: Resources, **kw: Any) -> list[Any]:
    return evaluate_store(store_of(resources), pack, now="2026-11-27T00:00:00+00:00", **kw)


def add_condition(rs: Resources, cid: str, code: str, status: str = "confirmed") -> None:
    base = by_id(rs, f"{P}-dx")
    extra = dict(
        base,
        id=cid,
        code={"coding": [{"system": ICD, "code": code}]},
        verificationStatus={"coding": [{"code": status}]},
    )
    rs.append(extra)
    by_id(rs, f"{P}-enc")["diagnosis"].append({"condition": {"reference": f"Condition/{cid}"}})


def claim_of(pack: Pack, rs: Resources) -> dict[str, Any]:
    [out] = outputs_of(pack, rs)
    return next(r for r in out.resources if r["resourceType"] == "Claim")


def line_modifiers(claim: dict[str, Any]) -> list[list[str]]:
    return [[m["coding"][0]["code"] for m in i.get("modifier", [])] for i in claim["item"]]


@pytest.mark.parametrize(
    ("status", "fires"),
    [
        ("provisional", {"diagnosis-unsupported"}),
        ("differential", {"diagnosis-unsupported"}),
        ("unconfirmed", {"diagnosis-unsupported"}),
        ("confirmed", set()),
    ],
)
def test_only_confirmed_diagnoses_count(
    pack: Pack, good_case: Resources, status: str, fires: set[str]
) -> None:
    by_id(good_case, f"{P}-dx")["verificationStatus"] = {"coding": [{"code": status}]}
    assert findings_of(pack, good_case)[PROC] == fires


def test_a_code_that_does_not_exist_is_named_with_the_release(
    pack: Pack, good_case: Resources
) -> None:
    add_condition(good_case, "dx-typo", "C22.00")
    [out] = outputs_of(pack, good_case)
    [finding] = [f for f in out.evaluation.findings if f.code == "diagnosis-code-invalid"]
    [ev] = finding.evidence
    assert ev.reference == "Condition/dx-typo"
    assert ev.note is not None and "C22.00 is not an ICD-10-CM code" in ev.note
    assert "2026" in ev.note
    assert out.evaluation.blocked


def test_a_provisional_comorbidity_stays_off_the_claim(pack: Pack, good_case: Resources) -> None:
    add_condition(good_case, "dx-maybe", "K76.6", "provisional")
    add_condition(good_case, "dx-yes", "K74.60")
    claim = claim_of(pack, good_case)
    codes = [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]]
    assert codes == ["C22.0", "K74.60"]


def test_at_most_12_diagnoses_and_4_pointers(pack: Pack, good_case: Resources) -> None:
    extra = ["K74.60", "K76.6", "R18.8", "I85.00", "J44.9", "I50.9", "N18.4", "E66.01"]
    extra += ["Z68.41", "D69.6", "D68.4", "Z79.01", "B18.2", "K70.30"]
    for i, code in enumerate(extra):
        add_condition(good_case, f"dx{i}", code)
    claim = claim_of(pack, good_case)
    assert len(claim["diagnosis"]) == 12
    assert claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"] == "C22.0"
    assert [d["type"][0]["coding"][0]["code"] for d in claim["diagnosis"]][:2] == [
        "principal",
        "secondary",
    ]
    assert all(i["diagnosisSequence"] == [1, 2, 3, 4] for i in claim["item"])


@pytest.mark.parametrize(
    ("reason", "modifiers"),
    [
        ("Stopped after one cycle: the patient became hemodynamically unstable.", ["53"]),
        ("Stopped after one cycle because of brisk bleeding along the electrode track.", ["53"]),
        ("Aborted: the patient became bradycardic and hypotensive under sedation.", ["53"]),
        ("Terminated early: the patient could not tolerate the procedure under sedation.", ["53"]),
        ("Stopped because of a vasovagal reaction after the first cycle.", ["53"]),
        ("Aborted due to a procedural complication (subcapsular hematoma).", ["53"]),
        ("Stopped: oxygen saturation dropped to 84% under sedation.", ["53"]),
        ("Stopped after one cycle at the operator's discretion; no hypotension.", ["52"]),
        ("The remaining margin will be treated with chemoembolization instead.", ["52"]),
    ],
)
def test_53_for_the_patients_safety_else_52(
    pack: Pack, good_case: Resources, reason: str, modifiers: list[str]
) -> None:
    proc(good_case)["status"] = "stopped"
    proc(good_case)["statusReason"] = {"text": reason}
    [out] = outputs_of(pack, good_case)
    assert [m.code for m in out.evaluation.modifiers] == modifiers
    assert line_modifiers(out.resources[0])[0] == modifiers


def test_safety_words_do_not_give_53_on_a_completed_procedure(
    pack: Pack, good_case: Resources
) -> None:
    set_note(FULL + " Transient hypotension responded to fluids; ablation completed.")(good_case)
    [out] = outputs_of(pack, good_case)
    assert [m.code for m in out.evaluation.modifiers] == []


@pytest.mark.parametrize(
    ("note", "modifiers", "findings"),
    [
        (FULL.replace("2.1 cm", "6.2 cm"), [], {"modifier-22-review"}),
        (
            FULL.replace("2.1 cm", "6.2 cm")
            + " The ablation took substantially longer than usual (95 minutes) because of"
            " overlapping zones around the hepatic vein.",
            ["22"],
            set(),
        ),
        (FULL + " Technically challenging.", [], set()),
        (FULL + " There was no substantially greater work than usual.", [], set()),
        (FULL + " Modifier 22 was not appended.", [], set()),
    ],
)
def test_22_needs_a_statement(
    pack: Pack, good_case: Resources, note: str, modifiers: list[str], findings: set[str]
) -> None:
    by_id(good_case, f"{P}-size")["component"][0]["valueQuantity"]["value"] = (
        6.2 if ("6.2" in note) else 2.1
    )
    set_note(note)(good_case)
    [out] = outputs_of(pack, good_case)
    assert [m.code for m in out.evaluation.modifiers] == modifiers
    assert {f.code for f in out.evaluation.findings} == findings
    claim = out.resources[0]
    if modifiers:
        assert claim["supportingInfo"][0]["valueReference"] == {"reference": PROC}
        assert claim["item"][0]["informationSequence"] == [1]
    else:
        assert "supportingInfo" not in claim


def _earlier_rfa(rs: Resources, day: str, note: str | None = None) -> None:
    """The same performer's 47382 on an earlier day, in its own encounter, with its CT
    guidance (its note documents it: without the Procedure, service-not-billed)."""
    enc = dict(by_id(rs, f"{P}-enc"), id="enc0", period={"start": f"{day}T08:00:00-04:00"})
    first = dict(
        proc(rs),
        id="rfa0",
        identifier=[{"system": "urn:x", "value": "rfa0"}],
        encounter={"reference": "Encounter/enc0"},
        performedDateTime=f"{day}T09:00:00-04:00",
    )
    guide = dict(
        by_id(rs, f"{P}-guide"),
        id="guide0",
        encounter={"reference": "Encounter/enc0"},
        performedDateTime=f"{day}T09:00:00-04:00",
    )
    rs += [enc, first, guide]
    if note:
        set_note(note)(rs)


@pytest.mark.parametrize(
    ("day", "note", "fires", "modifiers"),
    [
        ("2026-10-08", None, {"global-period"}, []),
        ("2026-10-04", None, {"global-period"}, []),  # day 10 of 10
        ("2026-10-03", None, set(), []),  # the global period has ended
        ("2026-10-08", FULL + " Staged procedure: the second lesion, as planned.", set(), ["58"]),
        (
            "2026-10-08",
            FULL + " This ablation of a new lesion is unrelated to the prior procedure.",
            set(),
            ["79"],
        ),
    ],
)
def test_global_period(
    pack: Pack,
    good_case: Resources,
    day: str,
    note: str | None,
    fires: set[str],
    modifiers: list[str],
) -> None:
    _earlier_rfa(good_case, day, note)
    outs = {o.evaluation.procedure: o.evaluation for o in outputs_of(pack, good_case)}
    assert {f.code for f in outs[PROC].findings} == fires
    assert [m.code for m in outs[PROC].modifiers] == modifiers
    assert outs["Procedure/rfa0"].findings == []


def test_another_performer_has_no_global_period(pack: Pack, good_case: Resources) -> None:
    _earlier_rfa(good_case, "2026-10-08")
    by_id(good_case, "rfa0")["performer"] = [{"actor": {"reference": "Practitioner/other"}}]
    assert findings_of(pack, good_case)[PROC] == set()


def test_units_are_per_date_of_service_across_encounters(pack: Pack, good_case: Resources) -> None:
    _earlier_rfa(good_case, "2026-10-14")
    by_id(good_case, "rfa0")["performedDateTime"] = "2026-10-14T07:00:00-04:00"
    got = findings_of(pack, good_case)
    assert got[PROC] == {"units-exceeded"}
    assert got["Procedure/rfa0"] == set()


@pytest.mark.parametrize(
    ("npi", "fires"),
    [
        ("1245319599", set()),
        ("1245319590", {"provider-npi-invalid"}),
        ("124531959", {"provider-npi-invalid"}),
    ],
)
def test_npi_on_the_practitioner_behind_a_role(
    pack: Pack, good_case: Resources, npi: str, fires: set[str]
) -> None:
    """A PractitionerRole as performer: the NPI of its Practitioner counts."""
    proc(good_case)["performer"] = [{"actor": {"reference": f"PractitionerRole/{P}-role"}}]
    by_id(good_case, f"{P}-dr")["identifier"] = [
        {"system": "http://hl7.org/fhir/sid/us-npi", "value": npi}
    ]
    assert findings_of(pack, good_case)[PROC] == fires
    if not fires:
        claim = claim_of(pack, good_case)
        assert claim["careTeam"][0]["provider"] == {"reference": f"PractitionerRole/{P}-role"}


def test_npi_check_digit() -> None:
    from fhir_adapter.billing.decide import is_valid_npi

    assert is_valid_npi("1234567893") and is_valid_npi("1245319599")
    assert not is_valid_npi("1234567890")
    assert not is_valid_npi("12345678930") and not is_valid_npi("123456789X")
    assert not is_valid_npi(None)


def _guidance(rs: Resources, gid: str, code: str, when: str) -> None:
    rs.append(
        dict(
            by_id(rs, f"{P}-guide"),
            id=gid,
            code={"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]},
            performedDateTime=when,
        )
    )


@pytest.mark.parametrize(
    ("needle", "advice"), [("77012", "report 77013"), ("77002", "(76940/77013/77022)")]
)
def test_needle_guidance_names_the_ablation_code(
    pack: Pack, good_case: Resources, needle: str, advice: str
) -> None:
    _guidance(good_case, "g1", needle, "2026-10-14T09:30:00-04:00")
    _drop(f"{P}-guide")(good_case)
    set_note(FULL + " The ablation zone was monitored on CT throughout.")(good_case)
    [out] = outputs_of(pack, good_case)
    [conflict] = [f for f in out.evaluation.findings if f.code == "guidance-code-conflict"]
    assert conflict.evidence[0].note is not None and advice in conflict.evidence[0].note
    # one problem, one finding: the needle code is not billed, so no PTP edit applies to it
    assert {f.code for f in out.evaluation.findings} == {"guidance-code-conflict"}


def test_the_same_guidance_code_twice_is_one_line(pack: Pack, good_case: Resources) -> None:
    _guidance(good_case, "g2", "77013", "2026-10-14T09:50:00-04:00")
    claim = claim_of(pack, good_case)
    assert [i["productOrService"]["coding"][0]["code"] for i in claim["item"]] == ["47382", "77013"]
    assert findings_of(pack, good_case)[PROC] == set()


def _tables_with(tmp_path: Any, row: str) -> Any:
    import shutil

    from fhir_adapter.billing import tables

    src = tables.default_directory()
    dst = tmp_path / "tables"
    shutil.copytree(src, dst)
    ptp = next(dst.glob("ptp-*.txt"))
    ptp.write_text(ptp.read_text() + row + "\n")
    return tables.load_tables(dst)


@pytest.mark.parametrize(
    ("indicator", "note", "fires", "guidance_mods"),
    [
        ("0", FULL, {"coding-edit-ptp"}, None),
        ("0", FULL + " CT guidance was a separate session.", {"coding-edit-ptp"}, None),
        ("1", FULL, {"coding-edit-ptp"}, None),
        ("1", FULL + " CT guidance was for a separate lesion.", set(), ["26", "XS"]),
        ("9", FULL, set(), ["26"]),
    ],
)
def test_ptp_modifier_indicator(
    pack: Pack,
    good_case: Resources,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    indicator: str,
    note: str,
    fires: set[str],
    guidance_mods: list[str] | None,
) -> None:
    from fhir_adapter.billing import decide

    row = f"47382\t77013\t\t20260101\t*\t{indicator}\tMutually exclusive procedures"
    loaded = _tables_with(tmp_path, row)
    monkeypatch.setattr(decide, "payment_tables", lambda: loaded)
    set_note(note)(good_case)
    [out] = outputs_of(pack, good_case)
    assert {f.code for f in out.evaluation.findings} == fires
    if guidance_mods is not None:
        claim = out.resources[0]
        assert line_modifiers(claim)[1] == guidance_mods
        xs = claim["item"][1]["modifier"][-1]["coding"][0]
        assert xs["system"] == (
            "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
            if guidance_mods[-1] == "XS"
            else "http://www.ama-assn.org/go/cpt"
        )


def test_ptp_edit_applies_on_the_date_of_service(
    pack: Pack, good_case: Resources, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_adapter.billing import decide

    row = "47382\t77013\t\t20270101\t*\t0\tMutually exclusive procedures"
    loaded = _tables_with(tmp_path, row)
    monkeypatch.setattr(decide, "payment_tables", lambda: loaded)
    assert findings_of(pack, good_case)[PROC] == set()


def test_facility_and_26_follow_the_place_of_service(pack: Pack, good_case: Resources) -> None:
    claim = claim_of(pack, good_case)
    # the Location's own NPI is the service facility's (box 32a)
    npi = {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1934567896"}
    assert claim["facility"] == {"reference": f"Location/{P}-loc", "identifier": npi}
    # an inpatient encounter with no POS coding: inferred 21, still a facility
    by_id(good_case, f"{P}-loc")["type"] = []
    by_id(good_case, f"{P}-enc")["class"] = {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "IMP",
    }
    claim = claim_of(pack, good_case)
    assert claim["item"][1]["locationCodeableConcept"]["coding"][0]["code"] == "21"
    assert line_modifiers(claim) == [[], ["26"]]
    assert claim["facility"] == {"reference": f"Location/{P}-loc", "identifier": npi}


def test_no_place_of_service_no_claim(pack: Pack, good_case: Resources) -> None:
    by_id(good_case, f"{P}-loc")["type"] = []
    [out] = outputs_of(pack, good_case)
    assert out.evaluation.blocked
    assert [r["resourceType"] for r in out.resources] == ["DetectedIssue"]


def test_charges_price_every_line(pack: Pack, good_case: Resources) -> None:
    [out] = outputs_of(pack, good_case, charges={"47382": 4200.0, "77013": 385.5})
    claim = out.resources[0]
    assert [(i["unitPrice"]["value"], i["net"]["value"]) for i in claim["item"]] == [
        (4200.0, 4200.0),
        (385.5, 385.5),
    ]
    assert claim["total"] == {"value": 4585.5, "currency": "USD"}
    [out] = outputs_of(pack, good_case, charges={"47382": 4200.0})
    claim = out.resources[0]
    assert "net" in claim["item"][0] and "net" not in claim["item"][1]
    assert "total" not in claim
    [out] = outputs_of(pack, good_case)
    assert (
        not any("unitPrice" in i for i in out.resources[0]["item"])
        and "total" not in out.resources[0]
    )


@pytest.mark.parametrize(
    ("name", "text", "want"),
    [
        (
            "cm.csv",
            'code,amount\n47382,"$4,200.00"\n77013,385.50\n',
            {"47382": 4200.0, "77013": 385.5},
        ),
        ("cm.csv", "# 2026 chargemaster\n47382,4200\n", {"47382": 4200.0}),
        ("cm.json", '{"47382": 4200, "76940": 310.25}', {"47382": 4200.0, "76940": 310.25}),
        ("cm.yaml", "'47382': 4200\n", {"47382": 4200.0}),
        ("cm.csv", "47382,4200\n77013 26,120\n", {"47382": 4200.0, "77013-26": 120.0}),
    ],
)
def test_chargemaster_formats(tmp_path: Any, name: str, text: str, want: dict[str, float]) -> None:
    from fhir_adapter.writeback.charges import load_charges

    path = tmp_path / name
    path.write_text(text)
    assert load_charges(path) == want


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("cm.csv", "47382,4200\n77013,lots\n", "cm.csv:2: charge for 77013"),
        ("cm.csv", "47382\n", "expected 'code,amount'"),
        ("cm.csv", "4738,100\n", "not a CPT/HCPCS code"),
        ("cm.json", "[1, 2]", "mapping of code to amount"),
        ("cm.csv", "47382,-5\n", "not an amount"),
        # a code listed twice: which charge was meant is not to be guessed
        ("cm.csv", "47382,100\n47382,900\n", r"cm.csv:2: 47382 is charged twice \(line 1"),
        ("cm.csv", "code,amount\n77013-26,10\n47382,1\n77013 26,12\n", r"cm.csv:4: 77013-26"),
        ("cm.json", '{"47382": 100,\n "47382": 900}', r"cm.json:2:2: the key '47382' is written"),
        ("cm.yaml", "47382: 100\n'47382': 900\n", "cm.yaml:2:1: the key '47382'"),
        ("cm.yaml", "g0001: 100\nG0001: 900\n", "cm.yaml:2:1: G0001 is charged twice"),
    ],
)
def test_chargemaster_errors_name_the_line(
    tmp_path: Any, name: str, text: str, needle: str
) -> None:
    from fhir_adapter.errors import AdapterError
    from fhir_adapter.writeback.charges import load_charges

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(AdapterError, match=needle):
        load_charges(path)


def test_charges_option_on_the_command_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from fhir_adapter.cli import main

    from .conftest import CASES

    chargemaster = tmp_path / "charges.csv"
    chargemaster.write_text("code,amount\n47382,4200\n77013,385.50\n")
    args = ["evaluate", str(CASES / "ex1-hcc-ct.json"), "--format", "json"]
    assert main([*args, "--charges", str(chargemaster)]) == 0
    [case] = json.loads(capsys.readouterr().out)["cases"]
    claim = case["resources"][0]
    assert claim["total"]["value"] == 4585.5
    assert main([*args, "--charges", str(tmp_path / "missing.csv")]) == 2


def test_tables_directory_from_the_environment(
    pack: Pack, good_case: Resources, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FHIR_ADAPTER_TABLES (a new quarter's release) is what the rules read."""
    _tables_with(tmp_path, "47382\t77013\t\t20260101\t*\t0\tMutually exclusive procedures")
    assert findings_of(pack, good_case)[PROC] == set()
    monkeypatch.setenv("FHIR_ADAPTER_TABLES", str(tmp_path / "tables"))
    assert findings_of(pack, good_case)[PROC] == {"coding-edit-ptp"}


def test_an_uncertain_diagnosis_is_named_in_the_finding(pack: Pack, good_case: Resources) -> None:
    by_id(good_case, f"{P}-dx")["verificationStatus"] = {"coding": [{"code": "provisional"}]}
    [out] = outputs_of(pack, good_case)
    [finding] = [f for f in out.evaluation.findings if f.code == "diagnosis-unsupported"]
    [why] = [e for e in finding.evidence if e.status == "uncertain"]
    assert (why.reference, why.cue) == (f"Condition/{P}-dx", "provisional")
    assert why.note is not None and "IV.H" in why.note


def test_a_malformed_date_of_service_is_not_a_crash(pack: Pack, good_case: Resources) -> None:
    proc(good_case)["performedDateTime"] = "2026/10/14 09:30"
    by_id(good_case, f"{P}-enc")["period"] = {"start": "14-10-2026T08:00"}
    _earlier_rfa(good_case, "2026-10-08")
    [out] = [o for o in outputs_of(pack, good_case) if o.evaluation.procedure == PROC]
    assert "global-period" not in {f.code for f in out.evaluation.findings}


@pytest.mark.parametrize(
    "statement",
    [
        "Procedure time was 120 minutes compared with an average of 45 minutes for this ablation.",
        "The ablation took twice as long as the usual single-tumor ablation.",
        "An additional 50 minutes beyond the typical procedure time was needed.",
        "Modifier 22 is appended: hydrodissection and four electrode repositions were needed.",
    ],
)
def test_statements_of_increased_work(pack: Pack, good_case: Resources, statement: str) -> None:
    set_note(FULL + " " + statement)(good_case)
    [out] = outputs_of(pack, good_case)
    assert [m.code for m in out.evaluation.modifiers] == ["22"]


def test_of_several_taxonomies_the_expected_one_is_reported(
    pack: Pack, good_case: Resources
) -> None:
    nucc = "http://nucc.org/provider-taxonomy"
    by_id(good_case, f"{P}-role")["specialty"] = [
        {"coding": [{"system": nucc, "code": "2085R0202X"}]},
        {"coding": [{"system": nucc, "code": "2085R0204X"}]},
    ]
    claim = claim_of(pack, good_case)
    assert claim["careTeam"][0]["qualification"]["coding"][0]["code"] == "2085R0204X"


def test_same_performer_by_role_and_by_person(pack: Pack, good_case: Resources) -> None:
    """The earlier ablation names the radiologist's PractitionerRole, today's the person."""
    _earlier_rfa(good_case, "2026-10-08")
    by_id(good_case, "rfa0")["performer"] = [{"actor": {"reference": f"PractitionerRole/{P}-role"}}]
    assert findings_of(pack, good_case)[PROC] == {"global-period"}


def test_a_coded_status_reason_without_text_is_read(pack: Pack, good_case: Resources) -> None:
    proc(good_case)["status"] = "stopped"
    proc(good_case)["statusReason"] = {
        "coding": [{"system": "http://snomed.info/sct", "display": "Hemodynamic instability"}]
    }
    [out] = outputs_of(pack, good_case)
    [mod] = out.evaluation.modifiers
    assert mod.code == "53"
    assert "Procedure.statusReason.coding.display" in {e.path for e in mod.evidence}


def test_a_charge_for_the_professional_component(pack: Pack, good_case: Resources) -> None:
    charges = {"47382": 4200.0, "77013": 538.0, "77013-26": 121.0}
    [out] = outputs_of(pack, good_case, charges=charges)
    claim = out.resources[0]
    assert [i["net"]["value"] for i in claim["item"]] == [4200.0, 121.0]
    assert claim["total"]["value"] == 4321.0


# -- who rendered the service, and what is theirs to bill -------------------------------------

SCT = "http://snomed.info/sct"
NUCC = "http://nucc.org/provider-taxonomy"
ANESTHESIOLOGIST = {"coding": [{"system": SCT, "code": "88189002"}]}
SURGEON = {"coding": [{"system": SCT, "code": "304292004"}]}


def _anesthesiologist(rs: Resources, function: dict[str, Any] | None = ANESTHESIOLOGIST) -> None:
    """Another physician with a valid NPI and an anesthesiology taxonomy, listed first."""
    rs.append(
        {
            "resourceType": "Practitioner",
            "id": "gas",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
        }
    )
    rs.append(
        {
            "resourceType": "PractitionerRole",
            "id": "gas-role",
            "practitioner": {"reference": "Practitioner/gas"},
            "specialty": [{"coding": [{"system": NUCC, "code": "207L00000X"}]}],
        }
    )
    first: dict[str, Any] = {"actor": {"reference": "Practitioner/gas"}}
    if function is not None:
        first["function"] = function
    proc(rs)["performer"].insert(0, first)


@pytest.mark.parametrize("surgeon_function", [None, SURGEON])
def test_an_anesthesiologist_listed_first_is_not_the_rendering_provider(
    pack: Pack, good_case: Resources, surgeon_function: dict[str, Any] | None
) -> None:
    _anesthesiologist(good_case)
    if surgeon_function:
        proc(good_case)["performer"][1]["function"] = surgeon_function
    [out] = outputs_of(pack, good_case)
    assert out.evaluation.findings == []
    claim = out.resources[0]
    assert claim["provider"] == {"reference": f"Practitioner/{P}-dr"}
    assert claim["careTeam"][0]["provider"] == {"reference": f"Practitioner/{P}-dr"}


def test_two_performers_that_could_render_are_a_finding(pack: Pack, good_case: Resources) -> None:
    _anesthesiologist(good_case, function=None)
    [out] = outputs_of(pack, good_case)
    [finding] = out.evaluation.findings
    assert finding.code == "rendering-provider-unclear" and finding.severity == "high"
    assert {e.reference for e in finding.evidence} == {"Practitioner/gas", f"Practitioner/{P}-dr"}
    assert [r["resourceType"] for r in out.resources] == ["DetectedIssue"]
    # marking the operator settles it
    proc(good_case)["performer"][1]["function"] = SURGEON
    assert findings_of(pack, good_case)[PROC] == set()


def test_a_performer_marked_by_function_alone_is_not_enough(
    pack: Pack, good_case: Resources
) -> None:
    """The only performer is the anesthesiologist: nobody rendered the ablation."""
    proc(good_case)["performer"] = [
        {"actor": {"reference": f"Practitioner/{P}-dr"}, "function": ANESTHESIOLOGIST}
    ]
    assert "rendering-provider-unclear" in findings_of(pack, good_case)[PROC]


def test_the_taxonomy_is_the_rendering_providers_own(pack: Pack, good_case: Resources) -> None:
    """The radiologist has no taxonomy; the anesthesiologist's is not reported as theirs."""
    _anesthesiologist(good_case)
    by_id(good_case, "gas-role")["specialty"] = [
        {"coding": [{"system": NUCC, "code": "2085R0204X"}]}
    ]
    by_id(good_case, f"{P}-role")["specialty"] = []
    claim = claim_of(pack, good_case)
    assert claim["careTeam"][0]["provider"] == {"reference": f"Practitioner/{P}-dr"}
    assert "qualification" not in claim["careTeam"][0]
    # the radiologist's own qualification is
    by_id(good_case, f"{P}-dr")["qualification"] = [
        {"code": {"coding": [{"system": NUCC, "code": "2085R0202X"}]}}
    ]
    claim = claim_of(pack, good_case)
    assert claim["careTeam"][0]["qualification"]["coding"][0]["code"] == "2085R0202X"


def test_guidance_by_another_practitioner_is_not_on_this_claim(
    pack: Pack, good_case: Resources
) -> None:
    """A radiologist colleague performed the CT guidance: it is theirs to bill."""
    by_id(good_case, f"{P}-guide")["performer"] = [{"actor": {"reference": "Practitioner/ct"}}]
    claim = claim_of(pack, good_case)
    assert [i["productOrService"]["coding"][0]["code"] for i in claim["item"]] == ["47382"]
    # with no performer recorded it is taken as the operator's
    del by_id(good_case, f"{P}-guide")["performer"]
    claim = claim_of(pack, good_case)
    assert [i["productOrService"]["coding"][0]["code"] for i in claim["item"]] == [
        "47382",
        "77013",
    ]


def test_an_anesthesiologists_earlier_surgery_is_no_global_period(
    pack: Pack, good_case: Resources
) -> None:
    _anesthesiologist(good_case)
    _earlier_rfa(good_case, "2026-10-08")
    by_id(good_case, "rfa0")["performer"] = [{"actor": {"reference": "Practitioner/gas"}}]
    assert findings_of(pack, good_case)[PROC] == set()


def test_a_facility_setting_with_no_location_is_no_claim(pack: Pack, good_case: Resources) -> None:
    """POS 22 (explicit on the Encounter) but the Location the service was at is unknown."""
    del proc(good_case)["location"]
    pos = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
    enc = by_id(good_case, f"{P}-enc")
    enc["location"] = [{"location": {"reference": "Location/gone"}}]
    enc["serviceType"] = {"coding": [{"system": pos, "code": "22"}]}
    [out] = outputs_of(pack, good_case)
    assert out.evaluation.place_of_service == "22"
    assert {f.code for f in out.evaluation.findings} == {"facility-missing"}
    assert [r["resourceType"] for r in out.resources] == ["DetectedIssue"]


@pytest.mark.parametrize(
    ("status", "fires"),
    [
        ("completed", {"units-exceeded"}),
        ("stopped", {"units-exceeded"}),
        ("in-progress", set()),
        ("preparation", set()),
        ("on-hold", set()),
        ("unknown", set()),
    ],
)
def test_only_a_rendered_47382_counts_as_a_unit(
    pack: Pack, good_case: Resources, status: str, fires: set[str]
) -> None:
    _earlier_rfa(good_case, "2026-10-14")
    by_id(good_case, "rfa0")["performedDateTime"] = "2026-10-14T07:00:00-04:00"
    by_id(good_case, "rfa0")["status"] = status
    assert findings_of(pack, good_case)[PROC] == fires


STATEMENT = (
    " The ablation took substantially longer than usual (95 minutes) because of"
    " overlapping zones around the hepatic vein."
)


@pytest.mark.parametrize(
    ("reason", "kept", "left_off"),
    [
        ("Stopped after one cycle at the operator's discretion.", ["52"], "22"),
        ("Stopped after one cycle: the patient became hemodynamically unstable.", ["53"], "22"),
    ],
)
def test_22_does_not_go_with_52_or_53(
    pack: Pack, good_case: Resources, reason: str, kept: list[str], left_off: str
) -> None:
    set_note(FULL + STATEMENT)(good_case)
    proc(good_case)["status"] = "stopped"
    proc(good_case)["statusReason"] = {"text": reason}
    [out] = outputs_of(pack, good_case)
    assert [m.code for m in out.evaluation.modifiers] == kept
    [finding] = out.evaluation.findings
    assert finding.code == "modifier-conflict" and finding.severity == "moderate"
    [ev] = finding.evidence
    assert ev.note and ev.note.startswith(f"{left_off} (") and f"{kept[0]} is billed" in ev.note
    claim = out.resources[0]
    assert line_modifiers(claim)[0] == kept
    # what goes with the claim is why it was stopped (the Procedure), not the 22 statement
    assert [s["valueReference"] for s in claim["supportingInfo"]] == [{"reference": PROC}]


def test_58_and_79_both_documented_keeps_58(pack: Pack, good_case: Resources) -> None:
    _earlier_rfa(
        good_case,
        "2026-10-08",
        FULL + " Staged procedure: the second lesion, as planned. This ablation of a new lesion"
        " is unrelated to the prior procedure.",
    )
    outs = {o.evaluation.procedure: o.evaluation for o in outputs_of(pack, good_case)}
    assert [m.code for m in outs[PROC].modifiers] == ["58"]
    assert {f.code for f in outs[PROC].findings} == {"modifier-conflict"}


def test_a_modifier_that_excludes_an_unknown_one_is_a_load_error(tmp_path: Any) -> None:
    import yaml

    from fhir_adapter import PackError, load_pack
    from fhir_adapter.pack import default_pack_path

    raw = yaml.safe_load(default_pack_path().read_text())
    raw["modifiers"][0]["excludes"] = ["25"]
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PackError, match="modifier '53': unknown modifier '25'"):
        load_pack(path)
    raw["modifiers"][1]["excludes"] = ["53"]
    raw["modifiers"][0]["excludes"] = ["52"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PackError, match="no precedence"):
        load_pack(path)


@pytest.mark.parametrize("status", ["resolved", "inactive"])
def test_a_resolved_reason_is_not_coded(pack: Pack, good_case: Resources, status: str) -> None:
    """The stated reason (also the encounter's diagnosis) is no longer there."""
    by_id(good_case, f"{P}-dx")["clinicalStatus"] = {"coding": [{"code": status}]}
    [out] = outputs_of(pack, good_case)
    assert {f.code for f in out.evaluation.findings} == {"diagnosis-unsupported"}
    [finding] = out.evaluation.findings
    assert any(e.cue == status for e in finding.evidence)


def test_tables_changed_in_place_are_read_again(
    pack: Pack, good_case: Resources, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new quarter's PTP file dropped into the tables directory of a running process."""
    from fhir_adapter.billing import decide

    _tables_with(tmp_path, "")
    monkeypatch.setenv("FHIR_ADAPTER_TABLES", str(tmp_path / "tables"))
    monkeypatch.setattr(decide, "TABLES_RECHECK_SECONDS", 0.0, raising=False)
    assert findings_of(pack, good_case)[PROC] == set()
    ptp = next((tmp_path / "tables").glob("ptp-*.txt"))
    ptp.write_text(
        ptp.read_text() + "47382\t77013\t\t20260101\t*\t0\tMutually exclusive procedures\n"
    )
    assert findings_of(pack, good_case)[PROC] == {"coding-edit-ptp"}


def _encounter_only_dx(rs: Resources, clinical: str) -> None:
    """The liver-tumor Condition only points at the encounter: no reason, no encounter.diagnosis."""
    proc(rs).pop("reasonReference", None)
    proc(rs).pop("reasonCode", None)
    by_id(rs, f"{P}-enc")["diagnosis"] = []
    by_id(rs, f"{P}-dx")["clinicalStatus"] = {"coding": [{"code": clinical}]}


def test_which_clinical_statuses_are_inactive_is_read_from_the_pack(
    pack: Pack, good_case: Resources, tmp_path: Any
) -> None:
    """A Condition that only points at the encounter leaves the case when the pack's
    facts.diagnoses.inactive_clinical lists its status; nothing in the code decides that."""
    import copy

    import yaml

    from fhir_adapter import load_pack
    from fhir_adapter.pack import default_pack_path

    _encounter_only_dx(good_case, "remission")
    assert "diagnosis-unsupported" in findings_of(pack, copy.deepcopy(good_case))[PROC]
    raw = yaml.safe_load(default_pack_path().read_text())
    raw["facts"]["diagnoses"]["inactive_clinical"] = ["inactive", "resolved"]
    path = default_pack_path().parent / f".test-inactive-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(raw))  # beside the pack: its text.include paths resolve
    try:
        lenient = load_pack(path)
    finally:
        path.unlink()
    assert "diagnosis-unsupported" not in findings_of(lenient, good_case)[PROC]


def test_modifier_conflicts_is_a_fact_like_any_other(pack: Pack, good_case: Resources) -> None:
    """Derived with the other facts (not filled in later by the engine), and the same decision
    as the evaluation's modifiers."""
    from fhir_adapter.billing.modifiers import decide_modifiers
    from fhir_adapter.case import assemble
    from fhir_adapter.pack.context import Context
    from fhir_adapter.rules.facts import derive_facts
    from fhir_adapter.text.index import text_index

    set_note(FULL + STATEMENT)(good_case)
    proc(good_case)["status"] = "stopped"
    proc(good_case)["statusReason"] = {"text": "Stopped after one cycle at the surgeon's call."}
    store = store_of(good_case)
    case = assemble(store, proc(good_case), pack.procedure_system, pack.procedure_code)
    ctx = Context(case, text_index(case, pack.engine))
    facts = derive_facts(pack, ctx)
    conflict = facts["modifier_conflicts"]
    assert conflict.value and conflict.evidence[0].note
    assert conflict.evidence[0].note.startswith("22 (")
    assert [m.code for m in decide_modifiers(pack, ctx).kept] == ["52"]


def test_the_claim_reuses_what_the_rules_worked_out(
    pack: Pack, good_case: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Diagnoses, the guidance plan, the rendering provider, the PTP edits and the text index
    are worked out once per case: building the Claim adds no second computation."""
    import functools

    from fhir_adapter.billing import decide
    from fhir_adapter.text import index as text

    calls: dict[str, int] = {}

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(*args: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return fn(*args)

        return wrapped

    monkeypatch.setattr(text, "TextIndex", counting("TextIndex", text.TextIndex))
    for name in ("claim_diagnoses", "guidance_plan", "rendering", "ptp_hits"):
        body = getattr(decide, name).__wrapped__  # the decision itself, not its memo
        monkeypatch.setattr(decide, name, decide.once_per_case(counting(name, body)))
    [out] = outputs_of(pack, good_case)
    assert any(r["resourceType"] == "Claim" for r in out.resources)
    assert calls == {
        "TextIndex": 1,
        "claim_diagnoses": 1,
        "guidance_plan": 1,
        "rendering": 1,
        "ptp_hits": 1,
    }


def test_no_case_outlives_its_evaluation(pack: Pack, good_case: Resources) -> None:
    """The pipeline pauses the cyclic GC; a case's memo points back at the case, so the
    pipeline must break that cycle itself, or a run keeps every case it evaluated."""
    import gc

    from fhir_adapter.case import Case

    store = store_of(good_case)
    gc.collect()
    gc.disable()
    try:
        outputs = evaluate_store(store, pack, now="2026-11-27T00:00:00+00:00")
        alive = [o for o in gc.get_objects() if isinstance(o, Case)]
    finally:
        gc.enable()
    assert outputs and alive == []


def test_a_resolved_encounter_diagnosis_named_by_urn_uuid_stays_for_the_diagnosis_rules(
    pack: Pack, good_case: Resources
) -> None:
    """Which Conditions were stated (reason, Encounter.diagnosis) is recorded when the case
    is assembled, however the reference is written (urn:uuid:, versioned): a resolved one
    stays for the diagnosis rules, which say why it is not coded."""
    from fhir_adapter import ResourceStore
    from fhir_adapter.sources.files import Loaded

    proc(good_case).pop("reasonReference", None)
    proc(good_case).pop("reasonCode", None)
    dx = by_id(good_case, f"{P}-dx")
    dx["clinicalStatus"] = {"coding": [{"code": "resolved"}]}
    by_id(good_case, f"{P}-enc")["diagnosis"] = [
        {"condition": {"reference": "urn:uuid:0c1e0000-0000-4000-8000-000000000001"}, "rank": 1}
    ]
    store = ResourceStore(
        Loaded(r, "urn:uuid:0c1e0000-0000-4000-8000-000000000001" if r is dx else None, "t")
        for r in good_case
    )
    [out] = evaluate_store(store, pack, now="2026-11-27T00:00:00+00:00")
    [finding] = [f for f in out.evaluation.findings if f.code == "diagnosis-unsupported"]
    assert any(e.cue == "resolved" for e in finding.evidence)


def test_a_case_evaluated_again_with_another_pack_gets_that_packs_answer(
    pack: Pack, good_case: Resources, tmp_path: Any
) -> None:
    """The per-case memo (text mentions, billing decisions) belongs to one evaluation: a
    second pack that cannot read the energy applied says so even after the default one ran."""
    import re
    import shutil

    from fhir_adapter import load_pack
    from fhir_adapter.case import assemble
    from fhir_adapter.rules import default_pack_path, evaluate_case

    shutil.copytree(default_pack_path().parent, tmp_path / "mappings")
    targets = tmp_path / "mappings" / "text" / "cpt-47382-targets.yaml"
    text = targets.read_text()
    start = text.index("  energy-applied:")
    end = re.search(r"\n  [a-z][\w-]*:\n", text[start + 1 :])
    assert end is not None
    blind = "  energy-applied:\n    keywords: [zzqq]\n    terms: [zzqq]\n"
    targets.write_text(text[:start] + blind + text[start + 1 + end.start() + 1 :])
    other = load_pack(tmp_path / "mappings" / "cpt-47382.yaml")

    store = store_of(good_case)
    case = assemble(store, proc(good_case), pack.procedure_system, pack.procedure_code)
    assert "doc-energy" not in {f.code for f in evaluate_case(pack, case).findings}
    assert "doc-energy" in {f.code for f in evaluate_case(other, case).findings}


def test_a_procedure_entered_in_error_is_not_a_case(pack: Pack, good_case: Resources) -> None:
    """An EHR's voided duplicate gets no evaluation, Claim or DetectedIssue (the real
    procedure keeps its clean Claim); which statuses void a Procedure is the pack's."""
    voided = dict(proc(good_case), id=f"{P}-rfa-voided", status="entered-in-error")
    good_case.append(voided)
    outs = outputs_of(pack, good_case)
    assert [o.evaluation.procedure for o in outs] == [PROC]
    assert outs[0].evaluation.findings == []
    # with no void status in the pack it is a case again (and blocked: not completed)
    import yaml

    from fhir_adapter.pack.load import pack_from_text

    data = yaml.safe_load(pack.source_text)
    assert data["procedure"]["void_status"] == ["entered-in-error"]
    data["procedure"]["void_status"] = []
    lenient = pack_from_text(yaml.safe_dump(data), "<test pack>", Path(pack.path).parent)
    # the duplicate carries the real one's business identifier: one procedure told two
    # ways (completed, and not), so neither is billed and the run stops
    with pytest.raises(InputError, match="are one procedure"):
        findings_of(lenient, good_case)
    del voided["identifier"]
    found = findings_of(lenient, good_case)
    assert "procedure-not-completed" in found[f"Procedure/{P}-rfa-voided"]


@pytest.mark.parametrize("date", ["2025-03-04", "2026-10-14"])
def test_a_ptp_edit_on_a_code_not_billed_raises_nothing(
    pack: Pack, good_case: Resources, date: str
) -> None:
    """A biopsy of the ablated lesion in the same session (47000) is bundled, so it is not
    billed: the 47382/47000 edit is between a billed code and one that is not, and raises
    nothing (PTP edits apply between codes on the Claim) [MLN-59]."""
    rfa = proc(good_case)
    rfa["performedDateTime"] = date
    biopsy = {
        **copy.deepcopy(rfa),
        "id": f"{P}-biopsy",
        "code": {"coding": [{"system": rfa["code"]["coding"][0]["system"], "code": "47000"}]},
        "note": [{"text": "Core biopsy of the target tumor through the same introducer."}],
    }
    good_case.append(biopsy)
    for r in good_case:
        if r["resourceType"] == "Procedure":
            r["performedDateTime"] = date
        if r["resourceType"] == "Coverage":
            r["period"] = {"start": "2025-01-01", "end": "2026-12-31"}
    assert findings_of(pack, good_case)[PROC] == set()


@pytest.mark.parametrize(
    ("where", "expected"),
    [("location", ("Location/v09-office-loc", "Location.type", "POS 11")), ("class", None)],
)
def test_a_place_of_service_finding_shows_where_the_pos_came_from(
    pack: Pack, where: str, expected: tuple[str, str, str] | None
) -> None:
    """POS 11 (an office) is not covered: the evidence is the Location's POS coding, or the
    Encounter.class it was inferred from, never a bare "searched: derived facts"."""
    from .conftest import load_bundle

    rs = [copy.deepcopy(e["resource"]) for e in load_bundle("v09-office")["entry"]]
    enc = by_id(rs, "v09-office-enc")
    if where == "class":  # no POS coding anywhere: inferred from an Encounter.class of HH
        by_id(rs, "v09-office-loc").pop("type")
        enc["class"]["code"] = "HH"
        expected = ("Encounter/v09-office-enc", "Encounter.class", "inferred: Encounter.class HH")
    outs = evaluate_store(store_of(rs), pack)
    finding = next(
        f for f in outs[0].evaluation.findings if f.code == "place-of-service-not-covered"
    )
    shown = [(e.reference, e.path, e.note or "") for e in finding.evidence]
    assert expected is not None
    assert any(
        (ref, path) == expected[:2] and note.startswith(expected[2]) for ref, path, note in shown
    ), shown
    assert not any("derived facts" in note for _, _, note in shown), shown


@pytest.mark.parametrize("value", ["claim-0f3a", "issue-0f3a-doc-energy", "é ✓", ""])
def test_full_url_is_the_values_version_5_uuid(value: str) -> None:
    """Written without uuid.uuid5 (for speed); the same UUID as it, or ids would change."""
    import uuid

    from fhir_adapter.writeback.identity import NAMESPACE, full_url

    assert full_url(value) == f"urn:uuid:{uuid.uuid5(NAMESPACE, value)}"
