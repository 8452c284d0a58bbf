"""`fhir-adapter`: evaluate CPT 47382 cases from files or a FHIR server.

Imports are lazy so that `--help` stays fast; a user mistake is one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_adapter.rules import Pack
    from fhir_adapter.sources.auth import _OriginBound
    from fhir_adapter.sources.rest import FhirClient

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
        "--workers",
        type=int,
        default=int(_env("WORKERS", "0") or 0),
        help="parallel processes (default: all cores)",
    )
    ev.add_argument(
        "--engine",
        choices=("local", "spark"),
        default=_env("ENGINE", "local"),
        help="spark: run on Apache Spark (needs the spark extra); PATH is an NDJSON directory or "
        "URI and --out receives reports/ and bundles/",
    )
    ev.add_argument("--spark-master", default=_env("SPARK_MASTER", "local[2]"))
    ev.add_argument(
        "--validate",
        action="store_true",
        help="also validate every written resource against the FHIR R4B models",
    )
    run = sub.add_parser(
        "run",
        help="evaluate the 47382 Procedures on a FHIR server and write back",
        description="Search a FHIR R4 server for Procedures coded CPT 47382 (or take the given ids), "
        "evaluate each case and write one transaction per case (Claim and DetectedIssues, updated in "
        "place on re-runs). Exit codes as for evaluate.",
    )
    _add_server_options(run)
    run.add_argument("--procedure", action="append", default=[], metavar="ID", help="repeatable")
    run.add_argument("--patient", metavar="ID", default=_env("PATIENT"))
    run.add_argument(
        "--since", metavar="DATE", default=_env("SINCE"), help="performed on/after DATE"
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print what would be written; write nothing"
    )
    _add_report_options(run)

    exp = sub.add_parser(
        "export",
        help="pull a FHIR Bulk Data $export into a directory (resumable)",
        description="Kick off $export (system, Patient or Group level), poll until done and download "
        "every NDJSON file into DIR. Run the same command again to resume an interrupted export; "
        "--cancel deletes the job under way.",
    )
    _add_server_options(exp)
    exp.add_argument("--out", required=True, metavar="DIR")
    exp.add_argument("--type", default=_env("EXPORT_TYPES"), help="comma-separated resource types")
    exp.add_argument("--since", default=None, metavar="INSTANT")
    level = exp.add_mutually_exclusive_group()
    level.add_argument("--group", metavar="ID", help="Group/[id]/$export")
    level.add_argument("--patient-level", action="store_true", help="Patient/$export")
    exp.add_argument("--cancel", action="store_true", help="cancel the export under way in DIR")

    syn = sub.add_parser(
        "synth", help="write a seeded synthetic Bulk Data NDJSON export (for benchmarks)"
    )
    syn.add_argument("directory", metavar="DIR")
    syn.add_argument("--patients", type=int, default=1000)
    syn.add_argument("--seed", type=int, default=47382)
    syn.add_argument("--gzip", action="store_true")

    fx = sub.add_parser("fixtures", help="the bundled 47382 test cases with known answers")
    fx_sub = fx.add_subparsers(dest="fixtures_command", metavar="ACTION", required=True)
    fx_list = fx_sub.add_parser("list", help="each case, what it exercises, its expected result")
    fx_list.add_argument("--format", choices=("table", "json"), default="table")
    fx_write = fx_sub.add_parser("write", help="write the fixtures into DIR")
    fx_write.add_argument("directory", metavar="DIR")
    fx_write.add_argument(
        "--as", dest="form", choices=("bundle", "transaction", "ndjson"), default="bundle"
    )
    fx_load = fx_sub.add_parser("load", help="load every fixture into a server (idempotent)")
    _add_server_options(fx_load)
    return parser


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default=_env("BASE_URL"), help="FHIR R4 base URL")
    p.add_argument(
        "--auth",
        choices=("none", "bearer", "client-secret", "smart-backend"),
        default=_env("AUTH", "none"),
        help="bearer: token from FHIR_ADAPTER_TOKEN; client-secret: secret from "
        "FHIR_ADAPTER_CLIENT_SECRET; smart-backend: --private-key",
    )
    p.add_argument("--client-id", default=_env("CLIENT_ID"))
    p.add_argument("--private-key", metavar="PATH", default=_env("PRIVATE_KEY"))
    p.add_argument("--key-id", default=_env("KEY_ID"))
    p.add_argument("--jku", default=_env("JKU"), help="JWKS URL to put in the assertion header")
    p.add_argument("--token-url", default=_env("TOKEN_URL"), help="default: smart-configuration")
    p.add_argument("--scope", default=_env("SCOPE"))
    p.add_argument("--timeout", type=float, default=float(_env("TIMEOUT", "60") or 60))


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
    if getattr(args, "workers", 0) < 0:
        parser.error("--workers must be 0 (all cores) or more")
    from fhir_adapter.errors import AdapterError

    try:
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "fixtures":
            return _fixtures(args)
        if args.command == "run":
            return _run(args)
        if args.command == "export":
            return _export(args)
        if args.command == "synth":
            from fhir_adapter.synth import generate

            counts = generate(args.directory, args.patients, args.seed, args.gzip)
            print(f"wrote {sum(counts.values())} resources to {args.directory}", file=sys.stderr)
            return 0
    except AdapterError as exc:
        print(f"fhir-adapter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # disk full, permission denied, ... on a path the user gave
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"fhir-adapter: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fhir-adapter: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE  # pragma: no cover - parser.error exits


def _evaluate(args: argparse.Namespace) -> int:
    import time

    from fhir_adapter.pipeline import evaluate_paths
    from fhir_adapter.rules import load_pack

    pack = load_pack(args.rules)
    if args.engine == "spark":
        return _evaluate_spark(args, pack)
    workers = args.workers or os.cpu_count() or 1
    progress = _Progress()
    started = time.monotonic()
    try:
        outputs = evaluate_paths(
            args.paths, pack, block_on=args.block_on, workers=workers, on_progress=progress.update
        )
    finally:
        progress.done()
    if args.validate:
        from fhir_adapter.writeback.validate import validate_resource

        for output in outputs:
            validate_resource(output.bundle())
    if args.out:
        from fhir_adapter.sinks import write_bundles

        write_bundles(outputs, args.out)
    code = _emit(outputs, args.format)
    if progress.enabled:
        from fhir_adapter.report import summary

        print(f"{summary(outputs)} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return code


def make_auth(args: argparse.Namespace) -> _OriginBound | None:
    """The auth object for the chosen mode; secrets only from the environment or files."""
    from fhir_adapter.errors import AdapterError
    from fhir_adapter.sources import auth

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
    from fhir_adapter.errors import AdapterError
    from fhir_adapter.sources.rest import FhirClient

    if not args.base_url:
        raise AdapterError("--base-url (or FHIR_ADAPTER_BASE_URL) is required")
    return FhirClient(
        args.base_url,
        make_auth(args),
        timeout=(min(10.0, args.timeout), args.timeout),
    )


def _run(args: argparse.Namespace) -> int:
    from fhir_adapter.pipeline import run_on_server
    from fhir_adapter.rules import load_pack

    pack = load_pack(args.rules)
    client = connect(args)
    progress = _Progress()
    try:
        results = run_on_server(
            client,
            pack,
            procedure_ids=args.procedure,
            patient=args.patient,
            since=args.since,
            block_on=args.block_on,
            dry_run=args.dry_run,
            on_case=progress.tick,
        )
    finally:
        progress.done()
        client.close()
    outputs = [r.output for r in results]
    if args.dry_run and args.format == "table":
        for r in results:
            print(_would_write(r))
    code = _emit(outputs, args.format)
    writes = sum(r.written for r in results)
    verb = "would write" if args.dry_run else "wrote"
    count = sum(1 for r in results if r.transaction) if args.dry_run else writes
    print(
        f"fhir-adapter: {verb} {count} transaction(s) for {len(results)} case(s)", file=sys.stderr
    )
    return code


def _export(args: argparse.Namespace) -> int:
    from fhir_adapter.sources.export import BulkExport

    client = connect(args)
    say = (
        (lambda msg: print(f"fhir-adapter: {msg}", file=sys.stderr))
        if sys.stderr.isatty()
        else None
    )
    job = BulkExport(
        client,
        args.out,
        types=[t for t in (args.type or "").split(",") if t],
        since=args.since,
        group=args.group,
        patient_level=args.patient_level,
        on_progress=say,
    )
    try:
        if args.cancel:
            cancelled = job.cancel()
            print(
                "cancelled" if cancelled else "no export under way in that directory",
                file=sys.stderr,
            )
            return 0
        result = job.run()
    finally:
        client.close()
    print(
        f"fhir-adapter: {len(result.files)} file(s) in {args.out} "
        f"({result.downloaded} downloaded, {result.skipped} already complete)",
        file=sys.stderr,
    )
    for message in result.error_messages:
        print(f"fhir-adapter: the server reported: {message}", file=sys.stderr)
    return 0


def _would_write(result: object) -> str:
    from fhir_adapter.pipeline import ServerResult

    assert isinstance(result, ServerResult)
    tx = result.transaction
    if tx is None:
        return f"{result.output.evaluation.procedure}: up to date, nothing to write"
    parts = [f"{e['request']['method']} {e['request']['url']}" for e in tx["entry"]]
    return f"{result.output.evaluation.procedure}: would write " + "; ".join(parts)


class _Progress:
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


def _evaluate_spark(args: argparse.Namespace, pack: Pack) -> int:
    from pathlib import Path

    from fhir_adapter.errors import AdapterError
    from fhir_adapter.spark import evaluate_on_spark, read_reports

    if len(args.paths) != 1 or not args.out:
        raise AdapterError("--engine spark takes one input (directory or URI) and needs --out")
    result = evaluate_on_spark(
        args.paths[0],
        args.out,
        master=args.spark_master,
        pack=pack,
        block_on=args.block_on,
    )
    if args.format == "json" and Path(result.reports).is_dir():
        import orjson

        doc = {"cases": read_reports(result.reports)}
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    print(
        f"fhir-adapter: {result.cases} case(s), {result.claims} claim(s); "
        f"reports in {result.reports}, bundles in {result.bundles}",
        file=sys.stderr,
    )
    return 1 if result.cases > result.claims else 0


def _fixtures(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fhir_adapter.catalog import list_fixtures, load_fixtures, write_fixtures

    if args.fixtures_command == "load":
        client = connect(args)
        try:
            loaded = load_fixtures(client)
        finally:
            client.close()
        print(f"loaded {loaded} fixture(s) into {args.base_url}", file=sys.stderr)
        return 0
    if args.fixtures_command == "write":
        written = write_fixtures(Path(args.directory), args.form)
        print(f"wrote {len(written)} files to {args.directory}", file=sys.stderr)
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
