"""`fhir-adapter run` and `export`: work against a FHIR server."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fhir_adapter.cli.options import (
    Progress,
    add_report_options,
    add_server_options,
    connect,
    emit,
    env_option,
    fhir_date_or_datetime,
    fhir_instant_or_day,
    load_payer_options,
    load_rules_and_charges,
    whole_number,
)


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="evaluate the 47382 Procedures on a FHIR server and write back",
        description="Search a FHIR R4 server for Procedures coded CPT 47382 (or take the given ids), "
        "evaluate each case and write one transaction per case (Claim and DetectedIssues, updated in "
        "place on re-runs). Exit codes as for evaluate.",
    )
    add_server_options(run)
    env_option(
        run,
        "--procedure",
        action="append",
        metavar="ID",
        help="repeatable (variable: comma-separated)",
    )
    env_option(run, "--patient", "PATIENT", metavar="ID")
    env_option(
        run,
        "--since",
        "SINCE",
        metavar="DATE",
        type=fhir_date_or_datetime,
        help="performed on/after DATE (a FHIR date or dateTime)",
    )
    env_option(
        run, "--dry-run", action="store_true", help="print what would be written; write nothing"
    )
    env_option(
        run,
        "--concurrency",
        "CONCURRENCY",
        "4",
        type=whole_number(1, 64),
        help="cases read, evaluated and written at once (default 4; at most 8 requests in "
        "flight to one server); the output is the same as with 1",
    )
    where = run.add_mutually_exclusive_group()
    env_option(
        where,
        "--out",
        metavar="DIR",
        help="write one transaction Bundle per case and report.html (the worklist) into DIR, "
        "and nothing to any server",
    )
    env_option(
        where,
        "--write-base-url",
        "WRITE_BASE_URL",
        metavar="URL",
        help="write the output to this FHIR server instead of the one read (its own "
        "--write-auth options)",
    )
    add_server_options(run, write=True, url=False)
    env_option(
        run,
        "--force",
        action="store_true",
        help="write into an --out DIR that holds other files (they are left alone)",
    )
    add_report_options(run)
    run.set_defaults(handler=run_command)

    exp = sub.add_parser(
        "export",
        help="pull a FHIR Bulk Data $export into a directory (resumable)",
        description="Kick off $export (system, Patient or Group level), poll until done and download "
        "every NDJSON file into DIR. Run the same command again to resume an interrupted export; "
        "--cancel deletes the job under way.",
    )
    add_server_options(exp)
    env_option(
        exp,
        "--out",
        required=True,
        metavar="DIR",
        help="the export's directory: a new or empty one, or one an earlier export wrote; a new "
        "export there replaces the earlier one's files",
    )
    env_option(
        exp,
        "--force",
        action="store_true",
        help="export into an --out DIR that holds other files (they are left alone)",
    )
    env_option(exp, "--type", "EXPORT_TYPES", help="comma-separated resource types")
    env_option(
        exp,
        "--since",
        "EXPORT_SINCE",
        metavar="INSTANT",
        type=fhir_instant_or_day,
        help="only resources changed since INSTANT (a FHIR instant; a date means its first "
        "moment in any time zone)",
    )
    level = exp.add_mutually_exclusive_group()
    env_option(level, "--group", metavar="ID", help="Group/[id]/$export")
    env_option(level, "--patient-level", action="store_true", help="Patient/$export")
    env_option(exp, "--cancel", action="store_true", help="cancel the export under way in DIR")
    exp.set_defaults(handler=export_command)


def run_command(args: argparse.Namespace) -> int:
    from fhir_adapter.errors import AdapterError
    from fhir_adapter.pipeline import run_on_server

    pack, charges = load_rules_and_charges(args)
    if args.out:  # before any request: a wrong directory costs nothing
        from fhir_adapter.outdir import check_output_directory

        check_output_directory(args.out, "run", force=args.force)
    elif args.force:
        raise AdapterError("--force goes with --out DIR")
    if args.write_auth != "none" and not args.write_base_url:
        raise AdapterError("--write-auth goes with --write-base-url URL")
    if args.write_base_url:  # before any request to either server
        from fhir_adapter.client.rest import check_base_url

        check_base_url(args.write_base_url, "--write-base-url")
    payers = load_payer_options(args, pack)
    client = connect(args)
    writer = None
    progress = Progress()
    try:
        if args.write_base_url:
            writer = connect(args, write=True)
        if not args.out and not args.dry_run:
            refuse_unwritable(writer or client, "--write-base-url" if writer else "--base-url")
        results = run_on_server(
            client,
            pack,
            procedure_ids=args.procedure,
            patient=args.patient,
            since=args.since,
            block_on=args.block_on,
            dry_run=args.dry_run or bool(args.out),
            on_case=progress.tick,
            charges=charges,
            concurrency=args.concurrency,
            write_to=writer,
            lookup_earlier=not args.out,
            payers=payers,
        )
    finally:
        progress.done()
        client.close()
        if writer is not None:
            writer.close()
    outputs = [r.output for r in results]
    page = None
    if args.out:
        from fhir_adapter.report import render_html
        from fhir_adapter.sinks import write_bundles

        page = render_html(outputs, pack=pack, source=[args.base_url])
        write_bundles(outputs, args.out, report_html=page, force=args.force, kind="run")
    elif args.dry_run and args.format == "table":
        for r in results:
            print(_would_write(r))
    code = emit(outputs, args.format, pack=pack, source=[args.base_url], html=page)
    if args.out:
        print(
            f"fhir-adapter: {len(results)} transaction Bundle(s) and report.html in {args.out}",
            file=sys.stderr,
        )
        return code
    writes = sum(r.written for r in results)
    verb = "would write" if args.dry_run else "wrote"
    count = sum(1 for r in results if r.transaction) if args.dry_run else writes
    print(
        f"fhir-adapter: {verb} {count} transaction(s) for {len(results)} case(s)", file=sys.stderr
    )
    return code


def refuse_unwritable(client: Any, option: str) -> None:
    """A server whose CapabilityStatement lists no Claim or DetectedIssue writes is refused
    before any work (else every case would be read and evaluated, then fail to write)."""
    from fhir_adapter.client.urls import redact_url
    from fhir_adapter.errors import AdapterError

    missing = client.features.unwritable()
    if missing:
        raise AdapterError(
            f"{option} {redact_url(client.base_url)} accepts no {' or '.join(missing)} writes "
            "(its CapabilityStatement lists no create or update for them): write to another "
            "server with --write-base-url URL, or to files with --out DIR"
        )


def export_command(args: argparse.Namespace) -> int:
    from fhir_adapter.client.export import BulkExport, export_state
    from fhir_adapter.outdir import check_output_directory

    if not args.cancel:  # before any request: a wrong directory costs nothing
        check_output_directory(args.out, "export", force=args.force, also_ours=export_state)
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
        force=args.force,
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


def _would_write(result: Any) -> str:
    tx = result.transaction
    if tx is None:
        return f"{result.output.evaluation.procedure}: up to date, nothing to write"
    parts = [f"{e['request']['method']} {e['request']['url']}" for e in tx["entry"]]
    return f"{result.output.evaluation.procedure}: would write " + "; ".join(parts)
