"""`fhir-adapter preauth`: ask a payer to authorize an order (Da Vinci PAS)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fhir_adapter.cli.options import (
    SEVERITIES,
    SharedName,
    add_server_options,
    env_option,
    looks_like_url,
    positive_seconds,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "preauth",
        help="request prior authorization of a 47382 order from a payer (Da Vinci PAS)",
        description="Build the PAS request Bundle for a ServiceRequest (from files, or from "
        "--base-url), POST it to [payer]/Claim/$submit and record the decision: exit 0 "
        "certified, 1 not certified or pended, 2 error.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="FHIR JSON files (without --base-url)")
    env_option(p, "--service-request", "SERVICE_REQUEST", metavar="ID", required=True)
    env_option(
        p,
        "--payer",
        "PAYER_URL",
        metavar="URL",
        required=True,
        shared=SharedName("PAYER", looks_like_url, "an http(s) URL"),
        help="the payer's FHIR base",
    )
    env_option(
        p,
        "--payer-auth",
        "PAYER_AUTH",
        "none",
        choices=("none", "bearer", "jwt"),
        help="bearer: token from FHIR_ADAPTER_PAYER_TOKEN; jwt: a token signed per call "
        "with --payer-private-key as --payer-iss (what `serve --payer` checks)",
    )
    env_option(p, "--payer-iss", "PAYER_ISS", metavar="ISS")
    env_option(p, "--payer-private-key", "PAYER_PRIVATE_KEY", metavar="PEM")
    env_option(p, "--payer-kid", "PAYER_KID", metavar="KID")
    env_option(
        p,
        "--payer-timeout",
        "PAYER_TIMEOUT",
        "60",
        type=positive_seconds,
        help="seconds for the whole exchange with the payer, retries included (default 60)",
    )
    env_option(
        p,
        "--questionnaire-response",
        "QUESTIONNAIRE_RESPONSE",
        action="append",
        metavar="FILE",
        help="a completed questionnaire (or a DocumentReference) to send as additional "
        "information; repeatable",
    )
    env_option(
        p,
        "--out",
        "OUT",
        metavar="DIR",
        help="write the request and ClaimResponse here (default with --base-url: on the EHR)",
    )
    env_option(
        p,
        "--subscribe",
        "SUBSCRIBE",
        metavar="URL",
        help="when pended: a rest-hook Subscription at the payer for the final decision, "
        "sent to URL (serve --preauth-db ... /pas/notifications)",
    )
    env_option(p, "--status", "STATUS", action="store_true", help="ask the payer again ($inquire)")
    env_option(p, "--preauth-db", "PREAUTH_DB", "fhir-adapter-preauth.sqlite3", metavar="PATH")
    env_option(p, "--rules", "RULES", metavar="YAML", help="rule pack (default: bundled)")
    env_option(p, "--block-on", "BLOCK_ON", choices=SEVERITIES)
    add_server_options(p)
    p.set_defaults(handler=preauth_command)


def _payer_auth(args: argparse.Namespace) -> Any:
    from fhir_adapter.client.auth import BearerAuth
    from fhir_adapter.errors import AdapterError
    from fhir_adapter.pas.client import SignedCallAuth

    if args.payer_auth == "none":
        return None
    if args.payer_auth == "bearer":
        return BearerAuth(os.environ.get("FHIR_ADAPTER_PAYER_TOKEN", ""))
    if not args.payer_iss or not args.payer_private_key:
        raise AdapterError("--payer-auth jwt needs --payer-iss and --payer-private-key")
    try:
        with open(args.payer_private_key, "rb") as fh:
            pem = fh.read()
    except OSError as exc:
        raise AdapterError(
            f"--payer-private-key {args.payer_private_key}: cannot read it ({exc.strerror})"
        ) from None
    return SignedCallAuth(args.payer_iss, pem, args.payer_kid)


def preauth_command(args: argparse.Namespace) -> int:
    from fhir_adapter.cli.options import connect, option_source
    from fhir_adapter.client.rest import check_base_url
    from fhir_adapter.errors import AdapterError, printable
    from fhir_adapter.pack import load_pack
    from fhir_adapter.pas.client import PayerClient
    from fhir_adapter.pas.provider import (
        order_from_files,
        order_from_server,
        read_supporting,
        run_preauth,
    )
    from fhir_adapter.pas.record import PreauthRecords
    from fhir_adapter.pas.request import NO_SERVER
    from fhir_adapter.pipeline import load_store, now_iso

    if bool(args.paths) == bool(args.base_url):
        raise AdapterError(
            "give either PATH... (files) or --base-url (the EHR), not both or neither"
        )
    pack = load_pack(args.rules)
    supporting = read_supporting(args.questionnaire_response or [])
    check_base_url(args.payer, option_source(args, "payer", "--payer"))
    payer = PayerClient(args.payer, _payer_auth(args), deadline=args.payer_timeout)
    ehr = None
    if args.base_url:
        ehr = connect(args)
        store, order = order_from_server(ehr, pack, args.service_request)
        base = ehr.base_url
    else:
        store = load_store(args.paths, pack)
        order = order_from_files(store, args.service_request)
        base = NO_SERVER
    records = PreauthRecords(args.preauth_db)
    try:
        result = run_preauth(
            pack,
            store,
            order,
            payer,
            records,
            payer_url=args.payer,
            now=now_iso(),
            base=base,
            supporting=supporting,
            block_on=args.block_on,
            status_only=args.status,
            subscribe=args.subscribe,
            out_dir=args.out,
            ehr=ehr,
        )
    finally:
        records.close()
        payer.close()
        if ehr is not None:
            ehr.close()
    d = result.decision
    parts = [f"ServiceRequest/{printable(args.service_request)}: {d.action}"]
    if d.number:
        parts.append(f"authorization {printable(d.number)}")
    if d.period:
        parts.append(f"{d.period[0]}..{d.period[1]}")
    if d.reasons:
        parts.append("; ".join(printable(r) for r in d.reasons))
    if d.pend_reference:
        parts.append(f"pend {printable(d.pend_reference)}")
    print(" | ".join(parts))
    for path in result.written:
        print(f"recorded: {printable(path)}", file=sys.stderr)
    return 0 if d.certified else 1
