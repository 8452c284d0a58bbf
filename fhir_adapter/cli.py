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
    fx = sub.add_parser("fixtures", help="the bundled 47382 test cases with known answers")
    fx_sub = fx.add_subparsers(dest="fixtures_command", metavar="ACTION", required=True)
    fx_list = fx_sub.add_parser("list", help="each case, what it exercises, its expected result")
    fx_list.add_argument("--format", choices=("table", "json"), default="table")
    fx_write = fx_sub.add_parser("write", help="write the fixtures into DIR")
    fx_write.add_argument("directory", metavar="DIR")
    fx_write.add_argument(
        "--as", dest="form", choices=("bundle", "transaction", "ndjson"), default="bundle"
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
        if args.command == "fixtures":
            return _fixtures(args)
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


def _fixtures(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fhir_adapter.catalog import list_fixtures, write_fixtures

    if args.fixtures_command == "write":
        written = write_fixtures(Path(args.directory), args.form)
        print(f"wrote {len(written)} files to {args.directory}")
        return 0
    cases = list_fixtures()
    if args.format == "json":
        import orjson

        doc = [c.summary() for c in cases]
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    for c in cases:
        print(f"{c.name}: {c.description}")
        print(f"    exercises: {'; '.join(c.exercises)}")
        for e in c.expected:
            findings = ", ".join(e["findings"]) or "no findings"
            mods = f"; modifiers {', '.join(e['modifiers'])}" if e["modifiers"] else ""
            print(f"    {e['procedure']}: {e['outcome']} ({findings}{mods})")
    return 0


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
