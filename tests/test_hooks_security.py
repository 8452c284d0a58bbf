"""The CDS client's JWT: every way a token can be wrong is refused with the same bare 401;
keys come inline or from an allowlisted HTTPS jku (cached). Service under uvicorn, real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from fhir_adapter.cli import main
from fhir_adapter.hooks import HookConfig
from fhir_adapter.hooks.limits import ServeLimits
from fhir_adapter.hooks.security import TrustedClients

from .test_hooks_harness import (
    EHR_ISS,
    Ehr,
    HookServer,
    Origin,
    SigningKey,
    free_port,
    hook_body,
    self_signed,
    trusted_clients_file,
)

DISCHARGE = "cpt-47382-encounter-discharge"
JKU_ISS = "https://ehr2.example.org"
PATH = f"/cds-services/{DISCHARGE}"
KEYS = ("patient", "encounter", "procedures", "performers", "procedure-results")
KEYS += ("patient-procedures", "role-performers", "conditions")
KEYS += ("observations", "reports", "documents", "coverage")


def body() -> dict[str, Any]:
    """A call that succeeds without any FHIR server when authenticated (everything null)."""
    context = {"userId": "Practitioner/u", "patientId": "p", "encounterId": "e"}
    return hook_body("encounter-discharge", context, prefetch=dict.fromkeys(KEYS))


class Keys:
    def __init__(self) -> None:
        self.es384 = SigningKey("ES384")
        self.rs384 = SigningKey("RS384")
        self.es256 = SigningKey("ES256")
        self.remote = SigningKey("ES384")  # published at the jku
        self.stranger = SigningKey("ES384", kid=self.es384.kid)  # same kid, other key


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def jwks_host(keys: Keys, tls: tuple[Path, Path]) -> Iterator[Origin]:
    host = Origin(
        lambda path: {"keys": [keys.remote.jwk]} if path == "/jwks.json" else None, tls=tls
    )
    yield host
    host.stop()


@pytest.fixture(scope="module")
def unlisted_host(keys: Keys, tls: tuple[Path, Path]) -> Iterator[Origin]:
    host = Origin(lambda path: {"keys": [keys.remote.jwk]}, tls=tls)
    yield host
    host.stop()


def _clients(keys: Keys, jwks_host: Origin) -> TrustedClients:
    return TrustedClients.from_json(
        {
            "clients": [
                {
                    "iss": EHR_ISS,
                    "jwks": {"keys": [keys.es384.jwk, keys.rs384.jwk, keys.es256.jwk]},
                },
                {"iss": JKU_ISS, "jku": f"{jwks_host.base}/jwks.json"},
            ]
        }
    )


@pytest.fixture(scope="module")
def service(
    keys: Keys,
    jwks_host: Origin,
    tls: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HookServer]:
    config = HookConfig(
        trusted_clients=_clients(keys, jwks_host),
        feedback_db=tmp_path_factory.mktemp("sec") / "feedback.sqlite3",
        jwks_ca_bundle=str(tls[0]),
    )
    server = HookServer(config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ehr(service: HookServer, keys: Keys) -> Ehr:
    return Ehr(service, keys.es384)


def refused(resp: requests.Response) -> bool:
    return (
        resp.status_code == 401
        and resp.json() == {"error": "unauthorized"}
        and resp.headers.get("www-authenticate") == "Bearer"
    )


def test_valid_es384_and_rs384_tokens_are_accepted(ehr: Ehr, keys: Keys) -> None:
    url = ehr.url(PATH)
    for key in (keys.es384, keys.rs384):
        resp = ehr.post(PATH, body(), token=key.sign(url))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"cards": []}
    # aud may be an array that contains the URL
    assert ehr.post(PATH, body(), token=keys.es384.sign([url, "other"])).status_code == 200


def _unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    return jwt.encode(payload, None, algorithm="none", headers=header)  # type: ignore[arg-type]


def test_every_wrong_token_is_refused_alike(
    ehr: Ehr, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    url = ehr.url(PATH)
    es = keys.es384
    now = int(time.time())
    payload = {"iss": EHR_ISS, "aud": url, "exp": now + 300, "iat": now, "jti": "x"}
    wrong: dict[tuple[str, str], str | None] = {
        ("no Authorization header", "no bearer token"): None,
        ("not a bearer token", "no bearer token"): "Basic " + "dXNlcjpwYXNz",
        ("not a JWT", "DecodeError"): "Bearer not.a.jwt",
        ("alg none", "algorithm not accepted"): "Bearer "
        + _unsigned(payload, {"kid": es.kid, "typ": "JWT"}),
        ("HS256 with a shared secret", "algorithm not accepted"): "Bearer "
        + jwt.encode(payload, "s" * 32, algorithm="HS256", headers={"kid": es.kid}),
        ("ES256 when not configured", "algorithm not accepted"): "Bearer " + keys.es256.sign(url),
        ("RS256 (not RS384)", "algorithm not accepted"): "Bearer "
        + keys.rs384.sign(url, alg="RS256"),
        ("no typ", "typ is not JWT"): "Bearer " + es.sign(url, headers={"typ": None}),
        ("typ not JWT", "typ is not JWT"): "Bearer " + es.sign(url, headers={"typ": "at+jwt"}),
        ("no kid", "no kid"): "Bearer " + es.sign(url, headers={"kid": None}),
        ("unknown kid", "kid not found"): "Bearer " + es.sign(url, headers={"kid": "nobody"}),
        ("issuer not trusted", "issuer not trusted"): "Bearer "
        + es.sign(url, iss="https://evil.example.org"),
        ("signed by another key with the same kid", "InvalidSignatureError"): "Bearer "
        + keys.stranger.sign(url),
        ("aud of another service", "InvalidAudienceError"): "Bearer "
        + es.sign(ehr.url("/cds-services/cpt-47382-order-sign")),
        ("aud of the discovery endpoint", "InvalidAudienceError"): "Bearer "
        + es.sign(ehr.url("/cds-services")),
        ("aud on another host", "InvalidAudienceError"): "Bearer "
        + es.sign(f"https://cds.example.org{PATH}"),
        ("aud with a trailing slash", "InvalidAudienceError"): "Bearer " + es.sign(url + "/"),
        ("no aud", "MissingRequiredClaimError"): "Bearer " + es.sign(url, drop=("aud",)),
        ("expired", "expired"): "Bearer " + es.sign(url, exp=-60),
        ("no exp", "MissingRequiredClaimError"): "Bearer " + es.sign(url, drop=("exp",)),
        ("issued in the future", "issued in the future"): "Bearer " + es.sign(url, iat=120),
        ("no iat", "MissingRequiredClaimError"): "Bearer " + es.sign(url, drop=("iat",)),
        ("no jti", "MissingRequiredClaimError"): "Bearer " + es.sign(url, drop=("jti",)),
        ("jku for a client with an inline JWKS", "jku given"): "Bearer "
        + es.sign(url, headers={"jku": "https://127.0.0.1:1/jwks.json"}),
    }
    caplog.set_level("DEBUG", logger="fhir_adapter.hooks")
    for (why, reason), header in wrong.items():
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Authorization"] = header
        caplog.clear()
        resp = ehr.http.post(url, data=json.dumps(body()), headers=headers, timeout=30)
        assert refused(resp), (why, resp.status_code, resp.text)
        assert reason in caplog.text, (why, caplog.text)  # refused for that reason (log only)
    # the same refusal for feedback
    feedback = {"feedback": []}
    assert refused(ehr.post(f"{PATH}/feedback", feedback, token=None))
    token = es.sign(url)  # aud of the service, not of its feedback endpoint
    assert refused(ehr.post(f"{PATH}/feedback", feedback, token=token))


def test_a_jti_is_accepted_once(ehr: Ehr, keys: Keys) -> None:
    token = keys.es384.sign(ehr.url(PATH))
    assert ehr.post(PATH, body(), token=token).status_code == 200
    assert refused(ehr.post(PATH, body(), token=token))
    # the same jti from another issuer is another token
    other = keys.remote.sign(
        ehr.url(PATH),
        iss=JKU_ISS,
        jti=jwt.decode(token, options={"verify_signature": False})["jti"],
    )
    assert ehr.post(PATH, body(), token=other).status_code == 200


def test_keys_from_an_allowlisted_jku_are_fetched_over_https_and_cached(
    ehr: Ehr, keys: Keys, jwks_host: Origin, unlisted_host: Origin
) -> None:
    url = ehr.url(PATH)
    before = len(jwks_host.seen)
    for _ in range(3):
        token = keys.remote.sign(url, iss=JKU_ISS)
        resp = ehr.post(PATH, body(), token=token)
        assert resp.status_code == 200, resp.text
    assert len(jwks_host.seen) - before <= 1  # cached after the first fetch
    listed = keys.remote.sign(url, iss=JKU_ISS, headers={"jku": f"{jwks_host.base}/jwks.json"})
    assert ehr.post(PATH, body(), token=listed).status_code == 200
    # a jku the token names but the allowlist does not: refused, and never fetched
    foreign = keys.remote.sign(url, iss=JKU_ISS, headers={"jku": f"{unlisted_host.base}/jwks.json"})
    assert refused(ehr.post(PATH, body(), token=foreign))
    assert unlisted_host.seen == []
    # a key the JWKS does not hold
    assert refused(ehr.post(PATH, body(), token=keys.es384.sign(url, iss=JKU_ISS)))


def test_es256_only_when_configured(keys: Keys, jwks_host: Origin, tmp_path: Path) -> None:
    config = HookConfig(
        trusted_clients=_clients(keys, jwks_host),
        feedback_db=tmp_path / "fb.sqlite3",
        algorithms=("ES384", "RS384", "ES256"),
    )
    server = HookServer(config)
    try:
        ehr = Ehr(server, keys.es256)
        assert ehr.post(PATH, body()).status_code == 200
    finally:
        server.stop()


def test_jwks_over_plain_http_or_unverified_tls_is_refused(
    keys: Keys, jwks_host: Origin, tmp_path: Path
) -> None:
    from fhir_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="https"):
        TrustedClients.from_json({"clients": [{"iss": "a", "jku": "http://127.0.0.1/jwks.json"}]})
    # without the test CA, the self-signed JWKS host is not trusted: 401, not a crash
    config = HookConfig(trusted_clients=_clients(keys, jwks_host), feedback_db=tmp_path / "f.db")
    server = HookServer(config)
    try:
        ehr = Ehr(server, keys.remote)
        token = keys.remote.sign(ehr.url(PATH), iss=JKU_ISS)
        assert refused(ehr.post(PATH, body(), token=token))
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"clients": {}}, "expected"),
        ({"clients": [{"jwks": {"keys": []}}]}, "'iss'"),
        ({"clients": [{"iss": "a"}]}, "exactly one"),
        ({"clients": [{"iss": "a", "jwks": {"keys": []}, "jku": "https://x"}]}, "exactly one"),
        ({"clients": [{"iss": "a", "jwks": {"keys": [{"kty": "oct", "k": "AA"}]}}]}, "asymmetric"),
        ({"clients": [{"iss": "a", "jwks": {"keys": [{"kty": "EC", "crv": "P-384"}]}}]}, "cannot"),
    ],
)
def test_trusted_clients_file_errors_name_the_entry(
    doc: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(doc))
    assert main(["serve", "--trusted-clients", str(path), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def test_private_keys_in_the_trusted_clients_file_are_refused(keys: Keys) -> None:
    from fhir_adapter.errors import ConfigError

    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys.es384.private))
    with pytest.raises(ConfigError, match="public"):
        TrustedClients.from_json({"clients": [{"iss": "a", "jwks": {"keys": [private]}}]})


def test_serve_command_runs_the_service(keys: Keys, tmp_path: Path) -> None:
    """`fhir-adapter serve` as a user runs it: a process on a port, aud built from --host/--port."""
    clients = trusted_clients_file(
        tmp_path / "clients.json", [{"iss": EHR_ISS, "jwks": {"keys": [keys.es384.jwk]}}]
    )
    port = free_port()
    cmd = [sys.executable, "-m", "fhir_adapter.cli", "serve", "--port", str(port)]
    cmd += ["--trusted-clients", str(clients), "--feedback-db", str(tmp_path / "fb.sqlite3")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = requests.get(f"{base}/cds-services", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        assert len(resp.json()["services"]) == 3
        token = keys.es384.sign(f"{base}{PATH}")
        resp = requests.post(
            f"{base}{PATH}",
            data=json.dumps(body()),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert b"Traceback" not in err
    assert token.encode() not in err


def test_aud_follows_the_public_url_behind_a_proxy(
    keys: Keys, jwks_host: Origin, tmp_path: Path
) -> None:
    """With --public-url the EHR's aud names the public URL, not the address we listen on."""
    public = "https://cds.example.org/prefix"
    config = HookConfig(
        trusted_clients=_clients(keys, jwks_host),
        feedback_db=tmp_path / "fb.sqlite3",
        public_url=public,
    )
    server = HookServer(config)
    try:
        ehr = Ehr(server, keys.es384)
        assert refused(ehr.post(PATH, body()))  # aud = the loopback URL
        token = keys.es384.sign(f"{public}{PATH}")
        assert ehr.post(PATH, body(), token=token).status_code == 200
    finally:
        server.stop()


def test_public_url_must_be_an_http_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = trusted_clients_file(tmp_path / "c.json", [{"iss": "a", "jku": "https://x/j"}])
    args = ["serve", "--trusted-clients", str(clients), "--public-url", "cds.example.org"]
    assert main(args) == 2
    assert "--public-url" in capsys.readouterr().err


def test_a_broken_or_unreachable_jwks_host_is_a_401_not_an_error(
    keys: Keys, tls: tuple[Path, Path], tmp_path: Path
) -> None:
    broken = Origin(lambda path: {"no": "keys"}, tls=tls)
    mismatched = {**keys.remote.jwk, "alg": "RS384"}  # the EC key published as RSA
    wrong_alg = Origin(lambda path: {"keys": [mismatched]}, tls=tls)
    down = f"https://127.0.0.1:{free_port()}/jwks.json"
    issuers = {"https://broken": broken.base, "https://wrong-alg": wrong_alg.base}
    clients = [{"iss": iss, "jku": f"{base}/jwks.json"} for iss, base in issuers.items()]
    clients.append({"iss": "https://down", "jku": down})
    config = HookConfig(
        trusted_clients=TrustedClients.from_json({"clients": clients}),
        feedback_db=tmp_path / "fb.sqlite3",
        jwks_ca_bundle=str(tls[0]),
    )
    server = HookServer(config)
    try:
        ehr = Ehr(server, keys.remote)
        for iss in (*issuers, "https://down"):
            token = keys.remote.sign(ehr.url(PATH), iss=iss)
            assert refused(ehr.post(PATH, body(), token=token)), iss
        assert len(broken.seen) == 1 and len(wrong_alg.seen) == 1
    finally:
        server.stop()
        broken.stop()
        wrong_alg.stop()


# -- replay across restarts, token lifetime -------------------------------------------


def _verifier(keys: Keys, db: Path) -> Any:
    from fhir_adapter.hooks.security import JwtVerifier

    clients = TrustedClients.from_json(
        {"clients": [{"iss": EHR_ISS, "jwks": {"keys": [keys.es384.jwk]}}]}
    )
    return JwtVerifier(clients, replay_db=db)


def test_a_replayed_jti_is_refused_after_a_restart(keys: Keys, tmp_path: Path) -> None:
    from fhir_adapter.hooks.security import Unauthorized

    db = tmp_path / "feedback.sqlite3"
    aud = "http://127.0.0.1:8080" + PATH
    token = keys.es384.sign(aud)
    first = _verifier(keys, db)
    assert first.verify(f"Bearer {token}", aud)["iss"] == EHR_ISS
    # the service restarts (a second verifier over the same file): the token is still spent
    second = _verifier(keys, db)
    with pytest.raises(Unauthorized):
        second.verify(f"Bearer {token}", aud)
    assert second.verify(f"Bearer {keys.es384.sign(aud)}", aud)["iss"] == EHR_ISS


def test_replay_rows_are_pruned_once_expired(keys: Keys, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "replay.sqlite3"
    aud = "http://127.0.0.1:8080" + PATH
    verifier = _verifier(keys, db)
    verifier.verify(f"Bearer {keys.es384.sign(aud, exp=2)}", aud)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jwt_replay SET exp = exp - 3600")
    verifier.verify(f"Bearer {keys.es384.sign(aud)}", aud)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jwt_replay").fetchone() == (1,)


def test_the_service_keeps_spent_jtis_in_its_sqlite_file(
    keys: Keys, jwks_host: Origin, tmp_path: Path
) -> None:
    db = tmp_path / "feedback.sqlite3"
    token_for: dict[str, str] = {}
    for attempt in ("first", "after restart"):
        server = HookServer(HookConfig(trusted_clients=_clients(keys, jwks_host), feedback_db=db))
        try:
            ehr = Ehr(server, keys.es384)
            token = token_for.setdefault("t", keys.es384.sign(ehr.url(PATH)))
            resp = ehr.post(PATH, body(), token=token)
        finally:
            server.stop()
        if attempt == "first":
            assert resp.status_code == 200, resp.text
        else:
            assert refused(resp)


def test_tokens_living_longer_than_five_minutes_are_refused(ehr: Ehr, keys: Keys) -> None:
    url = ehr.url(PATH)
    es = keys.es384
    assert ehr.post(PATH, body(), token=es.sign(url, exp=300)).status_code == 200
    assert refused(ehr.post(PATH, body(), token=es.sign(url, exp=3600)))  # exp - iat = 1 h
    assert refused(ehr.post(PATH, body(), token=es.sign(url, exp=3600 * 24 * 365)))
    # issued 10 minutes ago, still unexpired: too old
    assert refused(ehr.post(PATH, body(), token=es.sign(url, iat=-600, exp=60)))
    assert refused(ehr.post(PATH, body(), token=es.sign(url, iat=-400, exp=-100 + 150)))


@pytest.mark.parametrize(
    ("host", "public_url", "refused_"),
    [
        ("0.0.0.0", None, True),
        ("192.168.1.20", None, True),
        ("::", None, True),
        ("cds.example.org", None, True),
        ("0.0.0.0", "http://cds.example.org", True),  # plain http in front: still refused
        ("0.0.0.0", "https://cds.example.org", False),  # a TLS proxy in front
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
    ],
)
def test_serve_beyond_loopback_needs_an_https_public_url(
    host: str,
    public_url: str | None,
    refused_: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    ran: list[dict[str, Any]] = []

    def served(server: uvicorn.Server, sockets: Any = None) -> None:
        ran.append(vars(server.config))  # what it would serve with, not served

    monkeypatch.setattr(uvicorn.Server, "run", served)
    clients = trusted_clients_file(tmp_path / "c.json", [{"iss": "a", "jku": "https://x/j"}])
    args = ["serve", "--trusted-clients", str(clients), "--host", host, "--port", "0"]
    args += ["--feedback-db", str(tmp_path / "f.sqlite3")]
    if public_url:
        args += ["--public-url", public_url]
    code = main(args)
    err = capsys.readouterr().err
    if refused_:
        assert code == 2 and not ran
        [line] = [x for x in err.splitlines() if x.strip()]
        assert "--host" in line and "https" in line and "--public-url" in line
    else:
        assert code == 0 and ran and ran[0]["host"] == host
        # the limits it enforces itself, at their defaults
        assert ran[0]["limit_concurrency"] == 64 and ran[0]["timeout_keep_alive"] == 5
        assert ran[0]["h11_max_incomplete_event_size"] == 16 * 1024
        assert ran[0]["http"].header_timeout == 10.0


def test_hook_instance_cannot_forge_log_lines(ehr: Ehr, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="fhir_adapter.hooks")
    forged = "abc\r\nINFO fhir_adapter.hooks: admin logged in\u2028\x1b[31m" + "y" * 500
    resp = ehr.post(PATH, body() | {"hookInstance": forged})
    assert resp.status_code == 200, resp.text
    lines = [r.getMessage() for r in caplog.records if r.name == "fhir_adapter.hooks"]
    assert any("abc" in line for line in lines)
    for line in lines:
        assert not any(c in line for c in "\r\n\u2028\x1b"), line
        assert "y" * 200 not in line


# -- a JWKS host that fails or stalls --------------------------------------------------


def _forged(keys: Keys, ehr: Ehr, iss: str) -> str:
    """A token naming a jku client, signed with a key that client never published."""
    return SigningKey("ES384").sign(ehr.url(PATH), iss=iss)


def test_a_failing_jwks_host_is_not_asked_again_for_every_token(
    keys: Keys, tls: tuple[Path, Path], tmp_path: Path
) -> None:
    failing = Origin(lambda path: None, tls=tls)  # 404 for everything
    clients = {"clients": [{"iss": "https://failing", "jku": f"{failing.base}/jwks.json"}]}
    server = HookServer(
        HookConfig(
            trusted_clients=TrustedClients.from_json(clients),
            feedback_db=tmp_path / "fb.sqlite3",
            jwks_ca_bundle=str(tls[0]),
        )
    )
    try:
        ehr = Ehr(server, keys.remote)
        for _ in range(50):
            assert refused(ehr.post(PATH, body(), token=_forged(keys, ehr, "https://failing")))
        assert len(failing.seen) == 1  # then it backs off
    finally:
        server.stop()
        failing.stop()


def test_tokens_for_a_stalled_jwks_host_do_not_hold_up_other_clients(
    keys: Keys, tls: tuple[Path, Path], tmp_path: Path
) -> None:
    """80 concurrent unauthenticated calls naming a client whose JWKS host never answers:
    one fetch is made, and an EHR with its keys inline is answered meanwhile."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()

    def stall(path: str) -> Any:
        release.wait(30)
        return None

    stalled = Origin(stall, tls=tls)
    clients = TrustedClients.from_json(
        {
            "clients": [
                {"iss": EHR_ISS, "jwks": {"keys": [keys.es384.jwk]}},
                {"iss": "https://stalled", "jku": f"{stalled.base}/jwks.json"},
            ]
        }
    )
    server = HookServer(
        HookConfig(
            trusted_clients=clients,
            feedback_db=tmp_path / "fb.sqlite3",
            jwks_ca_bundle=str(tls[0]),
            # room for all 81 connections: what is tested here is threads, not connections
            limits=ServeLimits(limit_concurrency=200),
        )
    )
    ehr = Ehr(server, keys.es384)
    pool = ThreadPoolExecutor(80)
    try:
        forged = [_forged(keys, ehr, "https://stalled") for _ in range(80)]
        calls = [
            pool.submit(
                requests.post,
                ehr.url(PATH),
                json=body(),
                headers={"Authorization": f"Bearer {t}"},
                timeout=60,
            )
            for t in forged
        ]
        deadline = time.monotonic() + 10
        while not stalled.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # the other calls arrive meanwhile
        # the JWKS fetch is still stalled; a client with inline keys is answered anyway
        token = keys.es384.sign(ehr.url(PATH))
        resp = requests.post(
            ehr.url(PATH), json=body(), headers={"Authorization": f"Bearer {token}"}, timeout=3
        )
        assert resp.status_code == 200, resp.text
        assert not release.is_set()
        release.set()
        assert all(refused(c.result()) for c in calls)
        assert len(stalled.seen) == 1
    finally:
        release.set()
        pool.shutdown(wait=True)
        server.stop()
        stalled.stop()
