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


class _HostileError(socketserver.BaseRequestHandler):
    """A server whose error body is terminal escapes: a title, a clear screen, a colour."""

    def handle(self) -> None:
        self.request.recv(65536)
        body = b"\x1b]0;owned\x07\x1b[2J\x1b[32mAll claims OK"
        head = f"HTTP/1.1 400 Bad Request\r\nContent-Length: {len(body)}\r\n\r\n"
        self.request.sendall(head.encode() + body)


def test_a_servers_error_text_reaches_the_terminal_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HostileError)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        argv = ["run", "--base-url", f"http://127.0.0.1:{port}/fhir", "--dry-run"]
        assert main(argv) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b[2J" in err  # shown, as its escape


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1:18777\\@fhir.example.org/fhir", "backslash"),
        ("https://h.example/fhir?x=1", "query"),
        ("https://h.example/fhir#top", "fragment"),
        ("https://user:s3cret@h.example/fhir", "user or password"),
    ],
)
def test_a_base_url_is_judged_as_it_will_be_sent(
    url: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`\\@` sent the request to 127.0.0.1 while the message named fhir.example.org; a
    query was dropped in silence (https://h/metadata was asked)."""
    assert main(["run", "--base-url", url, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fhir-adapter: error: --base-url") and len(err.splitlines()) == 1
    assert named in err
    assert "fhir.example.org" not in err and "s3cret" not in err and "x=1" not in err


def test_messages_name_the_url_as_sent() -> None:
    from fhir_adapter.client.urls import redact_url

    assert redact_url("https://u:pw@h.example:8443/fhir/Patient?name=x#f") == (
        "https://h.example:8443/fhir/Patient"
    )
    assert "fhir.example.org" not in redact_url("http://127.0.0.1:1\\@fhir.example.org/x")
