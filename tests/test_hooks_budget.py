"""A hook call answers within the service's time budget, whatever the note it carries:
an evaluation still running then stops (its worker is free again) and the call gets a
card saying the case was not evaluated. Service under uvicorn, real HTTP, prefetch only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_adapter.cli import main
from fhir_adapter.hooks import HookConfig
from fhir_adapter.hooks.security import TrustedClients

from .test_hooks_harness import EHR_ISS, Ehr, HookServer, SigningKey, hook_body

DISCHARGE = "cpt-47382-encounter-discharge"
CPT = "http://www.ama-assn.org/go/cpt"
BUDGET = 0.5
KEYS = ("performers", "procedure-results", "patient-procedures", "role-performers", "conditions")
KEYS += ("observations", "reports", "documents", "coverage")
# the attack of issue 24: one run of clauses with clinical terms, 900 KB (under the cap)
ATTACK = "tumor size not measured, ablation of segment 4 lesion with microwave energy, "


def discharge(note: str) -> dict[str, Any]:
    """An encounter-discharge call whose prefetch holds one 47382 Procedure with `note`."""
    procedure = {
        "resourceType": "Procedure",
        "id": "rfa",
        "status": "completed",
        "code": {"coding": [{"system": CPT, "code": "47382"}]},
        "subject": {"reference": "Patient/p"},
        "encounter": {"reference": "Encounter/e"},
        "performedDateTime": "2026-11-20",
        "note": [{"text": note}],
    }
    prefetch: dict[str, Any] = {
        "patient": {"resourceType": "Patient", "id": "p"},
        "encounter": {
            "resourceType": "Encounter",
            "id": "e",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/p"},
        },
        "procedures": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": procedure}],
        },
        **dict.fromkeys(KEYS),
    }
    context = {"userId": "Practitioner/u", "patientId": "p", "encounterId": "e"}
    return hook_body("encounter-discharge", context, prefetch=prefetch)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("ES384")


@pytest.fixture(scope="module")
def service(key: SigningKey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    clients = TrustedClients.from_json({"clients": [{"iss": EHR_ISS, "jwks": {"keys": [key.jwk]}}]})
    config = HookConfig(
        trusted_clients=clients,
        feedback_db=tmp_path_factory.mktemp("budget") / "feedback.sqlite3",
        time_budget=BUDGET,
    )
    server = HookServer(config)
    yield server
    server.stop()


def topics(response: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in response["cards"]]


def test_a_pathological_note_is_answered_within_the_budget(
    service: HookServer, key: SigningKey
) -> None:
    ehr = Ehr(service, key)
    body = discharge((ATTACK * 12_000)[:900_000])
    started = time.monotonic()
    resp = ehr.hook(DISCHARGE, body)
    elapsed = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    [card] = resp.json()["cards"]
    assert card["source"]["topic"]["code"] == "not-evaluated"
    assert card["indicator"] == "warning"
    assert f"{BUDGET:g} s" in card["summary"]
    # answered at the budget (the grace second and the 900 KB upload aside), not after
    # reading the note: a deadline, not a speed measurement
    assert elapsed < BUDGET + 1.0 + 5.0
    # the evaluation stopped: it holds no worker once the call is answered
    assert service.app.state.service.running == 0


def test_a_normal_note_is_evaluated_within_the_budget(service: HookServer, key: SigningKey) -> None:
    ehr = Ehr(service, key)
    note = "Percutaneous radiofrequency ablation of a 2.1 cm segment 6 tumor under CT guidance."
    resp = ehr.hook(DISCHARGE, discharge(note))
    assert resp.status_code == 200, resp.text
    found = topics(resp.json())
    assert "not-evaluated" not in found
    assert "coverage-missing" in found  # evaluated: no Coverage was prefetched
    assert "doc-tumor-size" not in found  # and the note was read


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1e9"])
def test_serve_refuses_a_time_budget_that_is_no_budget(
    value: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text('{"clients": []}')
    code = main(["serve", "--trusted-clients", str(clients), "--time-budget", value])
    assert code == 2
    assert "--time-budget" in capsys.readouterr().err
