"""Exceptions the adapter raises for things a user can fix.

The CLI turns every `AdapterError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base class: a problem with the user's input, configuration or server."""


class InputError(AdapterError):
    """Input that cannot be read as FHIR R4 JSON (names the file and line)."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.source = source
        self.line = line
        where = source or ""
        if source and line is not None:
            where = f"{source}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class PackError(AdapterError):
    """A rule pack that does not match the schema (names the file and the rule)."""
