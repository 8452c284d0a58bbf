"""URLs are judged as urllib3 sends them: a backslash that `urlsplit` reads as part of the
userinfo but urllib3 reads as the end of the host must not pass an origin check. Two real
loopback servers: the FHIR server and a foreign origin that records what reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fhir_adapter.client.auth import BearerAuth
from fhir_adapter.client.rest import FhirClient
from fhir_adapter.client.urls import https_or_loopback, origin, same_origin
from fhir_adapter.errors import HookError, PagingError
from fhir_adapter.hooks.data import check_fhir_server

from .test_hooks_harness import Origin

TOKEN = "s3cr3t-token-value"
CS = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "status": "active"}


@pytest.fixture
def foreign() -> Iterator[Origin]:
    host = Origin(lambda path: {"resourceType": "Bundle", "type": "searchset", "entry": []})
    yield host
    host.stop()


def _port(base: str) -> str:
    return base.rsplit(":", 1)[1]


@pytest.fixture
def fhir(foreign: Origin) -> Iterator[tuple[Origin, str]]:
    """The FHIR server; its paging link and attachment URL point at the foreign origin in
    a shape `urlsplit` reads as its own host."""
    links: dict[str, str] = {}

    def respond(path: str) -> Any:
        if path.endswith("/metadata"):
            return CS
        if path.startswith("/Patient"):
            return {
                "resourceType": "Bundle",
                "type": "searchset",
                "link": [{"relation": "next", "url": links["sneaky"]}],
            }
        return None

    host = Origin(respond)
    links["sneaky"] = f"http://127.0.0.1:{_port(foreign.base)}\\@127.0.0.1:{_port(host.base)}/x"
    yield host, links["sneaky"]
    host.stop()


def test_a_backslash_url_goes_nowhere_it_was_not_judged_for(
    fhir: tuple[Origin, str], foreign: Origin
) -> None:
    server, sneaky = fhir
    assert not same_origin(sneaky, server.base)
    client = FhirClient(server.base, BearerAuth(TOKEN), backoff=0.01, retries=0)
    with pytest.raises(PagingError, match="another origin"):
        list(client.search_pages("Patient"))
    assert client.fetch_bytes(sneaky, 1000) is None  # an attachment URL of that shape
    assert foreign.seen == []
    # asked to send it anyway (as a Bulk export download would), the token stays home
    client.session.get(sneaky, timeout=5)
    assert len(foreign.seen) == 1 and "Authorization" not in foreign.seen[0][2]
    assert all(headers.get("Authorization") == f"Bearer {TOKEN}" for _, _, headers in server.seen)
    client.close()


def test_origin_is_where_urllib3_connects() -> None:
    assert origin("HTTPS://Fhir.Example.org/r4") == ("https", "fhir.example.org", 443)
    assert origin("http://[::1]:8080/") == ("http", "::1", 8080)
    assert origin("http://user:pw@127.0.0.1:81/") == ("http", "127.0.0.1", 81)
    assert origin("http://evil.example:80\\@127.0.0.1/") is None
    assert origin("not a url") is None
    assert not same_origin("not a url", "also not")


@pytest.mark.parametrize(
    "url",
    [
        "http://fhir.example.org\\@127.0.0.1:8080/r4",
        "http://fhir.example.org:80\\@localhost/r4",
        "http://user@127.0.0.1:8080/r4",
        "http://fhir.example.org/r4",
        "ftp://127.0.0.1/r4",
    ],
)
def test_a_fhir_server_is_https_or_loopback_as_sent(url: str) -> None:
    assert not https_or_loopback(url)
    with pytest.raises(HookError, match="https URL"):
        check_fhir_server(url)


@pytest.mark.parametrize(
    "url", ["https://fhir.example.org/r4", "http://127.0.0.1:8080/r4", "http://localhost/r4"]
)
def test_https_and_loopback_fhir_servers_pass(url: str) -> None:
    check_fhir_server(url)


@pytest.mark.parametrize(
    "url", ["https://fhir.example.org/r4?x=1", "https://fhir.example.org/r4#f"]
)
def test_a_fhir_server_with_a_query_or_fragment_is_refused(url: str) -> None:
    """Its reads once went to the URL without them, in silence (or failed as --base-url)."""
    with pytest.raises(HookError, match="'fhirServer' must not have a query"):
        check_fhir_server(url)
