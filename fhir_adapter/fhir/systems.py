"""Code-system and identifier-system URLs, named once for the whole package."""

from __future__ import annotations

CPT = "http://www.ama-assn.org/go/cpt"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
NUCC = "http://nucc.org/provider-taxonomy"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NPI = "http://hl7.org/fhir/sid/us-npi"
