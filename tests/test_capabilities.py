"""What a CapabilityStatement lists, read as the adapter uses it (no server needed)."""

from __future__ import annotations

from typing import Any

from fhir_adapter.client.capabilities import ServerFeatures, is_refusal
from fhir_adapter.errors import ServerError


def _cs(**rest: Any) -> dict[str, Any]:
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [rest]}


def test_features_come_from_the_server_rest_entry_only() -> None:
    cs = _cs(
        mode="server",
        interaction=[{"code": "batch"}],
        resource=[
            {
                "type": "Procedure",
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchInclude": ["Procedure:subject", "Procedure:performer:Practitioner"],
            },
            {"type": "Claim", "interaction": [{"code": "create"}]},
        ],
    )
    cs["rest"].append({"mode": "client", "interaction": [{"code": "transaction"}]})
    f = ServerFeatures.from_capabilities(cs)
    assert f.batch() and not f.transaction()
    assert f.include("Procedure", "Procedure:subject")
    assert f.include("Procedure", "Procedure:performer:Practitioner")
    assert not f.include("Procedure", "Procedure:performer")  # only with that target
    assert not f.include("Coverage", "Coverage:payor")
    assert not f.revinclude("Procedure", "Observation:part-of")
    assert f.unwritable() == ["DetectedIssue"]


def test_a_refusal_is_remembered_and_warned_once() -> None:
    said: list[str] = []
    f = ServerFeatures.from_capabilities(
        _cs(interaction=[{"code": "batch"}], resource=[{"type": "X", "searchInclude": ["*"]}]),
        said.append,
    )
    error = ServerError("no", status=501, outcome={"resourceType": "OperationOutcome"})
    f.refuse("batch", "http://ehr/fhir", error)
    f.refuse("batch", "http://ehr/fhir", error)
    assert not f.batch() and f.include("X", "X:any")
    assert len(said) == 1 and "refused it (HTTP 501)" in said[0]


def test_what_counts_as_a_refusal() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "invalid"}]}
    assert is_refusal(ServerError("x", status=400, outcome=outcome))
    assert not is_refusal(ServerError("x", status=400))  # no OperationOutcome: not a refusal
    assert not is_refusal(ServerError("x", status=500, outcome=outcome))
    # a write's 400 is about what was sent unless the server says not-supported
    assert not is_refusal(ServerError("x", status=400, outcome=outcome), strict=True)
    unsupported = {"resourceType": "OperationOutcome", "issue": [{"code": "not-supported"}]}
    assert is_refusal(ServerError("x", status=400, outcome=unsupported), strict=True)
    assert is_refusal(ServerError("x", status=501, outcome=outcome), strict=True)
