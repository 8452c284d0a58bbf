"""Who may call the service: the JWT every CDS client sends (CDS Hooks 2.0, security).

The token must be signed with an asymmetric algorithm we accept (ES384, RS384;
ES256 only when configured), name its key (`kid`) and say `typ: JWT`; its `iss`
must be a trusted client and the key must come from that client's JWKS, given
inline in the trusted-clients file or fetched over HTTPS from a `jku` on the
client's allowlist (never from a URL the token alone names). `aud` is the exact
URL called, `exp` in the future, `iat` not and at most 5 minutes back, `exp - iat`
at most 5 minutes, and a `jti` is accepted once, remembered in a SQLite file across restarts.
Any failure is the same `Unauthorized`: the caller learns nothing about which check;
the service's log says which (a warning naming the check and the claimed issuer,
never the token), so an operator can tell a clock skew from a wrong `aud`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import requests
import urllib3

from fhir_adapter.client.urls import redact_url, sent_url
from fhir_adapter.errors import ConfigError, printable
from fhir_adapter.hooks.storage import open_database

log = logging.getLogger("fhir_adapter.hooks")

DEFAULT_ALGORITHMS = ("ES384", "RS384")
ALLOWED_ALGORITHMS = frozenset({"ES384", "RS384", "ES256"})
LEEWAY = 5.0  # seconds of clock skew tolerated on exp/iat
MAX_LIFETIME = 300.0  # a token may live (exp - iat) and be used (now - iat) this long
JWKS_TTL = 300.0  # cache a fetched JWKS this long
JWKS_REFRESH_MIN = 30.0  # refetch for an unknown kid at most this often
JWKS_BACKOFF_MIN = 5.0  # after a failed fetch, do not ask again for this long (doubling)
JWKS_BACKOFF_MAX = 300.0
MAX_JWKS_BYTES = 256 * 1024


class Unauthorized(Exception):
    """The call is not authenticated; the reason goes to the service's log, never the caller."""


# PyJWT errors whose text is fixed (never a piece of the token): logged as they are.
_FIXED_TEXT_ERRORS = (
    jwt.InvalidSignatureError,
    jwt.MissingRequiredClaimError,
    jwt.InvalidIssuerError,
    jwt.ImmatureSignatureError,
)


def loggable(value: Any, limit: int = 100) -> str:
    """A caller's string for a log line: control and line-separator characters escaped
    (no forged lines, no terminal escapes), cut at `limit` characters."""
    text = str(value)
    return printable(text[:limit]) + ("…" if len(text) > limit else "")


@dataclass(frozen=True)
class TrustedClient:
    """One CDS client (EHR): its issuer and where its public keys come from."""

    iss: str
    jwks: dict[str, Any] | None = None
    jku: tuple[str, ...] = ()


@dataclass
class TrustedClients:
    """The trusted-clients file: `{"clients": [{"iss", "jwks"} | {"iss", "jku"}]}`."""

    clients: dict[str, TrustedClient] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> TrustedClients:
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise ConfigError(
                f"{p}: cannot read the trusted-clients file: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"{p}: not JSON: {exc}") from None
        return cls.from_json(doc, str(p))

    @classmethod
    def from_json(cls, doc: Any, where: str = "trusted clients") -> TrustedClients:
        if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
            raise ConfigError(f'{where}: expected {{"clients": [...]}}')
        out: dict[str, TrustedClient] = {}
        for i, entry in enumerate(doc["clients"]):
            at = f"{where}: clients[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str):
                raise ConfigError(f"{at}: needs an 'iss' string")
            iss = entry["iss"]
            jwks, jku = entry.get("jwks"), entry.get("jku")
            if (jwks is None) == (jku is None):
                raise ConfigError(f"{at} ({iss}): give exactly one of 'jwks' and 'jku'")
            if jwks is not None:
                keys = jwks.get("keys") if isinstance(jwks, dict) else None
                if not isinstance(keys, list) or not keys:
                    raise ConfigError(f"{at} ({iss}): 'jwks' must be {{\"keys\": [...]}}")
                for key in keys:
                    if not isinstance(key, dict) or "d" in key or key.get("kty") == "oct":
                        raise ConfigError(
                            f"{at} ({iss}): 'jwks' must hold public asymmetric keys only"
                        )
                    _public_key(key, key.get("alg"), at)
            urls = [jku] if isinstance(jku, str) else jku
            if jku is not None and (
                not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)
            ):
                raise ConfigError(f"{at} ({iss}): 'jku' must be a URL or a list of URLs")
            for url in urls or []:
                sent = sent_url(url)
                if sent is not None and sent.auth is not None:  # never echoed: it is a secret
                    raise ConfigError(
                        f"{at} ({iss}): jku {redact_url(url)!r} must not hold a user or password"
                    )
                if not _is_https(url):
                    raise ConfigError(f"{at} ({iss}): jku {redact_url(url)!r} must be an https URL")
            if iss in out:
                raise ConfigError(f"{at}: issuer {iss!r} is listed twice")
            out[iss] = TrustedClient(iss, jwks, tuple(urls or ()))
        return cls(out)


def _is_https(url: str) -> bool:
    """https as sent, without userinfo (a password would go to the key host)."""
    sent = sent_url(url)
    return sent is not None and sent.auth is None and (sent.scheme or "").lower() == "https"


def _public_key(jwk: dict[str, Any], alg: str | None, where: str = "") -> Any:
    try:
        return jwt.PyJWK(jwk, alg).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        if where:
            raise ConfigError(f"{where}: a key cannot be used: {exc}") from None
        raise Unauthorized("unusable key") from None


@dataclass
class _JwksState:
    """What is known of one JWKS URL: its keys and when they came, or how often and until
    when fetching it has failed; `lock` lets one fetch run at a time."""

    keys: list[dict[str, Any]] | None = None
    fetched_at: float = 0.0
    failures: int = 0
    retry_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksFetcher:
    """Fetches a client's JWKS over HTTPS (no redirects, no proxies from the environment),
    caching it; `verify` may name a CA bundle (how the tests trust their own HTTPS server).

    A failed fetch is remembered too: the URL is not asked again for `JWKS_BACKOFF_MIN`
    seconds, doubling with each further failure up to `JWKS_BACKOFF_MAX`, so tokens
    naming a client whose JWKS host is down or slow cost nothing but a refusal. One
    fetch per URL runs at a time; callers arriving meanwhile use its result.
    """

    def __init__(
        self,
        verify: bool | str = True,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = requests.Session()
        self.session.trust_env = False
        self.verify = verify
        self.timeout = timeout
        self.clock = clock
        self._state: dict[str, _JwksState] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def _entry(self, url: str) -> _JwksState:
        with self._lock:
            return self._state.setdefault(url, _JwksState())

    def due(self, url: str, kid: str) -> bool:
        """Whether keys for `kid` call for a fetch now: never while backing off after a
        failure; else when none were fetched, they are older than `JWKS_TTL`, or `kid`
        is unknown and they are older than `JWKS_REFRESH_MIN` (a key rotation)."""
        entry, now = self._entry(url), self.clock()
        if now < entry.retry_at:
            return False
        if entry.keys is None:
            return True
        age = now - entry.fetched_at
        if age >= JWKS_TTL:
            return True
        return age >= JWKS_REFRESH_MIN and not any(k.get("kid") == kid for k in entry.keys)

    def refresh(self, url: str, kid: str) -> None:
        """Fetch the JWKS if still due once this URL's fetch under way (if any) is over."""
        entry = self._entry(url)
        with entry.lock:
            if not self.due(url, kid):
                return
            try:
                keys = self._fetch(url)
            except Unauthorized:
                entry.failures += 1
                backoff = JWKS_BACKOFF_MIN * 2 ** min(entry.failures - 1, 16)
                entry.retry_at = self.clock() + min(JWKS_BACKOFF_MAX, backoff)
                return
            entry.keys, entry.fetched_at = keys, self.clock()
            entry.failures, entry.retry_at = 0, 0.0

    def keys(self, url: str, kid: str) -> list[dict[str, Any]]:
        """The keys published at `url` (fetched first when due); Unauthorized when none
        younger than `JWKS_TTL` could be had."""
        if self.due(url, kid):
            self.refresh(url, kid)
        entry = self._entry(url)
        if entry.keys is None or self.clock() - entry.fetched_at >= JWKS_TTL:
            raise Unauthorized("no JWKS could be fetched")
        return entry.keys

    def _fetch(self, url: str) -> list[dict[str, Any]]:
        if not _is_https(url):
            raise Unauthorized("jku is not https")
        self.fetches += 1
        try:
            resp = self.session.get(
                url,
                timeout=self.timeout,
                allow_redirects=False,
                verify=self.verify,
                headers={"Accept": "application/json"},
                stream=True,
            )
            body = resp.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
            resp.close()
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("cannot fetch the JWKS at %s: %s", redact_url(url), type(exc).__name__)
            raise Unauthorized("jwks fetch failed") from None
        if resp.status_code != 200 or len(body) > MAX_JWKS_BYTES:
            log.warning("the JWKS at %s answered HTTP %s", redact_url(url), resp.status_code)
            raise Unauthorized("jwks fetch failed")
        try:
            doc = json.loads(body)
        except ValueError:
            raise Unauthorized("jwks is not JSON") from None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list):
            raise Unauthorized("jwks has no keys")
        return [k for k in keys if isinstance(k, dict)]


class ReplayCache:
    """`jti`s seen, per issuer, remembered until their token expires (this process only)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def first_use(self, iss: str, jti: str, exp: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._seen) > 1024:
                self._seen = {k: v for k, v in self._seen.items() if v + LEEWAY >= now}
            key = (iss, jti)
            if key in self._seen and self._seen[key] + LEEWAY >= now:
                return False
            self._seen[key] = exp
            return True


_REPLAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS jwt_replay (
  iss TEXT NOT NULL, jti TEXT NOT NULL, exp REAL NOT NULL, PRIMARY KEY (iss, jti)
);
CREATE INDEX IF NOT EXISTS jwt_replay_exp ON jwt_replay (exp);
"""


class SqliteReplayCache:
    """`jti`s seen, per issuer, in a SQLite file (the service's feedback database), so a
    token spent before a restart, or by another worker on the same file, stays spent.
    The (iss, jti) primary key decides; rows are pruned once their token has expired."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_database(self.path, _REPLAY_SCHEMA, "JWT replay database")

    def first_use(self, iss: str, jti: str, exp: float) -> bool:
        now = time.time()
        try:
            with self._lock, self._db:
                self._db.execute("DELETE FROM jwt_replay WHERE exp < ?", (now - LEEWAY,))
                self._db.execute(
                    "INSERT INTO jwt_replay (iss, jti, exp) VALUES (?, ?, ?)", (iss, jti, exp)
                )
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as exc:
            log.error("the JWT replay database failed: %s", exc)
            return False  # fail closed
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JwtVerifier:
    """Checks the CDS client's bearer JWT for one endpoint URL (see the module docstring)."""

    def __init__(
        self,
        clients: TrustedClients,
        *,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        fetcher: JwksFetcher | None = None,
        clock: Callable[[], float] = time.time,
        replay_db: str | Path | None = None,
    ) -> None:
        self.clients = clients
        self.algorithms = frozenset(algorithms)
        unknown = self.algorithms - ALLOWED_ALGORITHMS
        if unknown:
            raise ConfigError(
                f"unsupported JWT algorithm(s) {sorted(unknown)}; "
                f"choose from {sorted(ALLOWED_ALGORITHMS)}"
            )
        self.fetcher = fetcher or JwksFetcher()
        self.replay: ReplayCache | SqliteReplayCache = (
            SqliteReplayCache(replay_db) if replay_db is not None else ReplayCache()
        )
        self.clock = clock

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """The verified claims; raises Unauthorized for anything short of a valid token.

        The reason is logged as a warning (with the issuer the token claims, escaped),
        never the token or the caller's answer."""
        try:
            return self._verify(authorization, audience)
        except Unauthorized as exc:
            reason = str(exc)
        except jwt.InvalidAudienceError:
            reason = f"InvalidAudienceError: aud must be exactly {audience}"
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            reason = type(exc).__name__
            if isinstance(exc, _FIXED_TEXT_ERRORS):
                reason += f": {exc}"
        log.warning(
            "refused a CDS call to %s (401): %s; iss %s",
            loggable(audience, 200),
            reason,
            _claimed_issuer(authorization),
        )
        raise Unauthorized()

    def jwks_due(self, authorization: str | None) -> tuple[str, str] | None:
        """(jku, kid) when verifying this token would first fetch a JWKS, else None (also for
        any token that will be refused without one). Cheap: nothing is verified or fetched,
        so the service can fetch on its own few threads and verify after."""
        try:
            token = _bearer(authorization)
            header = jwt.get_unverified_header(token)
            iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
            client = self.clients.clients.get(iss) if isinstance(iss, str) else None
            kid = header.get("kid")
            if client is None or client.jwks is not None or not isinstance(kid, str):
                return None
            url = _jku(client, header)
        except (Unauthorized, jwt.PyJWTError, ValueError, TypeError):
            return None
        return (url, kid) if self.fetcher.due(url, kid) else None

    def _verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        token = _bearer(authorization)
        header = jwt.get_unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms:
            raise Unauthorized("algorithm not accepted")
        if header.get("typ") != "JWT":
            raise Unauthorized("typ is not JWT")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("no kid")
        unverified = jwt.decode(token, options={"verify_signature": False})
        iss = unverified.get("iss")
        client = self.clients.clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise Unauthorized("issuer not trusted")
        key = self._key(client, header, kid, alg)
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=client.iss,
            leeway=LEEWAY,
            options={
                "require": ["iss", "aud", "exp", "iat", "jti"],
                "verify_exp": False,  # checked below against our clock
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        aud = claims["aud"]
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise Unauthorized("audience")
        now = self.clock()
        exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
        if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now - LEEWAY:
            raise Unauthorized("expired")
        if not isinstance(iat, int | float) or isinstance(iat, bool) or iat > now + LEEWAY:
            raise Unauthorized("issued in the future")
        if exp - iat > MAX_LIFETIME + LEEWAY:
            raise Unauthorized("lifetime longer than allowed")
        if iat < now - MAX_LIFETIME - LEEWAY:
            raise Unauthorized("issued too long ago")
        if "nbf" in claims and (
            not isinstance(claims["nbf"], int | float) or claims["nbf"] > now + LEEWAY
        ):
            raise Unauthorized("not yet valid")
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("no jti")
        if not self.replay.first_use(client.iss, jti, float(exp)):
            raise Unauthorized("jti replayed")
        return claims

    def _key(self, client: TrustedClient, header: dict[str, Any], kid: str, alg: str) -> Any:
        if client.jwks is not None:
            if "jku" in header:
                raise Unauthorized("jku given for a client with an inline JWKS")
            keys: list[dict[str, Any]] = client.jwks["keys"]
        else:
            keys = self.fetcher.keys(_jku(client, header), kid)
        matches = [k for k in keys if k.get("kid") == kid]
        if len(matches) != 1:
            raise Unauthorized("kid not found (or not unique)")
        jwk = matches[0]
        if jwk.get("alg") not in (None, alg) or "d" in jwk:
            raise Unauthorized("key does not match the algorithm")
        if jwk.get("use") not in (None, "sig"):
            raise Unauthorized("key is not for signatures")
        return _public_key(jwk, alg)


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("no bearer token")
    return token.strip()


def _jku(client: TrustedClient, header: dict[str, Any]) -> str:
    """The JWKS URL for this token: the `jku` it names if on the client's allowlist, else
    the client's only one."""
    url = header.get("jku", client.jku[0] if len(client.jku) == 1 else None)
    if not isinstance(url, str) or url not in client.jku:
        raise Unauthorized("jku not on the allowlist")
    return url


def _claimed_issuer(authorization: str | None) -> str:
    """The `iss` an unverified token claims, escaped for a log line (or "unknown")."""
    scheme, _, token = (authorization or "").partition(" ")
    try:
        iss = jwt.decode(token.strip(), options={"verify_signature": False}).get("iss")
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        return "unknown"
    return repr(loggable(iss)) if isinstance(iss, str) and scheme.lower() == "bearer" else "unknown"
