"""`fhir-adapter`: evaluate CPT 47382 cases from files or a FHIR server.

Each command lives in its own module with a `register(subparsers)` function that
adds its parser and sets `handler`. Imports inside handlers are lazy so that
`--help` stays fast; a user mistake is one line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fhir_adapter.cli import evaluate, fixtures, hooks, preauth, serve, server, tables
from fhir_adapter.cli.options import EXIT_USAGE, apply_environment

COMMANDS = (evaluate, server, fixtures, tables, serve, hooks, preauth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-adapter",
        description="Check CPT 47382 (percutaneous RF ablation of liver tumors) cases in FHIR R4 "
        "data and produce Claim and DetectedIssue resources.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, every option not on it filled from its `FHIR_ADAPTER_*` variable.

    Raises OptionError (exit 2) for a variable the option would refuse.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_environment(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(version("fhir-adapter"))
        return 0
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from fhir_adapter.errors import AdapterError, printable

    try:
        apply_environment(parser, args)
        code: int = args.handler(args)
        return code
    except AdapterError as exc:  # one line a problem: a broken pack may have several
        for line in str(exc).splitlines() or [""]:
            print(f"fhir-adapter: error: {printable(line)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # disk full, permission denied, ... on a path the user gave
        where = f" {exc.filename}:" if getattr(exc, "filename", None) else ""
        print(f"fhir-adapter: error:{printable(where)} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fhir-adapter: interrupted", file=sys.stderr)
        return 130
