"""What clinicians did with the cards: a local SQLite log, summarised by `fhir-adapter feedback`.

Every card the service returns is recorded (uuid, service, topic) so that
feedback, which names only the card's uuid, can be counted per finding code.
Feedback is idempotent: the same (card, outcome, timestamp) sent twice is stored once.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_adapter.errors import HookError
from fhir_adapter.hooks.storage import open_database
from fhir_adapter.pipeline import now_iso

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (
  uuid TEXT PRIMARY KEY, service TEXT NOT NULL, hook_instance TEXT NOT NULL,
  topic_system TEXT, topic_code TEXT, indicator TEXT NOT NULL, issued_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
  service TEXT NOT NULL, card TEXT NOT NULL, outcome TEXT NOT NULL, outcome_at TEXT NOT NULL,
  accepted TEXT, reason_system TEXT, reason_code TEXT, reason_display TEXT, comment TEXT,
  received_at TEXT NOT NULL,
  PRIMARY KEY (service, card, outcome, outcome_at)
);
"""


@dataclass(frozen=True)
class FeedbackItem:
    card: str
    outcome: str
    outcome_at: str
    accepted: tuple[str, ...] = ()
    reason: dict[str, Any] | None = None
    comment: str | None = None


def parse_feedback(body: Any) -> list[FeedbackItem]:
    """CDS Hooks 2.0 feedback: `{"feedback": [{card, outcome, outcomeTimestamp, ...}]}`."""
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        raise HookError('expected {"feedback": [...]}', 422)
    items = []
    for i, fb in enumerate(body["feedback"]):
        at = f"feedback[{i}]"
        if not isinstance(fb, dict):
            raise HookError(f"{at} must be an object", 422)
        card, outcome, stamp = fb.get("card"), fb.get("outcome"), fb.get("outcomeTimestamp")
        if not isinstance(card, str) or not card:
            raise HookError(f"{at}.card is required (the card's uuid)", 422)
        if outcome not in ("accepted", "overridden"):
            raise HookError(f"{at}.outcome must be 'accepted' or 'overridden'", 422)
        if not isinstance(stamp, str) or not _is_instant(stamp):
            raise HookError(f"{at}.outcomeTimestamp must be an RFC 3339 date-time", 422)
        accepted: list[str] = []
        if outcome == "accepted":
            sugg = fb.get("acceptedSuggestions")
            if not isinstance(sugg, list) or not all(
                isinstance(s, dict) and isinstance(s.get("id"), str) for s in sugg
            ):
                raise HookError(f"{at}.acceptedSuggestions must list {{'id': ...}}", 422)
            accepted = [s["id"] for s in sugg]
        reason: dict[str, Any] | None = None
        comment: str | None = None
        override = fb.get("overrideReason")
        if outcome == "overridden" and override is not None:
            if not isinstance(override, dict):
                raise HookError(f"{at}.overrideReason must be an object", 422)
            coding = override.get("reason")
            if coding is not None and (
                not isinstance(coding, dict)
                or not isinstance(coding.get("code"), str)
                or not all(isinstance(coding.get(k, ""), str) for k in ("system", "display"))
            ):
                raise HookError(f"{at}.overrideReason.reason must be a Coding", 422)
            reason = coding
            text = override.get("userComment")
            comment = text if isinstance(text, str) else None
        items.append(FeedbackItem(card, outcome, stamp, tuple(accepted), reason, comment))
    return items


def _is_instant(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in text


class FeedbackStore:
    """The SQLite file, on one connection shared by the worker threads under a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_database(self.path, _SCHEMA, "feedback database")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_cards(
        self, service: str, hook_instance: str, cards: Sequence[dict[str, Any]]
    ) -> None:
        rows = []
        stamp = now_iso()
        for card in cards:
            if not isinstance(card.get("uuid"), str):
                continue
            topic = (card.get("source") or {}).get("topic") or {}
            rows.append(
                (
                    card["uuid"],
                    service,
                    hook_instance,
                    topic.get("system"),
                    topic.get("code"),
                    card.get("indicator", ""),
                    stamp,
                )
            )
        if rows:
            with self._connect() as db:
                db.executemany("INSERT OR IGNORE INTO cards VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def record_feedback(self, service: str, items: Sequence[FeedbackItem]) -> int:
        """Store the items; returns how many were new."""
        stamp = now_iso()
        rows = [
            (
                service,
                it.card,
                it.outcome,
                it.outcome_at,
                json.dumps(list(it.accepted)) if it.accepted else None,
                (it.reason or {}).get("system"),
                (it.reason or {}).get("code"),
                (it.reason or {}).get("display"),
                it.comment,
                stamp,
            )
            for it in items
        ]
        with self._connect() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            return db.total_changes - before

    def summary(self) -> list[dict[str, Any]]:
        """Per service and card topic: cards shown, accepted, overridden, override reasons."""
        with self._connect() as db:
            shown = db.execute(
                "SELECT service, COALESCE(topic_code, '-'), COUNT(*) FROM cards GROUP BY 1, 2"
            ).fetchall()
            outcomes = db.execute(
                "SELECT f.service, COALESCE(c.topic_code, '(unknown card)'), f.outcome, "
                "COALESCE(f.reason_code, ''), COUNT(*) FROM feedback f "
                "LEFT JOIN cards c ON c.uuid = f.card GROUP BY 1, 2, 3, 4"
            ).fetchall()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for service, topic, count in shown:
            rows[(service, topic)] = {
                "service": service,
                "topic": topic,
                "shown": count,
                "accepted": 0,
                "overridden": 0,
                "override_reasons": {},
            }
        for service, topic, outcome, reason, count in outcomes:
            row = rows.setdefault(
                (service, topic),
                {
                    "service": service,
                    "topic": topic,
                    "shown": 0,
                    "accepted": 0,
                    "overridden": 0,
                    "override_reasons": {},
                },
            )
            row[outcome] += count
            if outcome == "overridden" and reason:
                row["override_reasons"][reason] = row["override_reasons"].get(reason, 0) + count
        return [rows[k] for k in sorted(rows)]
