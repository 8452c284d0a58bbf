"""Authentication end to end: SMART Backend Services (RS384, ES384), client secret, bearer."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_adapter.cli import main
from fhir_adapter.client.auth import SmartBackendAuth, v1_scopes
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.errors import AuthError, ServerError
from fhir_adapter.pipeline import run_on_server
from fhir_adapter.testing.catalog import load_fixtures

from .fhir_server.harness import TestServer
from .smart_token_server import TokenServer

pytestmark = pytest.mark.server


def _keypair(kind: str) -> tuple[bytes, dict[str, Any]]:
    key: Any = (
        rsa.generate_private_key(65537, 2048)
        if kind == "RS384"
        else ec.generate_private_key(ec.SECP384R1())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    algo = jwt.algorithms.RSAAlgorithm if kind == "RS384" else jwt.algorithms.ECAlgorithm
    jwk = json.loads(algo.to_jwk(key.public_key()))
    jwk.update({"kid": f"{kind}-key", "alg": kind, "use": "sig"})
    return pem, {"keys": [jwk]}


@pytest.fixture
def smart(server: TestServer) -> Iterator[TokenServer]:
    with FhirClient(server.base) as client:  # load before the gate closes
        load_fixtures(client, ["ex1-hcc-ct", "v12-doc-gaps", "v01-not-completed"])
    tokens = TokenServer(server)
    server.admin("auth", {"required": True, "token_endpoint": tokens.url})
    try:
        yield tokens
    finally:
        tokens.stop()
        server.admin("tokens", method="DELETE")


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_backend_run(
    server: TestServer,
    smart: TokenServer,
    tmp_path: Path,
    alg: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pem, jwks = _keypair(alg)
    smart.register("adapter-client", jwks=jwks)
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(pem)
    code = main(
        [
            "run",
            "--base-url",
            server.base,
            "--auth",
            "smart-backend",
            "--client-id",
            "adapter-client",
            "--private-key",
            str(key_path),
            "--key-id",
            f"{alg}-key",
            "--format",
            "json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert len(json.loads(captured.out)["cases"]) == 3
    assert len(smart.issued) == 1  # token cached across the whole run
    assert "system/Claim.cru" in smart.requests[0]["scope"]
    assert smart.issued[0] not in captured.out + captured.err


def test_expired_token_mid_run_reauthenticates_once(server: TestServer, smart: TokenServer) -> None:
    pem, jwks = _keypair("ES384")
    smart.register("c", jwks=jwks)
    auth = SmartBackendAuth("c", pem, key_id="ES384-key")
    with FhirClient(server.base, auth) as client:
        revoked = []

        def expire(_: object) -> None:
            if not revoked:
                server.admin("tokens", method="DELETE")  # the server forgets the token
                revoked.append(True)

        results = run_on_server(client, on_case=expire)
    assert len(results) == 3 and all(r.written for r in results)
    assert auth.tokens_fetched == 2
    assert server.counts().get("401", 0) == 1
    assert len(smart.seen_jti) == 2  # a fresh jti for each assertion


def test_rejected_assertion_is_a_clear_error(
    server: TestServer, smart: TokenServer, tmp_path: Path
) -> None:
    _, registered = _keypair("RS384")
    other_pem, _ = _keypair("RS384")
    smart.register("c", jwks=registered)
    key_path = tmp_path / "wrong.pem"
    key_path.write_bytes(other_pem)
    with pytest.raises(AuthError, match=r"refused the request \(HTTP 401\): invalid_client"):
        FhirClient(server.base, SmartBackendAuth("c", other_pem, key_id="RS384-key")).read(
            "Patient", "x"
        )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhir_adapter.cli",
            "run",
            "--base-url",
            server.base,
            "--auth",
            "smart-backend",
            "--client-id",
            "c",
            "--private-key",
            str(key_path),
            "--key-id",
            "RS384-key",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "invalid_client" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_assertion_claims() -> None:
    pem, _ = _keypair("RS384")
    auth = SmartBackendAuth(
        "me", pem, key_id="k1", jku="https://me.example/jwks.json", token_endpoint="https://as/t"
    )
    one, two = auth.assertion(), auth.assertion()
    header = jwt.get_unverified_header(one)
    assert header == {
        "alg": "RS384",
        "typ": "JWT",
        "kid": "k1",
        "jku": "https://me.example/jwks.json",
    }
    claims = jwt.decode(one, options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == "me" and claims["aud"] == "https://as/t"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["jti"] != jwt.decode(two, options={"verify_signature": False})["jti"]
    with pytest.raises(AuthError, match="does not fit the key"):
        SmartBackendAuth("me", pem, algorithm="ES384")


def test_client_secret(
    server: TestServer,
    smart: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    smart.register("svc", secret="hunter2-long-secret")
    monkeypatch.setenv("FHIR_ADAPTER_CLIENT_SECRET", "hunter2-long-secret")
    assert (
        main(["run", "--base-url", server.base, "--auth", "client-secret", "--client-id", "svc"])
        == 1
    )
    monkeypatch.setenv("FHIR_ADAPTER_CLIENT_SECRET", "wrong")
    assert (
        main(["run", "--base-url", server.base, "--auth", "client-secret", "--client-id", "svc"])
        == 2
    )
    err = capsys.readouterr().err
    assert "bad client credentials" in err and "hunter2" not in err


def test_static_bearer_from_environment(
    server: TestServer,
    smart: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.admin("tokens", {"token": "static-token-123456", "expires_in": 600})
    monkeypatch.setenv("FHIR_ADAPTER_TOKEN", "static-token-123456")
    assert main(["run", "--base-url", server.base, "--auth", "bearer", "--dry-run"]) == 1
    monkeypatch.setenv("FHIR_ADAPTER_TOKEN", "not-a-valid-token")
    assert main(["run", "--base-url", server.base, "--auth", "bearer"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "not-a-valid-token" not in err
    assert main(["run", "--base-url", server.base]) == 2  # no auth at all


def test_v1_scope_fallback(server: TestServer, smart: TokenServer) -> None:
    server.admin(
        "auth",
        {
            "required": True,
            "token_endpoint": smart.url,
            "capabilities": ["client-confidential-asymmetric", "permission-v1"],
        },
    )
    pem, jwks = _keypair("ES384")
    smart.register("old", jwks=jwks)
    with FhirClient(server.base, SmartBackendAuth("old", pem, key_id="ES384-key")) as client:
        client.read("Procedure", "ex1-hcc-ct-rfa")
    scope = smart.requests[-1]["scope"].split()
    assert "system/Procedure.read" in scope and "system/Claim.write" in scope
    assert not any(s.endswith(".rs") for s in scope)
    assert (
        v1_scopes("system/Claim.cru patient/*.rs openid")
        == "system/Claim.read system/Claim.write patient/*.read openid"
    )


def test_unauthenticated_request_is_refused(server: TestServer, smart: TokenServer) -> None:
    with FhirClient(server.base) as client, pytest.raises(ServerError, match="401"):
        client.read("Procedure", "ex1-hcc-ct-rfa")
