"""Evaluate a compiled rule pack (fhir_adapter.pack) against cases."""

from fhir_adapter.pack.load import Pack, default_pack_path, load_pack
from fhir_adapter.rules.evaluate import evaluate_case

__all__ = ["Pack", "default_pack_path", "evaluate_case", "load_pack"]
