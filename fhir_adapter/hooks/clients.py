"""The EHR's side of the JWT, for setting up and trying the service: a trusted-clients
entry made from a JWKS URL or a PEM public key, and a test token signed as a CDS
client signs one (CDS Hooks 2.0: `iss`, `sub`, `aud` = the service URL called, `exp`
at most 5 minutes on, a fresh `jti`, the key named by `kid`, ES384/RS384)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_adapter.errors import ConfigError
from fhir_adapter.hooks.security import MAX_LIFETIME, TrustedClient, TrustedClients

_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
_CURVES = {"secp384r1": "ES384", "secp256r1": "ES256"}
MIN_RSA_BITS = 2048


def _algorithm(key: Any, where: str) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{where}: an RSA key needs {MIN_RSA_BITS} bits or more")
        return "RS384"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        alg = _CURVES.get(key.curve.name)
        if alg is None:
            raise ConfigError(f"{where}: curve {key.curve.name} is not P-384 (or P-256)")
        return alg
    raise ConfigError(f"{where}: the key must be RSA (RS384) or EC P-384 (ES384)")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a kid both sides can compute."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(pem: bytes, where: str, kid: str | None = None) -> dict[str, Any]:
    """The JWK of a PEM public key, with `alg`, `use: sig` and `kid` (default: thumbprint)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        try:
            serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{where}: not a PEM public key") from None
        raise ConfigError(
            f"{where} is a private key: give its public half "
            f"(openssl pkey -in {where} -pubout -out public.pem)"
        ) from None
    alg = _algorithm(key, where)
    if isinstance(key, rsa.RSAPublicKey):
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    jwk.update({"alg": alg, "use": "sig"})
    jwk["kid"] = kid or thumbprint(jwk)
    return jwk


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def add_client(
    path: str | os.PathLike[str],
    iss: str,
    *,
    jwks_url: str | None = None,
    public_key: str | os.PathLike[str] | None = None,
    kid: str | None = None,
) -> dict[str, Any]:
    """Add `iss` to the trusted-clients file (made if missing), with its JWKS URL or one
    public key; a second key for an issuer with inline keys is added beside the first
    (key rotation). The file is checked as `serve` checks it, then replaced atomically."""
    target = Path(path)
    doc: dict[str, Any] = {"clients": []}
    if target.exists():
        TrustedClients.load(target)  # a broken file is reported as `serve` would
        doc = json.loads(target.read_text(encoding="utf-8-sig"))
    if (jwks_url is None) == (public_key is None):
        raise ConfigError("give exactly one of --jwks-url and --public-key")
    entry = next((c for c in doc["clients"] if c.get("iss") == iss), None)
    if jwks_url is not None:
        if entry is not None:
            raise ConfigError(f"{target}: issuer {iss!r} is already trusted")
        entry = {"iss": iss, "jku": jwks_url}
        doc["clients"].append(entry)
    else:
        assert public_key is not None
        jwk = public_jwk(_read(Path(public_key), "public key"), str(public_key), kid)
        if entry is None:
            entry = {"iss": iss, "jwks": {"keys": []}}
            doc["clients"].append(entry)
        elif "jwks" not in entry:
            raise ConfigError(f"{target}: issuer {iss!r} takes its keys from a jku, not inline")
        keys = entry["jwks"]["keys"]
        if any(k.get("kid") == jwk["kid"] for k in keys):
            raise ConfigError(f"{target}: issuer {iss!r} already has a key with kid {jwk['kid']}")
        keys.append(jwk)
    TrustedClients.from_json(doc, str(target))
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return entry


def sign_token(
    trusted_clients: str | os.PathLike[str],
    iss: str,
    private_key: str | os.PathLike[str],
    aud: str,
    *,
    kid: str | None = None,
    lifetime: float = MAX_LIFETIME,
    now: float | None = None,
) -> str:
    """A JWT for one call to `aud` (the exact service URL), as the trusted client `iss`
    would sign it; the key must be one the trusted-clients file lists for `iss`."""
    clients = TrustedClients.load(Path(trusted_clients))
    client = clients.clients.get(iss)
    if client is None:
        raise ConfigError(
            f"{trusted_clients}: no trusted client {iss!r} "
            "(add one with `fhir-adapter hooks client add`)"
        )
    parts = urlsplit(aud)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--aud {aud!r} must be the service's URL, e.g. "
            "http://127.0.0.1:8080/cds-services/cpt-47382-order-sign"
        )
    if not 1 <= lifetime <= MAX_LIFETIME:
        raise ConfigError(f"--lifetime must be 1 to {MAX_LIFETIME:.0f} seconds")
    where = str(private_key)
    try:
        key = serialization.load_pem_private_key(_read(Path(private_key), "private key"), None)
    except TypeError:
        raise ConfigError(f"{where}: an encrypted key; give it unencrypted") from None
    except ValueError:
        raise ConfigError(f"{where}: not a PEM private key") from None
    alg = _algorithm(key, where)
    kid = _kid_for(client, key, kid, where, str(trusted_clients))
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": iss,
        "sub": iss,
        "aud": aud,
        "iat": issued,
        "exp": issued + int(lifetime),
        "jti": uuid.uuid4().hex,
    }
    headers: dict[str, Any] = {"kid": kid, "typ": "JWT"}
    if len(client.jku) == 1:
        headers["jku"] = client.jku[0]
    return jwt.encode(claims, key, algorithm=alg, headers=headers)  # type: ignore[arg-type]


def _kid_for(client: TrustedClient, key: Any, kid: str | None, where: str, file: str) -> str:
    """The kid under which the file lists this key's public half (a jku client: --kid)."""
    if client.jwks is None:
        if not kid:
            raise ConfigError(
                f"{client.iss!r} takes its keys from {', '.join(client.jku)}: give --kid"
            )
        return kid
    mine = public_jwk(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        where,
    )
    for listed in client.jwks["keys"]:
        same = listed.get("kty") == mine["kty"] and thumbprint(listed) == thumbprint(mine)
        if same and isinstance(listed.get("kid"), str) and kid in (None, listed["kid"]):
            return str(listed["kid"])
    raise ConfigError(
        f"{where}: its public half is not among the keys {file} lists for {client.iss!r}"
        + (f" under kid {kid}" if kid else "")
    )
