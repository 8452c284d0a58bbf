"""Where a Spark run's time goes, action by action (not part of the test suite).

Runs `evaluate_on_spark` once on a started session and times each Spark action the
run makes (wall time; CPU of the JVM, of the Python workers and of the driver from
`/proc` and `resource`), then lists Spark's stages from its REST API (tasks, wall
time, executors' run and CPU time) so that the stages run as one task stand out.

    python benchmarks/profile_spark.py benchmarks/data/patients-10000 local[2] [--json FILE]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return out


def _cpu(pid: int) -> float:
    """A process's CPU seconds, with its reaped children's."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_now() -> dict[str, float]:
    """CPU seconds: the driver (this process), the JVM, the Python workers (all below it)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    jvm = python = 0.0
    for child in _children(os.getpid()):
        jvm += _cpu(child)  # the JVM (its reaped children's CPU is in cutime/cstime)
        for pid in _tree(child)[1:]:
            python += _cpu(pid)
    return {"driver": me.ru_utime + me.ru_stime, "jvm": jvm, "python": python}


def jvm_threads() -> dict[str, float]:
    """The JVM's CPU seconds by thread name (digits dropped: the compiler threads, the
    garbage collector's, the executor's task threads...)."""
    out: dict[str, float] = {}
    for child in _children(os.getpid()):
        try:
            tasks = os.listdir(f"/proc/{child}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{child}/task/{task}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            name = "".join(
                c for c in text[text.index("(") + 1 : text.rindex(")")] if not c.isdigit()
            )
            fields = text.rsplit(")", 1)[1].split()
            out[name.strip(" -#")] = (
                out.get(name.strip(" -#"), 0.0) + (int(fields[11]) + int(fields[12])) / TICK
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("master")
    parser.add_argument("--json")
    parser.add_argument("--conf", action="append", default=[], help="a Spark setting, k=v")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import DataFrameWriter, SparkSession
    from pyspark.sql.classic.dataframe import DataFrame

    from fhir_adapter.spark import evaluate_on_spark, session_builder

    t0, c0 = time.perf_counter(), cpu_now()
    builder = (
        session_builder(args.master)
        .appName("profile")
        .config("spark.ui.enabled", "true")  # for the stages (REST API)
        .config("spark.driver.memory", "4g")
    )
    for setting in args.conf:
        builder = builder.config(*setting.split("=", 1))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter() - t0
    steps: list[dict[str, Any]] = []

    def timed(owner: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def run(*a: Any, **k: Any) -> Any:
            caller = inspect.stack()[1]
            if not caller.filename.endswith("spark.py"):
                return original(*a, **k)
            w, c = time.perf_counter(), cpu_now()
            try:
                return original(*a, **k)
            finally:
                after = cpu_now()
                steps.append(
                    {
                        "action": f"{caller.function}:{caller.lineno} {name}",
                        "start": round(w - t, 2),
                        "wall": round(time.perf_counter() - w, 2),
                        **{n: round(after[n] - c[n], 2) for n in after},
                    }
                )

        setattr(owner, name, run)

    for owner, name in (
        (DataFrame, "toArrow"),
        (DataFrame, "localCheckpoint"),
        (DataFrame, "first"),
        (DataFrame, "count"),
        (DataFrameWriter, "text"),
        (SparkSession, "createDataFrame"),
    ):
        timed(owner, name)
    threads0 = jvm_threads()
    c1, t = cpu_now(), time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = evaluate_on_spark(args.input, out + "/r", spark=spark)
    total = time.perf_counter() - t
    c2 = cpu_now()
    threads = {
        n: round(v - threads0.get(n, 0.0), 2)
        for n, v in sorted(jvm_threads().items(), key=lambda nv: -nv[1])
        if v - threads0.get(n, 0.0) >= 0.05
    }
    stages: list[dict[str, Any]] = []
    try:
        ui = spark.sparkContext.uiWebUrl
        app = spark.sparkContext.applicationId
        with urllib.request.urlopen(f"{ui}/api/v1/applications/{app}/stages") as r:
            for s in sorted(json.load(r), key=lambda s: s["stageId"]):
                if s["status"] != "COMPLETE":
                    continue
                stages.append(
                    {
                        "stage": s["stageId"],
                        "tasks": s["numTasks"],
                        "wall": round(
                            (_ms(s["completionTime"]) - _ms(s["submissionTime"])) / 1000, 2
                        ),
                        "run": round(s["executorRunTime"] / 1000, 2),
                        "cpu": round(s["executorCpuTime"] / 1e9, 2),
                        "name": s["name"].split(" at ")[0],
                    }
                )
    except OSError as exc:
        print(f"no stages: {exc}", file=sys.stderr)
    summary = {
        "master": args.master,
        "load": os.getloadavg()[0],
        "session_start": round(started, 2),
        "session_start_cpu": {n: round(c1[n] - c0[n], 2) for n in c1},
        "run": round(total, 2),
        "run_cpu": {n: round(c2[n] - c1[n], 2) for n in c2},
        "cases": result.cases,
        "jvm_threads_before": {n: round(v, 2) for n, v in threads0.items() if v >= 0.05},
        "jvm_threads": threads,
        "actions": steps,
        "stages": stages,
    }
    spark.stop()
    for step in steps:
        print(
            f"{step['start']:7.2f} {step['wall']:7.2f} s  jvm {step['jvm']:6.2f}  "
            f"py {step['python']:6.2f}  drv {step['driver']:5.2f}  {step['action']}"
        )
    for s in stages:
        print(
            f"stage {s['stage']:3} tasks {s['tasks']:3} wall {s['wall']:6.2f} "
            f"run {s['run']:6.2f} cpu {s['cpu']:6.2f} {s['name']}"
        )
    print("JVM threads, session start:", {n: round(v, 1) for n, v in threads0.items() if v >= 0.5})
    print("JVM threads, run:", threads)
    print(
        f"{args.master}: session {started:.2f} s, run {total:.2f} s, cpu {summary['run_cpu']}, "
        f"load {summary['load']:.2f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


def _ms(stamp: str) -> float:
    from datetime import datetime

    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fGMT").timestamp() * 1000


if __name__ == "__main__":
    main()
