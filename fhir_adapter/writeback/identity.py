"""Deterministic identifiers: the same Procedure always yields the same Claim/DetectedIssue ids.

Writing a case twice must never create duplicates, so every written resource
carries an identifier derived from the Procedure (its business identifier when
it has one, which survives a reload into another server, else `Procedure/id`).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

# the namespace of every written resource's fullUrl (a version 5 UUID of its identifier)
NAMESPACE = uuid.UUID("6f0c2d5e-47a3-4b82-9c1e-47382a0d0e11")


def business_identifier(procedure: dict[str, Any]) -> str | None:
    """`system|value` of the Procedure's first identifier that has both: what names the
    procedure wherever a copy of it comes from."""
    for ident in procedure.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            return f"{ident['system']}|{ident['value']}"
    return None


def procedure_identity(procedure: dict[str, Any], key: str) -> str:
    return business_identifier(procedure) or key


def case_token(procedure: dict[str, Any], key: str, source: str | None = None) -> str:
    """A short stable token for the case (hex of a SHA-256); `source`, the file of a
    Procedure whose key another file gives a different resource, keeps the two apart,
    unless the Procedure has a business identifier: copies of one procedure in two files
    make one token (and one Claim), see `pipeline.one_per_procedure`."""
    identity = business_identifier(procedure)
    if identity is None:
        identity = key if source is None else f"{key} in {source}"
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


_NAMESPACE_BYTES = NAMESPACE.bytes


def full_url(identifier_value: str) -> str:
    """`urn:uuid:` and the name-based (version 5) UUID of the value in the project's
    namespace: uuid.uuid5's digest, formatted here (building a UUID object per written
    resource was 2 % of evaluating a dense export)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + identifier_value.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def case_identifier(system: str, token: str) -> dict[str, str]:
    """The second identifier every written resource carries: which case wrote it.

    Searching on it finds all of a case's earlier output, so that a finding
    that no longer applies can be cancelled instead of left behind.
    """
    return {"system": f"{system}/case", "value": token}
