"""The README's prior-authorization walk-through, run as written (files, `serve --payer`,
`preauth`, DTR's `$questionnaire-package` by curl): only port 8080 becomes a free one."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from .conftest import ROOT

START = "<!-- tests/test_readme_prior_auth.py runs the blocks of this walk-through as written -->"
END = "<!-- end of prior-authorization walk-through -->"
MARK = "@@block"


def walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(START) : text.index(END)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stdout.read() if proc.stdout else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("serve did not listen in time")


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = walkthrough()
    assert len(blocks) == 7
    port = str(_free_port())
    blocks = [b.replace("8080", port) for b in blocks]
    for name in ("fixtures", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("FHIR_ADAPTER_")}
    (serve_block,) = [b for b in blocks if "fhir-adapter serve" in b]
    first = subprocess.run(
        ["bash", "-c", blocks[0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    server = subprocess.Popen(
        ["bash", "-c", serve_block],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_port(int(port), server)
        rest = [b for b in blocks[1:] if b is not serve_block]
        script = "".join(f"{b}\necho {MARK} $?\n" for b in rest)
        run = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        outputs = run.stdout.split(MARK)
        assert len(outputs) == len(rest) + 1, run.stderr
        codes = [int(o.split("\n", 1)[0].split()[0]) for o in outputs[1:]]
        assert codes == [0, 1, 1, 0, 0], (codes, run.stdout, run.stderr)
        assert "pa-met-sr: A1 | authorization PA" in outputs[0]
        assert "pa-not-met-sr: A3" in outputs[1]
        assert "pa-pended-sr: A4" in outputs[2]
        assert "pa-pended-sr: A1" in outputs[4]
        package = json.loads((tmp_path / "pa-package.json").read_text())
        assert package["parameter"][0]["name"] == "PackageBundle"
        # the notification: the certified decision beside the pended one in pa-out
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            decided = [
                json.loads(p.read_text()).get("preAuthRef")
                for p in (tmp_path / "pa-out").glob("ClaimResponse-*-a1.json")
            ]
            if len(decided) == 2:  # pa-met's, and pa-pended's by notification
                break
            time.sleep(0.1)
        assert len(decided) == 2
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
        if server.stdout:
            server.stdout.close()
