"""The sha256 of every case's output bytes, to show that a speed change changes no output.

Each case's `CaseOutput.to_bytes()` (its evaluation, Claim, DetectedIssues, identifiers) is
hashed, for every fixture file (priced with fixtures/chargemaster.csv) and for the generated
dense and sparse exports of benchmarks/bench.py, at 1 and 2 workers:

    python benchmarks/digests.py --save before.json      # on the code before a change
    python benchmarks/digests.py --compare before.json   # after it: exit 1 on any difference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = "2026-11-27T00:00:00+00:00"


def digests(dense: list[int], sparse: list[int], workers: list[int]) -> dict[str, dict[str, str]]:
    """{run: {case label: sha256 of its output bytes}} for every run asked for."""
    from benchmarks.bench import export_for
    from fhir_adapter.pack import load_pack
    from fhir_adapter.pipeline import evaluate_paths
    from fhir_adapter.writeback.charges import load_charges

    pack = load_pack()
    charges = load_charges(ROOT / "fixtures" / "chargemaster.csv")
    runs: dict[str, list[Path]] = {
        f"fixture {f.name}": [f] for f in sorted((ROOT / "fixtures" / "cases").glob("*.json"))
    }
    runs.update({f"dense {n}": [export_for(n, dense=True)] for n in dense})
    runs.update({f"sparse {n}": [export_for(n)] for n in sparse})
    out: dict[str, dict[str, str]] = {}
    for name, paths in runs.items():
        priced = name.startswith("fixture")
        for w in workers if not priced else [1]:
            outputs = evaluate_paths(
                paths, pack, now=NOW, workers=w, charges=charges if priced else None
            )
            out[f"{name} w{w}"] = {
                o.evaluation.procedure: hashlib.sha256(o.to_bytes()).hexdigest() for o in outputs
            }
            print(f"{name} w{w}: {len(outputs)} cases", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dense", default="4000", help="dense export sizes ('' for none)")
    parser.add_argument("--sparse", default="10000", help="sparse export sizes ('' for none)")
    parser.add_argument("--workers", default="1,2")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--save", type=Path)
    what.add_argument("--compare", type=Path)
    args = parser.parse_args()

    def sizes(text: str) -> list[int]:
        return [int(s) for s in text.split(",") if s]

    found = digests(sizes(args.dense), sizes(args.sparse), sizes(args.workers))
    if args.save:
        args.save.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"{sum(len(v) for v in found.values())} case outputs in {len(found)} runs")
        return
    saved: dict[str, dict[str, str]] = json.loads(args.compare.read_text())
    differ = 0
    for run, cases in found.items():
        before = saved.get(run)
        if before is None:
            print(f"{run}: not in {args.compare}")
            differ += 1
            continue
        changed = [k for k in sorted(set(before) | set(cases)) if before.get(k) != cases.get(k)]
        differ += len(changed)
        state = "identical" if not changed else f"{len(changed)} cases differ, e.g. {changed[:3]}"
        print(f"{run}: {len(cases)} cases, {state}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
