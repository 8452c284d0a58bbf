"""Options shared by several commands, and the checks that keep environment defaults honest.

Every option may come from `FHIR_ADAPTER_<NAME>`. argparse converts a string
default with the option's `type` but never checks it against `choices`, so an
environment value is checked here with the same rules as the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_adapter.client.auth import FhirAuth
    from fhir_adapter.client.rest import FhirClient
    from fhir_adapter.pack import Pack
    from fhir_adapter.writeback import CaseOutput

EXIT_USAGE = 2
SEVERITIES = ("high", "moderate", "low")
FORMATS = ("table", "json", "html", "csv")


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"FHIR_ADAPTER_{name}", default)


def env_option(
    p: argparse.ArgumentParser, flag: str, env_name: str, default: str | None = None, **kw: object
) -> None:
    """An option whose default comes from FHIR_ADAPTER_<env_name>, checked like the flag."""
    action = p.add_argument(flag, default=env(env_name, default), **kw)  # type: ignore[arg-type]
    action.env_name = env_name  # type: ignore[attr-defined]


def check_environment_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject an environment default outside an option's choices (argparse does not)."""
    for action in _all_actions(parser, args):
        name = getattr(action, "env_name", None)
        if not name or not action.choices:
            continue
        value = getattr(args, action.dest, None)
        if value is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            parser.error(f"FHIR_ADAPTER_{name}={value!r} is not one of: {choices}")


def _all_actions(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[argparse.Action]:
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                actions += _all_actions(chosen, args)
    return actions


def positive_seconds(text: str) -> float:
    """A finite number of seconds above zero (requests rejects the rest with a traceback)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds above 0")
    return value


def add_server_options(p: argparse.ArgumentParser) -> None:
    env_option(p, "--base-url", "BASE_URL", help="FHIR R4 base URL")
    env_option(
        p,
        "--auth",
        "AUTH",
        "none",
        choices=("none", "bearer", "client-secret", "smart-backend"),
        help="bearer: token from FHIR_ADAPTER_TOKEN; client-secret: secret from "
        "FHIR_ADAPTER_CLIENT_SECRET; smart-backend: --private-key",
    )
    env_option(p, "--client-id", "CLIENT_ID")
    env_option(p, "--private-key", "PRIVATE_KEY", metavar="PATH")
    env_option(p, "--key-id", "KEY_ID")
    env_option(p, "--jku", "JKU", help="JWKS URL to put in the assertion header")
    env_option(p, "--token-url", "TOKEN_URL", help="default: smart-configuration")
    env_option(p, "--scope", "SCOPE")
    env_option(p, "--timeout", "TIMEOUT", "60", type=positive_seconds, help="seconds (> 0)")


def add_report_options(p: argparse.ArgumentParser, formats: Sequence[str] = FORMATS) -> None:
    env_option(p, "--format", "FORMAT", "table", choices=tuple(formats))
    env_option(
        p,
        "--block-on",
        "BLOCK_ON",
        choices=SEVERITIES,
        help="lowest finding severity that blocks the Claim (default: the pack's, high)",
    )
    env_option(p, "--rules", "RULES", metavar="YAML", help="rule pack (default: bundled)")
    env_option(
        p,
        "--charges",
        "CHARGES",
        metavar="FILE",
        help="chargemaster (CSV code,amount or a JSON/YAML mapping) pricing the Claim lines",
    )


def load_rules_and_charges(args: argparse.Namespace) -> tuple[Pack, dict[str, float] | None]:
    """The pack of `--rules` and the chargemaster of `--charges`, read before any work starts."""
    from fhir_adapter.pack import load_pack
    from fhir_adapter.writeback.charges import load_charges

    return load_pack(args.rules), load_charges(args.charges) if args.charges else None


def make_auth(args: argparse.Namespace) -> FhirAuth | None:
    """The auth object for the chosen mode; secrets only from the environment or files."""
    from fhir_adapter.client import auth
    from fhir_adapter.errors import AdapterError

    extra = {"token_endpoint": args.token_url}
    if args.scope:
        extra["scope"] = args.scope
    if args.auth == "none":
        return None
    if args.auth == "bearer":
        return auth.BearerAuth(os.environ.get("FHIR_ADAPTER_TOKEN", ""))
    if args.auth == "client-secret":
        return auth.ClientSecretAuth(
            args.client_id or "", os.environ.get("FHIR_ADAPTER_CLIENT_SECRET", ""), **extra
        )
    if not args.private_key:
        raise AdapterError("--auth smart-backend needs --private-key PATH")
    try:
        with open(args.private_key, "rb") as fh:
            pem = fh.read()
    except OSError as exc:
        raise AdapterError(f"cannot read private key {args.private_key}: {exc.strerror}") from None
    return auth.SmartBackendAuth(
        args.client_id or "", pem, key_id=args.key_id, jku=args.jku, **extra
    )


def connect(args: argparse.Namespace) -> FhirClient:
    from fhir_adapter.client.rest import FhirClient
    from fhir_adapter.errors import AdapterError

    if not args.base_url:
        raise AdapterError("--base-url (or FHIR_ADAPTER_BASE_URL) is required")
    return FhirClient(
        args.base_url,
        make_auth(args),
        timeout=(min(10.0, args.timeout), args.timeout),
    )


class Progress:
    """A one-line progress bar on a terminal (cases, throughput, ETA); silent otherwise."""

    def __init__(self) -> None:
        import time

        self.enabled = sys.stderr.isatty()
        self.count = 0
        self.start = time.monotonic()

    def tick(self, _result: object) -> None:
        self.update(self.count + 1, 0)

    def update(self, done: int, total: int) -> None:
        import time

        self.count = done
        if not self.enabled:
            return
        rate = done / max(1e-6, time.monotonic() - self.start)
        line = f"\r{done} case(s), {rate:.1f}/s"
        if total:
            width = 30
            filled = int(width * done / total)
            eta = (total - done) / rate if rate else 0.0
            line = f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} cases, {rate:.0f}/s, ETA {eta:.0f} s"
        sys.stderr.write(line)
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.count:
            sys.stderr.write("\n")


def emit(
    cases: Sequence[CaseOutput],
    fmt: str,
    *,
    pack: Pack | None = None,
    source: Sequence[str] = (),
    meta: dict[str, Any] | None = None,
    html: str | None = None,
) -> int:
    """Print the report in `fmt` on stdout; the exit code says whether anything blocks.

    `html`: the page already rendered for `--out`, so that it is not rendered twice.
    """
    from fhir_adapter.report import exit_code, render_csv, render_html, render_json, render_table

    if fmt == "json":
        sys.stdout.buffer.write(render_json(cases, meta=meta))
        sys.stdout.flush()
    elif fmt == "html":
        sys.stdout.write(html if html is not None else render_html(cases, pack=pack, source=source))
    elif fmt == "csv":
        sys.stdout.write(render_csv(cases))
    else:
        sys.stdout.write(render_table(cases))
    if not cases:
        print("fhir-adapter: no Procedure coded CPT 47382 was found", file=sys.stderr)
    return exit_code(cases)
