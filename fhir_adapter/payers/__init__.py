"""Payer overlays (mappings/payers/*.yaml): each payer's medical policy layered on the pack,
chosen by the case's Coverage, judged criterion by criterion.

It sits after billing and before rules in the flow: its facts read the pack's and the
Claim's, and rules.evaluate runs the chosen overlay after the pack's own rules.
"""

from fhir_adapter.payers.load import PAYERS_ENV, Payers, load_payers

__all__ = ["PAYERS_ENV", "Payers", "load_payers"]
