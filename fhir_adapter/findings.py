"""What the rules conclude about a case: findings, modifiers, met criteria, with evidence.

These plain records are the contract between the rules and everything after
them (write-back, reports); they hold references, never live resources.

They, and the other records a case builds by the hundred (mentions, cues, facts),
are slotted dataclasses that nothing mutates, hashable by value, but not `frozen`:
a frozen dataclass costs 4.6x as much to build (each field goes through
`object.__setattr__`), and decoding a worker's results builds them all again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, unsafe_hash=True)  # never mutated (module docstring)
class Evidence:
    """Where something was found (or looked for): resource, element path, quoted text.

    A text mention carries its ConText `status` (affirmed, negated, hypothetical,
    historical, uncertain, other: see mappings/) and, when it does not count, the
    `cue` that ruled it out; `span` is the matched words' [start, end) in `snippet`.
    """

    reference: str
    path: str
    snippet: str | None = None
    note: str | None = None
    status: str | None = None
    cue: str | None = None
    span: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reference": self.reference, "path": self.path}
        if self.snippet is not None:
            out["snippet"] = self.snippet
        if self.note is not None:
            out["note"] = self.note
        if self.status is not None:
            out["status"] = self.status
        if self.cue is not None:
            out["cue"] = self.cue
        if self.span is not None:
            out["span"] = list(self.span)
        return out


@dataclass(slots=True, unsafe_hash=True)  # never mutated (module docstring)
class Finding:
    """A problem with the case; `code` is the public contract downstream systems key on."""

    code: str
    severity: str
    message: str
    evidence: tuple[Evidence, ...] = ()
    actcode: str | None = None
    source: str | None = None
    # a payer overlay's finding: its policy id and the criterion it is about (the stable
    # place prior-authorization answers read them from)
    policy: str | None = None
    criterion: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "evidence": [e.to_json() for e in self.evidence],
        }
        if self.policy is not None:
            out["policy"] = self.policy
        if self.criterion is not None:
            out["criterion"] = self.criterion
        return out


@dataclass(slots=True, unsafe_hash=True)  # never mutated (module docstring)
class Modifier:
    """A CPT modifier applied to the 47382 line, with why."""

    code: str
    reason: str
    evidence: tuple[Evidence, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "reason": self.reason,
            "evidence": [e.to_json() for e in self.evidence],
        }


@dataclass(slots=True, unsafe_hash=True)  # never mutated (module docstring)
class Criterion:
    """A rule the case passed, with the evidence that satisfied it (none for a `forbid`)."""

    rule: str
    passed: bool
    evidence: tuple[Evidence, ...] = ()
    # passed because its `unless` applies (a stopped session needs no energy documented),
    # not because what it asks for was found
    exempt: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "passed": self.passed,
            "evidence": [e.to_json() for e in self.evidence],
        }
        if self.exempt:
            out["exempt"] = True
        return out


@dataclass(slots=True)
class Evaluation:
    """The rules' verdict on one case."""

    procedure: str
    patient: str | None
    encounter: str | None
    findings: list[Finding] = field(default_factory=list)
    modifiers: list[Modifier] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)
    place_of_service: str | None = None
    blocked: bool = False
    unresolved: list[str] = field(default_factory=list)
    # the code sets this case was checked against, e.g. {"icd10cm": "ICD-10-CM FY2025 (...)"}
    code_sets: dict[str, str] = field(default_factory=dict)
    # the payer policy the case was judged by ({id, title, source, ...}; id "generic" when
    # no overlay matches its payer) and each of its criteria's result
    payer_policy: dict[str, Any] | None = None
    payer_criteria: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return "issues" if self.blocked else "claim"

    def to_dict(self) -> dict[str, Any]:
        """Everything, losslessly (for moving evaluations between processes)."""
        return {
            "procedure": self.procedure,
            "patient": self.patient,
            "encounter": self.encounter,
            "findings": [
                [
                    f.code,
                    f.severity,
                    f.message,
                    _ev(f.evidence),
                    f.actcode,
                    f.source,
                    f.policy,
                    f.criterion,
                ]
                for f in self.findings
            ],
            "modifiers": [[m.code, m.reason, _ev(m.evidence)] for m in self.modifiers],
            "criteria": [[c.rule, c.passed, _ev(c.evidence), c.exempt] for c in self.criteria],
            "place_of_service": self.place_of_service,
            "blocked": self.blocked,
            "unresolved": self.unresolved,
            "code_sets": self.code_sets,
            "payer_policy": self.payer_policy,
            "payer_criteria": self.payer_criteria,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        return cls(
            d["procedure"],
            d["patient"],
            d["encounter"],
            [
                Finding(c, s, m, _unev(e), a, src, pol, cri)
                for c, s, m, e, a, src, pol, cri in d["findings"]
            ],
            [Modifier(c, r, _unev(e)) for c, r, e in d["modifiers"]],
            [Criterion(r, p, _unev(e), x) for r, p, e, x in d["criteria"]],
            d["place_of_service"],
            d["blocked"],
            d["unresolved"],
            dict(d.get("code_sets") or {}),
            d.get("payer_policy"),
            list(d.get("payer_criteria") or []),
        )


def _ev(evidence: tuple[Evidence, ...]) -> list[list[Any]]:
    return [
        [e.reference, e.path, e.snippet, e.note, e.status, e.cue, e.span and list(e.span)]
        for e in evidence
    ]


def _unev(rows: list[list[Any]]) -> tuple[Evidence, ...]:
    return tuple(
        Evidence(r, p, s, n, st, c, (span[0], span[1]) if span else None)
        for r, p, s, n, st, c, span in rows
    )
