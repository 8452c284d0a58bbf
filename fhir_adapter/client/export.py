"""FHIR Bulk Data `$export` client: kick-off, polling, download, resume, cancel.

Follows the Bulk Data Access IG: kick-off with `Accept: application/fhir+json`
and `Prefer: respond-async`; poll the `Content-Location` with exponential
backoff, honouring `Retry-After` (seconds or HTTP-date) and reporting
`X-Progress`; download every output file streamed to disk, sending the bearer
token only when the manifest says `requiresAccessToken` and only to the files
it lists; collect the `error` OperationOutcome files. The state is kept in
`DIR/.fhir-adapter-export.json`, so an interrupted export resumes: it polls the
same job, and files already complete are not downloaded again.

DIR is owned (`fhir_adapter.outdir`): files download into a staging folder inside
it and are swapped in only once the whole job is there, replacing what an earlier
export wrote; a swap cut short is finished by the next run.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import requests
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from fhir_adapter.client.rest import (
    FhirClient,
    connection_failure,
    excerpt,
    outcome_text,
)
from fhir_adapter.client.urls import redact_url
from fhir_adapter.errors import ExportError, ServerError
from fhir_adapter.outdir import check_output_directory, swap_in

STATE_FILE = ".fhir-adapter-export.json"
STAGING = ".fhir-adapter-export.staging"
KIND = "export"
_LINE_END = re.compile(rb"[^\n]\n")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")  # also a safe file name


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    errors: list[Path] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)
    downloaded: int = 0
    skipped: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)


def export_state(name: str) -> bool:
    """Whether a file in an export directory is the export's own bookkeeping."""
    return name.startswith(".fhir-adapter-export")


def retry_after_seconds(value: str | None, default: float) -> float:
    """`Retry-After` as seconds (integer or HTTP-date), parsed by urllib3 as retries are."""
    if not value:
        return default
    try:
        return Retry().parse_retry_after(value.strip())
    except InvalidHeader:
        return default


class BulkExport:
    """One export job against `client`, written into `out`."""

    def __init__(
        self,
        client: FhirClient,
        out: str | os.PathLike[str],
        *,
        types: Sequence[str] = (),
        since: str | None = None,
        group: str | None = None,
        patient_level: bool = False,
        budget: float = 6 * 3600,
        max_poll_interval: float = 120.0,
        on_progress: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        force: bool = False,
    ) -> None:
        self.client = client
        self.out = Path(out)
        self.types = list(types)
        self.since = since
        self.group = group
        self.patient_level = patient_level
        self.budget = budget
        self.max_poll_interval = max_poll_interval
        self.on_progress = on_progress or (lambda _msg: None)
        self.sleep = sleep
        self.force = force

    # -- state -------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def _load_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = orjson.loads(self.state_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return state if state.get("request") == self.request_url() else {}

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.state_path)

    def job_name(self) -> str:
        """The kick-off as the user asked for it (`Group/g1/$export`), for messages."""
        url = self.request_url()
        return url.removeprefix(self.client.base_url).split("?", 1)[0] or url

    def request_url(self) -> str:
        if self.group:
            path = f"Group/{self.group}/$export"
        elif self.patient_level:
            path = "Patient/$export"
        else:
            path = "$export"
        params = []
        if self.types:
            params.append(("_type", ",".join(self.types)))
        if self.since:
            params.append(("_since", self.since))
        return self.client.url(path) + (f"?{urlencode(params)}" if params else "")

    # -- the steps -----------------------------------------------------------
    def run(self) -> ExportResult:
        """Kick off (or resume), wait for completion, download what is missing, swap it in."""
        previous = check_output_directory(self.out, KIND, force=self.force, also_ours=export_state)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot write to {self.out}: {exc.strerror or exc}") from None
        state = self._load_state()
        if state.get("swapping"):
            self._swap(state, previous)
        if state.get("complete"):
            return self._result(state, downloaded=0)
        if not state.get("status_url"):
            state = {"request": self.request_url(), "status_url": self.kick_off(), "done": {}}
            self._save_state(state)
        else:
            self.on_progress("resuming the export already under way")
        if not state.get("manifest"):
            state["manifest"] = self.wait(state["status_url"])
            self._save_state(state)
        downloaded = self.download(state)
        self._swap(state, previous)
        return self._result(state, downloaded)

    def _swap(self, state: dict[str, Any], previous: set[str]) -> None:
        """Move the staged job into place (again, after a crash: what is moved stays)."""
        state["swapping"] = True
        self._save_state(state)
        names = sorted(set(state["done"].values()))
        swap_in(self.out, self.out / STAGING, KIND, previous, names)
        state.pop("swapping")
        state["complete"] = True
        self._save_state(state)

    def kick_off(self) -> str:
        url = self.request_url()
        resp = self._send(
            "GET", url, {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        )
        if resp.status_code != 202:
            raise ExportError(f"kick-off {redact_url(url)}: {_describe(resp)}")
        location = resp.headers.get("Content-Location")
        if not location:
            raise ExportError(f"kick-off {redact_url(url)}: the server sent no Content-Location")
        self.on_progress("export started")
        return location

    def wait(self, status_url: str) -> dict[str, Any]:
        """Poll until the manifest is ready; exponential backoff, Retry-After wins."""
        deadline = time.monotonic() + self.budget
        interval = 1.0
        while True:
            resp = self._send("GET", status_url, {"Accept": "application/json"})
            if resp.status_code == 200:
                try:
                    manifest: dict[str, Any] = resp.json()
                except ValueError:
                    raise ExportError(
                        f"status {redact_url(status_url)}: the manifest is not JSON"
                    ) from None
                if not isinstance(manifest.get("output"), list):
                    raise ExportError(
                        f"status {redact_url(status_url)}: the manifest has no output list"
                    )
                return manifest
            if resp.status_code != 202:
                raise ExportError(f"the export {self.job_name()} failed: {_describe(resp)}")
            progress = resp.headers.get("X-Progress")
            if progress:
                self.on_progress(f"export in progress: {progress}")
            delay = retry_after_seconds(resp.headers.get("Retry-After"), interval)
            interval = min(self.max_poll_interval, interval * 2)
            if time.monotonic() + delay > deadline:
                raise ExportError(
                    f"status {redact_url(status_url)}: not complete within {self.budget:.0f} s; "
                    "run the same command again to resume"
                )
            self.sleep(min(delay, self.max_poll_interval))

    def cancel(self) -> bool:
        """DELETE the job under way (if any) and forget it."""
        state = self._load_state()
        url = state.get("status_url")
        if not url:
            return False
        resp = self._send("DELETE", url, {"Accept": "application/fhir+json"})
        if resp.status_code not in (200, 202, 204, 404):
            raise ExportError(f"cancel {redact_url(url)}: {_describe(resp)}")
        self.state_path.unlink(missing_ok=True)
        shutil.rmtree(self.out / STAGING, ignore_errors=True)
        return True

    def _targets(self, manifest: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
        """(kind, url, name inside DIR, count) for every file the manifest lists."""
        targets = []
        for kind, entries in (
            ("output", manifest.get("output") or []),
            ("error", manifest.get("error") or []),
        ):
            for index, entry in enumerate(entries):
                url = entry.get("url") if isinstance(entry, dict) else None
                if not isinstance(url, str):
                    raise ExportError(f"manifest {kind}[{index}] has no url")
                rtype = entry.get("type") or "Resource"
                if not isinstance(rtype, str) or not _RESOURCE_TYPE.fullmatch(rtype):
                    raise ExportError(
                        f"manifest {kind}[{index}] type {rtype!r} is not a FHIR resource type"
                    )
                name = f"{rtype}.{index:03d}.ndjson"
                targets.append(
                    (kind, url, f"errors/{name}" if kind == "error" else name, entry.get("count"))
                )
        return targets

    def download(self, state: dict[str, Any]) -> int:
        """Every file not yet staged, into the staging folder; how many were fetched."""
        manifest = state["manifest"]
        needs_token = bool(manifest.get("requiresAccessToken"))
        done: dict[str, str] = state.setdefault("done", {})
        staging = self.out / STAGING
        fetched = 0
        for _kind, url, name, count in self._targets(manifest):
            if done.get(url) == name and (staging / name).exists():
                continue
            self._fetch(url, staging / name, needs_token, count)
            done[url] = name
            self._save_state(state)
            fetched += 1
        return fetched

    def _result(self, state: dict[str, Any], downloaded: int) -> ExportResult:
        manifest = state["manifest"]
        result = ExportResult(manifest=manifest, downloaded=downloaded)
        for kind, _url, name, _count in self._targets(manifest):
            (result.errors if kind == "error" else result.files).append(self.out / name)
        result.skipped = len(result.files) + len(result.errors) - downloaded
        for path in result.errors:
            for line in path.read_bytes().splitlines():
                try:
                    oo = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(oo, dict) and oo.get("resourceType") == "OperationOutcome":
                    result.error_messages.append(outcome_text(oo))
        return result

    def _fetch(self, url: str, target: Path, needs_token: bool, count: Any) -> None:
        """Stream one file to disk; a short or broken file is an error and leaves nothing behind."""
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        resp = self._send(
            "GET", url, {"Accept": "application/fhir+ndjson"}, stream=True, token=needs_token
        )
        if resp.status_code != 200:
            resp.close()
            raise ExportError(f"download {redact_url(url)}: {_describe(resp)}")
        lines = 0
        last = b"\n"
        try:
            with open(part, "wb") as fh:
                for block in resp.iter_content(1 << 20):
                    fh.write(block)
                    # a line ends where a newline follows a non-newline: blank lines do not count
                    lines += len(_LINE_END.findall(last + block))
                    last = block[-1:] or last
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ConnectionError,
        ) as exc:
            part.unlink(missing_ok=True)
            raise ExportError(
                f"download {redact_url(url)}: the file was cut short ({type(exc).__name__}); "
                "run the same command again to resume"
            ) from None
        finally:
            resp.close()
        if last != b"\n":  # the last resource needs no trailing newline to count
            lines += 1
        if isinstance(count, int) and lines != count:
            part.unlink(missing_ok=True)
            raise ExportError(
                f"download {redact_url(url)}: {lines} lines where the manifest says {count}; "
                "run the same command again to resume"
            )
        os.replace(part, target)

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        stream: bool = False,
        token: bool = True,
    ) -> requests.Response:
        """One request through the client's session (retries, timeouts, origin-bound auth).

        With `token=False` no Authorization header is sent at all; with `token=True`
        the client's auth attaches it, only for the FHIR server's own origin, and
        renews it once on a 401. Redirects to another host drop it (requests does).
        """
        from fhir_adapter.client.rest import no_auth

        self.client.requests["export"] += 1
        auth: Any = None if token else no_auth
        try:
            return self.client.session.request(
                method,
                url,
                headers=headers,
                timeout=self.client.timeout,
                stream=stream,
                auth=auth,
            )
        except requests.exceptions.RetryError:
            raise ExportError(f"{method} {redact_url(url)}: gave up after retries") from None
        except requests.RequestException as exc:
            raise ExportError(f"{method} {redact_url(url)}: {connection_failure(exc)}") from None


def _describe(resp: requests.Response) -> str:
    try:
        value = resp.json()
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
        return f"the server says (HTTP {resp.status_code}): {excerpt(outcome_text(value))}"
    text = excerpt(resp.text or "")
    return f"HTTP {resp.status_code}" + (f": {text}" if text else "")


__all__ = ["BulkExport", "ExportError", "ExportResult", "ServerError", "retry_after_seconds"]
