"""A seeded generator of Bulk Data-style NDJSON exports, for benchmarks and scale tests.

Realistic shapes and mixes: most Procedures are not 47382, most Conditions are not
liver tumors, and the documentation of a case sometimes lives only in a note or
an attached document. One file per resource type, as `$export` writes them.
"""

from __future__ import annotations

import base64
import gzip
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from fhir_adapter.billing.decide import npi_check_digit
from fhir_adapter.fhir.systems import ACT, CPT, LOINC, NUCC, POS
from fhir_adapter.fhir.systems import ICD10CM as ICD
from fhir_adapter.fhir.systems import SNOMED as SCT

OTHER_PROCEDURES = [
    ("45378", "Colonoscopy, flexible; diagnostic"),
    ("43239", "Esophagogastroduodenoscopy with biopsy"),
    ("47000", "Biopsy of liver, needle; percutaneous"),
    ("49083", "Abdominal paracentesis with imaging guidance"),
    ("36561", "Insertion of tunneled centrally inserted central venous access device"),
    ("99213", "Office or other outpatient visit, established patient"),
    ("71046", "Radiologic examination, chest; 2 views"),
    ("74177", "CT abdomen and pelvis with contrast"),
    ("93000", "Electrocardiogram, routine ECG with at least 12 leads"),
    ("20610", "Arthrocentesis, major joint"),
]
OTHER_CONDITIONS = [
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ("K74.60", "Unspecified cirrhosis of liver"),
    ("B18.2", "Chronic viral hepatitis C"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("N18.3", "Chronic kidney disease, stage 3"),
    ("C18.7", "Malignant neoplasm of sigmoid colon"),
    ("Z79.01", "Long term (current) use of anticoagulants"),
]
LIVER_DX = [
    ("C22.0", "Liver cell carcinoma"),
    ("C78.7", "Secondary malignant neoplasm of liver"),
    ("C22.1", "Intrahepatic bile duct carcinoma"),
    ("D37.6", "Neoplasm of uncertain behavior of liver"),
]
SPECIALTIES = [
    ("2085R0204X", "Vascular & Interventional Radiology"),
    ("2086X0206X", "Surgical Oncology"),
    ("207RI0008X", "Hepatology"),
    ("207Q00000X", "Family Medicine"),
    ("207R00000X", "Internal Medicine"),
]
LABS = [
    ("2345-7", "Glucose", "mg/dL", 70, 180),
    ("1742-6", "ALT", "U/L", 10, 90),
    ("1920-8", "AST", "U/L", 10, 90),
    ("777-3", "Platelets", "10*3/uL", 60, 400),
    ("6301-6", "INR", "{INR}", 0.9, 2.0),
    ("1975-2", "Bilirubin total", "mg/dL", 0.2, 3.0),
]
SEGMENTS = [
    ("277956007", "II"),
    ("277957003", "III"),
    ("277958008", "IV"),
    ("277959000", "V"),
    ("277960005", "VI"),
    ("277961009", "VII"),
    ("277962002", "VIII"),
]
NOTES = [
    "Percutaneous radiofrequency ablation of a {size} cm hepatocellular carcinoma in segment {seg} "
    "under {guide} guidance. The tumor is unresectable because of cirrhosis with portal hypertension. "
    "RF energy was applied at {watts} W for {mins} minutes. Post-ablation imaging showed complete "
    "ablation. No complications.",
    "Single {size} cm lesion in segment {seg}; patient declined hepatectomy. Ablation under {guide} "
    "guidance at {watts} W for {mins} minutes. Ablation zone covers the lesion with adequate margins.",
    "Radiofrequency ablation of hepatic lesion performed percutaneously. Patient tolerated the "
    "procedure well.",
]


def cc(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


_FILLER = (
    "Generated narrative for this resource: the clinical content below repeats the structured "
    "data for human readers, as EHR exports commonly do. "
)


def _narrate(resource: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Add meta and a narrative div, as real exports carry them (sizes ~0.8-2.5 KB)."""
    rtype = resource["resourceType"]
    resource["meta"] = {
        "versionId": str(rng.randint(1, 9)),
        "lastUpdated": "2026-11-01T12:00:00.000-05:00",
        **resource.get("meta", {}),
    }
    if rtype in (
        "Procedure",
        "Condition",
        "Observation",
        "Encounter",
        "Patient",
        "DiagnosticReport",
    ):
        body = _FILLER * (6 if rtype == "Procedure" else 3)
        resource["text"] = {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{rtype} {resource["id"]}</p><p>{body}</p></div>',
        }
    return resource


class ExportWriter:
    """One NDJSON file per resource type (optionally gzip), as a Bulk Data export."""

    def __init__(self, out: Path, gzipped: bool = False) -> None:
        self.out = out
        self.gzipped = gzipped
        out.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, gzip.GzipFile | BinaryIO] = {}
        self.counts: dict[str, int] = {}

    def write(self, resource: dict[str, Any]) -> None:
        rtype = resource["resourceType"]
        if rtype not in self._files:
            path = self.out / (f"{rtype}.ndjson" + (".gz" if self.gzipped else ""))
            if self.gzipped:
                self._files[rtype] = gzip.GzipFile(path, "wb", compresslevel=1)
            else:
                self._files[rtype] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._files[rtype].write(orjson.dumps(resource) + b"\n")
        self.counts[rtype] = self.counts.get(rtype, 0) + 1

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()


def generate(
    out: str | Path,
    patients: int,
    seed: int = 47382,
    gzipped: bool = False,
    case_rate: float = 0.08,
    dense: bool = False,
) -> dict[str, int]:
    """Write an export of `patients` patients into `out`; returns resources written per type.

    `dense` makes every patient a 47382 case (a cohort or Group export).
    """
    if dense:
        case_rate = 1.0
    writer = ExportWriter(Path(out), gzipped)
    rng = random.Random(seed + 1)
    try:
        for resource in resources(patients, seed, case_rate):
            writer.write(_narrate(resource, rng))
    finally:
        writer.close()
    return writer.counts


def resources(
    patients: int, seed: int = 47382, case_rate: float = 0.08
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    n_orgs, n_locs, n_docs = 20, 30, max(20, min(400, patients // 50))
    for i in range(n_orgs):
        yield {
            "resourceType": "Organization",
            "id": f"org-{i}",
            "active": True,
            "name": f"{rng.choice(['Acme', 'Blue', 'United', 'Mercy', 'Valley'])} {i}",
            "type": [
                cc(
                    "http://terminology.hl7.org/CodeSystem/organization-type",
                    "pay" if i < 8 else "prov",
                    "Payer" if i < 8 else "Healthcare Provider",
                )
            ],
        }
    pos_codes = [
        ("22", "On Campus-Outpatient Hospital"),
        ("24", "Ambulatory Surgical Center"),
        ("21", "Inpatient Hospital"),
        ("19", "Off Campus-Outpatient Hospital"),
        ("11", "Office"),
    ]
    for i in range(n_locs):
        pos = pos_codes[i % len(pos_codes)]
        yield {
            "resourceType": "Location",
            "id": f"loc-{i}",
            "status": "active",
            "name": f"Suite {i}",
            "type": [cc(POS, *pos)] if i % 7 else [],
            "managingOrganization": {"reference": f"Organization/org-{8 + i % 12}"},
        }
    for i in range(n_docs):
        spec = SPECIALTIES[0] if i % 3 == 0 else rng.choice(SPECIALTIES)
        yield {
            "resourceType": "Practitioner",
            "id": f"dr-{i}",
            "active": True,
            # a valid NPI (CMS check digit), but every 20th has a wrong last digit
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": _npi(i)}],
            "name": [{"family": f"Doctor{i}", "given": ["Pat"], "prefix": ["Dr."]}],
        }
        yield {
            "resourceType": "PractitionerRole",
            "id": f"role-{i}",
            "active": True,
            "practitioner": {"reference": f"Practitioner/dr-{i}"},
            "organization": {"reference": f"Organization/org-{8 + i % 12}"},
            "specialty": [cc(NUCC, *spec)],
        }
    for p in range(patients):
        yield from _patient(rng, p, n_locs, n_docs, case_rate)


def _patient(
    rng: random.Random, p: int, n_locs: int, n_docs: int, case_rate: float
) -> Iterator[dict[str, Any]]:
    pid = f"pt-{p}"
    pref = {"reference": f"Patient/{pid}"}
    yield {
        "resourceType": "Patient",
        "id": pid,
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "identifier": [{"system": "http://hospital.example.org/mrn", "value": f"MRN{p:08d}"}],
        "name": [{"family": f"Family{p % 997}", "given": [f"Given{p % 131}"]}],
        "gender": rng.choice(["male", "female"]),
        "birthDate": f"{rng.randint(1935, 1990)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        "address": [
            {
                "line": [f"{rng.randint(1, 999)} Main St"],
                "city": "Springfield",
                "state": "IL",
                "postalCode": f"6{rng.randint(1000, 9999)}",
            }
        ],
        "telecom": [{"system": "phone", "value": f"555-{rng.randint(1000, 9999)}"}],
    }
    yield {
        "resourceType": "Coverage",
        "id": f"cov-{p}",
        "status": "active" if rng.random() > 0.03 else "cancelled",
        "beneficiary": pref,
        "payor": [{"reference": f"Organization/org-{p % 8}"}],
        "period": {"start": "2026-01-01", "end": "2026-12-31"},
        "subscriberId": f"SUB{p:09d}",
    }
    is_case = rng.random() < case_rate
    n_enc = rng.randint(1, 3)
    for e in range(n_enc):
        eid = f"enc-{p}-{e}"
        eref = {"reference": f"Encounter/{eid}"}
        day = f"2026-{rng.randint(1, 11):02d}-{rng.randint(10, 28)}"
        case_here = is_case and e == 0
        dr = rng.randrange(n_docs)
        cls = "IMP" if rng.random() < 0.15 else "AMB"
        conds = []
        for c in range(rng.randint(1, 3)):
            code, disp = (
                rng.choice(LIVER_DX)
                if case_here and c == 0 and rng.random() > 0.05
                else rng.choice(OTHER_CONDITIONS)
            )
            cid = f"cond-{p}-{e}-{c}"
            conds.append(cid)
            yield {
                "resourceType": "Condition",
                "id": cid,
                "clinicalStatus": cc(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                ),
                "verificationStatus": cc(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "confirmed",
                    "Confirmed",
                ),
                "category": [
                    cc(
                        "http://terminology.hl7.org/CodeSystem/condition-category",
                        "encounter-diagnosis",
                        "Encounter Diagnosis",
                    )
                ],
                "code": cc(ICD, code if rng.random() > 0.1 else code.replace(".", ""), disp),
                "subject": pref,
                "encounter": eref,
                "recordedDate": day,
            }
        yield {
            "resourceType": "Encounter",
            "id": eid,
            "status": "finished",
            "class": {"system": ACT, "code": cls},
            "subject": pref,
            "period": {"start": f"{day}T08:00:00-05:00", "end": f"{day}T15:00:00-05:00"},
            "location": [{"location": {"reference": f"Location/loc-{rng.randrange(n_locs)}"}}],
            "serviceProvider": {"reference": f"Organization/org-{8 + p % 12}"},
            "diagnosis": [{"condition": {"reference": f"Condition/{c}"}} for c in conds],
        }
        for o in range(rng.randint(1, 4)):
            code, disp, unit, lo, hi = rng.choice(LABS)
            yield {
                "resourceType": "Observation",
                "id": f"obs-{p}-{e}-{o}",
                "status": "final",
                "category": [
                    cc(
                        "http://terminology.hl7.org/CodeSystem/observation-category",
                        "laboratory",
                        "Laboratory",
                    )
                ],
                "code": cc(LOINC, code, disp),
                "subject": pref,
                "encounter": eref,
                "effectiveDateTime": f"{day}T07:30:00-05:00",
                "valueQuantity": {
                    "value": round(rng.uniform(lo, hi), 1),
                    "unit": unit,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        for q in range(rng.randint(0, 2)):
            code, disp = rng.choice(OTHER_PROCEDURES)
            yield {
                "resourceType": "Procedure",
                "id": f"proc-{p}-{e}-{q}",
                "status": "completed",
                "code": cc(CPT, code, disp),
                "subject": pref,
                "encounter": eref,
                "performedDateTime": f"{day}T10:00:00-05:00",
                "performer": [{"actor": {"reference": f"Practitioner/dr-{rng.randrange(n_docs)}"}}],
                "note": [{"text": f"{disp} performed without complication."}],
            }
        if case_here:
            yield from _case(rng, p, e, day, pref, eref, conds, dr)


def _case(
    rng: random.Random,
    p: int,
    e: int,
    day: str,
    pref: dict[str, str],
    eref: dict[str, str],
    conds: list[str],
    dr: int,
) -> Iterator[dict[str, Any]]:
    rid = f"rfa-{p}"
    size = round(rng.uniform(0.8, 6.0), 1)
    seg_code, seg = rng.choice(SEGMENTS)
    guide, gcode = rng.choice([("CT", "77013"), ("ultrasound", "76940"), ("MRI", "77022")])
    text = rng.choice(NOTES).format(
        size=size, seg=seg, guide=guide, watts=rng.choice([100, 150, 200]), mins=rng.randint(6, 24)
    )
    where = rng.random()
    proc: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": rid,
        "identifier": [{"system": "http://hospital.example.org/procedure", "value": f"RFA{p:08d}"}],
        "status": "completed" if rng.random() > 0.04 else "in-progress",
        "code": cc(
            CPT, "47382", "Ablation, 1 or more liver tumor(s), percutaneous, radiofrequency"
        ),
        "subject": pref,
        "encounter": eref,
        "performedDateTime": f"{day}T09:30:00-05:00",
        "performer": [{"actor": {"reference": f"Practitioner/dr-{dr}"}}],
        "reasonReference": [{"reference": f"Condition/{conds[0]}"}],
    }
    if where < 0.5:
        proc["note"] = [{"text": text}]
        proc["bodySite"] = [cc(SCT, seg_code, f"Couinaud hepatic segment {seg}")]
        proc["outcome"] = cc(SCT, "385669000", "Successful")
    yield proc
    yield {
        "resourceType": "Procedure",
        "id": f"guide-{p}",
        "status": "completed",
        "code": cc(CPT, gcode, f"{guide} guidance for ablation"),
        "subject": pref,
        "encounter": eref,
        "performedDateTime": f"{day}T09:30:00-05:00",
        "performer": [{"actor": {"reference": f"Practitioner/dr-{dr}"}}],
    }
    if where >= 0.5:
        content = [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": base64.b64encode(text.encode()).decode(),
                }
            }
        ]
        yield {
            "resourceType": "DocumentReference",
            "id": f"note-{p}",
            "status": "current",
            "type": cc(LOINC, "28570-0", "Procedure note"),
            "subject": pref,
            "date": f"{day}T12:00:00-05:00",
            "content": content,
            "context": {"encounter": [eref], "related": [{"reference": f"Procedure/{rid}"}]},
        }
    if rng.random() < 0.6:
        yield {
            "resourceType": "Observation",
            "id": f"size-{p}",
            "status": "final",
            "code": cc(LOINC, "21889-1", "Size Tumor"),
            "subject": pref,
            "encounter": eref,
            "partOf": [{"reference": f"Procedure/{rid}"}],
            "bodySite": cc(SCT, seg_code, f"Couinaud hepatic segment {seg}"),
            "component": [
                {
                    "code": cc(LOINC, "33728-7", "Size.maximum dimension in Tumor"),
                    "valueQuantity": {
                        "value": size,
                        "unit": "cm",
                        "system": "http://unitsofmeasure.org",
                        "code": "cm",
                    },
                }
            ],
        }
    if rng.random() < 0.5:
        yield {
            "resourceType": "DiagnosticReport",
            "id": f"dr-{p}",
            "status": "final",
            "code": cc(LOINC, "24627-2", "CT Chest"),
            "subject": pref,
            "encounter": eref,
            "effectiveDateTime": f"{day}T11:00:00-05:00",
            "conclusion": f"Post-ablation {guide}: ablation zone encompasses the {size} cm lesion; no residual enhancement.",
        }


def _npi(i: int) -> str:
    """An NPI for doctor `i`: 9 digits and their check digit, wrong for every 20th doctor."""
    base = f"1{i:08d}"
    check = int(npi_check_digit(base))
    return base + str((check + 1) % 10 if i % 20 == 19 else check)
