"""ICD-10-CM index against importing simple-icd-10-cm, and the CMS tables' load time.

Each figure is measured in a fresh process (so imports and memory are cold) and
paired with its baseline from the same run: loading the cached index against
importing the package, a lookup through the index against the same lookup through
the package. Results go to benchmarks/results-codesets.json and the "Code sets"
section of benchmarks/README.md.

    python benchmarks/bench_codesets.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benchmarks" / "README.md"
RESULTS = ROOT / "benchmarks" / "results-codesets.json"

# Each child prints one JSON object: seconds and the growth of peak RSS (MB) for the step.
PACKAGE = r"""
import json, resource, time, warnings
warnings.simplefilter("ignore")
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
r0 = rss(); t = time.perf_counter()
import simple_icd_10_cm as cm
print(json.dumps({"s": time.perf_counter() - t, "mb": rss() - r0}))
"""

INDEX = r"""
import json, resource, time
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from fhir_adapter.billing import icd10cm
r0 = rss(); t = time.perf_counter()
icd10cm.release()          # loads the index: from the cache, or builds and caches it
print(json.dumps({"s": time.perf_counter() - t, "mb": rss() - r0, "package": "simple_icd_10_cm" in __import__("sys").modules}))
"""

TABLES = r"""
import json, time
from fhir_adapter.billing import tables
t = time.perf_counter()
tables.load_tables()
print(json.dumps({"s": time.perf_counter() - t}))
"""

LOOKUPS = r"""
import json, re, timeit, warnings
warnings.simplefilter("ignore")
from fhir_adapter.billing import icd10cm
import simple_icd_10_cm as cm
icd10cm.release()
CODES = ["C22.0", "K74.6", "C78.7", "C22.00", "D37.6", "S00.00XA"]
def pkg_billable(code):
    c = code.strip().upper()
    return cm.is_valid_item(c) and cm.is_category_or_subcategory(c) and cm.is_leaf(c)
def pkg_refs(code):
    for node in [code] + cm.get_ancestors(code):
        for note in cm.get_excludes1(node):
            for group in re.findall(r"\(([^()]*)\)", note):
                yield from (p.strip() for p in group.split(","))
def pkg_conflict(a, b):
    return any(b.startswith(r.rstrip(".-")) for r in pkg_refs(a)) or any(a.startswith(r.rstrip(".-")) for r in pkg_refs(b))
def per_call(fn, n):
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
first_billable = icd10cm._lookup.__wrapped__         # without the memo: a first lookup
first_conflict = icd10cm.excludes1_conflict.__wrapped__
out = {
    "billable_index_us": per_call(lambda: [first_billable(c) for c in CODES], 2000) / len(CODES),
    "billable_memo_us": per_call(lambda: [icd10cm.is_billable(c) for c in CODES], 2000) / len(CODES),
    "excludes1_memo_us": per_call(lambda: icd10cm.excludes1_conflict("C22.0", "C78.7"), 2000),
    "billable_package_us": per_call(lambda: [pkg_billable(c) for c in CODES], 2000) / len(CODES),
    "excludes1_index_us": per_call(lambda: first_conflict("C22.0", "C78.7"), 2000),
    "excludes1_package_us": per_call(lambda: pkg_conflict("C22.0", "C78.7"), 2000),
}
print(json.dumps(out))
"""


def child(code: str, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: float(r["s"]))


def measure(repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache, "PYTHONPATH": str(ROOT)}
        package = best([child(PACKAGE, env) for _ in range(repeat)])
        builds = []
        for _ in range(min(repeat, 3)):  # the first run: cache miss
            shutil.rmtree(Path(cache) / "fhir-adapter", ignore_errors=True)
            builds.append(child(INDEX, env))
        build = best(builds)
        cache_kb = sum(p.stat().st_size for p in Path(cache).glob("fhir-adapter/*.json.gz")) / 1024
        loads = [child(INDEX, env) for _ in range(repeat)]
        load = best(loads)
        tables = best([child(TABLES, env) for _ in range(repeat)])
        lookups = child(LOOKUPS, env)
    return {
        "package_import_s": package["s"],
        "package_import_mb": package["mb"],
        "index_build_s": build["s"],
        "index_load_s": load["s"],
        "index_load_mb": max(r["mb"] for r in loads),
        "index_load_imports_package": any(r["package"] for r in loads),
        "cache_file_kb": cache_kb,
        "tables_load_s": tables["s"],
        **lookups,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"simple-icd-10-cm {version('simple-icd-10-cm')}, orjson {version('orjson')}",
    }


def _speed(package: float, index: float) -> str:
    if index <= package:
        return f"{package / index:.1f}x faster"
    return f"{index / package:.1f}x slower"


def render(r: dict[str, Any]) -> str:
    load_ratio = r["package_import_s"] / r["index_load_s"]
    mem_ratio = r["package_import_mb"] / max(r["index_load_mb"], 0.1)
    return "\n".join(
        [
            "<!-- codesets -->",
            "| step | index | `import simple_icd_10_cm` | ratio |",
            "|---|---:|---:|---:|",
            f"| load (cached index vs import) | {r['index_load_s'] * 1000:.0f} ms | "
            f"{r['package_import_s'] * 1000:.0f} ms | **{load_ratio:.0f}x faster** |",
            f"| peak RSS growth | {r['index_load_mb']:.1f} MB | {r['package_import_mb']:.0f} MB | "
            f"**{mem_ratio:.0f}x smaller** |",
            f"| `is_billable`, first lookup of a code | {r['billable_index_us']:.1f} µs | "
            f"{r['billable_package_us']:.1f} µs | {_speed(r['billable_package_us'], r['billable_index_us'])} |",
            f"| `is_billable`, repeated (memoised) | {r['billable_memo_us']:.2f} µs | "
            f"{r['billable_package_us']:.1f} µs | {_speed(r['billable_package_us'], r['billable_memo_us'])} |",
            f"| `excludes1_conflict`, first lookup of a pair | {r['excludes1_index_us']:.1f} µs | "
            f"{r['excludes1_package_us']:.1f} µs | {_speed(r['excludes1_package_us'], r['excludes1_index_us'])} |",
            f"| `excludes1_conflict`, repeated (memoised) | {r['excludes1_memo_us']:.2f} µs | "
            f"{r['excludes1_package_us']:.1f} µs | {_speed(r['excludes1_package_us'], r['excludes1_memo_us'])} |",
            "",
            f"First run (no cache): {r['index_build_s']:.2f} s to import the package, derive the "
            f"index and write it ({r['cache_file_kb']:.0f} KB gzipped JSON), "
            f"{r['index_build_s'] / r['index_load_s']:.0f}x a cached load. A cached load imports the "
            f"package: {'yes (a regression)' if r['index_load_imports_package'] else 'no'}. "
            f"Loading the shipped CMS tables (`load_tables()`): {r['tables_load_s'] * 1000:.1f} ms.",
            "",
            f"Machine and versions: {r['machine']}; best of the runs, each in a fresh process.",
            "<!-- /codesets -->",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = measure(args.repeat)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    text = README.read_text()
    block = render(results)
    pattern = re.compile(r"<!-- codesets -->.*?<!-- /codesets -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n## Code sets\n\n" + block + "\n"
    README.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
