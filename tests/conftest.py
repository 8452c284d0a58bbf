from __future__ import annotations

import copy
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_adapter import CaseOutput, ResourceStore, evaluate_paths, evaluate_store, load_pack
from fhir_adapter.pack import Pack
from fhir_adapter.sources.files import Loaded

from .fhir_server.harness import TestServer
from .fhir_server.proxy import LimitedProxy

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "fixtures" / "cases"


def fixture_names() -> list[str]:
    return sorted(p.name[: -len(".expected.yaml")] for p in CASES.glob("*.expected.yaml"))


def load_bundle(name: str) -> dict[str, Any]:
    return json.loads((CASES / f"{name}.json").read_text())


def load_expected(name: str) -> dict[str, Any]:
    return yaml.safe_load((CASES / f"{name}.expected.yaml").read_text())


def store_of(resources: list[dict[str, Any]]) -> ResourceStore:
    return ResourceStore(Loaded(r, None, "test") for r in resources)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`serve` run in-process configures the root logger on the captured stderr; later
    log records (py4j's, at garbage collection) would go to that closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def pack() -> Pack:
    return load_pack()


REPORT_NOW = "2026-10-15T09:00:00+00:00"

# a payer overlay of a plan no shipped overlay knows (Example Health, payer id EXH01):
# prior authorization required, HCC only
PA_OVERLAY = """\
policy: example-health-ablation
title: Example Health liver ablation policy
source: "[PAYER-POLICIES]"
date: "2026-12-01"
applies_to:
  identifiers: [{system: "http://example.org/payer-id", value: EXH01}]
prior_authorization: required
modalities: ["47382"]
criteria:
  - id: histology
    text: HCC only
    source: "[PAYER-POLICIES]"
    met:
      - fact: {name: histology, in: [hcc]}
"""


@pytest.fixture(scope="session")
def fixture_outputs() -> list[CaseOutput]:
    """Every fixture evaluated once (at REPORT_NOW), for the report modules, which read the
    same outputs: each takes its own copy (`copy.deepcopy`), so that none sees what
    another changed."""
    return evaluate_paths([CASES], now=REPORT_NOW)


@pytest.fixture
def good_case() -> list[dict[str, Any]]:
    """The resources of guidance example 1 (a clean claim), free to mutate."""
    bundle = load_bundle("ex1-hcc-ct")
    return [copy.deepcopy(e["resource"]) for e in bundle["entry"]]


def by_id(resources: list[dict[str, Any]], rid: str) -> dict[str, Any]:
    return next(r for r in resources if r.get("id") == rid)


def findings_of(pack: Pack, resources: list[dict[str, Any]], **kw: Any) -> dict[str, set[str]]:
    """procedure key -> finding codes."""
    outs = evaluate_store(store_of(resources), pack, now="2026-11-27T00:00:00+00:00", **kw)
    return {o.evaluation.procedure: {f.code for f in o.evaluation.findings} for o in outs}


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[TestServer]:
    """One real FHIR server (Medplum FhirRouter + MemoryRepository) for the session."""
    server = TestServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(fhir_server: TestServer) -> TestServer:
    """The session's server, emptied and without auth for this test."""
    fhir_server.reset()
    return fhir_server


@pytest.fixture(scope="session")
def limited_proxy(fhir_server: TestServer) -> Iterator[LimitedProxy]:
    """The session's server behind a proxy that behaves like an EHR's API (no batch,
    transaction, _include or _revinclude; _count capped at 10)."""
    proxy = LimitedProxy(fhir_server.root)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def limited(server: TestServer, limited_proxy: LimitedProxy) -> LimitedProxy:
    """The proxy in front of this test's emptied server, settings back to their defaults
    (a little latency, so that answers arrive out of order under concurrency)."""
    limited_proxy.reset(latency=0.002)
    return limited_proxy


@pytest.fixture(params=["full", "limited"])
def read_base(request: pytest.FixtureRequest, server: TestServer) -> str:
    """The base URL a scenario runs against: the server itself, or through the proxy."""
    if request.param == "full":
        return server.base
    proxy: LimitedProxy = request.getfixturevalue("limited")
    return proxy.base


@pytest.fixture
def pool_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small test exports would be screened in-process: make every pass use the pool."""
    from fhir_adapter.sources import bulk

    monkeypatch.setattr(bulk, "PARALLEL_MIN_BYTES", 0)


SPARK_MASTER = "local[2]"


@pytest.fixture(scope="session")
def _spark_stopped_at_the_end() -> Iterator[None]:
    yield
    from pyspark.sql import SparkSession

    if (active := SparkSession.getActiveSession()) is not None:
        active.stop()


@pytest.fixture
def spark(_spark_stopped_at_the_end: None) -> Any:
    """One local[2] Spark session for every in-process Spark test (a JVM and its Python
    workers take long to start): the active one, or a new one when none is (a test that
    needs another master stops it). `--engine spark` run in-process reuses it too."""
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    from pyspark.sql import SparkSession

    # the workers must run this interpreter (its packages), as fhir_adapter.spark arranges
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None and active.sparkContext.master == SPARK_MASTER:
        return active
    session = (
        SparkSession.builder.master(SPARK_MASTER)
        .appName("fhir-adapter-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files that run Spark first, the rest in their order: `make test` hands files to
    its workers in this order (`--dist loadfile --no-loadscope-reorder`), so the longest
    files (a JVM to warm up, a standalone cluster to start) do not start last."""
    spark_files = {item.path for item in items if item.get_closest_marker("spark") is not None}
    first = {"test_spark.py": 0, "test_spark_cluster.py": 1}

    def rank(item: pytest.Item) -> int:
        return first.get(item.path.name, 2) if item.path in spark_files else 3

    items.sort(key=rank)  # stable: each file's tests keep their order
