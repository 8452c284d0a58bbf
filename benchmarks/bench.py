"""Benchmarks for fhir-adapter (run with `make bench`; not part of the test suite).

Every figure is paired with a baseline measured in the same run, because the
machine is shared and noisy: end-to-end evaluation is reported as a ratio to
`orjson.loads` of every line of the same export; worker scaling as the ratio of
1-worker to N-worker time; cold start against a bare `python -c pass`.
Results go to benchmarks/results.json and the table in benchmarks/README.md.

    python benchmarks/bench.py [--sizes 1000,10000,100000] [--repeat 3] [--no-server]

`--revs A,B,...` measures the given commits instead, interleaved in one run (each from
`git archive`, against the same floor), to show what each change saved; it prints a
table and writes nothing:

    python benchmarks/bench.py --revs main,HEAD~2,HEAD --sizes 10000 --dense 4000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
from fhir_adapter.pipeline import evaluate_paths
path, workers = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
cpu = time.process_time()
outputs = evaluate_paths([path], workers=workers)
elapsed = time.perf_counter() - t
cpu = time.process_time() - cpu
children = resource.getrusage(resource.RUSAGE_CHILDREN)
claims = sum(1 for o in outputs if not o.evaluation.blocked)
digest = hash(tuple((o.evaluation.procedure, tuple(f.code for f in o.evaluation.findings)) for o in outputs))
# VmHWM, not ru_maxrss: ru_maxrss survives exec and would count the benchmark's own size.
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": elapsed, "cpu": cpu, "children_cpu": children.ru_utime + children.ru_stime,
                  "cases": len(outputs), "claims": claims, "rss_kb": rss, "digest": digest}))
"""


def export_for(patients: int, dense: bool = False) -> Path:
    """A generated export, cached; `dense`: every patient a 47382 case (a cohort export)."""
    from fhir_adapter.testing.synth import generate

    out = DATA / f"{'dense' if dense else 'patients'}-{patients}"
    stamp = out / ".complete"
    if not stamp.exists():
        out.mkdir(parents=True, exist_ok=True)
        print(f"generating {patients} patients into {out} ...", file=sys.stderr)
        counts = generate(out, patients, seed=47382, dense=dense)
        stamp.write_text(json.dumps(counts))
    return out


def orjson_floor(path: Path, clock: Any = time.perf_counter) -> tuple[float, int, int]:
    """Seconds to read and orjson.loads every line (by `clock`); lines; bytes."""
    lines = size = 0
    started = clock()
    for f in sorted(path.glob("*.ndjson")):
        data = f.read_bytes()
        size += len(data)
        for line in data.split(b"\n"):
            if line:
                orjson.loads(line)
                lines += 1
    return clock() - started, lines, size


def child(path: Path, workers: int, tree: Path = ROOT) -> dict[str, Any]:
    """One evaluation in a fresh process, of the code in `tree` (default: this checkout)."""
    return run_child(CHILD, str(path), str(workers), tree=tree)


def run_child(code: str, *args: str, tree: Path = ROOT) -> dict[str, Any]:
    """Run `code` in a fresh interpreter on the code in `tree`; its last line of output is
    a JSON object."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tree,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def best(values: list[float]) -> float:
    return min(values)


def measure_size(patients: int, repeat: int, dense: bool = False) -> dict[str, Any]:
    path = export_for(patients, dense)
    floors, one, two = [], [], []
    runs: dict[int, dict[str, Any]] = {}
    import gc

    for _ in range(repeat):
        gc.collect()
        floors.append(orjson_floor(path)[0])
        runs[1] = child(path, 1)
        one.append(runs[1]["seconds"])
        runs[2] = child(path, 2)
        two.append(runs[2]["seconds"])
    _, lines, size = orjson_floor(path)
    assert runs[1]["digest"] == runs[2]["digest"], "1 and 2 workers disagree"
    e2e = best(one)
    return {
        "export": "dense" if dense else "sparse",
        "patients": patients,
        "resources": lines,
        "bytes": size,
        "cases": runs[1]["cases"],
        "claims": runs[1]["claims"],
        "orjson_floor_s": round(best(floors), 3),
        "e2e_1_worker_s": round(e2e, 3),
        "e2e_2_workers_s": round(best(two), 3),
        "ratio_to_orjson": round(e2e / best(floors), 2),
        "speedup_2_workers": round(e2e / best(two), 2),
        "cases_per_s": round(runs[1]["cases"] / e2e, 1),
        "resources_per_s": round(lines / e2e),
        "peak_rss_mb_1_worker": round(runs[1]["rss_kb"] / 1024, 1),
        "peak_rss_share_of_disk": round(runs[1]["rss_kb"] * 1024 / size, 3),
    }


def measure_revs(
    revs: list[str], exports: list[tuple[str, Path]], repeat: int, two: bool = True
) -> None:
    """Each commit's one-worker CPU time against the orjson floor's (CPU time: a busy
    machine stretches wall time unevenly), and (`two`) its 1 -> 2 worker wall-time
    speed-up, the commits taking turns so that load changes hit them alike; best of
    `repeat`."""
    with tempfile.TemporaryDirectory(prefix="fhir-adapter-revs-") as tmp:
        trees = {}
        for rev in revs:
            tree = trees[rev] = Path(tmp) / rev.replace("/", "_")
            tree.mkdir()
            archive = subprocess.run(
                ["git", "archive", rev], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        for name, path in exports:
            floor: list[float] = []
            cpu: dict[str, list[float]] = {rev: [] for rev in revs}
            wall: dict[str, dict[int, list[float]]] = {rev: {1: [], 2: []} for rev in revs}
            digests = set()
            for _ in range(repeat):
                floor.append(orjson_floor(path, time.process_time)[0])
                for rev in revs:
                    runs = {w: child(path, w, trees[rev]) for w in ((1, 2) if two else (1,))}
                    cpu[rev].append(runs[1]["cpu"])
                    for w, run in runs.items():
                        wall[rev][w].append(run["seconds"])
                        digests.add(run["digest"])
            assert len(digests) == 1, f"{name}: the commits or worker counts disagree"
            base = best(cpu[revs[0]])
            print(f"\n{name}: orjson floor {best(floor):.3f} s CPU (best of {repeat})", flush=True)
            print(
                "| commit | 1 worker CPU s | x orjson | vs first | 1 worker s | 2 workers s | speed-up |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|")
            for rev in revs:
                c, w1 = best(cpu[rev]), best(wall[rev][1])
                w2 = f"{best(wall[rev][2]):.2f} | {w1 / best(wall[rev][2]):.2f}" if two else "- | -"
                print(
                    f"| {rev} | {c:.2f} | {c / best(floor):.2f} | {c / base:.3f} | {w1:.2f} | {w2} |",
                    flush=True,
                )


def cold_start(repeat: int) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("fhir-adapter")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fhir_adapter.cli"]

    def timed(args: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(args, capture_output=True, check=False)
        return time.perf_counter() - started

    bare = [timed([sys.executable, "-c", "pass"]) for _ in range(repeat * 3)]
    helps = [timed([*cmd, "--help"]) for _ in range(repeat * 3)]
    one_file = [
        timed([*cmd, "evaluate", str(ROOT / "fixtures/cases/ex1-hcc-ct.json"), "--workers", "1"])
        for _ in range(repeat * 3)
    ]
    return {
        "python_bare_s": round(statistics.median(bare), 3),
        "help_s": round(statistics.median(helps), 3),
        "help_over_bare": round(statistics.median(helps) / statistics.median(bare), 2),
        "evaluate_one_file_s": round(statistics.median(one_file), 3),
    }


def load_export(client: Any, path: Path) -> None:
    """Every resource of an export into the server (PUT by id, batches of 500)."""
    from fhir_adapter.sources.files import read_paths

    entries = [
        {
            "resource": x.resource,
            "request": {"method": "PUT", "url": f"{x.resource['resourceType']}/{x.resource['id']}"},
        }
        for x in read_paths([path])
    ]
    for i in range(0, len(entries), 500):
        client.request(
            "POST",
            "",
            body={"resourceType": "Bundle", "type": "batch", "entry": entries[i : i + 500]},
            expect="Bundle",
        )


def server_run(patients: int) -> dict[str, Any]:
    from fhir_adapter.client.rest import FhirClient
    from fhir_adapter.pipeline import run_on_server
    from tests.fhir_server.harness import TestServer

    path = export_for(patients)
    server = TestServer()
    try:
        with FhirClient(server.base, timeout=(5, 300)) as client:
            load_export(client, path)
            client.requests.clear()
            started = time.perf_counter()
            results = run_on_server(client)
            elapsed = time.perf_counter() - started
            reads = client.requests["read"]
            writes = client.requests["write"]
            started = time.perf_counter()
            again = run_on_server(client)
            rerun = time.perf_counter() - started
        n = len(results)
        return {
            "patients": patients,
            "cases": n,
            "reads_per_case": round(reads / n, 2),
            "max_reads_one_case": max(r.reads for r in results) + 1,
            "writes_per_case": round(writes / n, 2),
            "cases_per_s_with_writeback": round(n / elapsed, 1),
            "cases_per_s_rerun_no_changes": round(n / rerun, 1),
            "rerun_writes": sum(r.written for r in again),
        }
    finally:
        server.stop()


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "fhir-adapter": version("fhir-adapter"),
        "orjson": version("orjson"),
        "fhir.resources": version("fhir.resources"),
    }


TARGETS = """
| target | measured | met |
|---|---|---|
"""


def write_readme(results: dict[str, Any]) -> None:
    readme = ROOT / "benchmarks" / "README.md"
    lines = [
        "| export | patients | resources | MB | cases | orjson floor s | e2e 1 worker s | x orjson | 2 workers s | speed-up | cases/s | resources/s | peak RSS MB | RSS / disk |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["sizes"]:
        lines.append(
            f"| {r.get('export', 'sparse')} | {r['patients']:,} | {r['resources']:,} | {r['bytes'] / 1e6:,.0f} | {r['cases']:,} | {r['orjson_floor_s']} | "
            f"{r['e2e_1_worker_s']} | {r['ratio_to_orjson']} | {r['e2e_2_workers_s']} | {r['speedup_2_workers']} | "
            f"{r['cases_per_s']:,} | {r['resources_per_s']:,} | {r['peak_rss_mb_1_worker']} | {r['peak_rss_share_of_disk']:.1%} |"
        )
    c = results["cold_start"]
    lines += [
        "",
        f"Cold start: `fhir-adapter --help` {c['help_s']} s (bare `python -c pass` {c['python_bare_s']} s, "
        f"x{c['help_over_bare']}); `evaluate` of one fixture file {c['evaluate_one_file_s']} s.",
    ]
    if results.get("server"):
        s = results["server"]
        lines += [
            "",
            f"Against the test FHIR server ({s['patients']:,} patients, {s['cases']} cases): "
            f"{s['reads_per_case']} reads per case on average (at most {s['max_reads_one_case']} for one case, "
            f"counting the shared search page), {s['writes_per_case']} writes per case, "
            f"{s['cases_per_s_with_writeback']} cases/s with write-back, {s['cases_per_s_rerun_no_changes']} cases/s "
            f"on a re-run with nothing to change ({s['rerun_writes']} writes).",
        ]
    v = results["versions"]
    lines += [
        "",
        f"Machine and versions: {v['machine']}, Python {v['python']}, fhir-adapter {v['fhir-adapter']}, "
        f"orjson {v['orjson']}, fhir.resources {v['fhir.resources']}; measured {results['date']}.",
    ]
    text = (
        readme.read_text()
        if readme.exists()
        else "# Benchmarks\n\n<!-- results -->\n<!-- /results -->\n"
    )
    head, _, rest = text.partition("<!-- results -->")
    _, _, tail = rest.partition("<!-- /results -->")
    readme.write_text(head + "<!-- results -->\n" + "\n".join(lines) + "\n<!-- /results -->" + tail)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument(
        "--dense", default="4000", help="dense (cohort) export sizes, comma-separated; '' to skip"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument("--server-patients", type=int, default=2000)
    parser.add_argument(
        "--revs", default="", help="commits to compare, comma-separated (prints, writes nothing)"
    )
    parser.add_argument("--one-worker", action="store_true", help="with --revs: no 2-worker runs")
    args = parser.parse_args()
    if args.revs:
        exports = [(f"sparse {int(n):,}", export_for(int(n))) for n in args.sizes.split(",") if n]
        exports += [
            (f"dense {int(n):,}", export_for(int(n), dense=True))
            for n in args.dense.split(",")
            if n
        ]
        measure_revs(args.revs.split(","), exports, args.repeat, not args.one_worker)
        return
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "versions": versions(),
        "sizes": [],
    }
    for size in [int(s) for s in args.sizes.split(",") if s]:
        r = measure_size(size, args.repeat if size < 100_000 else max(1, args.repeat - 1))
        print(json.dumps(r), file=sys.stderr)
        results["sizes"].append(r)
    for size in [int(s) for s in args.dense.split(",") if s]:
        r = measure_size(size, args.repeat, dense=True)
        print(json.dumps(r), file=sys.stderr)
        results["sizes"].append(r)
    results["cold_start"] = cold_start(args.repeat)
    print(json.dumps(results["cold_start"]), file=sys.stderr)
    if not args.no_server:
        results["server"] = server_run(args.server_patients)
        print(json.dumps(results["server"]), file=sys.stderr)
    (ROOT / "benchmarks" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_readme(results)
    print((ROOT / "benchmarks" / "README.md").read_text())


if __name__ == "__main__":
    main()
    del resource
