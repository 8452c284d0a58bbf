"""A SMART Backend Services token endpoint for the tests.

The client-assertion checks are PyJWT's (signature against the registered
public JWKS, `aud`, `exp`, `iss`, `sub`, required claims); this file only adds
the SMART rules PyJWT does not know (iss == sub == client_id, exp at most five
minutes ahead, jti never reused). Issued tokens are registered with the FHIR
test server, which then requires them.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt

from .fhir_server.harness import TestServer


class TokenServer:
    def __init__(self, fhir: TestServer, expires_in: int = 300) -> None:
        self.fhir = fhir
        self.expires_in = expires_in
        self.clients: dict[str, dict[str, Any]] = {}
        self.seen_jti: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.issued: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, body = outer.handle(form, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/auth/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def register(
        self, client_id: str, *, jwks: dict[str, Any] | None = None, secret: str | None = None
    ) -> None:
        self.clients[client_id] = {"jwks": jwks, "secret": secret}

    def handle(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.requests.append(form)
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        try:
            client_id = self._authenticate(form, authorization)
        except ValueError as exc:
            return 401, {"error": "invalid_client", "error_description": str(exc)}
        token = secrets.token_urlsafe(24)
        self.issued.append(token)
        self.fhir.admin("tokens", {"token": token, "expires_in": self.expires_in})
        return 200, {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": form.get("scope", ""),
            "client_id": client_id,
        }

    def _authenticate(self, form: dict[str, str], authorization: str | None) -> str:
        if authorization and authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            client = self.clients.get(user)
            if (
                not client
                or not client["secret"]
                or not secrets.compare_digest(client["secret"], password)
            ):
                raise ValueError("bad client credentials")
            return user
        if (
            form.get("client_assertion_type")
            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            raise ValueError("client_assertion_type missing")
        assertion = form.get("client_assertion", "")
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
        client_id = unverified.get("iss", "")
        client = self.clients.get(client_id)
        if not client or not client["jwks"]:
            raise ValueError("unknown client")
        if header.get("typ") != "JWT" or header.get("alg") not in ("RS384", "ES384"):
            raise ValueError("assertion header must be typ JWT, alg RS384 or ES384")
        keyset = jwt.PyJWKSet.from_dict(client["jwks"])
        try:
            key = next(k for k in keyset.keys if k.key_id == header.get("kid"))
        except StopIteration:
            raise ValueError("no registered key with that kid") from None
        try:
            claims = jwt.decode(
                assertion,
                key.key,
                algorithms=[header["alg"]],
                audience=self.url,
                issuer=client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise ValueError(f"assertion rejected: {exc}") from None
        if claims["sub"] != client_id:
            raise ValueError("sub must equal iss")
        if claims["exp"] > time.time() + 300 + 5:
            raise ValueError("exp more than five minutes ahead")
        if claims["jti"] in self.seen_jti:
            raise ValueError("jti reused")
        self.seen_jti.add(claims["jti"])
        return client_id
