"""Messages a user can act on: each names what to change, never a library's internals."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest

from fhir_adapter.cli import main
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.errors import ServerError


@pytest.mark.parametrize("url", ["127.0.0.1:18090/fhir", "localhost:8080/fhir", "fhir/R4"])
def test_a_base_url_without_a_scheme(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """requests said "No connection adapters were found"."""
    assert main(["run", "--base-url", url]) == 2
    err = capsys.readouterr().err
    assert f"the base URL {url!r} needs http:// or https://" in err
    assert "adapters" not in err and len(err.splitlines()) == 1


class _PlainHttp(socketserver.BaseRequestHandler):
    connections = 0

    def handle(self) -> None:
        type(self).connections += 1
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def plain_http_server() -> Iterator[int]:
    _PlainHttp.connections = 0
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _PlainHttp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_https_to_a_plain_http_server(plain_http_server: int) -> None:
    """Once retried for 16 s to say `(SSLError)`: one attempt, and a message that says why."""
    with pytest.raises(ServerError) as caught:
        FhirClient(f"https://127.0.0.1:{plain_http_server}/fhir", retries=5, backoff=0.5)
    message = str(caught.value)
    assert "the server may not speak TLS at this address (try http://)" in message
    assert _PlainHttp.connections == 1  # a failed handshake is not retried
