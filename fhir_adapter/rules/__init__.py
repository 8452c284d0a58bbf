"""Load, compile and evaluate a rule pack (mappings/*.yaml) against cases."""

from fhir_adapter.rules.evaluate import evaluate_case
from fhir_adapter.rules.pack import Pack, default_pack_path, load_pack

__all__ = ["Pack", "default_pack_path", "evaluate_case", "load_pack"]
