"""Deterministic identifiers: the same Procedure always yields the same Claim/DetectedIssue ids.

Writing a case twice must never create duplicates, so every written resource
carries an identifier derived from the Procedure (its business identifier when
it has one, which survives a reload into another server, else `Procedure/id`).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

_NAMESPACE = uuid.UUID("6f0c2d5e-47a3-4b82-9c1e-47382a0d0e11")


def procedure_identity(procedure: dict[str, Any], key: str) -> str:
    for ident in procedure.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            return f"{ident['system']}|{ident['value']}"
    return key


def case_token(procedure: dict[str, Any], key: str, source: str | None = None) -> str:
    """A short stable token for the case (hex of a SHA-256); `source`, the file of a
    Procedure whose key another file gives a different resource, keeps the two apart."""
    identity = procedure_identity(procedure, key)
    if source is not None:
        identity += f" in {source}"
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def full_url(identifier_value: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, identifier_value)}"


def case_identifier(system: str, token: str) -> dict[str, str]:
    """The second identifier every written resource carries: which case wrote it.

    Searching on it finds all of a case's earlier output, so that a finding
    that no longer applies can be cancelled instead of left behind.
    """
    return {"system": f"{system}/case", "value": token}
