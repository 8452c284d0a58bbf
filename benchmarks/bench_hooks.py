"""CDS Hooks latency: the encounter-discharge and order-sign services, with full prefetch
against fetching from `fhirServer`, on the loopback test FHIR server.

Every call is a real HTTP request to the service under uvicorn, signed with a fresh
ES384 JWT (so verification is in every figure). Baselines measured in the same run:
discovery (HTTP round trip without JWT or work) and the engine alone on the same
data. Writes benchmarks/hooks_results.json and the "CDS Hooks latency" section of
benchmarks/README.md.

    .venv/bin/python benchmarks/bench_hooks.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_adapter.client.rest import FhirClient  # noqa: E402
from fhir_adapter.hooks import HookConfig  # noqa: E402
from fhir_adapter.hooks.data import add_entries, bundle_entries  # noqa: E402
from fhir_adapter.hooks.security import TrustedClients  # noqa: E402
from fhir_adapter.hooks.services import SERVICES  # noqa: E402
from fhir_adapter.pack import load_pack  # noqa: E402
from fhir_adapter.pipeline import evaluate_store  # noqa: E402
from fhir_adapter.sources.store import ResourceStore  # noqa: E402
from fhir_adapter.testing.catalog import load_fixtures  # noqa: E402
from fhir_adapter.testing.hooks import (  # noqa: E402
    discharge_context,
    draft_order,
    ehr_prefetch,
    order_context,
    ref_id,
    stored_procedures,
)
from tests.fhir_server.harness import TestServer  # noqa: E402
from tests.test_hooks_harness import EHR_ISS, Ehr, HookServer, SigningKey, hook_body  # noqa: E402

DISCHARGE = "cpt-47382-encounter-discharge"
ORDER_SIGN = "cpt-47382-order-sign"
USER = "Practitioner/bench"
MARK, END = "<!-- hooks -->", "<!-- /hooks -->"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "calls": len(ms),
        "p50_ms": round(pct(ms, 0.50), 1),
        "p95_ms": round(pct(ms, 0.95), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def timed(ehr: Ehr, service_id: str, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    resp = ehr.hook(service_id, body)
    elapsed = (time.perf_counter() - start) * 1000
    if resp.status_code != 200:
        raise SystemExit(f"{service_id}: HTTP {resp.status_code}: {resp.text[:300]}")
    return elapsed


def run(rounds: int) -> dict[str, Any]:
    fhir = TestServer()
    key = SigningKey("ES384")
    clients = TrustedClients.from_json({"clients": [{"iss": EHR_ISS, "jwks": {"keys": [key.jwk]}}]})
    with tempfile.TemporaryDirectory() as tmp:
        service = HookServer(
            HookConfig(trusted_clients=clients, feedback_db=Path(tmp) / "feedback.sqlite3")
        )
        try:
            ehr = Ehr(service, key)
            with FhirClient(fhir.base) as client:
                load_fixtures(client)
                procs = stored_procedures(client)
                encounters = {ref_id(p["encounter"]): discharge_context(p, USER) for p in procs}
                discharge = [
                    (ctx, ehr_prefetch(client, SERVICES[DISCHARGE].prefetch, ctx))
                    for ctx in encounters.values()
                ]
                orders = []
                for p in procs:
                    ctx = order_context(p, [draft_order(p)], USER)
                    orders.append((ctx, ehr_prefetch(client, SERVICES[ORDER_SIGN].prefetch, ctx)))
            # warm-up: the service checks the server's /metadata once, imports settle
            timed(
                ehr,
                DISCHARGE,
                hook_body("encounter-discharge", discharge[0][0], fhirServer=fhir.base),
            )
            times: dict[str, list[float]] = {
                "discovery": [],
                "discharge_prefetch": [],
                "discharge_fetch": [],
                "order_sign_prefetch": [],
                "order_sign_fetch": [],
                "engine_only": [],
            }
            pack = load_pack()
            for _ in range(rounds):
                for ctx, prefetch in discharge:
                    start = time.perf_counter()
                    ehr.discovery().raise_for_status()
                    times["discovery"].append((time.perf_counter() - start) * 1000)
                    body = hook_body("encounter-discharge", ctx, prefetch=prefetch)
                    times["discharge_prefetch"].append(timed(ehr, DISCHARGE, body))
                    body = hook_body("encounter-discharge", ctx, fhirServer=fhir.base)
                    times["discharge_fetch"].append(timed(ehr, DISCHARGE, body))
                    start = time.perf_counter()
                    store = ResourceStore()
                    for name, value in prefetch.items():
                        add_entries(store, bundle_entries(value, name))
                    evaluate_store(store, pack)
                    times["engine_only"].append((time.perf_counter() - start) * 1000)
                for ctx, prefetch in orders:
                    body = hook_body("order-sign", ctx, prefetch=prefetch)
                    times["order_sign_prefetch"].append(timed(ehr, ORDER_SIGN, body))
                    body = hook_body("order-sign", ctx, fhirServer=fhir.base)
                    times["order_sign_fetch"].append(timed(ehr, ORDER_SIGN, body))
        finally:
            service.stop()
            fhir.stop()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "rounds": rounds,
        "encounters": len(discharge),
        "orders": len(orders),
        "latency": {k: summary(v) for k, v in times.items()},
    }
    lat = results["latency"]
    results["fetch_over_prefetch"] = {
        hook: {
            q: round(lat[f"{hook}_fetch"][q] / lat[f"{hook}_prefetch"][q], 2)
            for q in ("p50_ms", "p95_ms")
        }
        for hook in ("discharge", "order_sign")
    }
    return results


def write_readme(r: dict[str, Any]) -> None:
    lat, ratio = r["latency"], r["fetch_over_prefetch"]
    rows = [
        ("encounter-discharge, full prefetch", "discharge_prefetch"),
        ("encounter-discharge, fetching from fhirServer", "discharge_fetch"),
        ("order-sign, full prefetch", "order_sign_prefetch"),
        ("order-sign, fetching from fhirServer", "order_sign_fetch"),
        ("baseline: discovery (HTTP round trip, no JWT, no work)", "discovery"),
        ("baseline: engine alone on the discharge prefetch (no HTTP)", "engine_only"),
    ]
    lines = [
        "| call | calls | p50 ms | p95 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, k in rows:
        s = lat[k]
        lines.append(f"| {label} | {s['calls']} | {s['p50_ms']} | {s['p95_ms']} | {s['mean_ms']} |")
    lines += [
        "",
        f"Fetching over full prefetch: encounter-discharge x{ratio['discharge']['p50_ms']} at p50, "
        f"x{ratio['discharge']['p95_ms']} at p95; order-sign x{ratio['order_sign']['p50_ms']} at p50, "
        f"x{ratio['order_sign']['p95_ms']} at p95 ({r['encounters']} fixture encounters and "
        f"{r['orders']} orders, {r['rounds']} rounds; measured {r['date']}).",
    ]
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text()
    block = MARK + "\n" + "\n".join(lines) + "\n" + END
    if MARK in text:
        head, _, rest = text.partition(MARK)
        _, _, after = rest.partition(END)
        text = head + block + after
    else:
        text = text.rstrip("\n") + "\n\n## CDS Hooks latency\n\n" + block + "\n"
    readme.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results = run(args.rounds)
    (ROOT / "benchmarks" / "hooks_results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_readme(results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
