"""Real parts for the CDS Hooks tests: the service under uvicorn, an EHR that signs its calls,
an HTTPS JWKS host, and a foreign origin that records what it is sent. No test functions here."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import requests
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from fhir_adapter.hooks import HookConfig, create_app
from fhir_adapter.hooks.limits import uvicorn_config
from fhir_adapter.hooks.security import TrustedClients

EHR_ISS = "https://ehr.example.org"


class SigningKey:
    """A private key with its public JWK (kid, alg) as a CDS client would publish it."""

    def __init__(self, alg: str, kid: str | None = None) -> None:
        self.alg = alg
        self.kid = kid or f"{alg}-{uuid.uuid4().hex[:8]}"
        if alg.startswith("ES"):
            curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[alg]
            self.private: Any = ec.generate_private_key(curve)
            algo: Any = jwt.algorithms.ECAlgorithm
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algo = jwt.algorithms.RSAAlgorithm
        self.jwk: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        self.jwk.update(kid=self.kid, alg=alg, use="sig")

    def sign(
        self,
        aud: str | list[str],
        *,
        iss: str = EHR_ISS,
        exp: float = 300,
        iat: float = 0,
        jti: str | None = None,
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        alg: str | None = None,
    ) -> str:
        now = time.time()
        payload: dict[str, Any] = {
            "iss": iss,
            "aud": aud,
            "exp": int(now + exp),
            "iat": int(now + iat),
            "jti": jti or uuid.uuid4().hex,
        }
        payload.update(claims or {})
        for name in drop:
            payload.pop(name, None)
        head = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        if head["kid"] is None:
            del head["kid"]  # (a None typ is how PyJWT is told to leave typ out)
        return jwt.encode(payload, self.private, algorithm=alg or self.alg, headers=head)


def trusted_clients_file(path: Path, clients: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"clients": clients}), encoding="utf-8")
    return path


class HookServer:
    """The service on 127.0.0.1 under a real uvicorn with the limits `serve` sets, port
    chosen by the OS."""

    def __init__(self, config: HookConfig) -> None:
        self.app = create_app(config)
        cfg = uvicorn_config(
            self.app, "127.0.0.1", 0, config.limits, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the CDS Hooks service did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def inline_service(db: Path, *clients: tuple[str, SigningKey], **config: Any) -> HookServer:
    """The service trusting each (iss, key) with the key's JWK inline, feedback in `db`."""
    trusted = TrustedClients.from_json(
        {"clients": [{"iss": iss, "jwks": {"keys": [key.jwk]}} for iss, key in clients]}
    )
    return HookServer(HookConfig(trusted_clients=trusted, feedback_db=db, **config))


class Ehr:
    """A CDS client: every call carries a fresh JWT whose aud is the exact URL called."""

    def __init__(self, service: HookServer, key: SigningKey) -> None:
        self.service = service
        self.key = key
        self.http = requests.Session()
        self.http.trust_env = False

    def url(self, path: str) -> str:
        return f"{self.service.base}{path}"

    def post(
        self, path: str, body: Any, token: str | None = "sign", **kw: Any
    ) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if token == "sign":
            token = self.key.sign(self.url(path))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(self.url(path), data=data, headers=headers, timeout=60, **kw)

    def hook(self, service_id: str, body: dict[str, Any]) -> requests.Response:
        return self.post(f"/cds-services/{service_id}", body)

    def discovery(self) -> requests.Response:
        return self.http.get(self.url("/cds-services"), timeout=10)


def hook_body(hook: str, context: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, **extra}


class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: Any = self.server
        server.seen.append((self.command, self.path, dict(self.headers)))
        body = server.respond(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        payload = json.dumps(body or {}).encode()
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


class Origin:
    """A real HTTP(S) server on another port: answers `respond(path)` and records every request."""

    def __init__(
        self,
        respond: Callable[[str], Any] = lambda path: None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self.httpd.seen = []  # type: ignore[attr-defined]
        self.httpd.respond = respond  # type: ignore[attr-defined]
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.base = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list[tuple[str, str, dict[str, str]]]:
        seen: list[tuple[str, str, dict[str, str]]] = self.httpd.seen  # type: ignore[attr-defined]
        return seen

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA (the JWKS host's), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "jwks-host.crt", directory / "jwks-host.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
