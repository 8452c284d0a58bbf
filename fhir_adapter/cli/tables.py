"""`fhir-adapter tables`: load a CMS release (PFS, MUE, PTP files) into the tables directory."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fhir_adapter.cli.options import env_option


def register(sub: Any) -> None:
    tables = sub.add_parser(
        "tables", help="the CMS payment-policy tables (PFS relative values, MUE, NCCI PTP)"
    )
    actions = tables.add_subparsers(dest="tables_command", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import",
        help="read CMS release files (PPRRVU*.csv, MCR_MUE_PractitionerServices_*.csv, "
        "ccipra-*.txt, or the .zip downloads holding them) and make them the tables",
    )
    imp.add_argument("files", nargs="+", metavar="FILE")
    env_option(
        imp, "--into", "TABLES", metavar="DIR", help="tables directory (default: the pack's)"
    )
    show = actions.add_parser("show", help="which release each table comes from, and its rows")
    env_option(
        show, "--from", "TABLES", metavar="DIR", help="tables directory (default: the pack's)"
    )
    tables.set_defaults(handler=tables_command)


def tables_command(args: argparse.Namespace) -> int:
    from fhir_adapter.billing.tables import default_directory, import_files, load_tables

    if args.tables_command == "import":
        into = args.into or default_directory()
        counts = import_files(args.files, into)
        done = ", ".join(f"{kind} {n} row(s)" for kind, n in counts.items())
        print(f"imported {done} into {into}", file=sys.stderr)
        return 0
    tables = load_tables(getattr(args, "from") or None)
    counts = tables.counts()
    for kind, release in tables.release().items():
        print(f"{kind}\t{counts[kind]} row(s)\t{release}")
    return 0
