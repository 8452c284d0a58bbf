"""`fhir-adapter serve` (the CDS Hooks service) and `fhir-adapter feedback` (what clinicians did)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import socket
import sys
from typing import Any

from fhir_adapter.cli.options import SEVERITIES, SharedName, env_option, format_option, is_on_off

DEFAULT_DB = "fhir-adapter-feedback.sqlite3"
LOG_LEVELS = ("debug", "info", "warning", "error")


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the CDS Hooks 2.0 service (order-sign, appointment-book, encounter-discharge)",
        description="Serve CDS Hooks 2.0 at /cds-services: discovery, the 47382 order-sign / "
        "appointment-book / encounter-discharge services and feedback. Every hook call must "
        "carry a JWT from a client in --trusted-clients.",
    )
    env_option(serve, "--host", "HOST", "127.0.0.1")
    env_option(serve, "--port", "PORT", "8080", type=int)
    env_option(
        serve,
        "--trusted-clients",
        "TRUSTED_CLIENTS",
        metavar="FILE",
        help='JSON: {"clients": [{"iss": ..., "jwks": {...}} | {"iss": ..., "jku": "https://..."}]}',
    )
    env_option(
        serve,
        "--public-url",
        "PUBLIC_URL",
        metavar="URL",
        help="the base URL the EHR calls, which the JWT aud must name; needed behind a "
        "proxy (default: the local address each call arrives on)",
    )
    env_option(serve, "--feedback-db", "FEEDBACK_DB", DEFAULT_DB, metavar="PATH")
    env_option(serve, "--rules", "RULES", metavar="YAML", help="rule pack (default: bundled)")
    env_option(
        serve,
        "--payers",
        "PAYERS",
        metavar="DIR",
        action="append",
        help="a directory of payer overlays (*.yaml, *.yml) added to the bundled ones (repeatable)",
    )
    env_option(serve, "--block-on", "BLOCK_ON", choices=SEVERITIES)
    env_option(
        serve,
        "--allow-es256",
        action="store_true",
        help="also accept ES256 (default: ES384, RS384)",
    )
    env_option(
        serve,
        "--jwks-ca-bundle",
        "JWKS_CA_BUNDLE",
        metavar="PEM",
        help="CA bundle to verify jku hosts with (default: the system's)",
    )
    env_option(
        serve,
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="debug shows every request; a refused call (401) is logged with its reason at "
        "warning (never the token)",
    )
    pas = serve.add_argument_group("prior authorization (Da Vinci PAS, DTR)")
    env_option(
        pas,
        "--payer",
        "SERVE_PAYER",
        shared=SharedName("PAYER", is_on_off, "on or off"),
        action="store_true",
        help="also be a PAS payer at /fhir: Claim/$submit, Claim/$inquire, Subscription, "
        "deciding with the same rules (calls carry the same JWT as hook calls)",
    )
    env_option(
        pas,
        "--payer-db",
        "PAYER_DB",
        "fhir-adapter-payer.sqlite3",
        metavar="PATH",
        help="the payer's requests, decisions and Subscriptions (with --payer)",
    )
    env_option(
        pas,
        "--preauth-db",
        "PREAUTH_DB",
        metavar="PATH",
        help="the record `preauth` keeps: receive the payer's notifications at "
        "/pas/notifications and record the final decisions there",
    )
    limits = serve.add_argument_group(
        "limits", "what the service enforces itself (see README: Running it in production)"
    )
    for flag, env_name, default, kind, text in _LIMITS:
        env_option(limits, flag, env_name, default, type=kind, metavar="N", help=text)
    env_option(
        serve,
        "--time-budget",
        "TIME_BUDGET",
        "10",
        type=float,
        metavar="SECONDS",
        help="answer each hook call within this time: an evaluation still running then is "
        "stopped and the call gets a 'not evaluated' card (default: 10)",
    )
    serve.set_defaults(handler=serve_command)

    fb = sub.add_parser(
        "feedback",
        help="summarise the CDS card feedback recorded by `serve`",
        description="Per service and card topic (finding code): cards shown, accepted, "
        "overridden, and the override reasons given.",
    )
    env_option(fb, "--feedback-db", "FEEDBACK_DB", DEFAULT_DB, metavar="PATH")
    format_option(fb, "FEEDBACK_FORMAT", ("table", "json"))
    fb.set_defaults(handler=feedback_command)


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
        return value

    parse.__name__ = kind.__name__
    return parse


# (flag, environment variable, default, type, help): defaults as in hooks.limits/HookConfig
_LIMITS = (
    (
        "--limit-concurrency",
        "LIMIT_CONCURRENCY",
        "64",
        _positive(int),
        "connections served at once; beyond, 503 (default 64)",
    ),
    (
        "--header-timeout",
        "HEADER_TIMEOUT",
        "10",
        _positive(float),
        "seconds for a complete request head, from connecting or the last answer (default 10)",
    ),
    (
        "--body-timeout",
        "BODY_TIMEOUT",
        "30",
        _positive(float),
        "seconds for a whole request body, then 408 (default 30)",
    ),
    (
        "--keep-alive",
        "KEEP_ALIVE",
        "5",
        _positive(int),
        "seconds an idle keep-alive connection stays open (default 5)",
    ),
    (
        "--fhir-deadline",
        "FHIR_DEADLINE",
        "20",
        _positive(float),
        "seconds for each whole answer from a fhirServer (default 20)",
    ),
    (
        "--fhir-max-mb",
        "FHIR_MAX_MB",
        "32",
        _positive(int),
        "largest answer read from a fhirServer, in MB (default 32)",
    ),
)


def serve_command(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from fhir_adapter.client.urls import is_loopback_host, sent_url
    from fhir_adapter.errors import AdapterError
    from fhir_adapter.hooks import HookConfig, create_app
    from fhir_adapter.hooks.limits import ServeLimits, uvicorn_config
    from fhir_adapter.hooks.security import DEFAULT_ALGORITHMS, TrustedClients

    if not args.trusted_clients:
        raise AdapterError("--trusted-clients FILE (or FHIR_ADAPTER_TRUSTED_CLIENTS) is required")
    if not 0 <= args.port <= 65535:
        raise AdapterError(f"--port {args.port} is not a TCP port")
    if not 0 < args.time_budget <= 3600:
        raise AdapterError(
            f"--time-budget {args.time_budget:g} is not a number of seconds in (0, 3600]"
        )
    algorithms = (*DEFAULT_ALGORITHMS, "ES256") if args.allow_es256 else DEFAULT_ALGORITHMS
    if args.public_url:
        parts = sent_url(args.public_url)
        if parts is None or parts.scheme not in ("http", "https") or parts.query or parts.auth:
            raise AdapterError(f"--public-url {args.public_url!r} is not an http(s) base URL")
    if not is_loopback_host(args.host) and not (args.public_url or "").lower().startswith(
        "https://"
    ):
        raise AdapterError(
            f"--host {args.host} is beyond loopback: the service speaks plain HTTP, so put a TLS "
            "proxy in front and give its address as --public-url https://..."
        )
    limits = ServeLimits(
        limit_concurrency=args.limit_concurrency,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive=args.keep_alive,
    )
    config = HookConfig(
        trusted_clients=TrustedClients.load(args.trusted_clients),
        public_url=args.public_url,
        algorithms=algorithms,
        feedback_db=args.feedback_db,
        rules=args.rules,
        block_on=args.block_on,
        jwks_ca_bundle=args.jwks_ca_bundle,
        fhir_deadline=args.fhir_deadline,
        fhir_max_bytes=args.fhir_max_mb * 1024 * 1024,
        limits=limits,
        time_budget=args.time_budget,
        payer_db=args.payer_db if args.payer else None,
        preauth_db=args.preauth_db,
        payer_dirs=tuple(args.payers or ()),
    )
    # bound before announcing (the port may be taken), and served as bound: with --port 0
    # the system chooses the port, and the address printed is the one it chose
    listening = _listen(args.host, args.port)
    port = listening.getsockname()[1]
    # Without --public-url, aud is checked against the local address each call came in on.
    public = args.public_url or f"http://{args.host}:{port}"
    try:
        app = create_app(config)
    except BaseException:
        listening.close()
        raise
    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s", force=True
    )
    print(f"fhir-adapter: CDS Hooks discovery at {public}/cds-services", file=sys.stderr)
    if args.payer:
        print(f"fhir-adapter: PAS payer at {public}/fhir (Claim/$submit)", file=sys.stderr)
    server = uvicorn.Server(
        uvicorn_config(
            app,
            args.host,
            port,
            limits,
            log_level=args.log_level,
            log_config=None,  # the root logger's, at --log-level
        )
    )
    with contextlib.suppress(KeyboardInterrupt), listening:  # as uvicorn.run ends on Ctrl-C
        server.run(sockets=[listening])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound where uvicorn will listen (SO_REUSEADDR, as uvicorn binds), or one
    line saying why it cannot be (a port in use...)."""
    from fhir_adapter.errors import AdapterError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn binds
        return socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
    except socket.gaierror:
        raise AdapterError(f"--host {host}: no such address here") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AdapterError(
                f"--port {port} on {host} is in use (is another service, or serve, running?); "
                "choose another --port"
            ) from None
        raise AdapterError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def feedback_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fhir_adapter.errors import AdapterError, printable
    from fhir_adapter.hooks.feedback import FeedbackStore

    if not Path(args.feedback_db).is_file():
        raise AdapterError(f"{args.feedback_db}: no feedback database (has `serve` run here?)")
    store = FeedbackStore(args.feedback_db)
    try:
        rows = store.summary()
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps({"topics": rows}, indent=2))
        return 0
    if not rows:
        print("no cards recorded yet")
        return 0
    header = (
        f"{'service':<32} {'topic':<30} {'shown':>6} {'accepted':>8} {'overridden':>10}  reasons"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        # what the EHRs sent (a reason code) is shown escaped: no terminal control codes
        reasons = ", ".join(
            f"{printable(k)} x{v}" for k, v in sorted(r["override_reasons"].items())
        )
        print(
            f"{printable(r['service']):<32} {printable(r['topic']):<30} {r['shown']:>6} "
            f"{r['accepted']:>8} {r['overridden']:>10}  {reasons}"
        )
    return 0
