"""`fhir-adapter`: evaluate CPT 47382 cases from files or a FHIR server.

Imports are lazy so that `--help` stays fast; a user mistake is one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

EXIT_USAGE = 2
SEVERITIES = ("high", "moderate", "low")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"FHIR_ADAPTER_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-adapter",
        description="Check CPT 47382 (percutaneous RF ablation of liver tumors) cases in FHIR R4 "
        "data and produce Claim and DetectedIssue resources.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ev = sub.add_parser(
        "evaluate",
        help="evaluate FHIR JSON/NDJSON files or directories",
        description="Evaluate every Procedure coded CPT 47382 in the given files and directories "
        "(Bundles of any type, single resources, NDJSON, .gz). Exit 0: every case can be "
        "claimed; 1: some case has a blocking finding; 2: usage or input error.",
    )
    ev.add_argument("paths", nargs="+", metavar="PATH")
    _add_report_options(ev)
    ev.add_argument("--out", metavar="DIR", help="write one transaction Bundle per case into DIR")
    ev.add_argument(
        "--validate",
        action="store_true",
        help="also validate every written resource against the FHIR R4B models",
    )
    return parser


def _add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default=_env("FORMAT", "table"))
    p.add_argument(
        "--block-on",
        choices=SEVERITIES,
        default=_env("BLOCK_ON"),
        help="lowest finding severity that blocks the Claim (default: the pack's, high)",
    )
    p.add_argument(
        "--rules", metavar="YAML", default=_env("RULES"), help="rule pack (default: bundled)"
    )


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
    from fhir_adapter.errors import AdapterError

    try:
        if args.command == "evaluate":
            return _evaluate(args)
    except AdapterError as exc:
        print(f"fhir-adapter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fhir-adapter: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE  # pragma: no cover - parser.error exits


def _evaluate(args: argparse.Namespace) -> int:
    from fhir_adapter.pipeline import evaluate_paths
    from fhir_adapter.rules import load_pack

    pack = load_pack(args.rules)
    outputs = evaluate_paths(args.paths, pack, block_on=args.block_on)
    if args.validate:
        from fhir_adapter.writeback.validate import validate_resource

        for output in outputs:
            validate_resource(output.bundle())
    if args.out:
        from fhir_adapter.sinks import write_bundles

        write_bundles(outputs, args.out)
    return _emit(outputs, args.format)


def _emit(outputs: Sequence[object], fmt: str) -> int:
    from fhir_adapter.report import exit_code, render_json, render_table
    from fhir_adapter.writeback import CaseOutput

    cases = [o for o in outputs if isinstance(o, CaseOutput)]
    if fmt == "json":
        sys.stdout.buffer.write(render_json(cases))
        sys.stdout.flush()
    else:
        sys.stdout.write(render_table(cases))
    if not cases:
        print("fhir-adapter: no Procedure coded CPT 47382 was found", file=sys.stderr)
    return exit_code(cases)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
