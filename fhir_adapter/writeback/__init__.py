"""Turn an evaluation into FHIR: a Claim, DetectedIssues, and the transaction Bundle."""

from fhir_adapter.writeback.bundle import CaseOutput, build_output

__all__ = ["CaseOutput", "build_output"]
