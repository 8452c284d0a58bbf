"""The service's SQLite file: one connection shared by the worker threads, in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """Open (and create) the database with `schema`; a failure is an AdapterError naming it.

    WAL with NORMAL sync: a commit does not wait for fsync (10 ms here); a crash can lose
    the last rows, never corrupt the file.
    """
    from fhir_adapter.errors import ConfigError

    try:
        db = sqlite3.connect(path, timeout=10, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open the {what}: {exc}") from None
    return db
