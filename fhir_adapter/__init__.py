"""fhir-adapter: check CPT 47382 cases in FHIR R4 data; write Claim and DetectedIssue.

The small public API:

    from fhir_adapter import evaluate_paths, load_pack
    outputs = evaluate_paths(["fixtures/cases"])
    for out in outputs:
        print(out.evaluation.outcome, [f.code for f in out.evaluation.findings])
        bundle = out.bundle()          # transaction Bundle, conditional creates
"""

from fhir_adapter.case import Case, assemble_cases
from fhir_adapter.errors import AdapterError, InputError, PackError
from fhir_adapter.findings import Evaluation, Evidence, Finding, Modifier
from fhir_adapter.pipeline import evaluate_paths, evaluate_store
from fhir_adapter.rules import Pack, evaluate_case, load_pack
from fhir_adapter.sources import ResourceStore, read_paths
from fhir_adapter.writeback import CaseOutput

__all__ = [
    "AdapterError",
    "Case",
    "CaseOutput",
    "Evaluation",
    "Evidence",
    "Finding",
    "InputError",
    "Modifier",
    "Pack",
    "PackError",
    "ResourceStore",
    "assemble_cases",
    "evaluate_case",
    "evaluate_paths",
    "evaluate_store",
    "load_pack",
    "read_paths",
]
