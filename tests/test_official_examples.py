"""The official FHIR R4 examples (npm hl7.fhir.r4.examples): data none of us wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_adapter import ResourceStore, evaluate_store, load_pack, read_paths
from fhir_adapter.case import assemble
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.errors import InputError
from fhir_adapter.gather import ServerSource
from fhir_adapter.rules import evaluate_case
from fhir_adapter.writeback import build_output
from fhir_adapter.writeback.validate import validate_resource

from .fhir_server.harness import HERE, TestServer

EXAMPLES = HERE / "node_modules" / "hl7.fhir.r4.examples"
CLINICAL = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Encounter",
    "Condition",
    "Procedure",
    "Observation",
    "DiagnosticReport",
    "DocumentReference",
    "Coverage",
)


# The one official example whose id breaks R4's own id rule (65 characters, not 1-64).
LONG_ID = "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json"


def _files(types: tuple[str, ...] | None = None) -> list[Path]:
    files = sorted(p for p in EXAMPLES.glob("[A-Z]*.json") if p.name != LONG_ID)
    return [p for p in files if types is None or p.name.split("-", 1)[0] in types]


def test_the_example_with_a_65_character_id_is_refused_naming_its_file() -> None:
    with pytest.raises(InputError) as caught:
        list(read_paths([EXAMPLES / LONG_ID]))
    assert LONG_ID in str(caught.value) and "is not a FHIR id" in str(caught.value)


def test_every_official_example_reads() -> None:
    assert len(_files()) > 5000
    store = ResourceStore(read_paths(_files()))
    assert len(store) > 5000
    # none of them is a 47382 case, so there is nothing to claim and nothing fails
    assert evaluate_store(store) == []


def test_every_example_procedure_evaluates_as_if_it_were_a_case() -> None:
    """Run assembly, every rule and the writers over real-world-shaped Procedures."""
    pack = load_pack()
    store = ResourceStore(read_paths(_files()))
    procedures = store.of_type("Procedure")
    assert len(procedures) >= 10
    for procedure in procedures:
        case = assemble(store, procedure, pack.procedure_system, pack.procedure_code)
        evaluation = evaluate_case(pack, case)
        for resource in build_output(pack, case, evaluation, "2026-11-27T00:00:00+00:00").resources:
            if resource["resourceType"] == "DetectedIssue":
                validate_resource(resource)


@pytest.mark.server
def test_examples_load_into_the_server_and_gather(server: TestServer) -> None:
    pack = load_pack()
    entries = []
    for loaded in read_paths(_files(CLINICAL)):
        r = loaded.resource
        entries.append(
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        )
    with FhirClient(server.base) as client:
        reply = client.request(
            "POST",
            "",
            body={"resourceType": "Bundle", "type": "batch", "entry": entries},
            expect="Bundle",
        )
        statuses = [e["response"]["status"] for e in reply["entry"]]
        stored = sum(s.startswith("2") for s in statuses)
        assert stored >= 0.95 * len(entries)  # Medplum's validator rejects a handful of examples
        source = ServerSource(client, pack.procedure_system, pack.procedure_code)
        procedures = list(client.search("Procedure", [("_count", "100")]))
        assert len(procedures) >= 10
        for procedure in procedures:
            gathered = source.gather(procedure, [])
            assert gathered.reads <= 2
            evaluate_case(pack, gathered.case)
