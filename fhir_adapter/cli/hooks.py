"""`fhir-adapter hooks`: a trusted-clients entry and a test token, to try `serve` with curl."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fhir_adapter.cli.options import env_option, positive_seconds


def register(sub: Any) -> None:
    hooks = sub.add_parser(
        "hooks",
        help="set up who may call `serve`: trusted-clients entries and test tokens",
        description="Make the --trusted-clients file `serve` reads, and sign a test JWT as a "
        "trusted client would, for calling the service with curl.",
    )
    actions = hooks.add_subparsers(dest="hooks_command", metavar="ACTION", required=True)
    client = actions.add_parser("client", help="the trusted-clients file")
    client_actions = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    add = client_actions.add_parser(
        "add",
        help="trust a CDS client: its issuer and a JWKS URL or a PEM public key",
        description="Add an entry to the trusted-clients file (made if missing). A PEM public "
        "key is stored as a JWK (kid: --kid or its RFC 7638 thumbprint); a second key for the "
        "same issuer is added beside the first.",
    )
    _file_and_issuer(add)
    key = add.add_mutually_exclusive_group()
    env_option(key, "--jwks-url", metavar="URL", help="the client's JWKS (https)")
    env_option(key, "--public-key", metavar="PEM", help="the client's public key (P-384 or RSA)")
    env_option(add, "--kid", metavar="KID", help="the key's id (default: its thumbprint)")
    add.set_defaults(handler=client_add_command)

    token = actions.add_parser(
        "token",
        help="sign a test JWT as a trusted client (for curl)",
        description="Print a CDS Hooks JWT for one call: iss and sub the client, aud the service "
        "URL called, iat now, exp within 5 minutes, a fresh jti, kid of the listed key. Each "
        "token is accepted once.",
    )
    _file_and_issuer(token)
    env_option(
        token,
        "--private-key",
        "HOOKS_PRIVATE_KEY",
        required=True,
        metavar="PEM",
        help="the client's private key; its public half must be listed for --iss",
    )
    env_option(
        token,
        "--aud",
        required=True,
        metavar="URL",
        help="the exact URL to call, e.g. http://127.0.0.1:8080/cds-services/cpt-47382-order-sign",
    )
    env_option(token, "--kid", metavar="KID", help="needed when the client's keys are at a jku")
    env_option(
        token,
        "--lifetime",
        default="300",
        type=positive_seconds,
        metavar="SECONDS",
        help="seconds until exp (at most 300)",
    )
    token.set_defaults(handler=token_command)


def _file_and_issuer(p: argparse.ArgumentParser) -> None:
    env_option(p, "--trusted-clients", "TRUSTED_CLIENTS", required=True, metavar="FILE")
    env_option(p, "--iss", "HOOKS_ISS", required=True, metavar="ISS", help="the client's issuer")


def client_add_command(args: argparse.Namespace) -> int:
    from fhir_adapter.errors import printable
    from fhir_adapter.hooks.clients import add_client

    entry = add_client(
        args.trusted_clients,
        args.iss,
        jwks_url=args.jwks_url,
        public_key=args.public_key,
        kid=args.kid,
    )
    how = (
        f"keys at {entry['jku']}"
        if "jku" in entry
        else f"key(s) {', '.join(k['kid'] for k in entry['jwks']['keys'])}"
    )
    print(printable(f"{args.trusted_clients}: trusts {args.iss} ({how})"), file=sys.stderr)
    if "jwks" in entry and entry["jwks"]["keys"][-1].get("alg") == "ES256":
        print(
            f"fhir-adapter: warning: {printable(args.public_key)} is a P-256 (ES256) key: "
            "serve refuses its tokens unless started with --allow-es256",
            file=sys.stderr,
        )
    return 0


def token_command(args: argparse.Namespace) -> int:
    from fhir_adapter.hooks.clients import sign_token

    print(
        sign_token(
            args.trusted_clients,
            args.iss,
            args.private_key,
            args.aud,
            kid=args.kid,
            lifetime=args.lifetime,
        )
    )
    return 0
