"""Write fixtures/cases/*.json (FHIR R4 Bundles) and their *.expected.yaml.

Run `python tools/make_fixtures.py` after changing a case here. The expected
outcome of every case is written by hand below, never computed by the adapter.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from fhir_adapter.fhir.systems import ACT, CPT, LOINC, NPI, NUCC, POS
from fhir_adapter.fhir.systems import ICD10CM as ICD
from fhir_adapter.fhir.systems import SNOMED as SCT
from fhir_adapter.testing.catalog import README_COUNTS, fixture_counts

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "cases"

IDS = "http://example.org/fhir/sid/procedure-id"

DATE = "2026-10-14"
WHEN = f"{DATE}T09:30:00-04:00"

GOOD_NOTE = (
    "Percutaneous radiofrequency ablation of a single 2.1 cm hepatocellular carcinoma in "
    "segment VI under CT guidance. The tumor is unresectable because of its central location "
    "abutting the right hepatic vein; laparoscopic or open surgery was not chosen. "
    "RF energy was applied at 150 W for 12 minutes with a 3 cm electrode. "
    "Post-ablation CT showed complete ablation with an adequate margin. No complications."
)


def cc(
    system: str, code: str, display: str | None = None, text: str | None = None
) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ref(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


class CaseBuilder:
    """A complete, claimable 47382 case; variations edit its resources."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        s = slug
        self.patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": f"{s}-pt",
            "identifier": [{"system": "http://example.org/fhir/sid/mrn", "value": f"MRN-{s}"}],
            "name": [{"family": "Fixture", "given": [s]}],
            "gender": "female",
            "birthDate": "1956-03-02",
        }
        self.payer: dict[str, Any] = {
            "resourceType": "Organization",
            "id": f"{s}-payer",
            "name": "Acme Health Plan",
        }
        self.hospital: dict[str, Any] = {
            "resourceType": "Organization",
            "id": f"{s}-hosp",
            "name": "General Hospital",
        }
        self.coverage: dict[str, Any] = {
            "resourceType": "Coverage",
            "id": f"{s}-cov",
            "status": "active",
            "beneficiary": ref(self.patient),
            "payor": [ref(self.payer)],
            "period": {"start": "2026-01-01", "end": "2026-12-31"},
        }
        self.practitioner: dict[str, Any] = {
            "resourceType": "Practitioner",
            "id": f"{s}-dr",
            # a valid NPI: Luhn check digit over 80840 + the first nine digits
            "identifier": [{"system": NPI, "value": "1245319599"}],
            "name": [{"family": "Ablate", "given": ["Ira"], "prefix": ["Dr."]}],
        }
        self.role: dict[str, Any] = {
            "resourceType": "PractitionerRole",
            "id": f"{s}-role",
            "practitioner": ref(self.practitioner),
            "specialty": [cc(NUCC, "2085R0204X", "Vascular & Interventional Radiology Physician")],
        }
        self.location: dict[str, Any] = {
            "resourceType": "Location",
            "id": f"{s}-loc",
            "identifier": [{"system": NPI, "value": "1934567896"}],
            "name": "Interventional Radiology Suite",
            "type": [cc(POS, "22", "On Campus-Outpatient Hospital")],
        }
        self.condition: dict[str, Any] = {
            "resourceType": "Condition",
            "id": f"{s}-dx",
            "clinicalStatus": cc(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
            ),
            "verificationStatus": cc(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
            ),
            "code": {
                "coding": [
                    {"system": ICD, "code": "C22.0", "display": "Liver cell carcinoma"},
                    {
                        "system": SCT,
                        "code": "109841003",
                        "display": "Liver cell carcinoma (disorder)",
                    },
                ]
            },
            "subject": ref(self.patient),
        }
        self.encounter: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": f"{s}-enc",
            "status": "finished",
            "class": {"system": ACT, "code": "AMB", "display": "ambulatory"},
            "subject": ref(self.patient),
            "period": {"start": f"{DATE}T08:00:00-04:00", "end": f"{DATE}T14:00:00-04:00"},
            "location": [{"location": ref(self.location)}],
            "serviceProvider": ref(self.hospital),
            "diagnosis": [{"condition": ref(self.condition), "rank": 1}],
        }
        self.condition["encounter"] = ref(self.encounter)
        self.procedure: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": f"{s}-rfa",
            "identifier": [{"system": IDS, "value": f"{s}-rfa"}],
            "status": "completed",
            "code": cc(
                CPT,
                "47382",
                "Ablation, 1 or more liver tumor(s), percutaneous, radiofrequency",
                "Percutaneous radiofrequency ablation of liver tumor",
            ),
            "subject": ref(self.patient),
            "encounter": ref(self.encounter),
            "performedDateTime": WHEN,
            "performer": [{"actor": ref(self.practitioner)}],
            "location": ref(self.location),
            "reasonReference": [ref(self.condition)],
            "bodySite": [cc(SCT, "277960005", "Couinaud hepatic segment VI")],
            "outcome": cc(SCT, "385669000", "Successful"),
            "note": [{"text": GOOD_NOTE}],
        }
        self.tumor: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{s}-size",
            "status": "final",
            "code": cc(LOINC, "21889-1", "Size Tumor"),
            "subject": ref(self.patient),
            "encounter": ref(self.encounter),
            "partOf": [ref(self.procedure)],
            "bodySite": cc(SCT, "277960005", "Couinaud hepatic segment VI"),
            "component": [
                {
                    "code": cc(LOINC, "33728-7", "Size.maximum dimension in Tumor"),
                    "valueQuantity": {
                        "value": 2.1,
                        "unit": "cm",
                        "system": "http://unitsofmeasure.org",
                        "code": "cm",
                    },
                }
            ],
        }
        self.guidance: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": f"{s}-guide",
            "status": "completed",
            "code": cc(
                CPT,
                "77013",
                "Computed tomography guidance for, and monitoring of, parenchymal tissue ablation",
            ),
            "subject": ref(self.patient),
            "encounter": ref(self.encounter),
            "performedDateTime": WHEN,
            "performer": [{"actor": ref(self.practitioner)}],
        }
        self.extra: list[dict[str, Any]] = []
        self.drop: set[str] = set()

    def resources(self) -> list[dict[str, Any]]:
        items = [
            self.patient,
            self.payer,
            self.hospital,
            self.coverage,
            self.practitioner,
            self.role,
            self.location,
            self.condition,
            self.encounter,
            self.procedure,
            self.tumor,
            self.guidance,
            *self.extra,
        ]
        return [copy.deepcopy(r) for r in items if r["id"] not in self.drop]

    def collection(self) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "id": f"fixture-{self.slug}",
            "type": "collection",
            "entry": [
                {"fullUrl": f"http://example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                for r in self.resources()
            ],
        }


def expect(
    procedure: str,
    outcome: str,
    findings: list[str] = (),  # type: ignore[assignment]
    modifiers: list[str] = (),  # type: ignore[assignment]
    claim: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "procedure": procedure,
        "outcome": outcome,
        "findings": sorted(findings),
        "modifiers": sorted(modifiers),
    }
    if claim is not None:
        out["claim"] = claim
    return out


def claim(
    b: CaseBuilder,
    lines: list[tuple[str, list[str]]],
    diagnoses: list[str],
    pos: str,
    *,
    facility: bool = True,
    taxonomy: str | None = "2085R0204X",
    supporting: list[str] = (),  # type: ignore[assignment]
    provider: str | None = None,
) -> dict[str, Any]:
    """What the written Claim carries, by hand: lines with modifiers, diagnoses in order
    (principal first), place of service on every line, facility, billing provider (the
    rendering person unless a group bills), rendering provider."""
    person = f"Practitioner/{b.practitioner['id']}"
    return {
        "lines": [{"code": code, "modifiers": mods} for code, mods in lines],
        "diagnoses": diagnoses,
        "place_of_service": pos,
        "facility": f"Location/{b.location['id']}" if facility else None,
        "provider": provider or person,
        "rendering": {"provider": person, "taxonomy": taxonomy},
        "supporting_info": supporting,
    }


RFA = "47382"


CASES: list[tuple[str, str, list[str], Any]] = []


def case(slug: str, description: str, exercises: list[str]) -> Any:
    def register(fn: Any) -> Any:
        CASES.append((slug, description, exercises, fn))
        return fn

    return register


@case(
    "ex1-hcc-ct",
    "Guidance example 1: a single small hepatocellular carcinoma ablated under CT guidance",
    [
        "structured documentation",
        "negated approach ('laparoscopic or open surgery was not chosen')",
        "explicit POS 22",
        "CT guidance code 77013 billed as its own line",
    ],
)
def ex1() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("ex1-hcc-ct")
    return b.collection(), [
        expect(
            "Procedure/ex1-hcc-ct-rfa",
            "claim",
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        )
    ]


@case(
    "ex2-crc-mets-us",
    "Guidance example 2: three colorectal metastases ablated under ultrasound guidance at an ASC",
    [
        "documentation only in an attached operative note (DocumentReference, text/plain)",
        "'cryoablation was considered and not chosen' is not a modality mismatch",
        "C78.7 with C18.7 secondary diagnosis",
        "POS 24",
    ],
)
def ex2() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("ex2-crc-mets-us")
    b.condition["code"] = cc(
        ICD, "C78.7", "Secondary malignant neoplasm of liver and intrahepatic bile duct"
    )
    primary = copy.deepcopy(b.condition)
    primary["id"] = "ex2-crc-mets-us-primary"
    primary["code"] = cc(ICD, "C18.7", "Malignant neoplasm of sigmoid colon")
    b.encounter["diagnosis"].append({"condition": ref(primary), "rank": 2})
    b.location["type"] = [cc(POS, "24", "Ambulatory Surgical Center")]
    b.guidance["code"] = cc(
        CPT, "76940", "Ultrasound guidance for, and monitoring of, parenchymal tissue ablation"
    )
    del b.procedure["note"], b.procedure["bodySite"], b.procedure["outcome"]
    b.drop.add(b.tumor["id"])
    note = (
        "OPERATIVE NOTE\n\n"
        "Indication: three colorectal metastases to the liver (segments II, IV and VII), measuring "
        "1.8 cm, 2.4 cm and 1.2 cm. The patient declined repeat hepatectomy after a prior right "
        "colectomy. Cryoablation was considered and not chosen.\n\n"
        "Procedure: under real-time ultrasound guidance three RF electrodes were placed "
        "percutaneously. Radiofrequency energy was delivered at 120 W for 10 minutes per lesion.\n\n"
        "Result: the ablation zone covered each lesion with a 5 mm margin. No residual enhancement "
        "on contrast ultrasound. No complications."
    )
    doc = {
        "resourceType": "DocumentReference",
        "id": "ex2-crc-mets-us-opnote",
        "status": "current",
        "type": cc(LOINC, "28570-0", "Procedure note"),
        "subject": ref(b.patient),
        "date": WHEN,
        "content": [
            {"attachment": {"contentType": "text/plain; charset=utf-8", "data": b64(note)}}
        ],
        "context": {"encounter": [ref(b.encounter)], "related": [ref(b.procedure)]},
    }
    b.extra += [primary, doc]
    return b.collection(), [
        expect(
            "Procedure/ex2-crc-mets-us-rfa",
            "claim",
            claim=claim(b, [(RFA, []), ("76940", ["26"])], ["C78.7", "C18.7"], "24"),
        )
    ]


@case(
    "ex3-large-palliative",
    "Guidance example 3: a large unresectable tumor treated palliatively, inpatient, under MRI guidance",
    [
        "documentation in an HTML imaging report (DiagnosticReport.presentedForm)",
        "place of service inferred from Encounter.class IMP",
        "a 6.5 cm tumor and 'technically challenging' are no statement of substantially "
        "greater work: modifier-22-review, 22 not billed",
        "26 on the MR guidance line (inpatient hospital is a facility)",
    ],
)
def ex3() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("ex3-large-palliative")
    b.encounter["class"] = {"system": ACT, "code": "IMP", "display": "inpatient encounter"}
    b.location["type"] = [
        cc("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "HOSP", "Hospital")
    ]
    b.guidance["code"] = cc(
        CPT,
        "77022",
        "Magnetic resonance imaging guidance for, and monitoring of, parenchymal tissue ablation",
    )
    b.tumor["component"][0]["valueQuantity"]["value"] = 6.5
    b.tumor["bodySite"] = cc(SCT, "277962002", "Couinaud hepatic segment VIII")
    b.procedure["bodySite"] = [cc(SCT, "277962002", "Couinaud hepatic segment VIII")]
    b.procedure["note"] = [{"text": "Palliative percutaneous ablation, see MRI report."}]
    del b.procedure["outcome"]
    report_html = (
        "<html><body><h1>MRI-guided radiofrequency ablation</h1>"
        "<p>A solitary 6.5 cm hepatocellular carcinoma in segment VIII, unresectable owing to "
        "its central location adjacent to the hepatic veins. Treatment intent: palliative.</p>"
        "<p>Under MRI guidance two electrodes were placed; the procedure was technically "
        "challenging and RF energy was applied at 200&nbsp;W for 24 minutes in overlapping zones.</p>"
        "<p>Post-ablation MRI: ablation zone encompasses the tumor; no residual enhancement.</p>"
        "</body></html>"
    )
    report = {
        "resourceType": "DiagnosticReport",
        "id": "ex3-large-palliative-mri",
        "status": "final",
        "code": {"text": "MRI-guided ablation report"},
        "subject": ref(b.patient),
        "encounter": ref(b.encounter),
        "effectiveDateTime": WHEN,
        "presentedForm": [{"contentType": "text/html", "data": b64(report_html)}],
    }
    b.procedure["report"] = [ref(report)]
    b.extra.append(report)
    return b.collection(), [
        expect(
            "Procedure/ex3-large-palliative-rfa",
            "claim",
            ["modifier-22-review"],
            claim=claim(b, [(RFA, []), ("77022", ["26"])], ["C22.0"], "21"),
        )
    ]


@case("v01-not-completed", "Procedure still in progress", ["procedure-not-completed"])
def v01() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v01-not-completed")
    b.procedure["status"] = "in-progress"
    return b.collection(), [
        expect("Procedure/v01-not-completed-rfa", "issues", ["procedure-not-completed"])
    ]


@case(
    "v02-stopped",
    "Procedure stopped because the patient became hypotensive: billable with modifier 53",
    ["modifier 53 (discontinued for the patient's well-being)", "Procedure.statusReason"],
)
def v02() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v02-stopped")
    b.procedure["status"] = "stopped"
    b.procedure["statusReason"] = {
        "text": "Ablation was terminated after the first cycle: systolic pressure fell to 70 mmHg "
        "(hypotension) despite fluid boluses."
    }
    b.procedure["outcome"] = cc(SCT, "385670004", "Partially successful")
    return b.collection(), [
        expect(
            "Procedure/v02-stopped-rfa",
            "claim",
            modifiers=["53"],
            # the guidance line follows its stopped parent (52); the statement of why it was
            # stopped goes with the claim
            claim=claim(
                b,
                [(RFA, ["53"]), ("77013", ["26", "52"])],
                ["C22.0"],
                "22",
                supporting=["Procedure/v02-stopped-rfa"],
            ),
        )
    ]


@case(
    "v03-laparoscopic",
    "Documentation shows a laparoscopic approach",
    ["approach-mismatch from text"],
)
def v03() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v03-laparoscopic")
    b.procedure["note"] = [
        {
            "text": GOOD_NOTE.replace(
                "Percutaneous radiofrequency ablation", "Laparoscopic radiofrequency ablation"
            ).replace("laparoscopic or open surgery was not chosen", "resection was not attempted")
        }
    ]
    return b.collection(), [
        expect("Procedure/v03-laparoscopic-rfa", "issues", ["approach-mismatch"])
    ]


@case(
    "v04-cryo",
    "Cryoablation documented and a cryoablation code in the session",
    ["modality-mismatch"],
)
def v04() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v04-cryo")
    b.procedure["note"] = [
        {
            "text": GOOD_NOTE.replace(
                "RF energy was applied at 150 W for 12 minutes with a 3 cm electrode.",
                "Two cryoprobes were placed and two freeze-thaw cycles of 10 minutes were delivered at 150 W equivalent.",
            )
        }
    ]
    return b.collection(), [expect("Procedure/v04-cryo-rfa", "issues", ["modality-mismatch"])]


@case(
    "v05-microwave",
    "Percutaneous microwave ablation is reported with 47382",
    ["microwave is not a mismatch"],
)
def v05() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v05-microwave")
    b.procedure["note"] = [
        {
            "text": GOOD_NOTE.replace(
                "Percutaneous radiofrequency ablation", "Percutaneous microwave ablation"
            ).replace("RF energy was applied at 150 W", "Microwave energy was applied at 100 W")
        }
    ]
    return b.collection(), [
        expect(
            "Procedure/v05-microwave-rfa",
            "claim",
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        )
    ]


@case(
    "v06-two-in-session",
    "Two 47382 Procedures in the same encounter",
    ["units-exceeded on the later one"],
)
def v06() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v06-two-in-session")
    second = copy.deepcopy(b.procedure)
    second["id"] = "v06-two-in-session-rfa2"
    second["identifier"] = [{"system": IDS, "value": "v06-two-in-session-rfa2"}]
    second["performedDateTime"] = f"{DATE}T10:15:00-04:00"
    b.extra.append(second)
    return b.collection(), [
        expect(
            "Procedure/v06-two-in-session-rfa",
            "claim",
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
        expect("Procedure/v06-two-in-session-rfa2", "issues", ["units-exceeded"]),
    ]


@case(
    "v07-no-liver-dx",
    "Only cirrhosis is coded; the stated reason dangles",
    ["diagnosis-unsupported", "dangling reference"],
)
def v07() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v07-no-liver-dx")
    b.condition["code"] = cc(ICD, "K74.60", "Unspecified cirrhosis of liver")
    b.procedure["reasonReference"] = [{"reference": "Condition/v07-no-liver-dx-missing"}]
    return b.collection(), [
        expect("Procedure/v07-no-liver-dx-rfa", "issues", ["diagnosis-unsupported"])
    ]


@case(
    "v08-no-rationale",
    "Nothing says why ablation was chosen over resection",
    ["necessity-rationale-missing"],
)
def v08() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v08-no-rationale")
    b.procedure["note"] = [
        {
            "text": (
                "Percutaneous radiofrequency ablation of a single 2.1 cm hepatocellular carcinoma in "
                "segment VI under CT guidance. RF energy was applied at 150 W for 12 minutes. "
                "Post-ablation CT showed complete ablation. The patient is not unresectable. No complications."
            )
        }
    ]
    return b.collection(), [
        expect("Procedure/v08-no-rationale-rfa", "issues", ["necessity-rationale-missing"])
    ]


@case(
    "v09-office",
    "Performed in an office (POS 11)",
    [
        "place-of-service-not-covered (moderate: the source does not list offices; not blocking)",
        "the guidance line in an office is billed global (no 26), and no service facility",
    ],
)
def v09() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v09-office")
    b.location["type"] = [cc(POS, "11", "Office")]
    return b.collection(), [
        expect(
            "Procedure/v09-office-rfa",
            "claim",
            ["place-of-service-not-covered"],
            claim=claim(b, [(RFA, []), ("77013", [])], ["C22.0"], "11", facility=False),
        )
    ]


@case(
    "v10-pos-unknown",
    "Ambulatory encounter, no POS anywhere",
    ["place-of-service-unknown (high: no Claim without a place of service)"],
)
def v10() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v10-pos-unknown")
    b.location["type"] = [
        cc("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "HOSP", "Hospital")
    ]
    return b.collection(), [
        expect("Procedure/v10-pos-unknown-rfa", "issues", ["place-of-service-unknown"])
    ]


@case(
    "v11-coverage-expired",
    "The only Coverage ended before the date of service",
    ["coverage-missing"],
)
def v11() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v11-coverage-expired")
    b.coverage["period"] = {"start": "2025-01-01", "end": "2025-12-31"}
    return b.collection(), [
        expect("Procedure/v11-coverage-expired-rfa", "issues", ["coverage-missing"])
    ]


@case(
    "v12-doc-gaps",
    "Bare documentation: no size, count, location, guidance, energy or confirmation",
    [
        "doc-tumor-size",
        "doc-tumor-count",
        "doc-tumor-location",
        "doc-imaging-guidance",
        "doc-energy",
        "doc-ablation-confirmation",
        "moderate findings do not block",
    ],
)
def v12() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v12-doc-gaps")
    b.procedure["note"] = [
        {
            "text": (
                "Radiofrequency ablation of hepatic lesion performed percutaneously. The tumor is "
                "unresectable. Patient tolerated the procedure well."
            )
        }
    ]
    del b.procedure["bodySite"], b.procedure["outcome"]
    b.drop.update({b.tumor["id"], b.guidance["id"]})
    codes = [
        "doc-tumor-size",
        "doc-tumor-count",
        "doc-tumor-location",
        "doc-imaging-guidance",
        "doc-energy",
        "doc-ablation-confirmation",
    ]
    return b.collection(), [
        expect(
            "Procedure/v12-doc-gaps-rfa",
            "claim",
            codes,
            claim=claim(b, [(RFA, [])], ["C22.0"], "22"),
        )
    ]


@case("v13-specialty", "Performed by a family physician", ["specialty-unexpected (low)"])
def v13() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v13-specialty")
    b.role["specialty"] = [cc(NUCC, "207Q00000X", "Family Medicine Physician")]
    return b.collection(), [
        expect(
            "Procedure/v13-specialty-rfa",
            "claim",
            ["specialty-unexpected"],
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22", taxonomy="207Q00000X"),
        )
    ]


@case(
    "v14-no-provider",
    "No performer and no service provider",
    ["provider-missing", "specialty-unexpected"],
)
def v14() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v14-no-provider")
    del b.procedure["performer"], b.encounter["serviceProvider"]
    b.drop.update({b.role["id"], b.practitioner["id"]})
    del b.guidance["performer"]
    return b.collection(), [
        expect(
            "Procedure/v14-no-provider-rfa", "issues", ["provider-missing", "specialty-unexpected"]
        )
    ]


@case(
    "v15-messy-transaction",
    "Transaction Bundle with urn:uuid references; SNOMED-only and undotted ICD codes; "
    "timezone-less dateTime; vendor extension",
    ["urn:uuid resolution", "C220 == C22.0", "SNOMED CT crosswalk to ICD-10-CM"],
)
def v15() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v15-messy-transaction")
    b.condition["code"] = cc(SCT, "109841003", "Liver cell carcinoma (disorder)")
    second = copy.deepcopy(b.condition)
    second["id"] = "v15-messy-transaction-dx2"
    second["code"] = cc(ICD, "C220")
    b.encounter["diagnosis"].append({"condition": ref(second)})
    b.procedure["extension"] = [
        {"url": "http://vendor.example/fhir/ext/room", "valueString": "IR-2"}
    ]
    b.extra.append(second)
    resources = b.resources()
    urls = {
        f"{r['resourceType']}/{r['id']}": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['id'])}"
        for r in resources
    }

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (urls.get(v, v) if k == "reference" else rewrite(v)) for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(x) for x in node]
        return node

    entries = []
    keep_id = "Procedure/v15-messy-transaction-rfa"
    for r in resources:
        key = f"{r['resourceType']}/{r['id']}"
        body = rewrite(r)
        if key != keep_id:
            body.pop("id")
        entries.append(
            {
                "fullUrl": urls[key],
                "resource": body,
                "request": {"method": "POST", "url": r["resourceType"]},
            }
        )
    bundle = {
        "resourceType": "Bundle",
        "id": "fixture-v15-messy-transaction",
        "type": "transaction",
        "entry": entries,
    }
    # Without ids, the output refers to patient, practitioner and location by identifier.
    summary = claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22")
    summary["facility"] = "Location|1934567896"
    summary["rendering"]["provider"] = summary["provider"] = "Practitioner|1245319599"
    return bundle, [expect(keep_id, "claim", claim=summary)]


@case(
    "v16-modifier-51",
    "Another surgical procedure (paracentesis) by the same performer in the session",
    [
        "no modifier 51 on 47382: it belongs on the additional procedure's line",
        "service-not-billed: the paracentesis 49083 by the same operator, not on this Claim",
    ],
)
def v16() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v16-modifier-51")
    other = copy.deepcopy(b.guidance)
    other["id"] = "v16-modifier-51-para"
    other["code"] = cc(
        CPT, "49083", "Abdominal paracentesis (diagnostic or therapeutic); with imaging guidance"
    )
    b.extra.append(other)
    return b.collection(), [
        expect(
            "Procedure/v16-modifier-51-rfa",
            "claim",
            # the same operator's paracentesis (49083) is reportable and not on this Claim
            ["service-not-billed"],
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        )
    ]


@case(
    "v17-five-tumors",
    "Five tumors ablated in one session, documented in the imaging report conclusion",
    [
        "five tumors alone are no statement of increased work: modifier-22-review",
        "DiagnosticReport.conclusion",
    ],
)
def v17() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v17-five-tumors")
    b.procedure["note"] = [{"text": "Percutaneous RFA, bridge to liver transplant. See CT report."}]
    del b.procedure["bodySite"], b.procedure["outcome"]
    b.drop.add(b.tumor["id"])
    report = {
        "resourceType": "DiagnosticReport",
        "id": "v17-five-tumors-ct",
        "status": "final",
        "code": {"text": "CT-guided ablation"},
        "subject": ref(b.patient),
        "encounter": ref(b.encounter),
        "conclusion": (
            "Five hepatocellular carcinoma nodules in segments V to VIII, largest 2.8 cm, were "
            "ablated under CT guidance at 150 W. Post-ablation CT: complete ablation of all five nodules."
        ),
    }
    b.extra.append(report)
    return b.collection(), [
        expect(
            "Procedure/v17-five-tumors-rfa",
            "claim",
            # "bridge to liver transplant" with no Z76.82 Condition
            ["modifier-22-review", "diagnosis-not-coded"],
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        )
    ]


@case(
    "v18-history-not-approach",
    "History of a prior open resection is not an open approach today; a refuted "
    "diagnosis does not count",
    ["history context", "verificationStatus refuted"],
)
def v18() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v18-history-not-approach")
    b.procedure["note"] = [
        {"text": GOOD_NOTE + " History of open resection of segment II in 2021."}
    ]
    refuted = copy.deepcopy(b.condition)
    refuted["id"] = "v18-history-not-approach-refuted"
    refuted["code"] = cc(ICD, "C78.7")
    refuted["verificationStatus"] = cc(
        "http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted"
    )
    b.encounter["diagnosis"].append({"condition": ref(refuted)})
    b.extra.append(refuted)
    return b.collection(), [
        expect(
            "Procedure/v18-history-not-approach-rfa",
            "claim",
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        )
    ]


@case(
    "v39-long-note",
    "A note longer than the pack reads (text.max_chars): its first million characters are "
    "read, a cryoablation stated after them is not, and the finding says the note was cut",
    ["text-truncated (moderate, the Claim still goes out)", "text beyond the cap not read"],
)
def v39() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v39-long-note")
    # a separator line a million characters long (servers may trim runs of spaces, not this)
    padding = " " + "-" * 1_000_000 + " "
    b.procedure["note"] = [
        {"text": GOOD_NOTE + padding + "Cryoablation of a second lesion was performed."}
    ]
    return b.collection(), [
        expect(
            "Procedure/v39-long-note-rfa",
            "claim",
            ["text-truncated"],
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        )
    ]


def merged(slug: str, *builders: CaseBuilder) -> dict[str, Any]:
    """One collection Bundle holding several cases (each builder's ids are its own)."""
    entries = [e for b in builders for e in b.collection()["entry"]]
    return {
        "resourceType": "Bundle",
        "id": f"fixture-{slug}",
        "type": "collection",
        "entry": entries,
    }


def condition(b: CaseBuilder, suffix: str, code: str, display: str, status: str) -> dict[str, Any]:
    """Another Condition of the patient, listed on the encounter."""
    c = copy.deepcopy(b.condition)
    c["id"] = f"{b.slug}-{suffix}"
    c["code"] = cc(ICD, code, display)
    c["verificationStatus"] = cc(
        "http://terminology.hl7.org/CodeSystem/condition-ver-status", status
    )
    b.encounter["diagnosis"].append(
        {"condition": ref(c), "rank": len(b.encounter["diagnosis"]) + 1}
    )
    b.extra.append(c)
    return c


def procedure_like(
    b: CaseBuilder, base: dict[str, Any], suffix: str, **fields: Any
) -> dict[str, Any]:
    p = copy.deepcopy(base)
    p["id"] = f"{b.slug}-{suffix}"
    if "identifier" in p:
        p["identifier"] = [{"system": IDS, "value": p["id"]}]
    p.update(fields)
    b.extra.append(p)
    return p


@case(
    "v19-dx-provisional",
    "The liver tumor is only a provisional diagnosis (LI-RADS 4 observation, biopsy pending)",
    ["diagnosis-unsupported: uncertain diagnoses are not coded (ICD-10-CM IV.H)"],
)
def v19() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v19-dx-provisional")
    b.condition["verificationStatus"] = cc(
        "http://terminology.hl7.org/CodeSystem/condition-ver-status", "provisional"
    )
    b.condition["note"] = [{"text": "LI-RADS 4 observation, probable hepatocellular carcinoma."}]
    condition(b, "cirrhosis", "K74.60", "Unspecified cirrhosis of liver", "confirmed")
    return b.collection(), [
        expect("Procedure/v19-dx-provisional-rfa", "issues", ["diagnosis-unsupported"])
    ]


@case(
    "v20-dx-invalid",
    "A comorbidity coded with the category header K74.6 instead of a billable subcode",
    ["diagnosis-code-invalid (not billable)"],
)
def v20() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v20-dx-invalid")
    condition(b, "cirrhosis", "K74.6", "Other and unspecified cirrhosis of liver", "confirmed")
    return b.collection(), [
        expect("Procedure/v20-dx-invalid-rfa", "issues", ["diagnosis-code-invalid"])
    ]


@case(
    "v21-excludes1",
    "Primary liver cancer coded together with a secondary liver malignancy (C22 Excludes1 C78.7)",
    [
        "diagnosis-excludes1 (moderate: the Claim is written)",
        "C78.7 beside C22.0 with no other primary is the HCC's spread: left off the Claim",
        "with a documented colon primary both stay, principal then secondary",
    ],
)
def v21() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v21-excludes1")
    condition(
        b,
        "mets",
        "C78.7",
        "Secondary malignant neoplasm of liver and intrahepatic bile duct",
        "confirmed",
    )
    other = CaseBuilder("v21-excludes1-colon")
    condition(
        other,
        "mets",
        "C78.7",
        "Secondary malignant neoplasm of liver and intrahepatic bile duct",
        "confirmed",
    )
    condition(other, "colon", "C18.7", "Malignant neoplasm of sigmoid colon", "confirmed")
    return merged("v21-excludes1", b, other), [
        expect(
            "Procedure/v21-excludes1-rfa",
            "claim",
            ["diagnosis-excludes1"],
            # no other primary documented: C78.7 is the spread of the HCC, left off
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
        expect(
            "Procedure/v21-excludes1-colon-rfa",
            "claim",
            ["diagnosis-excludes1"],
            # a documented colon primary: the liver lesion may be its metastasis; both stay
            claim=claim(other, [(RFA, []), ("77013", ["26"])], ["C22.0", "C78.7", "C18.7"], "22"),
        ),
    ]


@case(
    "v22-two-guidance",
    "Ultrasound targeting followed by CT guidance and monitoring: two ablation-guidance codes",
    ["guidance-code-conflict", "only the first guidance code is billed, with 26"],
)
def v22() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v22-two-guidance")
    procedure_like(
        b,
        b.guidance,
        "us",
        code=cc(
            CPT, "76940", "Ultrasound guidance for, and monitoring of, parenchymal tissue ablation"
        ),
        performedDateTime=f"{DATE}T09:45:00-04:00",
    )
    b.procedure["note"] = [
        {
            "text": GOOD_NOTE
            + " Contrast ultrasound was also used to monitor the ablation zone after CT targeting."
        }
    ]
    return b.collection(), [
        expect(
            "Procedure/v22-two-guidance-rfa",
            "claim",
            ["guidance-code-conflict"],
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        )
    ]


@case(
    "v23-needle-guidance",
    "Ultrasound guidance coded as needle placement (76942) instead of ablation guidance (76940)",
    [
        "guidance-code-conflict naming 76940 (monitoring of the ablation zone is documented)",
        "one finding for one problem: 76942 is not billed, so no PTP edit applies to it",
    ],
)
def v23() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v23-needle-guidance")
    b.guidance["code"] = cc(
        CPT,
        "76942",
        "Ultrasonic guidance for needle placement, imaging supervision and interpretation",
    )
    b.procedure["note"] = [
        {
            "text": GOOD_NOTE.replace(
                "under CT guidance", "under real-time ultrasound guidance"
            ).replace(
                "Post-ablation CT showed",
                "The ablation zone was monitored on ultrasound throughout; contrast ultrasound "
                "after ablation showed",
            )
        }
    ]
    return b.collection(), [
        expect(
            "Procedure/v23-needle-guidance-rfa",
            "claim",
            ["guidance-code-conflict"],
            claim=claim(b, [(RFA, [])], ["C22.0"], "22"),
        )
    ]


@case(
    "v24-ptp-biopsy",
    "Core biopsy in the ablation session: of the ablated tumor (bundled) and of a separate lesion",
    [
        "the 47382/47000 edit raises nothing: the biopsy is not on the Claim (PTP edits apply "
        "between codes on the Claim)",
        "a documented separate lesion allows the pair: service-not-billed names 47000-XS",
    ],
)
def v24() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    same = CaseBuilder("v24-ptp-biopsy")
    biopsy = cc(CPT, "47000", "Biopsy of liver, needle; percutaneous")
    procedure_like(
        same,
        same.guidance,
        "bx",
        code=biopsy,
        performedDateTime=f"{DATE}T09:20:00-04:00",
        note=[
            {
                "text": "18G core biopsy of the segment VI tumor through the introducer before ablation."
            }
        ],
    )
    other = CaseBuilder("v24-ptp-biopsy-distinct")
    procedure_like(
        other,
        other.guidance,
        "bx",
        code=biopsy,
        performedDateTime=f"{DATE}T09:20:00-04:00",
        note=[
            {
                "text": "18G core biopsy of a separate lesion in segment III, indeterminate on MRI; "
                "it was not ablated."
            }
        ],
    )
    other.procedure["note"] = [
        {"text": GOOD_NOTE + " A separate lesion in segment III was biopsied, not ablated."}
    ]
    return merged("v24-ptp-biopsy", same, other), [
        expect(
            "Procedure/v24-ptp-biopsy-rfa",
            "claim",
            claim=claim(same, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
        expect(
            "Procedure/v24-ptp-biopsy-distinct-rfa",
            "claim",
            # the biopsy of the other lesion is reportable with XS, and not on this Claim
            ["service-not-billed"],
            claim=claim(other, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
    ]


@case(
    "v25-npi",
    "The rendering physician's NPI fails its check digit; another physician has none",
    ["provider-npi-invalid (Luhn over 80840 + NPI)"],
)
def v25() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    bad = CaseBuilder("v25-npi")
    bad.practitioner["identifier"] = [{"system": NPI, "value": "1245319590"}]
    missing = CaseBuilder("v25-npi-missing")
    missing.practitioner["identifier"] = [
        {"system": "http://example.org/fhir/sid/staff-id", "value": "IR-0042"}
    ]
    return merged("v25-npi", bad, missing), [
        expect("Procedure/v25-npi-rfa", "issues", ["provider-npi-invalid"]),
        expect("Procedure/v25-npi-missing-rfa", "issues", ["provider-npi-invalid"]),
    ]


@case(
    "v26-global-period",
    "A repeat 47382 by the same radiologist six days after the first (10-day global period), "
    "for residual tumor of the same lesion",
    [
        "58: a repeat ablation of the same tumor for residual disease is a related procedure "
        "in the global period",
        "the first session is claimable",
    ],
)
def v26() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v26-global-period")
    earlier_day = "2026-10-08"
    enc = copy.deepcopy(b.encounter)
    enc["id"] = f"{b.slug}-enc0"
    enc["period"] = {
        "start": f"{earlier_day}T08:00:00-04:00",
        "end": f"{earlier_day}T13:00:00-04:00",
    }
    b.extra.append(enc)
    first = procedure_like(
        b,
        b.procedure,
        "rfa0",
        encounter=ref(enc),
        performedDateTime=f"{earlier_day}T09:00:00-04:00",
    )
    procedure_like(
        b,
        b.guidance,
        "guide0",
        encounter=ref(enc),
        performedDateTime=f"{earlier_day}T09:00:00-04:00",
    )
    b.procedure["note"] = [
        {
            "text": "Repeat percutaneous radiofrequency ablation of the 2.1 cm hepatocellular "
            "carcinoma in segment VI under CT guidance: follow-up CT showed residual arterial "
            "enhancement at the medial margin. The tumor is unresectable because of its central "
            "location abutting the right hepatic vein. RF energy was applied at 150 W for 8 minutes. "
            "Post-ablation CT showed complete ablation with an adequate margin."
        }
    ]
    summary = claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22")
    return b.collection(), [
        expect(f"Procedure/{first['id']}", "claim", claim=summary),
        expect(
            "Procedure/v26-global-period-rfa",
            "claim",
            modifiers=["58"],
            claim=claim(b, [(RFA, ["58"]), ("77013", ["26"])], ["C22.0"], "22"),
        ),
    ]


@case(
    "v27-modifier-22",
    "The operative note states substantially greater work (time against the usual, and why)",
    [
        "modifier 22 with Claim.supportingInfo pointing at the operative note",
        "documentation-conflict: the operative note's segment VII against bodySite segment VI",
    ],
)
def v27() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v27-modifier-22")
    note = (
        "OPERATIVE NOTE\n\n"
        "Procedure: CT-guided percutaneous radiofrequency ablation, segment VII.\n\n"
        "Increased procedural services: the ablation took 110 minutes compared with the typical "
        "45 minutes for a single tumor of this size. The 2.1 cm tumor abuts the right "
        "hemidiaphragm; artificial ascites with 600 mL of dextrose 5% was created to displace "
        "the diaphragm, and the electrode was repositioned four times under CT to achieve an "
        "adequate margin.\n\n"
        "Result: complete ablation on post-ablation CT. No complications."
    )
    doc = {
        "resourceType": "DocumentReference",
        "id": f"{b.slug}-opnote",
        "status": "current",
        "type": cc(LOINC, "28570-0", "Procedure note"),
        "subject": ref(b.patient),
        "date": WHEN,
        "content": [{"attachment": {"contentType": "text/plain", "data": b64(note)}}],
        "context": {"encounter": [ref(b.encounter)], "related": [ref(b.procedure)]},
    }
    b.extra.append(doc)
    return b.collection(), [
        expect(
            "Procedure/v27-modifier-22-rfa",
            "claim",
            # the op note says segment VII, the Procedure's bodySite segment VI
            ["documentation-conflict"],
            modifiers=["22"],
            claim=claim(
                b,
                [(RFA, ["22"]), ("77013", ["26"])],
                ["C22.0"],
                "22",
                supporting=[f"DocumentReference/{doc['id']}"],
            ),
        )
    ]


@case(
    "v28-reduced",
    "Ablation reduced at the operator's discretion (no threat to the patient): modifier 52",
    ["modifier 52, not 53"],
)
def v28() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v28-reduced")
    b.procedure["status"] = "stopped"
    b.procedure["statusReason"] = {
        "text": "The planned second overlapping ablation was not performed at the operator's "
        "discretion: the electrode track would have crossed the gallbladder fossa; the residual "
        "margin will be treated with chemoembolization."
    }
    b.procedure["outcome"] = cc(SCT, "385670004", "Partially successful")
    return b.collection(), [
        expect(
            "Procedure/v28-reduced-rfa",
            "claim",
            modifiers=["52"],
            claim=claim(
                b,
                [(RFA, ["52"]), ("77013", ["26", "52"])],
                ["C22.0"],
                "22",
                supporting=["Procedure/v28-reduced-rfa"],
            ),
        )
    ]


@case(
    "v29-same-day-two-encounters",
    "A second 47382 on the same date of service in another encounter (admitted that afternoon)",
    [
        "units-exceeded per patient and date of service (MUE), across encounters",
        "moderate: once per date (not per session) rests on the MUE row, not verified",
    ],
)
def v29() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v29-same-day-two-encounters")
    enc = copy.deepcopy(b.encounter)
    enc["id"] = f"{b.slug}-enc2"
    enc["class"] = {"system": ACT, "code": "IMP", "display": "inpatient encounter"}
    enc["period"] = {"start": f"{DATE}T14:00:00-04:00", "end": f"{DATE}T23:00:00-04:00"}
    b.extra.append(enc)
    procedure_like(
        b, b.procedure, "rfa2", encounter=ref(enc), performedDateTime=f"{DATE}T15:30:00-04:00"
    )
    return b.collection(), [
        expect(
            "Procedure/v29-same-day-two-encounters-rfa",
            "claim",
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
        expect(
            "Procedure/v29-same-day-two-encounters-rfa2",
            "claim",
            ["units-exceeded"],
            claim=claim(b, [(RFA, [])], ["C22.0"], "22"),
        ),
    ]


def anesthesiologist(b: CaseBuilder, function: dict[str, Any] | None) -> None:
    """An anesthesiologist (valid NPI, own anesthesiology taxonomy) listed as first performer."""
    gas = {
        "resourceType": "Practitioner",
        "id": f"{b.slug}-gas",
        "identifier": [{"system": NPI, "value": "1234567893"}],
        "name": [{"family": "Sleep", "given": ["Ann"], "prefix": ["Dr."]}],
    }
    gas_role = {
        "resourceType": "PractitionerRole",
        "id": f"{b.slug}-gas-role",
        "practitioner": ref(gas),
        "specialty": [cc(NUCC, "207L00000X", "Anesthesiology Physician")],
    }
    b.extra += [gas, gas_role]
    first: dict[str, Any] = {"actor": ref(gas)}
    if function is not None:
        first["function"] = function
    b.procedure["performer"].insert(0, first)


@case(
    "v30-anesthesiologist-first",
    "An anesthesiologist is listed as the first performer; the radiologist is the operator",
    [
        "rendering provider chosen by performer.function, not by order (anesthesiologist 88189002)",
        "the taxonomy is the rendering provider's own, not the anesthesiologist's",
        "rendering-provider-unclear when two performers could each be the operator",
    ],
)
def v30() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v30-anesthesiologist-first")
    anesthesiologist(b, cc(SCT, "88189002", "Anesthesiologist"))
    b.procedure["performer"][1]["function"] = cc(SCT, "304292004", "Surgeon")
    two = CaseBuilder("v30-two-operators")
    anesthesiologist(two, None)
    return merged("v30-anesthesiologist-first", b, two), [
        expect(
            "Procedure/v30-anesthesiologist-first-rfa",
            "claim",
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
        expect("Procedure/v30-two-operators-rfa", "issues", ["rendering-provider-unclear"]),
    ]


@case(
    "v31-facility-missing",
    "Outpatient hospital (POS 22 on the Encounter) but the Location the ablation was done at is not in the record",
    ["facility-missing: a facility place of service and no Location for Claim.facility (box 32)"],
)
def v31() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v31-facility-missing")
    del b.procedure["location"]
    b.encounter["location"] = []
    b.encounter["serviceType"] = cc(POS, "22", "On Campus-Outpatient Hospital")
    b.drop.add(b.location["id"])
    return b.collection(), [
        expect("Procedure/v31-facility-missing-rfa", "issues", ["facility-missing"]),
    ]


@case(
    "v32-modifier-conflict",
    "Reduced at the operator's discretion, yet the note states substantially greater work",
    ["modifier-conflict: 22 does not go with 52; 52 is billed, 22 is not (no supportingInfo)"],
)
def v32() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v32-modifier-conflict")
    b.procedure["status"] = "stopped"
    b.procedure["statusReason"] = {
        "text": "The planned second overlapping ablation was not performed at the operator's "
        "discretion; the residual margin will be treated with chemoembolization."
    }
    b.procedure["outcome"] = cc(SCT, "385670004", "Partially successful")
    b.procedure["note"] = [
        {
            "text": GOOD_NOTE + " The first ablation took substantially longer than usual "
            "(80 minutes) because the tumor abuts the hepatic vein."
        }
    ]
    return b.collection(), [
        expect(
            "Procedure/v32-modifier-conflict-rfa",
            "claim",
            ["modifier-conflict"],
            modifiers=["52"],
            claim=claim(
                b,
                [(RFA, ["52"]), ("77013", ["26", "52"])],
                ["C22.0"],
                "22",
                supporting=["Procedure/v32-modifier-conflict-rfa"],
            ),
        )
    ]


def group(b: CaseBuilder) -> dict[str, Any]:
    """The radiology group the radiologist reassigned benefits to (type-2 NPI)."""
    org = {
        "resourceType": "Organization",
        "id": f"{b.slug}-grp",
        "identifier": [{"system": NPI, "value": "1629384714"}],
        "name": "Riverside Interventional Radiology Associates",
    }
    b.extra.append(org)
    return org


@case(
    "v33-billing-group",
    "The radiologist performs on behalf of her group (performer.onBehalfOf, group NPI)",
    [
        "Claim.provider (box 33) is the group; the radiologist is rendering (careTeam, box 24J)",
        "a PractitionerRole.organization names the group when onBehalfOf is absent",
    ],
)
def v33() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v33-billing-group")
    grp = group(b)
    b.procedure["performer"][0]["onBehalfOf"] = ref(grp)
    by_role = CaseBuilder("v33-group-by-role")
    by_role.role["organization"] = ref(group(by_role))
    lines = [(RFA, []), ("77013", ["26"])]
    return merged("v33-billing-group", b, by_role), [
        expect(
            "Procedure/v33-billing-group-rfa",
            "claim",
            claim=claim(b, lines, ["C22.0"], "22", provider="Organization/v33-billing-group-grp"),
        ),
        expect(
            "Procedure/v33-group-by-role-rfa",
            "claim",
            claim=claim(
                by_role, lines, ["C22.0"], "22", provider="Organization/v33-group-by-role-grp"
            ),
        ),
    ]


def medicare(b: CaseBuilder) -> None:
    b.payer["name"] = "Medicare Part B"
    b.coverage["type"] = {"text": "MEDICARE"}


def fellow(b: CaseBuilder) -> None:
    """An IR fellow assisted the radiologist (performer.function says so)."""
    person = {
        "resourceType": "Practitioner",
        "id": f"{b.slug}-fellow",
        "identifier": [{"system": NPI, "value": "1746352818"}],
        "name": [{"family": "Trainee", "given": ["Yusuf"], "prefix": ["Dr."]}],
    }
    b.extra.append(person)
    b.procedure["performer"][0]["function"] = cc(SCT, "304292004", "Surgeon")
    b.procedure["performer"].append(
        {
            "actor": ref(person),
            "function": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": "SPRF",
                        "display": "secondary performer",
                    }
                ],
                "text": "IR fellow (assisting)",
            },
        }
    )


@case(
    "v35-teaching-physician",
    "An IR fellow assisted the attending radiologist; Medicare, then a commercial plan",
    [
        "GC on every line of the teaching physician's Claim when the payer is Medicare",
        "no GC for a payer the pack does not name",
    ],
)
def v35() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v35-teaching-physician")
    fellow(b)
    medicare(b)
    plain = CaseBuilder("v35-teaching-commercial")
    fellow(plain)
    return merged("v35-teaching-physician", b, plain), [
        expect(
            "Procedure/v35-teaching-physician-rfa",
            "claim",
            claim=claim(b, [(RFA, ["GC"]), ("77013", ["26", "GC"])], ["C22.0"], "22"),
        ),
        expect(
            "Procedure/v35-teaching-commercial-rfa",
            "claim",
            claim=claim(plain, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
    ]


@case(
    "v36-aborted-before-energy",
    "Stopped for hypotension before any energy was delivered; the CT guidance was never started",
    [
        "no doc-energy / doc-ablation-confirmation when nothing was ablated",
        "a guidance Procedure in preparation is not billed",
        "the complication that stopped the session (statusReason) and Z53.09 go on the Claim",
        "the statement of why it stopped goes with the 53 claim (supportingInfo)",
    ],
)
def v36() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v36-aborted-before-energy")
    b.procedure["status"] = "stopped"
    b.procedure["statusReason"] = {
        "coding": [{"system": SCT, "code": "45007003", "display": "Low blood pressure"}],
        "text": "Aborted before any energy was delivered: hypotension (68/40) threatening "
        "the patient's safety.",
    }
    b.procedure["outcome"] = cc(SCT, "385671000", "Unsuccessful")
    b.procedure["note"] = [
        {
            "text": "Percutaneous radiofrequency ablation of a single 2.1 cm hepatocellular "
            "carcinoma in segment VI was attempted. The tumor is unresectable because of "
            "its central location abutting the right hepatic vein. The electrode was positioned; the "
            "patient became hypotensive and the procedure was aborted for patient safety. "
            "ENERGY APPLIED: None - no radiofrequency energy delivered."
        }
    ]
    b.guidance["status"] = "preparation"
    return b.collection(), [
        expect(
            "Procedure/v36-aborted-before-energy-rfa",
            "claim",
            modifiers=["53"],
            claim=claim(
                b,
                [(RFA, ["53"])],
                ["C22.0", "I95.9", "Z53.09"],
                "22",
                supporting=["Procedure/v36-aborted-before-energy-rfa"],
            ),
        )
    ]


@case(
    "v37-facility-npi",
    "The Location has no NPI of its own: one managing Organization has it, the other case none",
    [
        "facility-npi-missing (moderate): no NPI on the Location, its managing Organization "
        "or the Encounter's serviceProvider; the Claim still goes out",
        "the managing Organization's NPI is the service facility's (box 32a)",
    ],
)
def v37() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v37-facility-npi")
    del b.location["identifier"]
    managed = CaseBuilder("v37-facility-npi-managed")
    del managed.location["identifier"]
    managed.hospital["identifier"] = [{"system": NPI, "value": "1987654328"}]
    managed.location["managingOrganization"] = ref(managed.hospital)
    lines = [(RFA, []), ("77013", ["26"])]
    return merged("v37-facility-npi", b, managed), [
        expect(
            "Procedure/v37-facility-npi-rfa",
            "claim",
            ["facility-npi-missing"],
            claim=claim(b, lines, ["C22.0"], "22"),
        ),
        expect(
            "Procedure/v37-facility-npi-managed-rfa",
            "claim",
            claim=claim(managed, lines, ["C22.0"], "22"),
        ),
    ]


@case(
    "v38-coder-queries",
    "Hepatitis C stated but not coded beside C22.0; an Observation and the note disagree on "
    "size; cirrhosis with portal hypertension stated and not coded",
    [
        "diagnosis-not-coded: the note's Child-Pugh B cirrhosis with portal hypertension "
        "(K74.60, K76.6) has no Condition",
        "diagnosis-additional-code: C22's 'code to identify' hepatitis C, no B18.2 coded",
        "documentation-conflict: 2.1 cm in the Observation, 3.4 cm in the note (one tumor)",
    ],
)
def v38() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    hep = CaseBuilder("v38-hepatitis")
    hep.procedure["note"] = [{"text": GOOD_NOTE + " The patient has chronic hepatitis C."}]
    size = CaseBuilder("v38-size")
    size.procedure["note"] = [{"text": GOOD_NOTE.replace("2.1 cm", "3.4 cm")}]
    stated = CaseBuilder("v38-stated-dx")
    stated.procedure["note"] = [
        {
            "text": GOOD_NOTE.replace(
                "because of its central location abutting the right hepatic vein",
                "because of Child-Pugh B cirrhosis with portal hypertension",
            )
        }
    ]
    lines = [(RFA, []), ("77013", ["26"])]
    return merged("v38-coder-queries", hep, size, stated), [
        expect(
            "Procedure/v38-stated-dx-rfa",
            "claim",
            ["diagnosis-not-coded"],
            claim=claim(stated, lines, ["C22.0"], "22"),
        ),
        expect(
            "Procedure/v38-hepatitis-rfa",
            "claim",
            ["diagnosis-additional-code"],
            claim=claim(hep, lines, ["C22.0"], "22"),
        ),
        expect(
            "Procedure/v38-size-rfa",
            "claim",
            ["documentation-conflict"],
            claim=claim(size, lines, ["C22.0"], "22"),
        ),
    ]


@case(
    "v51-documentation-conflicts",
    "The note's tumor count and lobe against the structured record",
    [
        "documentation-conflict: segments VI and VII coded, a single tumor in the note",
        "documentation-conflict: the right lobe coded, the left lobe in the note",
    ],
)
def v51() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    count = CaseBuilder("v51-count")
    count.procedure["bodySite"] = [
        cc(SCT, "277960005", "Couinaud hepatic segment VI"),
        cc(SCT, "277961009", "Couinaud hepatic segment VII"),
    ]
    lobe = CaseBuilder("v51-lobe")
    lobe.procedure["bodySite"] = [cc(SCT, "72481006", "Right lobe of liver structure")]
    lobe.procedure["note"] = [{"text": GOOD_NOTE.replace("segment VI", "the left lobe")}]
    lines = [(RFA, []), ("77013", ["26"])]
    return merged("v51-documentation-conflicts", count, lobe), [
        expect(
            "Procedure/v51-count-rfa",
            "claim",
            ["documentation-conflict"],
            claim=claim(count, lines, ["C22.0"], "22"),
        ),
        expect(
            "Procedure/v51-lobe-rfa",
            "claim",
            ["documentation-conflict"],
            claim=claim(lobe, lines, ["C22.0"], "22"),
        ),
    ]


@case(
    "v52-attachment-not-read",
    "The note documents the case; the operative report is attached as a PDF, which is not "
    "read: a finding names it, so a coder knows where to look",
    ["attachment-not-read (moderate, the Claim still goes out): content type and size named"],
)
def v52() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v52-attachment-not-read")
    report = "OPERATIVE REPORT (scanned): percutaneous radiofrequency ablation, segment VI."
    doc = {
        "resourceType": "DocumentReference",
        "id": f"{b.slug}-opreport",
        "status": "current",
        "type": cc(LOINC, "28570-0", "Procedure note"),
        "subject": ref(b.patient),
        "date": WHEN,
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "data": b64(report),
                    "size": len(report),
                    "title": "Operative report",
                }
            }
        ],
        "context": {"encounter": [ref(b.encounter)], "related": [ref(b.procedure)]},
    }
    b.extra.append(doc)
    return b.collection(), [
        expect(
            "Procedure/v52-attachment-not-read-rfa",
            "claim",
            ["attachment-not-read"],
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        )
    ]


GROUP_NPI = "1523456782"  # a valid NPI (Luhn check digit over 80840 + the first nine)


def group_practice(b: CaseBuilder) -> dict[str, Any]:
    """The physicians' group (a type-2 NPI), named by the rendering physician's role."""
    group: dict[str, Any] = {
        "resourceType": "Organization",
        "id": f"{b.slug}-group",
        "identifier": [{"system": NPI, "value": GROUP_NPI}],
        "name": "Liver Interventional Associates",
    }
    b.role["organization"] = ref(group)
    b.extra.append(group)
    return group


def earlier_session(
    b: CaseBuilder, day: str, code: dict[str, Any], performer: dict[str, Any]
) -> dict[str, Any]:
    """A completed Procedure of the patient on an earlier day, in an encounter of its own
    (another 47382 keeps the case's documentation: it is a case too)."""
    enc = copy.deepcopy(b.encounter)
    enc["id"] = f"{b.slug}-enc0"
    enc["period"] = {"start": f"{day}T08:00:00-04:00", "end": f"{day}T13:00:00-04:00"}
    enc["diagnosis"] = []
    b.extra.append(enc)
    earlier = copy.deepcopy(b.procedure)
    earlier.update(
        id=f"{b.slug}-prior",
        identifier=[{"system": IDS, "value": f"{b.slug}-prior"}],
        code=code,
        encounter=ref(enc),
        performedDateTime=f"{day}T09:00:00-04:00",
        performer=[{"actor": ref(performer)}],
    )
    if code != b.procedure["code"]:
        earlier["note"] = [{"text": "Uneventful procedure."}]
        for key in ("reasonReference", "bodySite", "outcome"):
            earlier.pop(key, None)
    b.extra.append(earlier)
    return earlier


@case(
    "v40-global-group",
    "47382 six days after a colleague's 47382 on the same tumor; the colleague is of the same "
    "group (NPI) and specialty",
    [
        "global-period: the scope is the same group NPI and specialty, not only the same person",
        "moderate: the 10-day global period of 47382 rests on a PFS row nobody verified",
    ],
)
def v40() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v40-global-group")
    group = group_practice(b)
    colleague = copy.deepcopy(b.practitioner)
    colleague.update(
        id=f"{b.slug}-dr2",
        identifier=[{"system": NPI, "value": "1678901236"}],
        name=[{"family": "Needle", "given": ["Ana"], "prefix": ["Dr."]}],
    )
    role2 = copy.deepcopy(b.role)
    role2.update(id=f"{b.slug}-role2", practitioner=ref(colleague), organization=ref(group))
    b.extra += [colleague, role2]
    # recorded by role, as EHRs do for group practices (the Bulk three-pass join follows a
    # performer reference forward, not a Practitioner back to its roles)
    earlier = earlier_session(b, "2026-10-08", b.procedure["code"], role2)
    earlier["performer"][0]["onBehalfOf"] = ref(group)
    return b.collection(), [
        expect(
            "Procedure/v40-global-group-rfa",
            "claim",
            ["global-period"],
            claim=claim(
                b,
                [(RFA, []), ("77013", ["26"])],
                ["C22.0"],
                "22",
                provider=f"Organization/{group['id']}",
            ),
        ),
        expect(
            f"Procedure/{earlier['id']}",
            "claim",
            # its note documents CT guidance and no guidance Procedure was recorded
            ["service-not-billed"],
            claim={
                **claim(b, [(RFA, [])], ["C22.0"], "22", provider=f"Organization/{group['id']}"),
                "rendering": {
                    "provider": f"PractitionerRole/{role2['id']}",
                    "taxonomy": "2085R0204X",
                },
            },
        ),
    ]


@case(
    "v41-global-unknown",
    "47382 four days after the same radiologist's renal ablation (50592), whose global days "
    "the shipped tables do not know",
    ["global-period-unknown (low): a prior surgery within 90 days, global days not in the tables"],
)
def v41() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = CaseBuilder("v41-global-unknown")
    renal = cc(
        CPT, "50592", "Ablation, 1 or more renal tumor(s), percutaneous, unilateral, radiofrequency"
    )
    earlier_session(b, "2026-10-10", renal, b.practitioner)
    return b.collection(), [
        expect(
            "Procedure/v41-global-unknown-rfa",
            "claim",
            ["global-period-unknown"],
            claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
    ]


def redate(b: CaseBuilder, day: str) -> None:
    """Move the whole case to another date of service (coverage included)."""
    b.encounter["period"] = {"start": f"{day}T08:00:00-04:00", "end": f"{day}T14:00:00-04:00"}
    for proc in (b.procedure, b.guidance):
        proc["performedDateTime"] = f"{day}T09:30:00-04:00"
    b.coverage["period"] = {"start": f"{day[:4]}-01-01", "end": f"{day[:4]}-12-31"}


@case(
    "v42-code-set-year",
    "Diagnoses checked by the ICD-10-CM release of the date of service's fiscal year",
    [
        "December 2024 (FY2025): E11.A, added in FY2026, is not a code yet: "
        "diagnosis-code-invalid naming the FY2025 release",
        "May 2021 (FY2021, no code set at hand): checked against the nearest, FY2025, and "
        "the case's code_sets says so",
    ],
)
def v42() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    fy25 = CaseBuilder("v42-code-set-year")
    redate(fy25, "2024-12-03")
    condition(
        fy25,
        "dm",
        "E11.A",
        "Type 2 diabetes mellitus without complications in remission",
        "confirmed",
    )
    old = CaseBuilder("v42-code-set-year-2021")
    redate(old, "2021-05-04")
    return merged("v42-code-set-year", fy25, old), [
        expect("Procedure/v42-code-set-year-rfa", "issues", ["diagnosis-code-invalid"]),
        expect(
            "Procedure/v42-code-set-year-2021-rfa",
            "claim",
            claim=claim(old, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22"),
        ),
    ]


# Payer overlays (mappings/payers/): the same clinical case under each payer, and cases
# that fail or leave open one criterion. Each `payer` section is written by hand from the
# policy text (README "Payer policies"), never computed by the adapter.

SAME_NOTE = (
    "Percutaneous radiofrequency ablation of a single 4.5 cm hepatocellular carcinoma in "
    "segment VI under CT guidance. The tumor is unresectable because of its central location "
    "abutting the right hepatic vein. All lesions are amenable to ablation. Staging CT shows "
    "no extrahepatic disease. The tumor involves about 5% of the liver volume. "
    "RF energy was applied at 150 W for 12 minutes with a 3 cm electrode. "
    "Post-ablation CT showed complete ablation with an adequate margin. No complications."
)


def payer_builder(slug: str, payer: str, note: str, size_cm: float) -> CaseBuilder:
    """The fixture case with this payer's name on the Coverage's payor, this note and size."""
    b = CaseBuilder(slug)
    b.payer["name"] = payer
    b.procedure["note"] = [{"text": note}]
    b.tumor["component"][0]["valueQuantity"]["value"] = size_cm
    return b


def payer_expect(
    b: CaseBuilder,
    outcome: str,
    findings: list[str],
    policy: str,
    verdict: str | None,
    criteria: dict[str, str],
) -> dict[str, Any]:
    out = expect(
        f"Procedure/{b.procedure['id']}",
        outcome,
        findings,
        claim=claim(b, [(RFA, []), ("77013", ["26"])], ["C22.0"], "22")
        if outcome == "claim"
        else None,
    )
    out["payer"] = {"policy": policy, "verdict": verdict, "criteria": criteria}
    return out


SAME_CASE = [
    # payer name, policy, outcome, findings, verdict, criteria by hand
    (
        "bcbsa",
        "Blue Cross Blue Shield of Massachusetts",
        "bcbsa-7.01.91",
        "claim",
        [],
        "covered",
        {
            "modality": "met",
            "histology": "met",
            "inoperable": "met",
            "milan": "met",
            "net-systemic-therapy-failed": "not-applicable",
        },
    ),
    (
        "aetna",
        "Aetna Better Health",
        "aetna-cpb-0274",
        "issues",
        ["payer-criteria-not-met"],
        "not-covered",
        {
            "modality": "met",
            "histology": "met",
            "liver-only": "met",
            "all-ablatable": "met",
            "not-surgical-candidate": "met",
            "size": "not-met",
            "liver-share": "met",
        },
    ),
    (
        "anthem",
        "Anthem Blue Cross",
        "anthem-cg-surg-78",
        "claim",
        [],
        "covered",
        {
            "modality": "met",
            "histology": "met",
            "surgical-candidacy": "met",
            "size": "met",
            "extrahepatic": "met",
            "all-foci-treatable": "met",
            "net-functioning": "not-applicable",
        },
    ),
    (
        "highmark",
        "Highmark Blue Cross Blue Shield",
        "highmark-s-141-019",
        "claim",
        [],
        "covered",
        {
            "modality": "met",
            "histology": "met",
            "non-surgical-candidate": "met",
            "hcc-indication": "met",
            "crc-size": "not-applicable",
            "crc-extrahepatic": "not-applicable",
            "crc-all-foci": "not-applicable",
        },
    ),
    ("medicare", "Medicare Part B", "medicare", "claim", [], "covered", {"modality": "met"}),
]


def _same_case(tag: str) -> Any:
    _, payer, policy, outcome, findings, verdict, criteria = next(
        c for c in SAME_CASE if c[0] == tag
    )

    def build() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        b = payer_builder(f"v43-same-case-{tag}", payer, SAME_NOTE, 4.5)
        return b.collection(), [payer_expect(b, outcome, findings, policy, verdict, criteria)]

    return build


for _tag, _payer, _policy, *_ in SAME_CASE:
    case(
        f"v43-same-case-{_tag}",
        f"One clinical case (a single 4.5 cm unresectable HCC, liver-only, all foci ablatable, "
        f"5 % of the liver) under {_payer}: judged by {_policy}",
        [
            "the payer overlay is chosen by the payor Organization's name",
            "Aetna's 4 cm limit fails where BCBSA (5 cm), Anthem (5 cm) and Highmark (<= 3 nodules) pass",
        ],
    )(_same_case(_tag))


@case(
    "v44-payer-bcbsa-large",
    "A 6.5 cm HCC treated palliatively under a Blue Cross plan: outside Milan",
    ["BCBSA 7.01.91 milan not met (one tumor > 5 cm, no transplant listing): no Claim"],
)
def v44() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    note = SAME_NOTE.replace("4.5 cm", "6.5 cm")
    b = payer_builder("v44-payer-bcbsa-large", "Blue Cross of Idaho", note, 6.5)
    crit = {
        "modality": "met",
        "histology": "met",
        "inoperable": "met",
        "milan": "not-met",
        "net-systemic-therapy-failed": "not-applicable",
    }
    return b.collection(), [
        payer_expect(
            b,
            "issues",
            ["payer-criteria-not-met", "modifier-22-review"],
            "bcbsa-7.01.91",
            "not-covered",
            crit,
        )
    ]


DECLINED_NOTE = (
    "Percutaneous radiofrequency ablation of a single 2.1 cm hepatocellular carcinoma in "
    "segment VI under CT guidance. The patient declined surgical resection. "
    "All lesions are amenable to ablation. Staging CT shows no extrahepatic disease. "
    "RF energy was applied at 150 W for 12 minutes with a 3 cm electrode. "
    "Post-ablation CT showed complete ablation with an adequate margin. No complications."
)


@case(
    "v45-payer-declined-bcbsa",
    "An operable HCC whose patient declined resection, under a Blue Cross plan",
    ["BCBSA 7.01.91 needs inoperability: a refusal alone leaves it undocumented (a query)"],
)
def v45() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = payer_builder(
        "v45-payer-declined-bcbsa", "BlueCross BlueShield of Tennessee", DECLINED_NOTE, 2.1
    )
    crit = {
        "modality": "met",
        "histology": "met",
        "inoperable": "undocumented",
        "milan": "met",
        "net-systemic-therapy-failed": "not-applicable",
    }
    return b.collection(), [
        payer_expect(
            b, "claim", ["payer-criteria-undocumented"], "bcbsa-7.01.91", "conditional", crit
        )
    ]


@case(
    "v46-payer-declined-anthem",
    "The same declined-resection case under Anthem: unwilling to have resection is covered",
    ["Anthem CG-SURG-78 accepts a patient unwilling to have resection"],
)
def v46() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = payer_builder("v46-payer-declined-anthem", "Anthem Health Plans", DECLINED_NOTE, 2.1)
    crit = {
        "modality": "met",
        "histology": "met",
        "surgical-candidacy": "met",
        "size": "met",
        "extrahepatic": "met",
        "all-foci-treatable": "met",
        "net-functioning": "not-applicable",
    }
    return b.collection(), [payer_expect(b, "claim", [], "anthem-cg-surg-78", "covered", crit)]


# Each overlay's criteria one at a time: met, not met, undocumented. One Bundle per overlay,
# a patient per case; the sentences a case's note is made of are named below.

S_UNRES = (
    "The tumor is unresectable because of its central location abutting the right hepatic vein."
)
S_DECLINED = "The patient declined surgical resection."
S_LISTED = "He is listed for liver transplant."
S_ALLFOCI = "All lesions are amenable to ablation."
S_UNTREATABLE = "A second lesion in segment 8 is not amenable to ablation."
S_NOEHD = "Staging CT shows no extrahepatic disease."
S_EHD = "Staging CT shows extrahepatic disease in the lung."
S_SHARE5 = "The tumor involves about 5% of the liver volume."
S_SHARE60 = "The tumor involves about 60% of the liver volume."
S_TAIL = (
    "RF energy was applied at 150 W for 12 minutes with a 3 cm electrode. "
    "Post-ablation CT showed complete ablation with an adequate margin. No complications."
)
HCC = "hepatocellular carcinoma"


def ablation_note(what: str, *sentences: str) -> str:
    """The procedure sentence (`what` was ablated in segment VI under CT), then the others."""
    return " ".join(
        [
            f"Percutaneous radiofrequency ablation of {what} in segment VI under CT guidance.",
            *sentences,
            S_TAIL,
        ]
    )


def lung_primary(b: CaseBuilder) -> None:
    """A liver metastasis of a lung cancer: C78.7 beside C34.90 (other-metastasis)."""
    b.condition["code"] = cc(
        ICD, "C78.7", "Secondary malignant neoplasm of liver and intrahepatic bile duct"
    )
    condition(
        b,
        "primary",
        "C34.90",
        "Malignant neoplasm of unspecified part of unspecified bronchus or lung",
        "confirmed",
    )


def colorectal_primary(b: CaseBuilder) -> None:
    b.condition["code"] = cc(
        ICD, "C78.7", "Secondary malignant neoplasm of liver and intrahepatic bile duct"
    )
    condition(b, "primary", "C18.7", "Malignant neoplasm of sigmoid colon", "confirmed")


def neuroendocrine(b: CaseBuilder) -> None:
    """Secondary carcinoid tumor of the liver (C7B.02) of a duodenal primary (C7A.010)."""
    b.condition["code"] = cc(ICD, "C7B.02", "Secondary carcinoid tumors of liver")
    condition(b, "primary", "C7A.010", "Malignant carcinoid tumor of the duodenum", "confirmed")


def no_size(b: CaseBuilder) -> None:
    """No tumor-size Observation (and the note gives no size either)."""
    b.drop.add(b.tumor["id"])


Variant = tuple[str, str, float, list[str], Any, str, str, list[str], str | None, dict[str, str]]


# a server takes at most 50 updates in one transaction (Medplum): three cases a Bundle
PAYER_CASES_PER_BUNDLE = 3

Chunk = tuple[list[CaseBuilder], list[dict[str, Any]]]


def payer_bundle(slug: str, payer: str, policy: str, variants: list[Variant]) -> list[Chunk]:
    """Cases under `payer`, three to a Bundle; each variant: (suffix, what was ablated, size,
    other sentences, an edit of the builder or None, diagnoses on the Claim, outcome,
    findings, verdict, criteria)."""
    builders, expected = [], []
    for suffix, what, size, sentences, edit, dx, outcome, findings, verdict, crit in variants:
        b = payer_builder(f"{slug}-{suffix}", payer, ablation_note(what, *sentences), size)
        if edit is not None:
            edit(b)
        builders.append(b)
        out = payer_expect(b, outcome, findings, policy, verdict, crit)
        if out.get("claim"):
            out["claim"]["diagnoses"] = dx.split()
        expected.append(out)
    n = PAYER_CASES_PER_BUNDLE
    return [(builders[i : i + n], expected[i : i + n]) for i in range(0, len(builders), n)]


def payer_cases(slug: str, description: str, exercises: list[str]) -> Any:
    """Register a function's payer cases as Bundles `<slug>-1`, `<slug>-2`, ..."""

    def register(fn: Any) -> Any:
        for i, (builders, expected) in enumerate(fn(), start=1):
            bundle = merged(f"{slug}-{i}", *builders)
            CASES.append(
                (f"{slug}-{i}", description, exercises, lambda b=bundle, e=expected: (b, e))
            )
        return fn

    return register


MET, NOT, UND, NA = "met", "not-met", "undocumented", "not-applicable"


def results(base: dict[str, str], **over: str) -> dict[str, str]:
    """The criteria results `base`, with those named in `over` (`_` for `-`) replaced."""
    return {**base, **{k.replace("_", "-"): v for k, v in over.items()}}


@payer_cases(
    "v47-payer-aetna-criteria",
    "Aetna CPB 0274 criterion by criterion: met, not met, undocumented",
    [
        "histology (a lung primary's metastasis is experimental), liver-only disease, every tumor "
        "ablatable, not a surgical candidate, each lesion <= 4 cm, < 50 % of the liver"
    ],
)
def v47() -> list[Chunk]:
    full = [S_UNRES, S_ALLFOCI, S_NOEHD, S_SHARE5]

    crit = partial(
        results,
        {
            "modality": MET,
            "histology": MET,
            "liver-only": MET,
            "all-ablatable": MET,
            "not-surgical-candidate": MET,
            "size": MET,
            "liver-share": MET,
        },
    )

    other = {
        k: NA
        for k in ("liver-only", "all-ablatable", "not-surgical-candidate", "size", "liver-share")
    }
    one = f"a single 2.1 cm {HCC}"
    return payer_bundle(
        "v47-aetna",
        "Aetna Life Insurance Company",
        "aetna-cpb-0274",
        [
            ("meets", one, 2.1, full, None, "C22.0", "claim", [], "covered", crit()),
            (
                "lung-primary",
                "a single 2.1 cm liver metastasis",
                2.1,
                [*full, "The primary is a lung adenocarcinoma."],
                lung_primary,
                "C78.7 C34.90",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                {"modality": MET, "histology": NOT, **other},
            ),
            (
                "extrahepatic",
                one,
                2.1,
                [S_UNRES, S_ALLFOCI, S_EHD, S_SHARE5],
                None,
                "C22.0",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                crit(liver_only=NOT),
            ),
            (
                "no-staging",
                one,
                2.1,
                [S_UNRES, S_ALLFOCI, S_SHARE5],
                None,
                "C22.0",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(liver_only=UND),
            ),
            (
                "foci-unstated",
                one,
                2.1,
                [S_UNRES, S_NOEHD, S_SHARE5],
                None,
                "C22.0",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(all_ablatable=UND),
            ),
            (
                "declined",
                one,
                2.1,
                [S_DECLINED, S_ALLFOCI, S_NOEHD, S_SHARE5],
                None,
                "C22.0",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(not_surgical_candidate=UND),
            ),
            (
                "no-size",
                f"a single {HCC}",
                2.1,
                full,
                no_size,
                "C22.0",
                "claim",
                ["doc-tumor-size", "payer-criteria-undocumented"],
                "conditional",
                crit(size=UND),
            ),
            (
                "share-60",
                one,
                2.1,
                [S_UNRES, S_ALLFOCI, S_NOEHD, S_SHARE60],
                None,
                "C22.0",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                crit(liver_share=NOT),
            ),
            (
                "share-unstated",
                one,
                2.1,
                [S_UNRES, S_ALLFOCI, S_NOEHD],
                None,
                "C22.0",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(liver_share=UND),
            ),
        ],
    )


@payer_cases(
    "v48-payer-bcbsa-criteria",
    "BCBSA 7.01.91 criterion by criterion: met, not met, undocumented",
    [
        "histology, Milan met by a bridge to transplant or undocumented without a size, "
        "neuroendocrine metastases only when systemic therapy failed to control symptoms"
    ],
)
def v48() -> list[Chunk]:
    crit = partial(
        results,
        {
            "modality": MET,
            "histology": MET,
            "inoperable": MET,
            "milan": MET,
            "net-systemic-therapy-failed": NA,
        },
    )

    net = "a single 2.1 cm neuroendocrine liver metastasis"
    return payer_bundle(
        "v48-bcbsa",
        "Blue Cross Blue Shield of Michigan",
        "bcbsa-7.01.91",
        [
            (
                "lung-primary",
                "a single 2.1 cm liver metastasis",
                2.1,
                [S_UNRES, "The primary is a lung adenocarcinoma."],
                lung_primary,
                "C78.7 C34.90",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                {
                    "modality": MET,
                    "histology": NOT,
                    "inoperable": NA,
                    "milan": NA,
                    "net-systemic-therapy-failed": NA,
                },
            ),
            (
                "bridge",
                f"a single 6.5 cm {HCC}",
                6.5,
                [S_UNRES, S_LISTED],
                None,
                "C22.0",
                "claim",
                ["diagnosis-not-coded", "modifier-22-review"],
                "covered",
                crit(),
            ),
            (
                "no-size",
                f"a single {HCC}",
                2.1,
                [S_UNRES],
                no_size,
                "C22.0",
                "claim",
                ["doc-tumor-size", "payer-criteria-undocumented"],
                "conditional",
                crit(milan=UND),
            ),
            (
                "net-refractory",
                net,
                2.1,
                [S_UNRES, "Hormonal symptoms persist despite lanreotide therapy."],
                neuroendocrine,
                "C7B.02 C7A.010",
                "claim",
                [],
                "covered",
                crit(milan=NA, net_systemic_therapy_failed=MET),
            ),
            (
                "net-unstated",
                net,
                2.1,
                [S_UNRES],
                neuroendocrine,
                "C7B.02 C7A.010",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(milan=NA, net_systemic_therapy_failed=UND),
            ),
        ],
    )


@payer_cases(
    "v49-payer-anthem-criteria",
    "Anthem CG-SURG-78 criterion by criterion: met, not met, undocumented",
    [
        "histology, poor candidate or unwilling, each lesion <= 5 cm, extrahepatic disease, all "
        "foci treatable, functioning neuroendocrine tumors only"
    ],
)
def v49() -> list[Chunk]:
    crit = partial(
        results,
        {
            "modality": MET,
            "histology": MET,
            "surgical-candidacy": MET,
            "size": MET,
            "extrahepatic": MET,
            "all-foci-treatable": MET,
            "net-functioning": NA,
        },
    )

    one = f"a single 2.1 cm {HCC}"
    net = "a single 2.1 cm neuroendocrine liver metastasis"
    full = [S_UNRES, S_ALLFOCI, S_NOEHD]
    return payer_bundle(
        "v49-anthem",
        "Anthem Blue Cross and Blue Shield",
        "anthem-cg-surg-78",
        [
            (
                "lung-primary",
                "a single 2.1 cm liver metastasis",
                2.1,
                [*full, "The primary is a lung adenocarcinoma."],
                lung_primary,
                "C78.7 C34.90",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                crit(histology=NOT),
            ),
            (
                "listed-only",
                one,
                2.1,
                [S_LISTED, S_ALLFOCI, S_NOEHD],
                None,
                "C22.0",
                "claim",
                ["diagnosis-not-coded", "payer-criteria-undocumented"],
                "conditional",
                crit(surgical_candidacy=UND),
            ),
            (
                "large",
                f"a single 6.5 cm {HCC}",
                6.5,
                full,
                None,
                "C22.0",
                "issues",
                ["modifier-22-review", "payer-criteria-not-met"],
                "not-covered",
                crit(size=NOT),
            ),
            (
                "extrahepatic",
                one,
                2.1,
                [S_UNRES, S_ALLFOCI, S_EHD],
                None,
                "C22.0",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                crit(extrahepatic=NOT),
            ),
            (
                "no-staging",
                one,
                2.1,
                [S_UNRES, S_ALLFOCI],
                None,
                "C22.0",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(extrahepatic=UND),
            ),
            (
                "untreatable",
                one,
                2.1,
                [S_UNRES, S_UNTREATABLE, S_NOEHD],
                None,
                "C22.0",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                crit(all_foci_treatable=NOT),
            ),
            (
                "foci-unstated",
                one,
                2.1,
                [S_UNRES, S_NOEHD],
                None,
                "C22.0",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(all_foci_treatable=UND),
            ),
            (
                "net-functioning",
                net,
                2.1,
                [*full, "It is a functioning neuroendocrine tumor."],
                neuroendocrine,
                "C7B.02 C7A.010",
                "claim",
                [],
                "covered",
                crit(net_functioning=MET),
            ),
            (
                "net-nonfunctioning",
                net,
                2.1,
                [*full, "It is a non-functioning neuroendocrine tumor."],
                neuroendocrine,
                "C7B.02 C7A.010",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                crit(net_functioning=NOT),
            ),
            (
                "net-unstated",
                net,
                2.1,
                full,
                neuroendocrine,
                "C7B.02 C7A.010",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(net_functioning=UND),
            ),
        ],
    )


@payer_cases(
    "v50-payer-highmark-criteria",
    "Highmark S-141-019 criterion by criterion: met, not met, undocumented",
    [
        "HCC or colorectal only, not a surgical candidate, <= 3 nodules with all foci treatable or "
        "the bridge-to-transplant branch (Child-Pugh, size, portal vein), colorectal limits"
    ],
)
def v50() -> list[Chunk]:
    crc_na = {"crc-size": NA, "crc-extrahepatic": NA, "crc-all-foci": NA}

    crit = partial(
        results,
        {
            "modality": MET,
            "histology": MET,
            "non-surgical-candidate": MET,
            "hcc-indication": MET,
            **crc_na,
        },
    )

    crc = partial(
        results,
        {
            "modality": MET,
            "histology": MET,
            "non-surgical-candidate": NA,
            "hcc-indication": NA,
            "crc-size": MET,
            "crc-extrahepatic": MET,
            "crc-all-foci": MET,
        },
    )

    one = f"a single 2.1 cm {HCC}"
    bridge = [S_UNRES, S_LISTED, "Child-Pugh B7.", S_NOEHD, "The portal vein is patent."]
    crc_one = "a single 2.1 cm colorectal liver metastasis"
    return payer_bundle(
        "v50-highmark",
        "Highmark Inc.",
        "highmark-s-141-019",
        [
            (
                "net",
                "a single 2.1 cm neuroendocrine liver metastasis",
                2.1,
                [S_UNRES, S_ALLFOCI, S_NOEHD],
                neuroendocrine,
                "C7B.02 C7A.010",
                "issues",
                ["payer-criteria-not-met"],
                "not-covered",
                {
                    "modality": MET,
                    "histology": NOT,
                    "non-surgical-candidate": NA,
                    "hcc-indication": NA,
                    **crc_na,
                },
            ),
            (
                "declined",
                one,
                2.1,
                [S_DECLINED, S_ALLFOCI],
                None,
                "C22.0",
                "claim",
                ["payer-criteria-undocumented"],
                "conditional",
                crit(non_surgical_candidate=UND),
            ),
            (
                "bridge",
                f"a single 5.5 cm {HCC}",
                5.5,
                bridge,
                None,
                "C22.0",
                "claim",
                ["diagnosis-not-coded", "modifier-22-review"],
                "covered",
                crit(),
            ),
            (
                "bridge-child-pugh-c",
                f"a single 5.5 cm {HCC}",
                5.5,
                [S_UNRES, S_LISTED, "Child-Pugh C10.", S_NOEHD, "The portal vein is patent."],
                None,
                "C22.0",
                "claim",
                ["diagnosis-not-coded", "modifier-22-review", "payer-criteria-undocumented"],
                "conditional",
                crit(hcc_indication=UND),
            ),
            (
                "four-nodules",
                f"four {HCC}s, the largest 2.1 cm,",
                2.1,
                [S_UNRES, S_ALLFOCI],
                None,
                "C22.0",
                "issues",
                ["modifier-22-review", "payer-criteria-not-met"],
                "not-covered",
                crit(hcc_indication=NOT),
            ),
            (
                "crc",
                crc_one,
                2.1,
                [S_UNRES, S_ALLFOCI, S_NOEHD],
                colorectal_primary,
                "C78.7 C18.7",
                "claim",
                [],
                "covered",
                crc(),
            ),
            (
                "crc-large",
                "a single 5.5 cm colorectal liver metastasis",
                5.5,
                [S_UNRES, S_ALLFOCI, S_NOEHD],
                colorectal_primary,
                "C78.7 C18.7",
                "issues",
                ["modifier-22-review", "payer-criteria-not-met"],
                "not-covered",
                crc(crc_size=NOT),
            ),
        ],
    )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*"):
        old.unlink()
    index = []
    for slug, description, exercises, fn in CASES:
        bundle, expected = fn()
        (OUT / f"{slug}.json").write_text(json.dumps(bundle, indent=2) + "\n")
        doc = {"name": slug, "description": description, "exercises": exercises, "cases": expected}
        (OUT / f"{slug}.expected.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, width=100))
        index.append(slug)
    print(f"wrote {len(index)} fixtures to {OUT}")
    readme = OUT.parent.parent / "README.md"
    counts = f"<!-- fixture-counts -->{fixture_counts()}<!-- /fixture-counts -->"
    readme.write_text(README_COUNTS.sub(counts, readme.read_text(encoding="utf-8"), count=1))


if __name__ == "__main__":
    main()
