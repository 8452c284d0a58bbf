"""`fhir-adapter serve` (the CDS Hooks service) and `fhir-adapter feedback` (what clinicians did)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fhir_adapter.cli.options import SEVERITIES, env_option

DEFAULT_DB = "fhir-adapter-feedback.sqlite3"


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
    env_option(serve, "--block-on", "BLOCK_ON", choices=SEVERITIES)
    serve.add_argument(
        "--allow-es256", action="store_true", help="also accept ES256 (default: ES384, RS384)"
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
    env_option(fb, "--format", "FORMAT", "table", choices=("table", "json"))
    fb.set_defaults(handler=feedback_command)


def serve_command(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from fhir_adapter.errors import AdapterError
    from fhir_adapter.hooks import HookConfig, create_app
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
        from urllib.parse import urlsplit

        parts = urlsplit(args.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise AdapterError(f"--public-url {args.public_url!r} is not an http(s) base URL")
    if not _is_loopback(args.host) and not (args.public_url or "").lower().startswith("https://"):
        raise AdapterError(
            f"--host {args.host} is beyond loopback: the service speaks plain HTTP, so put a TLS "
            "proxy in front and give its address as --public-url https://..."
        )
    # Without --public-url, aud is checked against the local address each call came in on.
    public = args.public_url or f"http://{args.host}:{args.port}"
    config = HookConfig(
        trusted_clients=TrustedClients.load(args.trusted_clients),
        public_url=args.public_url,
        algorithms=algorithms,
        feedback_db=args.feedback_db,
        rules=args.rules,
        block_on=args.block_on,
        jwks_ca_bundle=args.jwks_ca_bundle,
        time_budget=args.time_budget,
    )
    app = create_app(config)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"fhir-adapter: CDS Hooks discovery at {public}/cds-services", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False)
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def feedback_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fhir_adapter.errors import AdapterError
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
        reasons = ", ".join(f"{k} x{v}" for k, v in sorted(r["override_reasons"].items()))
        print(
            f"{r['service']:<32} {r['topic']:<30} {r['shown']:>6} {r['accepted']:>8} "
            f"{r['overridden']:>10}  {reasons}"
        )
    return 0
