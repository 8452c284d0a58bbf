"""`serve` can be debugged: `hooks client add`, `hooks token`, a 401's reason in the log
(never the token), `--log-level`, and a port in use said before anything is announced."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fhir_adapter.cli import main
from fhir_adapter.errors import ConfigError
from fhir_adapter.hooks.security import JwtVerifier, TrustedClients, Unauthorized

from .test_hooks_harness import free_port

ISS = "https://ehr.example.org"
ORDER_SIGN = "/cds-services/cpt-47382-order-sign"


def _key_pair(directory: Path, name: str = "ehr") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    private = directory / f"{name}-key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = directory / f"{name}-pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _add(clients: Path, *flags: str) -> int:
    """`hooks client add` for ISS into `clients`, with the key flags given."""
    return main(["hooks", "client", "add", "--trusted-clients", str(clients), "--iss", ISS, *flags])


def _token(clients: Path, private: Path, aud: str, capsys: pytest.CaptureFixture[str]) -> str:
    argv = ["hooks", "token", "--trusted-clients", str(clients), "--iss", ISS]
    assert main([*argv, "--private-key", str(private), "--aud", aud]) == 0
    return capsys.readouterr().out.strip()


def test_a_client_added_from_a_public_key_signs_tokens_the_service_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = _key_pair(tmp_path)
    clients = tmp_path / "trusted-clients.json"
    assert _add(clients, "--public-key", str(public)) == 0
    [entry] = json.loads(clients.read_text())["clients"]
    [jwk] = entry["jwks"]["keys"]
    assert entry["iss"] == ISS and jwk["alg"] == "ES384" and jwk["use"] == "sig"
    assert "d" not in jwk and jwk["kid"]

    aud = f"http://127.0.0.1:8080{ORDER_SIGN}"
    capsys.readouterr()
    token = _token(clients, private, aud, capsys)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header == {"alg": "ES384", "kid": jwk["kid"], "typ": "JWT"}
    assert claims["iss"] == claims["sub"] == ISS and claims["aud"] == aud
    assert 0 < claims["exp"] - claims["iat"] <= 300 and len(claims["jti"]) >= 16
    verifier = JwtVerifier(TrustedClients.load(clients))
    assert verifier.verify(f"Bearer {token}", aud)["jti"] == claims["jti"]

    # rotation: a second key beside the first; the token names whichever signed it
    private2, public2 = _key_pair(tmp_path, "ehr2")
    assert _add(clients, "--public-key", str(public2), "--kid", "key-2027") == 0
    capsys.readouterr()
    second = _token(clients, private2, aud, capsys)
    assert jwt.get_unverified_header(second)["kid"] == "key-2027"
    JwtVerifier(TrustedClients.load(clients)).verify(f"Bearer {second}", aud)


def test_a_client_from_a_jwks_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clients = tmp_path / "trusted-clients.json"
    assert _add(clients, "--jwks-url", "https://ehr.example.org/.well-known/jwks.json") == 0
    assert json.loads(clients.read_text()) == {
        "clients": [{"iss": ISS, "jku": "https://ehr.example.org/.well-known/jwks.json"}]
    }
    capsys.readouterr()
    add = ["hooks", "client", "add", "--trusted-clients", str(clients)]
    other = [*add, "--iss", "https://other.example.org"]
    assert main([*other, "--jwks-url", "http://other.example.org/jwks.json"]) == 2
    assert "must be an https URL" in capsys.readouterr().err
    assert len(json.loads(clients.read_text())["clients"]) == 1  # nothing half-written


def test_a_private_key_is_not_taken_for_a_public_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, _ = _key_pair(tmp_path)
    clients = tmp_path / "trusted-clients.json"
    assert _add(clients, "--public-key", str(private)) == 2
    err = capsys.readouterr().err
    assert "is a private key" in err and "-pubout" in err and not clients.exists()


def test_a_token_needs_a_key_the_file_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, public = _key_pair(tmp_path)
    stranger, _ = _key_pair(tmp_path, "stranger")
    clients = tmp_path / "trusted-clients.json"
    assert _add(clients, "--public-key", str(public)) == 0
    argv = ["hooks", "token", "--trusted-clients", str(clients), "--private-key", str(stranger)]
    assert main([*argv, "--iss", ISS, "--aud", f"http://127.0.0.1:1{ORDER_SIGN}"]) == 2
    assert "not among the keys" in capsys.readouterr().err
    assert main([*argv, "--iss", "https://nobody.example", "--aud", "http://h/x"]) == 2
    assert "hooks client add" in capsys.readouterr().err


def test_a_refusal_is_logged_with_its_reason_at_the_default_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 gave no reason anywhere: the reason was logged at debug, under a fixed INFO."""
    private, public = _key_pair(tmp_path)
    clients = tmp_path / "trusted-clients.json"
    assert _add(clients, "--public-key", str(public)) == 0
    capsys.readouterr()
    token = _token(clients, private, f"http://127.0.0.1:8080{ORDER_SIGN}", capsys)
    caplog.set_level("WARNING", logger="fhir_adapter.hooks")
    verifier = JwtVerifier(TrustedClients.load(clients))
    with pytest.raises(Unauthorized):
        verifier.verify(f"Bearer {token}", f"http://127.0.0.1:9999{ORDER_SIGN}")
    assert f"aud must be exactly http://127.0.0.1:9999{ORDER_SIGN}" in caplog.text
    assert f"iss '{ISS}'" in caplog.text and token not in caplog.text


def test_serve_logs_why_a_call_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the command as a user runs it: a token used twice, refused the second time."""
    private, public = _key_pair(tmp_path)
    clients = tmp_path / "trusted-clients.json"
    assert _add(clients, "--public-key", str(public)) == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    capsys.readouterr()
    token = _token(clients, private, f"{base}{ORDER_SIGN}/feedback", capsys)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    env |= {"FHIR_ADAPTER_TRUSTED_CLIENTS": str(clients), "FHIR_ADAPTER_PORT": str(port)}
    cmd = [sys.executable, "-m", "fhir_adapter.cli", "serve", "--log-level", "warning"]
    cmd += ["--feedback-db", str(tmp_path / "fb.sqlite3")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{base}/cds-services", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        url = f"{base}{ORDER_SIGN}/feedback"
        first = requests.post(url, data='{"feedback": []}', headers=headers, timeout=30)
        second = requests.post(url, data='{"feedback": []}', headers=headers, timeout=30)
        assert first.status_code == 200, first.text
        assert second.status_code == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    text = err.decode()
    assert "refused a CDS call" in text and "jti replayed" in text, text
    assert token not in text and token.split(".")[2] not in text
    assert "GET /cds-services" not in text  # --log-level warning: no access lines


def test_a_port_in_use_is_one_line_before_anything_is_announced(tmp_path: Path) -> None:
    clients = tmp_path / "trusted-clients.json"
    clients.write_text('{"clients": []}')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "fhir_adapter.cli", "serve", "--port", str(port)]
        cmd += ["--trusted-clients", str(clients), "--feedback-db", str(tmp_path / "f.db")]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"fhir-adapter: error: --port {port} on 127.0.0.1 is in use (is another service, or "
        "serve, running?); choose another --port"
    ]


def test_a_jwks_url_with_a_password_is_refused_and_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = tmp_path / "trusted-clients.json"
    assert _add(clients, "--jwks-url", "https://user:s3cret@keys.example/jwks") == 2
    err = capsys.readouterr().err
    assert "must not hold a user or password" in err and "s3cret" not in err
    assert not clients.exists()
    # nor from a file written by hand: refused as serve loads it
    clients.write_text(
        json.dumps({"clients": [{"iss": ISS, "jku": "https://u:s3cret@k.example/"}]})
    )
    with pytest.raises(ConfigError) as caught:
        TrustedClients.load(clients)
    assert "s3cret" not in str(caught.value) and "user or password" in str(caught.value)


def test_a_jwks_fetch_failure_is_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    from fhir_adapter.hooks.security import JwksFetcher

    caplog.set_level("WARNING", logger="fhir_adapter.hooks")
    port = free_port()  # nothing listens: the fetch fails at once
    with pytest.raises(Unauthorized):
        JwksFetcher(timeout=2.0).keys(f"https://127.0.0.1:{port}/jwks?key=s3cret", "k")
    assert "cannot fetch the JWKS at" in caplog.text and "s3cret" not in caplog.text


def test_a_p256_key_is_added_with_a_warning_that_serve_needs_allow_es256(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "p256.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert _add(tmp_path / "clients.json", "--public-key", str(public)) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--allow-es256" in warnings[0]
    _private, p384 = _key_pair(tmp_path)
    assert _add(tmp_path / "other.json", "--public-key", str(p384)) == 0
    assert "warning" not in capsys.readouterr().err


def test_serve_on_port_0_announces_the_port_it_listens_on(tmp_path: Path) -> None:
    """`--port 0`: the system chooses the port, and the address printed is the one served."""
    import re

    clients = tmp_path / "trusted-clients.json"
    clients.write_text('{"clients": []}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    cmd = [sys.executable, "-m", "fhir_adapter.cli", "serve", "--port", "0"]
    cmd += ["--trusted-clients", str(clients), "--feedback-db", str(tmp_path / "f.db")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        found = re.search(r"discovery at (http://127\.0\.0\.1:(\d+)/cds-services)$", line.strip())
        assert found is not None and found.group(2) != "0", line
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = requests.get(found.group(1), timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        assert answer.status_code == 200 and answer.json()["services"]
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
