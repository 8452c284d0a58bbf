"""The provider's record of its prior-authorization requests (SQLite, shared by `preauth`
and `serve`, which receives the payer's notifications), and the decision as files.

A Subscription's secret (the bearer token the payer's notifications carry) is kept only as
its SHA-256: the record never holds a token a reader could replay.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

from fhir_adapter.errors import AdapterError

DEFAULT_DB = "fhir-adapter-preauth.sqlite3"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class PreauthRecords:
    """Requests (by trace number) with their latest decision; subscriptions by secret."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise AdapterError(
                f"{path}: cannot open the prior-authorization record ({exc})"
            ) from None
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS preauth_request (trace TEXT PRIMARY KEY, claim TEXT, "
                "payer TEXT, out_dir TEXT, action TEXT, number TEXT, response TEXT)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS preauth_subscription (secret_sha256 TEXT PRIMARY KEY, "
                "payer TEXT, subscription TEXT)"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def request(self, trace: str, claim: dict[str, Any], payer: str, out_dir: str | None) -> None:
        """Note a request; the directory first given for it keeps receiving its decisions
        (a notification arriving later is recorded where the request was: an absolute
        path, since `serve` may run elsewhere)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO preauth_request (trace, claim, payer, out_dir) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(trace) DO UPDATE SET claim = excluded.claim, payer = excluded.payer, "
                "out_dir = coalesce(out_dir, excluded.out_dir)",
                (trace, json.dumps(claim), payer, os.path.abspath(out_dir) if out_dir else None),
            )

    def decided(
        self, trace: str, action: str, number: str | None, response: dict[str, Any]
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE preauth_request SET action = ?, number = ?, response = ? WHERE trace = ?",
                (action, number, json.dumps(response), trace),
            )

    def get(self, trace: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT trace, claim, payer, out_dir, action, number, response FROM "
                "preauth_request WHERE trace = ?",
                (trace,),
            ).fetchone()
        if row is None:
            return None
        keys = ("trace", "claim", "payer", "out_dir", "action", "number", "response")
        out = dict(zip(keys, row, strict=True))
        out["claim"] = json.loads(out["claim"]) if out["claim"] else None
        out["response"] = json.loads(out["response"]) if out["response"] else None
        return out

    def subscribed(self, secret: str, payer: str, subscription: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO preauth_subscription VALUES (?, ?, ?)",
                (secret_hash(secret), payer, subscription),
            )

    def subscription_for(self, secret: str) -> str | None:
        """The payer a notification's bearer secret was given to (None: not one of ours)."""
        with self._lock:
            row = self._db.execute(
                "SELECT payer FROM preauth_subscription WHERE secret_sha256 = ?",
                (secret_hash(secret),),
            ).fetchone()
        return str(row[0]) if row else None


def write_json(directory: str | Path, name: str, resource: dict[str, Any]) -> Path:
    """`resource` as `directory/name`, whole or not at all (written aside, then renamed)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(resource, fh, indent=2)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
