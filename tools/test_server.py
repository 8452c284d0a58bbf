"""`make server`: the integration tests' FHIR server, for a first run against a server.

The Medplum-based server of tests/fhir_server on a fixed loopback port (8090 unless
`--port`), the bundled fixtures loaded, and the `run` command to use printed; it
keeps running until Ctrl-C (or SIGTERM). It holds its data in memory only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness lives with the tests

from fhir_adapter.client.rest import FhirClient  # noqa: E402
from fhir_adapter.testing.catalog import load_fixtures  # noqa: E402
from tests.fhir_server.harness import TestServer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090, help="loopback port (default 8090)")
    args = parser.parse_args(argv)
    try:
        server = TestServer(env={"PORT": str(args.port)})
    except RuntimeError as exc:
        print(f"make server: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def done(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, done)
    signal.signal(signal.SIGTERM, done)
    try:
        with FhirClient(server.base) as client:
            loaded = load_fixtures(client)
        print(f"FHIR R4 server at {server.base}: {loaded} fixtures loaded (Ctrl-C stops it)")
        print("Evaluate its 47382 cases without writing back:")
        print(f"  fhir-adapter run --base-url {server.base} --dry-run", flush=True)
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
