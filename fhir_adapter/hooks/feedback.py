"""What clinicians did with the cards: a local SQLite log, summarised by `fhir-adapter feedback`.

Every card the service returns is recorded (uuid, service, topic, and the client
it went to) so that feedback, which names only the card's uuid, can be counted per
finding code. Feedback is accepted only from the client the card was issued to, by
the service that issued it, and counts once per card: sent again (the same or a
later decision), the latest outcome replaces the earlier one.
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
  topic_system TEXT, topic_code TEXT, indicator TEXT NOT NULL, issued_at TEXT NOT NULL,
  client TEXT
);
CREATE TABLE IF NOT EXISTS card_feedback (
  card TEXT PRIMARY KEY, service TEXT NOT NULL, outcome TEXT NOT NULL, outcome_at TEXT NOT NULL,
  accepted TEXT, reason_system TEXT, reason_code TEXT, reason_display TEXT, comment TEXT,
  received_at TEXT NOT NULL
);
"""

# Files written before cards named their client and feedback was one row per card.
_MIGRATIONS = (
    ("cards", "client", "ALTER TABLE cards ADD COLUMN client TEXT"),
    (
        "feedback",
        None,
        "INSERT OR IGNORE INTO card_feedback SELECT card, service, outcome, outcome_at, "
        "accepted, reason_system, reason_code, reason_display, comment, received_at "
        "FROM feedback ORDER BY outcome_at DESC; DROP TABLE feedback",
    ),
)


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
        instant = _utc_instant(stamp) if isinstance(stamp, str) else None
        if instant is None:
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
        items.append(FeedbackItem(card, outcome, instant, tuple(accepted), reason, comment))
    return items


def _utc_instant(text: str) -> str | None:
    """The date-time in UTC, in one format (so stored instants compare as text); None if
    it is not one. Without an offset it is taken as UTC."""
    if "T" not in text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    return when.isoformat(timespec="microseconds")


class FeedbackStore:
    """The SQLite file, on one connection shared by the worker threads under a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_database(self.path, _SCHEMA, "feedback database")
        with self._db:
            for table, column, script in _MIGRATIONS:
                columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if columns and (column is None or column not in columns):
                    self._db.executescript(script)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_cards(
        self, service: str, hook_instance: str, cards: Sequence[dict[str, Any]], client: str
    ) -> None:
        """Log the cards issued to `client` (the `iss` of the call's token)."""
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
                    client,
                )
            )
        if rows:
            with self._connect() as db:
                db.executemany("INSERT OR IGNORE INTO cards VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def record_feedback(self, service: str, client: str, items: Sequence[FeedbackItem]) -> int:
        """Store the items, all or none: each must name a card this service issued to
        `client` (422 otherwise, the same for a card unknown or issued to another client).
        Returns how many cards had no feedback before."""
        stamp = now_iso()
        rows = [
            (
                it.card,
                service,
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
            for i, it in enumerate(items):
                issued = db.execute(
                    "SELECT 1 FROM cards WHERE uuid = ? AND service = ? AND client = ?",
                    (it.card, service, client),
                ).fetchone()
                if issued is None:
                    raise HookError(
                        f"feedback[{i}].card: no such card was issued to this client by {service}",
                        422,
                    )
            (before,) = db.execute("SELECT COUNT(*) FROM card_feedback").fetchone()
            db.executemany(
                "INSERT INTO card_feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (card) DO UPDATE SET outcome = excluded.outcome, "
                "outcome_at = excluded.outcome_at, accepted = excluded.accepted, "
                "reason_system = excluded.reason_system, reason_code = excluded.reason_code, "
                "reason_display = excluded.reason_display, comment = excluded.comment, "
                "received_at = excluded.received_at "
                "WHERE excluded.outcome_at >= card_feedback.outcome_at",
                rows,
            )
            (after,) = db.execute("SELECT COUNT(*) FROM card_feedback").fetchone()
            return int(after - before)

    def summary(self) -> list[dict[str, Any]]:
        """Per service and card topic: cards shown, accepted, overridden, override reasons."""
        with self._connect() as db:
            shown = db.execute(
                "SELECT service, COALESCE(topic_code, '-'), COUNT(*) FROM cards GROUP BY 1, 2"
            ).fetchall()
            outcomes = db.execute(
                "SELECT f.service, COALESCE(c.topic_code, '(unknown card)'), f.outcome, "
                "COALESCE(f.reason_code, ''), COUNT(*) FROM card_feedback f "
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
