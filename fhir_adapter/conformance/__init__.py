"""Conformance to the Da Vinci guides (PAS, DTR, CRD), by their own StructureDefinitions."""

from fhir_adapter.conformance.checker import Issue, Report, check, check_element, iter_examples

__all__ = ["Issue", "Report", "check", "check_element", "iter_examples"]
