"""The README's Quick start, run as written: its shell blocks, in order, from a copy of the
checkout, so that the first ten minutes of a new user cannot go stale.

Blocks the text says to run "in a second/third terminal" keep running: they are
started in the background and waited for. The only changes are the two ports (8090,
8080), which become free ones so that the test can run beside other servers.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fhir_adapter.testing.catalog import list_fixtures

from .conftest import ROOT

README = ROOT / "README.md"
START, END = "## Quick start", "<!-- end of quick start -->"


def quick_start() -> list[tuple[str, str]]:
    """(the prose before it, the code) of each ```sh block of the Quick start."""
    text = README.read_text()
    section = text[text.index(START) : text.index(END)]
    parts = re.split(r"```sh\n(.*?)```", section, flags=re.S)
    return list(zip(parts[0::2], parts[1::2], strict=False))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Background:
    """A block that keeps running: its output is read as it comes, until a marker line."""

    def __init__(self, code: str, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "-c", code],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, stopped as one
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, marker: str, timeout: float = 240) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if marker in line:
                return self.seen
        raise AssertionError(f"no {marker!r} from a background block: {''.join(self.seen)[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The checkout seen from a directory of its own (what the blocks write stays there)."""
    for entry in ROOT.iterdir():
        if entry.name not in (".venv", ".git") and not entry.name.startswith("quickstart-"):
            (tmp_path / entry.name).symlink_to(entry)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for job in reversed(started):
        job.stop()


def test_the_blocks_are_found() -> None:
    blocks = quick_start()
    assert len(blocks) >= 6
    assert "fhir-adapter evaluate" in blocks[0][1]
    assert any(code.strip() == "make server" for _, code in blocks)


@pytest.mark.server
def test_the_quick_start_runs_as_written(checkout: Path, background: list[Background]) -> None:
    fhir_port, hooks_port = _free_port(), _free_port()
    venv_bin = str(checkout / ".venv" / "bin")
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # the first terminal's
        "VIRTUAL_ENV": str(checkout / ".venv"),
        "SERVER_PORT": str(fhir_port),  # make server
        "FHIR_ADAPTER_PORT": str(hooks_port),  # fhir-adapter serve
        "COLUMNS": "120",
    }
    env.pop("FHIR_ADAPTER_TRUSTED_CLIENTS", None)
    printed_run: list[str] = []

    def ports(code: str) -> str:
        return code.replace("127.0.0.1:8090", f"127.0.0.1:{fhir_port}").replace(
            "127.0.0.1:8080", f"127.0.0.1:{hooks_port}"
        )

    def evaluate(out: subprocess.CompletedProcess[str]) -> None:
        assert out.returncode == 1, out.stderr
        assert "2 case(s): 1 claim(s), 1 blocked" in out.stdout

    def run(out: subprocess.CompletedProcess[str]) -> None:
        assert out.returncode == 1, out.stderr
        cases = sum(len(c.expected) for c in list_fixtures())  # every fixture case, loaded
        assert f"would write {cases} transaction(s) for {cases} case(s)" in out.stderr

    def keys(out: subprocess.CompletedProcess[str]) -> None:
        assert out.returncode == 0, out.stderr
        assert (checkout / "quickstart-clients.json").is_file()

    def hook(out: subprocess.CompletedProcess[str]) -> None:
        assert out.returncode == 0, out.stderr
        cards = json.loads(out.stdout)["cards"]
        topics = {(c["indicator"], c["source"]["topic"]["code"]) for c in cards}
        assert ("critical", "necessity-rationale-missing") in topics, out.stdout

    checks: list[tuple[str, Callable[[subprocess.CompletedProcess[str]], None]]] = [
        ("fhir-adapter evaluate", evaluate),
        ("fhir-adapter run", run),
        ("hooks client add", keys),
        ("curl", hook),
    ]
    for prose, written in quick_start():
        code = ports(written)
        paragraph = prose.strip().split("\n\n")[-1]
        if re.search(r"(second|third) terminal", paragraph):
            job = Background(code, checkout, env)
            background.append(job)
            if "make server" in code:
                seen = job.wait_for("fhir-adapter run --base-url")
                printed_run.append(seen[-1].strip())
            else:
                job.wait_for("Application startup complete")
            continue
        check = next((fn for needle, fn in checks if needle in code), None)
        assert check is not None, f"a Quick start block with no check here: {written!r}"
        out = subprocess.run(
            ["bash", "-c", code],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert "Traceback" not in out.stderr, out.stderr
        check(out)
        if "fhir-adapter run" in code:
            # the command `make server` prints is the one the README shows
            assert printed_run == [code.strip()], (printed_run, code)
