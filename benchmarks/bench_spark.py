"""Spark against the local engine, on the same generated export in the same run
(run with `make bench`; not part of the test suite).

Three timings: the local engine on 2 workers (the baseline), Spark `local[1]` and
Spark `local[2]`. Each Spark run is timed from a started session, started with the
settings the command line starts one with (`session_builder`; the JVM start, a few
seconds, is left out: on a cluster it is paid once), so the Python workers' first
import of the package and compile of the pack are in. Results go to
benchmarks/results-spark.json and the Spark section of benchmarks/README.md.

    python benchmarks/bench_spark.py [--patients 100000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import ROOT, child, export_for, run_child

SPARK_CHILD = r"""
import json, os, sys, tempfile, time
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors need this venv's packages
from fhir_adapter.spark import evaluate_on_spark, session_builder
# the session the command line starts (its settings timed too), with the driver's memory
spark = (session_builder(sys.argv[2]).appName("bench")
         .config("spark.driver.memory", "4g").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
t = time.perf_counter()
with tempfile.TemporaryDirectory() as out:
    result = evaluate_on_spark(sys.argv[1], out + "/r", spark=spark)
print(json.dumps({"seconds": time.perf_counter() - t, "cases": result.cases}))
spark.stop()
"""


def spark_child(path: Path, master: str) -> dict[str, Any]:
    return run_child(SPARK_CHILD, str(path), master)


def measure(patients: int, repeat: int) -> dict[str, Any]:
    path = export_for(patients)
    local, one, two = [], [], []
    cases = set()
    for _ in range(repeat):
        run = child(path, 2)
        local.append(run["seconds"])
        cases.add(run["cases"])
        for master, times in (("local[1]", one), ("local[2]", two)):
            run = spark_child(path, master)
            times.append(run["seconds"])
            cases.add(run["cases"])
    assert len(cases) == 1, f"the engines found different numbers of cases: {cases}"
    best = {"local": min(local), "one": min(one), "two": min(two)}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "patients": patients,
        "cases": cases.pop(),
        "repeat": repeat,
        "local_2_workers_s": round(best["local"], 2),
        "spark_local1_s": round(best["one"], 2),
        "spark_local2_s": round(best["two"], 2),
        # three places: a ratio is judged against its target as measured, not rounded up to it
        "spark_over_local": round(best["two"] / best["local"], 3),
        "spark_speedup_1_to_2": round(best["one"] / best["two"], 3),
    }


def write_readme(r: dict[str, Any]) -> None:
    readme = ROOT / "benchmarks" / "README.md"
    met = {True: "yes", False: "no"}
    lines = [
        "| measure | measured | target | met |",
        "|---|---:|---:|---|",
        f"| Spark `local[2]` / local engine on 2 workers | x{r['spark_over_local']} "
        f"({r['spark_local2_s']} s / {r['local_2_workers_s']} s) | <= x2 "
        f"| {met[r['spark_over_local'] <= 2]} |",
        f"| Spark `local[1]` -> `local[2]` | x{r['spark_speedup_1_to_2']} "
        f"({r['spark_local1_s']} s -> {r['spark_local2_s']} s) | >= x1.7 "
        f"| {met[r['spark_speedup_1_to_2'] >= 1.7]} |",
        "",
        f"On the {r['patients']:,}-patient sparse export ({r['cases']:,} cases), best of "
        f"{r['repeat']}, measured {r['date']}.",
    ]
    text = readme.read_text()
    head, _, rest = text.partition("<!-- spark -->")
    _, _, tail = rest.partition("<!-- /spark -->")
    if not rest:
        head, tail = text.rstrip("\n") + "\n\n## Spark against the local engine\n\n", "\n"
    readme.write_text(head + "<!-- spark -->\n" + "\n".join(lines) + "\n<!-- /spark -->" + tail)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    result = measure(args.patients, args.repeat)
    print(json.dumps(result), file=sys.stderr)
    (ROOT / "benchmarks" / "results-spark.json").write_text(json.dumps(result, indent=2) + "\n")
    write_readme(result)


if __name__ == "__main__":
    main()
