"""`fhir-adapter evaluate`: files, Bundles and NDJSON exports, locally or on Spark."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from fhir_adapter.cli.options import (
    Progress,
    add_report_options,
    emit,
    env_option,
    load_payer_options,
    load_rules_and_charges,
    warn,
    whole_number,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fhir_adapter.pack import Pack


def register(sub: Any) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="evaluate FHIR JSON/NDJSON files or directories",
        description="Evaluate every Procedure coded CPT 47382 in the given files and directories "
        "(Bundles of any type, single resources, NDJSON, .gz). Exit 0: every case can be "
        "claimed; 1: some case has a blocking finding; 2: usage or input error.",
    )
    ev.add_argument("paths", nargs="+", metavar="PATH")
    add_report_options(ev)
    env_option(
        ev,
        "--out",
        metavar="DIR",
        help="write one transaction Bundle per case and report.html into DIR, replacing what "
        "an earlier evaluate wrote there",
    )
    env_option(
        ev,
        "--force",
        action="store_true",
        help="write into an --out DIR that holds other files (they are left alone)",
    )
    env_option(
        ev,
        "--workers",
        "WORKERS",
        "0",
        type=whole_number(0, rule="0 (all cores) or more"),
        help="parallel processes (default 0: all cores)",
    )
    env_option(
        ev,
        "--engine",
        "ENGINE",
        "local",
        choices=("local", "spark"),
        help="spark: run on Apache Spark (needs the spark extra); PATH is an NDJSON directory or "
        "URI and --out receives reports/ and bundles/",
    )
    env_option(ev, "--spark-master", "SPARK_MASTER", "local[2]")
    env_option(
        ev,
        "--skip-bad-lines",
        action="store_true",
        help="go on past truncated or corrupt NDJSON lines; count them in the summary and report",
    )
    env_option(
        ev,
        "--validate",
        action="store_true",
        help="also validate every written resource against the FHIR R4B models",
    )
    ev.set_defaults(handler=run)


# Procedures named one by one when they hold the code in a form that is no coding of it
MISCODED_SHOWN = 20


def run(args: argparse.Namespace) -> int:
    import time

    from fhir_adapter.errors import printable
    from fhir_adapter.pipeline import evaluate_store, gc_paused, load_store

    pack, charges = load_rules_and_charges(args)
    if args.engine == "spark":
        return _evaluate_spark(args, pack, charges)
    payers = load_payer_options(args, pack)
    if args.out:  # before any work: a wrong directory is found in a second, not an hour
        from fhir_adapter.outdir import check_output_directory

        check_output_directory(args.out, "evaluate", force=args.force)
    workers = args.workers or os.cpu_count() or 1
    progress = Progress()
    started = time.monotonic()
    try:
        store = load_store(args.paths, pack, workers=workers, skip_bad_lines=args.skip_bad_lines)
        with gc_paused():
            outputs = evaluate_store(
                store,
                pack,
                block_on=args.block_on,
                workers=workers,
                on_progress=progress.update,
                charges=charges,
                payers=payers,
            )
    finally:
        progress.done()
    meta = (
        {"input": {"bad_lines": len(store.bad_lines), "skipped": store.bad_lines[:100]}}
        if args.skip_bad_lines
        else None
    )
    if args.validate:
        from fhir_adapter.writeback.validate import validate_resource

        for output in outputs:
            validate_resource(output.bundle())
    page = None
    if args.out:
        from fhir_adapter.report import render_html
        from fhir_adapter.sinks import write_bundles

        page = render_html(outputs, pack=pack, source=args.paths)
        write_bundles(outputs, args.out, report_html=page, force=args.force)
    for line in store.miscoded[:MISCODED_SHOWN]:
        warn(f"{line}: not read as a case")
    if len(store.miscoded) > MISCODED_SHOWN:
        more = len(store.miscoded) - MISCODED_SHOWN
        warn(f"{more} more Procedure(s) hold the code in a form that is no coding of it")
    code = emit(outputs, args.format, pack=pack, source=args.paths, meta=meta, html=page)
    for notice in store.notices:
        print(f"fhir-adapter: note: {printable(notice)}", file=sys.stderr)
    if store.bad_lines:
        shown = ", ".join(store.bad_lines[:5]) + (" ..." if len(store.bad_lines) > 5 else "")
        print(
            f"fhir-adapter: skipped {len(store.bad_lines)} bad NDJSON line(s): {shown}",
            file=sys.stderr,
        )
    if progress.enabled:
        from fhir_adapter.report import summary

        print(f"{summary(outputs)} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return code


def _evaluate_spark(
    args: argparse.Namespace, pack: Pack, charges: Mapping[str, float] | None
) -> int:
    from pathlib import Path

    from fhir_adapter.errors import AdapterError
    from fhir_adapter.spark import evaluate_on_spark, read_reports

    if len(args.paths) != 1 or not args.out:
        raise AdapterError("--engine spark takes one input (directory or URI) and needs --out")
    if args.skip_bad_lines or args.force:
        flag = "--skip-bad-lines" if args.skip_bad_lines else "--force"
        raise AdapterError(f"{flag} works with the local engine only")
    result = evaluate_on_spark(
        args.paths[0],
        args.out,
        master=args.spark_master,
        pack=pack,
        block_on=args.block_on,
        charges=charges,
        payers=load_payer_options(args, pack),
    )
    if result.cases and Path(result.reports).is_dir():
        from fhir_adapter.report import (
            render_csv,
            render_html,
            render_json_rows,
            render_table_rows,
        )
        from fhir_adapter.sinks import write_report_html

        rows = read_reports(result.reports)
        page = render_html(rows, pack=pack, source=args.paths)
        write_report_html(args.out, page)
        if args.format == "json":
            sys.stdout.buffer.write(render_json_rows(rows))
            sys.stdout.flush()
        elif args.format == "html":
            sys.stdout.write(page)
        elif args.format == "csv":
            sys.stdout.write(render_csv(rows))
        else:
            sys.stdout.write(render_table_rows(rows))
    print(
        f"fhir-adapter: {result.cases} case(s), {result.claims} claim(s); "
        f"reports in {result.reports}, bundles in {result.bundles}",
        file=sys.stderr,
    )
    return 1 if result.cases > result.claims else 0
