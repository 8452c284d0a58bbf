"""Talking to a PAS payer: `$submit`, `$inquire`, `Subscription`, each with a deadline.

4xx is final (the OperationOutcome's text is the error); 5xx and a failed connection are
retried with backoff within the deadline (PAS: 5xx is retryable, and the same request
Bundle, under the same identifier, is the same request). Every attempt carries a fresh
authorization: a per-call JWT (`jti` used once) cannot be replayed by a transport retry,
so the session itself does not retry.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_adapter.client.auth import FhirAuth
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.client.urls import origin
from fhir_adapter.errors import AdapterError, ServerError
from fhir_adapter.pas.decision import ReadDecision, echoed, find_claim_response, read_decision
from fhir_adapter.pas.payer import BACKPORT, PAS_TOPIC

PROFILE_SUBSCRIPTION = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-subscription"
TOKEN_LIFETIME = 60  # seconds a per-call JWT is good for


class PayerRefused(AdapterError):
    """The payer answered 4xx: final, do not resubmit (the message is its OperationOutcome)."""


class SignedCallAuth(FhirAuth):
    """A JWT for each call, as the CDS service and `serve --payer` require: `iss`=`sub`,
    `aud` the exact URL called, five minutes at most, a fresh `jti`; ES384 for a P-384 key,
    RS384 for RSA."""

    def __init__(self, iss: str, private_key_pem: bytes, kid: str | None = None) -> None:
        super().__init__()
        try:
            key = serialization.load_pem_private_key(private_key_pem, None)
        except (TypeError, ValueError):
            raise AdapterError("the payer private key is not an unencrypted PEM key") from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            self._alg = {"secp384r1": "ES384", "secp256r1": "ES256"}.get(key.curve.name, "")
        elif isinstance(key, rsa.RSAPrivateKey):
            self._alg = "RS384"
        else:
            raise AdapterError("the payer private key must be RSA or EC P-384/P-256")
        if not self._alg:
            raise AdapterError("the payer private key must be RSA or EC P-384/P-256")
        self._key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = key
        if kid is None:
            from fhir_adapter.hooks.clients import public_jwk

            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            kid = str(public_jwk(public, "the payer key")["kid"])
        self._iss = iss
        self._kid = kid

    def token_for(self, url: str) -> str:
        parts = urlsplit(url)
        audience = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        now = int(time.time())
        claims = {
            "iss": self._iss,
            "sub": self._iss,
            "aud": audience,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims, self._key, algorithm=self._alg, headers={"kid": self._kid, "typ": "JWT"}
        )

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        """Only to the payer's own origin (as FhirAuth), each request a token of its own."""
        if self._origin is None or origin(r.url or "") != self._origin:
            r.headers.pop("Authorization", None)
            return r
        r.headers["Authorization"] = f"Bearer {self.token_for(r.url or '')}"
        return r

    def __repr__(self) -> str:
        return f"<SignedCallAuth iss={self._iss!r} (key hidden)>"


class PayerClient:
    """One payer's PAS endpoint (its FHIR base)."""

    def __init__(
        self,
        base_url: str,
        auth: FhirAuth | None = None,
        *,
        deadline: float = 60.0,
        timeout: tuple[float, float] = (5.0, 20.0),
        attempts: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.client = FhirClient(
            base_url, auth, timeout=timeout, retries=0, check_version=False, deadline=deadline
        )
        self.deadline = deadline
        self.attempts = attempts
        self.backoff = backoff

    def close(self) -> None:
        self.client.close()

    def post(self, path: str, body: dict[str, Any], expect: str | None = None) -> dict[str, Any]:
        """POST with the retry rules above; PayerRefused on a 4xx."""
        started = time.monotonic()
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return self.client.request("POST", path, body=body, expect=expect, kind="write")
            except ServerError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    raise PayerRefused(str(exc)) from None
                last = attempt == self.attempts
                if last or time.monotonic() - started + delay > self.deadline:
                    raise
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def submit(self, bundle: dict[str, Any]) -> ReadDecision:
        return self._decision(self.post("Claim/$submit", bundle), "Claim/$submit")

    def inquire(
        self, claim: dict[str, Any], patient: dict[str, Any] | None, now: str
    ) -> ReadDecision:
        """`$inquire` by example: the Claim's identifier, patient and insurer."""
        inquiry_claim = {
            "resourceType": "Claim",
            "id": f"{claim['id']}-inquiry",
            "identifier": claim.get("identifier"),
            **echoed(claim, now),
            "provider": claim.get("provider"),
            "priority": claim.get("priority"),
            "insurance": claim.get("insurance"),
        }
        entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": inquiry_claim}]
        if patient is not None:
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient})
        bundle = {
            "resourceType": "Bundle",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
            "type": "collection",
            "timestamp": now,
            "entry": entries,
        }
        return self._decision(self.post("Claim/$inquire", bundle), "Claim/$inquire")

    def subscribe(self, endpoint: str, secret: str, org: str) -> str:
        """A PASSubscription for `org`'s responses at the payer; its id."""
        body = subscription_resource(endpoint, secret, org)
        created = self.post("Subscription", body, expect="Subscription")
        sid = created.get("id")
        if not isinstance(sid, str):
            raise ServerError("the payer created the Subscription without an id")
        return sid

    @staticmethod
    def _decision(answer: dict[str, Any], where: str) -> ReadDecision:
        response = find_claim_response(answer)
        if response is None:
            raise ServerError(f"POST {where}: the answer holds no ClaimResponse")
        return read_decision(response)


def subscription_resource(endpoint: str, secret: str, org: str) -> dict[str, Any]:
    """A PASSubscription (R4 Subscriptions backport): rest-hook, full-resource, filtered on
    the submitter's organization, each notification carrying `secret` as its bearer token."""
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [PROFILE_SUBSCRIPTION]},
        "status": "requested",
        "reason": "Final decisions on pended prior-authorization requests",
        "criteria": PAS_TOPIC,
        "_criteria": {
            "extension": [
                {
                    "url": BACKPORT + "backport-filter-criteria",
                    "valueString": f"orgIdentifier={org}",
                }
            ]
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {"url": BACKPORT + "backport-payload-content", "valueCode": "full-resource"}
                ]
            },
            "header": [f"Authorization: Bearer {secret}"],
        },
    }
