"""A server that supports less and answers slowly: cases/s with --concurrency 1 and 8.

The test server (Medplum on loopback) behind the tests' proxy (tests/fhir_server/proxy.py)
at 100 ms per request: once as an EHR API that does no batch, transaction, `_include` or
`_revinclude` and caps `_count` at 10, once with latency only (the server's own batch
and includes). The same generated export is read each time, as a dry run (read,
evaluate, plan the write) with the same evaluation time, and the outputs are compared.
Figures are ratios within the run; results go to benchmarks/results-ehr.json and the
"Against a slow, limited server" section of benchmarks/README.md.

    python benchmarks/bench_ehr.py [--patients 300] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = "2026-11-27T00:00:00+00:00"
MARK = ("<!-- ehr -->", "<!-- /ehr -->")


def timed_run(base: str, concurrency: int) -> dict[str, Any]:
    from fhir_adapter.client.rest import FhirClient
    from fhir_adapter.pipeline import run_on_server

    with FhirClient(base, timeout=(5, 300)) as client:
        started = time.perf_counter()
        results = run_on_server(client, dry_run=True, now=NOW, concurrency=concurrency)
        elapsed = time.perf_counter() - started
        requests = sum(client.requests.values())
    rows = []
    for r in results:
        row = r.output.report()
        row.pop("reads", None)
        rows.append(row)
    n = len(results)
    return {
        "cases": n,
        "seconds": round(elapsed, 2),
        "cases_per_s": round(n / elapsed, 2),
        "reads_per_case": round(sum(r.reads for r in results) / n, 2),
        "requests": requests,
        "digest": hash(json.dumps(rows, sort_keys=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()

    from benchmarks.bench import export_for, load_export, versions
    from fhir_adapter.client.rest import FhirClient
    from tests.fhir_server.harness import TestServer
    from tests.fhir_server.proxy import LimitedProxy

    path = export_for(args.patients)
    server = TestServer()
    proxy = LimitedProxy(server.root, latency=args.latency)
    try:
        with FhirClient(server.base, timeout=(5, 300)) as client:
            load_export(client, path)
        proxy.limits = False
        full = timed_run(proxy.base, 1)
        proxy.limits = True
        one = timed_run(proxy.base, 1)
        eight = timed_run(proxy.base, 8)
    finally:
        proxy.stop()
        server.stop()
    same = one["digest"] == eight["digest"] == full["digest"]
    results = {
        "patients": args.patients,
        "latency_s": args.latency,
        "with_batch_and_include": full,
        "limited_concurrency_1": one,
        "limited_concurrency_8": eight,
        "speed_up_8_over_1": round(eight["cases_per_s"] / one["cases_per_s"], 2),
        "same_outputs": same,
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for part in ("with_batch_and_include", "limited_concurrency_1", "limited_concurrency_8"):
        results[part].pop("digest")
    (ROOT / "benchmarks" / "results-ehr.json").write_text(json.dumps(results, indent=2) + "\n")
    write_readme(results)
    print(json.dumps(results, indent=2))
    if not same:
        sys.exit("the outputs differ between runs")


def write_readme(r: dict[str, Any]) -> None:
    full, one, eight = (
        r["with_batch_and_include"],
        r["limited_concurrency_1"],
        r["limited_concurrency_8"],
    )
    ms = round(r["latency_s"] * 1000)
    table = "\n".join(
        [
            MARK[0],
            f"{r['patients']:,} generated patients, {one['cases']} cases, {ms} ms added to every "
            f"request by the proxy; dry runs (read, evaluate, plan the write) with the same "
            f"outputs in all three: {'yes' if r['same_outputs'] else 'NO'}.",
            "",
            "| server | --concurrency | reads per case | requests | s | cases/s |",
            "|---|---:|---:|---:|---:|---:|",
            f"| batch and _include (latency only) | 1 | {full['reads_per_case']} | "
            f"{full['requests']} | {full['seconds']} | {full['cases_per_s']} |",
            f"| no batch, no _include, _count ≤ 10 | 1 | {one['reads_per_case']} | "
            f"{one['requests']} | {one['seconds']} | {one['cases_per_s']} |",
            f"| no batch, no _include, _count ≤ 10 | 8 | {eight['reads_per_case']} | "
            f"{eight['requests']} | {eight['seconds']} | {eight['cases_per_s']} |",
            "",
            f"Speed-up of --concurrency 8 over 1 on the limited server: "
            f"x{r['speed_up_8_over_1']} (target ≥ 5). Measured {r['date']}.",
            MARK[1],
        ]
    )
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text()
    if MARK[0] in text:
        text = re.sub(
            re.escape(MARK[0]) + ".*?" + re.escape(MARK[1]), lambda _: table, text, flags=re.S
        )
    else:
        text += (
            "\n## Against a slow, limited server\n\n`make bench` runs `benchmarks/bench_ehr.py`.\n\n"
            + table
            + "\n"
        )
    readme.write_text(text)


if __name__ == "__main__":
    main()
