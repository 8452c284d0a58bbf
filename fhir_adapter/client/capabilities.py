"""What a server says it supports (its CapabilityStatement), and what it turned out not to.

EHR FHIR APIs differ: many refuse batch and transaction Bundles, allow `_include` on a
few searches only, or accept no Claim or DetectedIssue writes. The adapter asks for a
feature only where the CapabilityStatement lists it; a server that lists a feature and
then refuses it (400/501 with an OperationOutcome) is remembered for the run, so the
feature is asked for once, and one warning says so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.errors import ServerError

log = logging.getLogger(__name__)

# the statuses with which a server says "not this way" to a feature it listed
REFUSAL_STATUSES = frozenset({400, 405, 501})
WRITE_INTERACTIONS = frozenset({"create", "update"})
OUTPUT_TYPES = ("Claim", "DetectedIssue")


def _codes(items: Any) -> frozenset[str]:
    return frozenset(
        str(item.get("code")) for item in items or [] if isinstance(item, dict) and item.get("code")
    )


def _strings(items: Any) -> frozenset[str]:
    return frozenset(str(x) for x in items or [] if isinstance(x, str))


def _listed(listed: frozenset[str], rtype: str, name: str) -> bool:
    """Whether `Type:param[:target]` is among searchInclude/searchRevInclude values, which
    servers write as `Type:param`, `Type:param:Target` or `*`."""
    if "*" in listed or name in listed:
        return True
    parts = name.split(":")
    return len(parts) == 3 and ":".join(parts[:2]) in listed


@dataclass
class ServerFeatures:
    """The features of one server the adapter uses, as its CapabilityStatement lists them."""

    system: frozenset[str] = frozenset()  # rest.interaction: batch, transaction, ...
    interactions: Mapping[str, frozenset[str]] = field(default_factory=dict)  # per type
    includes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    revincludes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    warn: Callable[[str], None] = log.warning
    assumed: bool = False  # no CapabilityStatement read: everything until refused
    _refused: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_capabilities(
        cls, cs: Mapping[str, Any], warn: Callable[[str], None] | None = None
    ) -> ServerFeatures:
        """The server-mode `rest` entries of a CapabilityStatement (several are merged)."""
        system: set[str] = set()
        interactions: dict[str, set[str]] = {}
        includes: dict[str, set[str]] = {}
        revincludes: dict[str, set[str]] = {}
        for rest in cs.get("rest") or []:
            if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
                continue
            system |= _codes(rest.get("interaction"))
            for resource in rest.get("resource") or []:
                if not isinstance(resource, dict) or not isinstance(resource.get("type"), str):
                    continue
                rtype = resource["type"]
                interactions.setdefault(rtype, set()).update(_codes(resource.get("interaction")))
                includes.setdefault(rtype, set()).update(_strings(resource.get("searchInclude")))
                revincludes.setdefault(rtype, set()).update(
                    _strings(resource.get("searchRevInclude"))
                )
        return cls(
            frozenset(system),
            {k: frozenset(v) for k, v in interactions.items()},
            {k: frozenset(v) for k, v in includes.items()},
            {k: frozenset(v) for k, v in revincludes.items()},
            warn or log.warning,
        )

    @classmethod
    def assume_all(cls, warn: Callable[[str], None] | None = None) -> ServerFeatures:
        """For a client told not to read the CapabilityStatement: every feature is asked
        for until the server refuses it."""
        return cls(warn=warn or log.warning, assumed=True)

    # -- what to ask for -------------------------------------------------------
    def batch(self) -> bool:
        return (self.assumed or "batch" in self.system) and not self.refused("batch")

    def transaction(self) -> bool:
        return (self.assumed or "transaction" in self.system) and not self.refused("transaction")

    def include(self, rtype: str, name: str) -> bool:
        """Whether `_include=name` may be sent on a search of `rtype`."""
        return not self.refused("_include") and (
            self.assumed or _listed(self.includes.get(rtype, frozenset()), rtype, name)
        )

    def revinclude(self, rtype: str, name: str) -> bool:
        """Whether `_revinclude=name` may be sent on a search of `rtype`."""
        return not self.refused("_revinclude") and (
            self.assumed or _listed(self.revincludes.get(rtype, frozenset()), rtype, name)
        )

    def writable(self, rtype: str) -> bool:
        """Whether the server lists a create or update interaction for `rtype`."""
        return self.assumed or bool(self.interactions.get(rtype, frozenset()) & WRITE_INTERACTIONS)

    def unwritable(self, types: Iterable[str] = OUTPUT_TYPES) -> list[str]:
        return [t for t in types if not self.writable(t)]

    # -- what the server refused ----------------------------------------------
    def refused(self, feature: str) -> bool:
        return feature in self._refused

    def refuse(self, feature: str, where: str, error: ServerError) -> None:
        """Remember for the run that the server refused `feature` though it listed it;
        the first refusal of each feature is one warning."""
        with self._lock:
            if feature in self._refused:
                return
            self._refused[feature] = str(error)
        instead = (
            "writes entry by entry" if feature == "transaction" else f"reads without {feature}"
        )
        self.warn(
            f"{where} lists {feature} in its CapabilityStatement but refused it "
            f"(HTTP {error.status}); the run {instead} from now on"
        )


def is_refusal(error: ServerError, *, strict: bool = False) -> bool:
    """Whether an error is a server saying it does not do what was asked (and not that
    what was sent is wrong). `strict` (for writes, where trying another way after a
    validation error would write half a case): 501/405, or 400 whose OperationOutcome
    says `not-supported`; otherwise any 400/405/501 that carries an OperationOutcome."""
    if error.status not in REFUSAL_STATUSES or error.outcome is None:
        return False
    if not strict or error.status != 400:
        return True
    return any(
        isinstance(issue, dict) and issue.get("code") == "not-supported"
        for issue in error.outcome.get("issue") or []
    )
