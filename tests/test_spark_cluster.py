"""Spark on a real cluster manager: a standalone master and two workers on loopback,
started from the installed PySpark; `--engine spark --spark-master spark://...` gives
the local engine's answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fhir_adapter import evaluate_paths
from fhir_adapter.cli import main
from fhir_adapter.testing.synth import generate

pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")
pytestmark = pytest.mark.spark

from fhir_adapter.spark import read_reports  # noqa: E402

NOW = "2026-11-27T00:00:00+00:00"
DEADLINE_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """spark://127.0.0.1:PORT with two one-core workers registered; every process started
    here (and the executors the workers start, in the same process groups) is ended."""
    home = Path(pyspark.__file__).parent
    logs = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}
    env["PYSPARK_PYTHON"] = sys.executable  # the executors' Python: this venv's packages
    port, ui = _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    spark_class = str(home / "bin" / "spark-class")
    on_loopback = ["--host", "127.0.0.1"]
    commands = [
        [spark_class, "org.apache.spark.deploy.master.Master", *on_loopback, "--port", str(port)],
        *(
            [spark_class, "org.apache.spark.deploy.worker.Worker", *on_loopback, "--cores", "1"]
            for _ in (1, 2)
        ),
    ]
    commands[0] += ["--webui-port", str(ui)]
    for n, command in enumerate(commands[1:], 1):
        command += ["--memory", "1g", "--webui-port", str(_free_port())]
        command += ["--work-dir", str(logs / f"work{n}"), url]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for n, command in enumerate(commands):
            log = open(logs / f"process{n}.log", "wb")  # noqa: SIM115 (closed with the process)
            started.append(
                subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            log.close()
        give_up = time.monotonic() + DEADLINE_S
        while _alive_workers(ui) < 2:
            if time.monotonic() > give_up or any(p.poll() is not None for p in started):
                tails = [(logs / f"process{n}.log").read_text()[-800:] for n in range(3)]
                pytest.fail(f"the standalone cluster did not come up: {tails}")
            time.sleep(0.5)
        yield url
    finally:
        for p in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in started:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_cli_on_a_standalone_cluster_matches_local(
    master: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyspark.sql import SparkSession

    data = tmp_path / "export"
    generate(data, 120, seed=23)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    if (active := SparkSession.getActiveSession()) is not None:
        active.stop()  # getOrCreate would hand back a session on another master
    out = tmp_path / "out"
    argv = ["evaluate", "--engine", "spark", "--spark-master", master, str(data), "--out", str(out)]
    try:
        code = main([*argv, "--format", "json"])
        session = SparkSession.getActiveSession()
        assert session is not None and session.sparkContext.master == master
        executors = session.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
    finally:
        if (active := SparkSession.getActiveSession()) is not None:
            active.stop()
    local = [orjson.loads(orjson.dumps(o.report())) for o in evaluate_paths([data], now=NOW)]
    rows = read_reports(str(out / "reports"))
    assert executors == 3  # the driver's block manager and one executor on each worker
    assert len(rows) == len(local) > 5
    # the evaluation time (what stamps created and identifiedDateTime) differs; nothing else
    for row in (*rows, *local):
        for resource in row["resources"]:
            resource.pop("created", None)
            resource.pop("identifiedDateTime", None)
    assert rows == local
    assert orjson.loads(capsys.readouterr().out)["cases"] == read_reports(str(out / "reports"))
    assert code in (0, 1)
