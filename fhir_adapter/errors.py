"""Exceptions the adapter raises for things a user can fix.

The CLI turns every `AdapterError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


def printable(value: Any) -> str:
    """Text from outside for a terminal or a log line: every control, format and
    line-separator character as its escape (`\\x1b`, `\\u202e`), so none can forge a
    line, move the cursor or recolour what follows."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(value)
    )


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


class ServerError(AdapterError):
    """The server answered with an error (the message carries status and details)."""

    def __init__(
        self, message: str, *, status: int | None = None, outcome: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class PagingError(ServerError):
    """A searchset's paging cannot be followed safely (loop, cap, foreign host)."""


class AuthError(AdapterError):
    """The token endpoint refused us, or answered something that is not a token."""


class ExportError(AdapterError):
    """The export failed or cannot be completed (the message says which step and why)."""


class OutputInvalid(AdapterError):
    """A resource we were about to write is not valid FHIR R4 (a bug: please report it)."""


class SparkUnavailable(AdapterError):
    """PySpark (or Java) is missing: install the `spark` extra."""


class HookError(AdapterError):
    """A hook call we answer with an HTTP error: `status` and a message safe to show."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class PreconditionFailed(HookError):
    """Data the service needs is neither prefetched nor readable from `fhirServer` (412)."""

    status = 412


class ConfigError(AdapterError):
    """The trusted-clients file cannot be used (names the file and the entry)."""


class TablesError(AdapterError):
    """A table file that is not in a CMS layout this adapter reads, or is malformed."""


class CodeSetError(AdapterError):
    """The ICD-10-CM data cannot be found or read (the message says how to fix it)."""


class WorkerDied(AdapterError):
    """A worker process ended without finishing its items (the OS stopped it: often memory)."""


class OutOfTime(AdapterError):
    """Work that did not finish within its time budget (see fhir_adapter.deadline)."""
