"""A batch answers each search with its first page: the rest must be read, not lost.

Against the real test server (Medplum on loopback), whose searches page at 20 entries
unless `_count` says otherwise.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.client.reads import Reader
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.testing.catalog import load_fixtures

from .fhir_server.harness import TestServer

pytestmark = pytest.mark.server

PATIENT = "Patient/ex1-hcc-ct-pt"
ENCOUNTER = "Encounter/ex1-hcc-ct-enc"


def _vitals(n: int) -> list[dict[str, Any]]:
    """Heart rates charted during the session: the bulk of a real encounter's Observations."""
    return [
        {
            "resourceType": "Observation",
            "id": f"ex1-hcc-ct-hr-{i}",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": PATIENT},
            "encounter": {"reference": ENCOUNTER},
            "effectiveDateTime": f"2024-03-14T09:{i:02d}:00Z",
            "valueQuantity": {
                "value": 70 + i % 9,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }
        for i in range(n)
    ]


def _load(client: FhirClient, extra: list[dict[str, Any]]) -> None:
    load_fixtures(client, ["ex1-hcc-ct"])
    client.transaction(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"Observation/{r['id']}"}}
                for r in extra
            ],
        }
    )


def test_a_batch_search_brings_every_page(server: TestServer) -> None:
    with FhirClient(server.base) as client:
        _load(client, _vitals(12))
        [bundle] = client.batch_get([f"Observation?encounter={ENCOUNTER}&_count=5"])
        assert bundle is not None
        ids = {e["resource"]["id"] for e in bundle["entry"]}
        assert len(ids) == 13  # the 12 heart rates and the fixture's tumor size
        assert not any(link.get("relation") == "next" for link in bundle.get("link") or [])
        # the reader's batch path gives the same, with its emulated includes
        [again] = Reader(client).get_many([f"Observation?encounter={ENCOUNTER}&_count=5"])
        assert again is not None
        assert {e["resource"]["id"] for e in again["entry"]} == ids
