"""Authentication for FHIR servers, as `requests` AuthBase objects.

- `BearerAuth`: a static token (from the environment, never the command line).
- `ClientSecretAuth`: client_credentials with HTTP Basic at the token endpoint.
- `SmartBackendAuth`: SMART Backend Services (App Launch 2.x) — client_credentials
  with a `private_key_jwt` assertion signed RS384 or ES384.

Every one of them attaches the bearer token only to requests for the FHIR
server's own origin: paging links, redirects and references that point
elsewhere never see it. Tokens are cached until shortly before they expire and
renewed once on a 401.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import requests
from requests.auth import AuthBase

from fhir_adapter.client.urls import Origin, origin
from fhir_adapter.errors import AuthError

# Renew this many seconds before the server says the token expires.
EXPIRY_MARGIN = 30.0
ASSERTION_LIFETIME = 300  # SMART: exp at most five minutes ahead

DEFAULT_SCOPES = (
    "system/Procedure.rs system/Patient.rs system/Encounter.rs system/Condition.rs "
    "system/Observation.rs system/DiagnosticReport.rs system/DocumentReference.rs "
    "system/Practitioner.rs system/PractitionerRole.rs system/Location.rs "
    "system/Organization.rs system/Coverage.rs system/Claim.cru system/DetectedIssue.cru"
)


def v1_scopes(scopes: str) -> str:
    """SMART v2 scopes (`.rs`, `.cru`) in v1 syntax (`.read`, `.write`) for older servers."""
    out = []
    for scope in scopes.split():
        head, _, perms = scope.rpartition(".")
        if head and perms and set(perms) <= set("cruds"):
            if set(perms) & set("rs"):
                out.append(f"{head}.read")
            if set(perms) & set("cud"):
                out.append(f"{head}.write")
        else:
            out.append(scope)
    return " ".join(dict.fromkeys(out))


class FhirAuth(AuthBase):
    """Adds `Authorization` only for the bound origin; retries once on 401 with a fresh token."""

    def __init__(self) -> None:
        self._origin: Origin | None = None

    def bind(self, base_url: str) -> None:
        self._origin = origin(base_url)

    def token(self) -> str:
        raise NotImplementedError

    def invalidate(self) -> bool:
        """Forget a cached token; False when there is nothing to renew (static tokens)."""
        return False

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._origin is None or origin(r.url or "") != self._origin:
            r.headers.pop("Authorization", None)
            return r
        r.headers["Authorization"] = f"Bearer {self.token()}"
        r.register_hook("response", self._handle_401)  # type: ignore[no-untyped-call]
        return r

    def _handle_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        if response.status_code != 401 or getattr(request, "_fhir_adapter_reauth", False):
            return response
        if not self.invalidate():
            return response
        response.content  # noqa: B018 - drain so the connection can be reused
        response.close()
        retry = request.copy()
        retry._fhir_adapter_reauth = True  # type: ignore[attr-defined]
        retry.headers["Authorization"] = f"Bearer {self.token()}"
        connection = response.connection
        new = connection.send(retry, **kwargs)
        new.history.append(response)
        new.request = retry
        return new

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (secret hidden)>"


class BearerAuth(FhirAuth):
    """A static bearer token."""

    def __init__(self, token: str) -> None:
        super().__init__()
        if not token:
            raise AuthError("the bearer token is empty (set FHIR_ADAPTER_TOKEN)")
        self._token = token

    def token(self) -> str:
        return self._token


class TokenEndpointAuth(FhirAuth):
    """client_credentials at a token endpoint, with caching and one renewal on 401."""

    def __init__(
        self,
        client_id: str,
        *,
        token_endpoint: str | None = None,
        scope: str = DEFAULT_SCOPES,
        timeout: tuple[float, float] = (5.0, 30.0),
    ) -> None:
        super().__init__()
        if not client_id:
            raise AuthError("a client id is required (--client-id or FHIR_ADAPTER_CLIENT_ID)")
        self.client_id = client_id
        self.token_endpoint = token_endpoint
        self.scope = scope
        self.timeout = timeout
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._http = requests.Session()
        self._http.trust_env = False
        self.tokens_fetched = 0

    def configure(self, smart_configuration: dict[str, Any]) -> None:
        """Take the token endpoint and scope syntax from `.well-known/smart-configuration`."""
        if self.token_endpoint is None:
            endpoint = smart_configuration.get("token_endpoint")
            if not isinstance(endpoint, str) or not endpoint:
                raise AuthError("the server's smart-configuration names no token_endpoint")
            self.token_endpoint = endpoint
        caps = smart_configuration.get("capabilities") or []
        if "permission-v2" not in caps and "permission-v1" in caps:
            self.scope = v1_scopes(self.scope)

    def invalidate(self) -> bool:
        with self._lock:
            self._token = None
            self._expires_at = 0.0
        return True

    def token(self) -> str:
        """The cached token, renewed when it is about to expire.

        The lock guards the cache only, never the token request: two threads that
        find it expired at once may both fetch, and the later one wins.
        """
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
        token, lifetime = self._fetch()
        with self._lock:
            self._token = token
            self.tokens_fetched += 1
            self._expires_at = time.monotonic() + max(0.0, lifetime - EXPIRY_MARGIN)
        return token

    def _form(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        raise NotImplementedError

    def _fetch(self) -> tuple[str, float]:
        if not self.token_endpoint:
            raise AuthError("no token endpoint: give --token-url or let the server advertise one")
        form, basic = self._form()
        try:
            resp = self._http.post(
                self.token_endpoint,
                data=form,
                auth=basic,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise AuthError(
                f"token endpoint {self.token_endpoint} unreachable: {type(exc).__name__}"
            ) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict):
            detail = ""
            if isinstance(body, dict):
                detail = ": " + " ".join(
                    str(body[k]) for k in ("error", "error_description") if body.get(k)
                )
            raise AuthError(
                f"token endpoint {self.token_endpoint} refused the request "
                f"(HTTP {resp.status_code}){detail}"
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"token endpoint {self.token_endpoint} returned no access_token")
        lifetime = body.get("expires_in", 300)
        return token, float(lifetime) if isinstance(lifetime, int | float) else 300.0


class ClientSecretAuth(TokenEndpointAuth):
    """client_credentials grant authenticated with HTTP Basic (client id and secret)."""

    def __init__(self, client_id: str, client_secret: str, **kw: Any) -> None:
        super().__init__(client_id, **kw)
        if not client_secret:
            raise AuthError("the client secret is empty (set FHIR_ADAPTER_CLIENT_SECRET)")
        self._secret = client_secret

    def _form(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        return {"grant_type": "client_credentials", "scope": self.scope}, (
            self.client_id,
            self._secret,
        )


class SmartBackendAuth(TokenEndpointAuth):
    """SMART Backend Services: a signed JWT client assertion (RS384 or ES384)."""

    def __init__(
        self,
        client_id: str,
        private_key_pem: bytes,
        *,
        key_id: str | None = None,
        algorithm: str | None = None,
        jku: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(client_id, **kw)
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(private_key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise AuthError(f"cannot load the private key: {exc}") from None
        if isinstance(key, rsa.RSAPrivateKey):
            detected = "RS384"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            detected = "ES384"
        else:
            raise AuthError("the private key must be RSA (RS384) or EC P-384 (ES384)")
        if algorithm and algorithm != detected:
            raise AuthError(f"algorithm {algorithm} does not fit the key ({detected})")
        self.algorithm = detected
        self._key = key
        self.key_id = key_id
        self.jku = jku

    def assertion(self) -> str:
        import jwt

        now = int(time.time())
        headers: dict[str, Any] = {"typ": "JWT", "alg": self.algorithm}
        if self.key_id:
            headers["kid"] = self.key_id
        if self.jku:
            headers["jku"] = self.jku
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_endpoint,
            "exp": now + ASSERTION_LIFETIME,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def _form(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        return {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(),
        }, None
