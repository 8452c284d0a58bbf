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

Every name is imported lazily, so that reading files needs no HTTP stack and
`fhir-adapter --help` loads no rule engine.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as type checkers see them
    from fhir_adapter.case import Case, assemble_cases
    from fhir_adapter.client.auth import BearerAuth, ClientSecretAuth, FhirAuth, SmartBackendAuth
    from fhir_adapter.client.export import BulkExport
    from fhir_adapter.client.rest import FhirClient
    from fhir_adapter.errors import AdapterError, InputError, PackError, ServerError
    from fhir_adapter.findings import Evaluation, Evidence, Finding, Modifier
    from fhir_adapter.pack import Pack, load_pack
    from fhir_adapter.pipeline import (
        ServerResult,
        connect,
        evaluate_paths,
        evaluate_procedure,
        evaluate_store,
        load_store,
        run_on_server,
        write_back,
    )
    from fhir_adapter.rules import evaluate_case
    from fhir_adapter.sources import ResourceStore, read_paths
    from fhir_adapter.spark import evaluate_on_spark
    from fhir_adapter.writeback import CaseOutput

# Every public name is imported on first use, so that `fhir-adapter --help`, the CDS
# Hooks service and the report tooling load only what they touch.
_LAZY = {
    "Case": "fhir_adapter.case",
    "assemble_cases": "fhir_adapter.case",
    "AdapterError": "fhir_adapter.errors",
    "InputError": "fhir_adapter.errors",
    "PackError": "fhir_adapter.errors",
    "ServerError": "fhir_adapter.errors",
    "Evaluation": "fhir_adapter.findings",
    "Evidence": "fhir_adapter.findings",
    "Finding": "fhir_adapter.findings",
    "Modifier": "fhir_adapter.findings",
    "evaluate_paths": "fhir_adapter.pipeline",
    "evaluate_store": "fhir_adapter.pipeline",
    "load_store": "fhir_adapter.pipeline",
    "connect": "fhir_adapter.pipeline",
    "evaluate_procedure": "fhir_adapter.pipeline",
    "run_on_server": "fhir_adapter.pipeline",
    "write_back": "fhir_adapter.pipeline",
    "ServerResult": "fhir_adapter.pipeline",
    "Pack": "fhir_adapter.pack",
    "evaluate_case": "fhir_adapter.rules",
    "load_pack": "fhir_adapter.pack",
    "ResourceStore": "fhir_adapter.sources",
    "read_paths": "fhir_adapter.sources",
    "CaseOutput": "fhir_adapter.writeback",
    "FhirClient": "fhir_adapter.client.rest",
    "FhirAuth": "fhir_adapter.client.auth",
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
    "AdapterError",
    "BearerAuth",
    "BulkExport",
    "Case",
    "CaseOutput",
    "ClientSecretAuth",
    "Evaluation",
    "Evidence",
    "FhirAuth",
    "FhirClient",
    "Finding",
    "InputError",
    "Modifier",
    "Pack",
    "PackError",
    "ResourceStore",
    "ServerError",
    "ServerResult",
    "SmartBackendAuth",
    "assemble_cases",
    "connect",
    "evaluate_case",
    "evaluate_on_spark",
    "evaluate_paths",
    "evaluate_procedure",
    "evaluate_store",
    "load_pack",
    "load_store",
    "read_paths",
    "run_on_server",
    "write_back",
]
