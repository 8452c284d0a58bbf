"""URLs judged as they will be sent: the one place origin and loopback checks are made.

`urllib.parse.urlsplit` and urllib3 do not always agree on where the host ends
(`http://other:80\\@fhir-host/` is `fhir-host` to the first, `other` to the second),
and urllib3 is what connects. So a URL is first prepared as `requests` prepares it
and then split by urllib3; a backslash anywhere before the path, which the two
read differently, makes the URL have no origin at all (it matches nothing).
"""

from __future__ import annotations

import ipaddress

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def sent_url(url: str) -> Url | None:
    """The URL as urllib3 will connect to it; None when requests would not send it."""
    if "\\" in url.split("?", 1)[0].split("#", 1)[0]:
        return None
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        parts = parse_url(prepared.url or "")
    except (requests.RequestException, LocationParseError, ValueError):
        return None
    return parts if parts.scheme and parts.host else None


def redact_url(url: str) -> str:
    """A URL for messages, as it is sent: no userinfo, no query or fragment (they can
    hold identifiers or secrets)."""
    parts = sent_url(url)
    if parts is None:
        return "(a URL that cannot be sent)"
    return Url(parts.scheme, host=parts.host, port=parts.port, path=parts.path).url


def base_url_problem(url: str) -> str | None:
    """What keeps `url` from being a FHIR base URL, as words for a message; None when fine.

    Requests are made by appending to the base URL's path, so a query or fragment would
    be dropped or misplaced; userinfo would be sent to the host as a password; a
    backslash makes the host depend on which library reads the URL."""
    if "\\" in url:
        return "has a backslash, which HTTP libraries read differently: write it without one"
    parts = sent_url(url)
    if parts is None or (parts.scheme or "").lower() not in DEFAULT_PORTS:
        return "needs http:// or https:// in front (e.g. http://127.0.0.1:8103/fhir/R4)"
    if parts.auth is not None:
        return "must not hold a user or password (use --auth instead)"
    if parts.query is not None or parts.fragment is not None:
        return "must not have a query (?...) or fragment (#...): paths are appended to it"
    return None


def origin(url: str) -> Origin | None:
    """(scheme, host, port) the request goes to, lower-cased, default port filled in."""
    parts = sent_url(url)
    if parts is None:
        return None
    scheme = (parts.scheme or "").lower()
    port = parts.port or DEFAULT_PORTS.get(scheme)
    if port is None:
        return None
    return (scheme, (parts.host or "").lower().strip("[]"), port)


def same_origin(url: str, other: str) -> bool:
    """Whether both URLs go to one origin; a URL without a usable origin matches nothing."""
    mine = origin(url)
    return mine is not None and mine == origin(other)


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (brackets of an IPv6 literal allowed)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def https_or_loopback(url: str) -> bool:
    """An https URL, or plain http to a loopback address (a test server, a sidecar),
    without userinfo: judged as sent."""
    parts = sent_url(url)
    if parts is None or parts.auth is not None:
        return False
    scheme = (parts.scheme or "").lower()
    return scheme == "https" or (scheme == "http" and is_loopback_host(parts.host or ""))
