"""`fhir-adapter fixtures` and `synth`: the test tooling, imported only when asked for."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fhir_adapter.cli.options import (
    add_server_options,
    connect,
    env_option,
    format_option,
    whole_number,
)


def register(sub: Any) -> None:
    syn = sub.add_parser(
        "synth", help="write a seeded synthetic Bulk Data NDJSON export (for benchmarks)"
    )
    syn.add_argument(
        "directory",
        metavar="DIR",
        help="a new or empty directory, or one an earlier synth wrote (its files are replaced)",
    )
    env_option(syn, "--patients", type=whole_number(1), default="1000", help="at least 1")
    env_option(syn, "--seed", type=int, default="47382")
    env_option(syn, "--gzip", action="store_true")
    env_option(
        syn,
        "--dense",
        action="store_true",
        help="one 47382 case per patient and nothing else (a cohort export)",
    )
    env_option(
        syn,
        "--force",
        action="store_true",
        help="write into a DIR that holds other files (they are left alone)",
    )
    syn.set_defaults(handler=synth_command)

    fx = sub.add_parser("fixtures", help="the bundled 47382 test cases with known answers")
    fx_sub = fx.add_subparsers(dest="fixtures_command", metavar="ACTION", required=True)
    fx_list = fx_sub.add_parser("list", help="each case, what it exercises, its expected result")
    format_option(fx_list, "FIXTURES_FORMAT", ("table", "json"))
    fx_write = fx_sub.add_parser("write", help="write the fixtures into DIR")
    fx_write.add_argument("directory", metavar="DIR")
    env_option(
        fx_write,
        "--as",
        "FIXTURES_AS",
        default="bundle",
        dest="form",
        choices=("bundle", "transaction", "ndjson"),
    )
    fx_load = fx_sub.add_parser("load", help="load every fixture into a server (idempotent)")
    add_server_options(fx_load)
    fx.set_defaults(handler=fixtures_command)


def synth_command(args: argparse.Namespace) -> int:
    """The export replaces what an earlier synth wrote in DIR (a `--gzip` run leaves no
    plain NDJSON of the last one beside it); a DIR holding other files is refused unless
    `--force`, as for `evaluate --out`."""
    from pathlib import Path

    from fhir_adapter.outdir import publish
    from fhir_adapter.testing.synth import generate

    counts: dict[str, int] = {}

    def write(staging: Path) -> None:
        counts.update(generate(staging, args.patients, args.seed, args.gzip, dense=args.dense))

    publish(args.directory, "synth", write, force=args.force, option="synth DIR")
    print(f"wrote {sum(counts.values())} resources to {args.directory}", file=sys.stderr)
    return 0


def fixtures_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fhir_adapter.testing.catalog import list_fixtures, load_fixtures, write_fixtures

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
