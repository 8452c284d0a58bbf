"""Every Claim any fixture writes passes the edits a clearinghouse makes before a payer sees it.

The checks are written from the CMS-1500/837P rules, not from the adapter's code:
valid billable ICD-10-CM codes (at most 12), pointers that resolve (at most 4 per
line), a rendering provider with a valid NPI and a NUCC taxonomy, a place of
service on every line, a facility when that place is a facility, no 51 on 47382,
26 on imaging guidance billed in a facility, one guidance line at most.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter import evaluate_paths
from fhir_adapter.billing import icd10cm
from fhir_adapter.pack import load_pack

from .conftest import CASES, fixture_names, load_bundle

NOW = "2026-11-27T12:00:00+00:00"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
NUCC = "http://nucc.org/provider-taxonomy"
NPI = "http://hl7.org/fhir/sid/us-npi"
RENDERING = ("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole", "rendering")
FACILITY_POS = {"19", "21", "22", "23", "24"}
ABLATION_GUIDANCE = {"76940", "77013", "77022"}
NEEDLE_GUIDANCE = {"76942", "77002", "77012", "77021"}


def npi_check_digit_ok(npi: str) -> bool:
    """The CMS formulation: double alternate digits of the first nine, add 24, round up to 10."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 24
    for i, ch in enumerate(npi[:9]):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return (10 - total % 10) % 10 == int(npi[9])


def test_npi_check_digit_reference_values() -> None:
    assert npi_check_digit_ok("1234567893")
    assert npi_check_digit_ok("1245319599")
    assert not npi_check_digit_ok("1234567890")
    assert not npi_check_digit_ok("123456789")


def written_claims() -> list[tuple[str, dict[str, Any]]]:
    """Every fixture's Claims, for the parametrization (so at collection, in every test
    worker): one compiled pack for all of them, not one per fixture."""
    out = []
    pack = load_pack()
    for name in fixture_names():
        for output in evaluate_paths([CASES / f"{name}.json"], pack, now=NOW):
            out += [(name, r) for r in output.resources if r["resourceType"] == "Claim"]
    return out


CLAIMS = written_claims()


def resource_by_reference(name: str, ref: dict[str, Any]) -> dict[str, Any]:
    """The fixture's resource a Claim reference names (by Type/id or by identifier)."""
    for entry in load_bundle(name)["entry"]:
        r: dict[str, Any] = entry["resource"]
        if ref.get("reference") in (f"{r['resourceType']}/{r.get('id')}", entry["fullUrl"]):
            return r
        ident = ref.get("identifier")
        if ident and r["resourceType"] == ref.get("type") and ident in r.get("identifier", []):
            return r
    raise AssertionError(f"{name}: {ref} resolves to nothing in the fixture")


def test_there_are_claims_to_check() -> None:
    assert len(CLAIMS) >= 15


@pytest.mark.parametrize(("name", "claim"), CLAIMS, ids=[n for n, _ in CLAIMS])
def test_diagnoses_are_valid_billable_and_pointed_at(name: str, claim: dict[str, Any]) -> None:
    diagnoses = claim["diagnosis"]
    assert 1 <= len(diagnoses) <= 12
    assert [d["sequence"] for d in diagnoses] == list(range(1, len(diagnoses) + 1))
    codes = []
    for d in diagnoses:
        [coding] = d["diagnosisCodeableConcept"]["coding"]
        assert coding["system"] == ICD
        assert icd10cm.is_valid(coding["code"]) and icd10cm.is_billable(coding["code"])
        codes.append(coding["code"])
    assert len(set(codes)) == len(codes)
    kinds = [d["type"][0]["coding"][0]["code"] for d in diagnoses]
    assert kinds == ["principal"] + ["secondary"] * (len(kinds) - 1)
    for item in claim["item"]:
        pointers = item["diagnosisSequence"]
        assert 1 <= len(pointers) <= 4
        assert pointers[0] == 1, "every line points at the principal diagnosis first"
        assert set(pointers) <= {d["sequence"] for d in diagnoses}


def own_taxonomies(name: str, provider: dict[str, Any]) -> set[str]:
    """The NUCC codes of the provider itself: its qualifications, and the specialties of its
    PractitionerRole(s) (a role's own, and its Practitioner's)."""
    entries = load_bundle(name)["entry"]

    def names(entry: dict[str, Any]) -> set[str]:
        r = entry["resource"]
        return {entry["fullUrl"], f"{r['resourceType']}/{r.get('id')}"}

    resources = [e["resource"] for e in entries]
    if provider["resourceType"] == "PractitionerRole":
        roles = [provider]
        person = provider["practitioner"]["reference"]
    else:
        person_names = next(names(e) for e in entries if e["resource"] == provider)
        person = next(iter(person_names))
        roles = [
            r
            for r in resources
            if r["resourceType"] == "PractitionerRole"
            and r.get("practitioner", {}).get("reference") in person_names
        ]
    people = [e["resource"] for e in entries if person in names(e) or e["resource"] == provider]
    codes = [c for role in roles for s in role.get("specialty", []) for c in s.get("coding", [])]
    codes += [c for p in people for q in p.get("qualification", []) for c in q["code"]["coding"]]
    return {c["code"] for c in codes if c.get("system") == NUCC}


@pytest.mark.parametrize(("name", "claim"), CLAIMS, ids=[n for n, _ in CLAIMS])
def test_rendering_provider_has_npi_and_taxonomy(name: str, claim: dict[str, Any]) -> None:
    [member] = claim["careTeam"]
    role = member["role"]["coding"][0]
    assert (role["system"], role["code"]) == RENDERING
    taxonomy = member["qualification"]["coding"][0]
    assert taxonomy["system"] == NUCC and len(taxonomy["code"]) == 10
    provider = resource_by_reference(name, member["provider"])
    if claim["provider"] != member["provider"]:  # a group bills (box 33), with its own NPI
        group = resource_by_reference(name, claim["provider"])
        assert group["resourceType"] == "Organization"
        ids = [i["value"] for i in group.get("identifier", []) if i.get("system") == NPI]
        assert ids and npi_check_digit_ok(ids[0])
    assert taxonomy["code"] in own_taxonomies(name, provider), "someone else's taxonomy"
    person = provider
    if provider["resourceType"] == "PractitionerRole":  # the NPI is the practitioner's
        person = resource_by_reference(name, provider["practitioner"])
    npis = [i["value"] for i in person.get("identifier", []) if i.get("system") == NPI]
    assert npis and npi_check_digit_ok(npis[0])
    for item in claim["item"]:
        assert item["careTeamSequence"] == [member["sequence"]]


@pytest.mark.parametrize(("name", "claim"), CLAIMS, ids=[n for n, _ in CLAIMS])
def test_place_of_service_and_facility(name: str, claim: dict[str, Any]) -> None:
    places = set()
    for item in claim["item"]:
        [coding] = item["locationCodeableConcept"]["coding"]
        assert coding["system"] == POS
        places.add(coding["code"])
    assert len(places) == 1
    if places & FACILITY_POS:
        facility = resource_by_reference(name, claim["facility"])
        assert facility["resourceType"] == "Location"


@pytest.mark.parametrize(("name", "claim"), CLAIMS, ids=[n for n, _ in CLAIMS])
def test_lines_and_modifiers(name: str, claim: dict[str, Any]) -> None:
    items = claim["item"]
    codes = [i["productOrService"]["coding"][0]["code"] for i in items]
    assert codes[0] == "47382" and codes.count("47382") == 1
    assert all(i["quantity"]["value"] == 1 for i in items)
    assert all(i["productOrService"]["coding"][0]["system"] == CPT for i in items)
    assert len([c for c in codes if c in ABLATION_GUIDANCE]) <= 1
    assert not set(codes) & NEEDLE_GUIDANCE
    place = items[0]["locationCodeableConcept"]["coding"][0]["code"]
    for item, code in zip(items, codes, strict=True):
        mods = [m["coding"][0]["code"] for m in item.get("modifier", [])]
        assert len(mods) <= 4 and len(set(mods)) == len(mods)
        if code == "47382":
            assert "51" not in mods
            assert not {"52", "53"} <= set(mods)
            assert not ({"52", "53"} & set(mods) and "22" in mods), "reduced and increased"
            assert len({"58", "78", "79"} & set(mods)) <= 1
        if code in ABLATION_GUIDANCE and place in FACILITY_POS:
            assert "26" in mods
    documented = {"22", "52", "53", "XS"}  # modifiers whose documentation goes with the claim
    if documented & {m["coding"][0]["code"] for i in items for m in i.get("modifier", [])}:
        infos = claim["supportingInfo"]
        assert items[0]["informationSequence"] == [s["sequence"] for s in infos]
        for info in infos:
            assert resource_by_reference(name, info["valueReference"])
    else:
        assert "supportingInfo" not in claim


@pytest.mark.parametrize(("name", "claim"), CLAIMS, ids=[n for n, _ in CLAIMS])
def test_claim_references_resolve(name: str, claim: dict[str, Any]) -> None:
    for key in ("patient", "provider"):
        resource_by_reference(name, claim[key])
    for insurance in claim["insurance"]:
        assert resource_by_reference(name, insurance["coverage"])["resourceType"] == "Coverage"


CHARGEMASTER = CASES.parent / "chargemaster.csv"


def test_with_a_chargemaster_every_line_is_priced_and_totalled() -> None:
    """Box 24F on every line and box 28 their sum, from the example chargemaster."""
    from fhir_adapter.writeback.charges import load_charges

    charges = load_charges(CHARGEMASTER)
    priced = 0
    for output in evaluate_paths([CASES], now=NOW, charges=charges):
        for claim in [r for r in output.resources if r["resourceType"] == "Claim"]:
            nets = []
            for item in claim["item"]:
                code = item["productOrService"]["coding"][0]["code"]
                assert item["unitPrice"] == {"value": charges[code], "currency": "USD"}
                assert item["net"]["value"] == charges[code] * item["quantity"]["value"]
                nets.append(item["net"]["value"])
            assert claim["total"] == {"value": round(sum(nets), 2), "currency": "USD"}
            priced += 1
    assert priced == len(CLAIMS)
