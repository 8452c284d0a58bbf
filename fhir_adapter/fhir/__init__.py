"""FHIR R4 vocabulary shared by every stage: element paths, references, codings, systems."""
