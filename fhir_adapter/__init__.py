"""fhir-adapter: check CPT 47382 cases in FHIR R4 data; write Claim and DetectedIssue.

The small public API:

    from fhir_adapter import evaluate_paths
    for out in evaluate_paths(["fixtures/cases"]):            # files, Bundles, NDJSON exports
        print(out.evaluation.outcome, [f.code for f in out.evaluation.findings])
        bundle = out.bundle()                                  # transaction, conditional creates

    from fhir_adapter import connect, evaluate_procedure, run_on_server, write_back
    from fhir_adapter import SmartBackendAuth
    client = connect("https://fhir.example.org/r4", SmartBackendAuth("id", pem, key_id="k1"))
    result = evaluate_procedure(client, "123")                 # one case, nothing written
    write_back(client, result)                                 # its transaction, if anything changed
    results = run_on_server(client, since="2026-10-01")        # search, evaluate, write back

The server-side names are imported lazily, so that reading files needs no HTTP stack.
"""

from typing import Any

from fhir_adapter.case import Case, assemble_cases
from fhir_adapter.errors import AdapterError, InputError, PackError
from fhir_adapter.findings import Evaluation, Evidence, Finding, Modifier
from fhir_adapter.pipeline import evaluate_paths, evaluate_store
from fhir_adapter.rules import Pack, evaluate_case, load_pack
from fhir_adapter.sources import ResourceStore, read_paths
from fhir_adapter.writeback import CaseOutput

_LAZY = {
    "connect": "fhir_adapter.pipeline",
    "evaluate_procedure": "fhir_adapter.pipeline",
    "run_on_server": "fhir_adapter.pipeline",
    "write_back": "fhir_adapter.pipeline",
    "ServerResult": "fhir_adapter.pipeline",
    "FhirClient": "fhir_adapter.client.rest",
    "ServerError": "fhir_adapter.client.rest",
    "BearerAuth": "fhir_adapter.client.auth",
    "ClientSecretAuth": "fhir_adapter.client.auth",
    "SmartBackendAuth": "fhir_adapter.client.auth",
    "BulkExport": "fhir_adapter.client.export",
    "evaluate_on_spark": "fhir_adapter.spark",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fhir_adapter' has no attribute {name!r}")


__all__ = [
    *_LAZY,
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
