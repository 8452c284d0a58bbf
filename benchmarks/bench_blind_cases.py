"""The whole adapter on blind FHIR cases: Bundles written by other authors from the domain
file alone, each with the outcome a coder would give (benchmarks/blind-cases/<set>/).
Not a test: it reports where the adapter and the author disagree, for a person to judge
(some disagreements are decisions, e.g. a documentation gap is `moderate` and does not
block the Claim unless --block-on says so).

    python benchmarks/bench_blind_cases.py [--block-on SEVERITY] [SET ...]

A file may hold several 47382 Procedures; the expectation is met when one of its cases
meets all of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_adapter import CaseOutput, evaluate_paths  # noqa: E402
from fhir_adapter.pack import load_pack  # noqa: E402

CASES = ROOT / "benchmarks" / "blind-cases"


def _code(concept: dict[str, Any] | None) -> str | None:
    return next((c.get("code") for c in (concept or {}).get("coding", [])), None)


def _problems(output: CaseOutput, expected: dict[str, Any]) -> list[str]:
    """How one case differs from the expectation ([] when it meets all of it)."""
    got = {f.code for f in output.evaluation.findings}
    out = []
    if output.evaluation.outcome != expected["outcome"]:
        out.append(f"outcome {output.evaluation.outcome}, expected {expected['outcome']}")
    missing = set(expected.get("findings") or []) - got
    if missing:
        out.append(f"findings not reported: {sorted(missing)}")
    claim = next((r for r in output.resources if r["resourceType"] == "Claim"), None)
    wanted = expected.get("claim") or {}
    if claim is None or not wanted:
        return out
    items = claim["item"]
    pos = _code(items[0].get("locationCodeableConcept"))
    if wanted.get("place_of_service") and str(wanted["place_of_service"]) != pos:
        out.append(f"place of service {pos}, expected {wanted['place_of_service']}")
    dx = [_code(d["diagnosisCodeableConcept"]) for d in claim.get("diagnosis", [])]
    if wanted.get("diagnoses") and dx[: len(wanted["diagnoses"])] != wanted["diagnoses"]:
        out.append(f"diagnoses {dx}, expected {wanted['diagnoses']} first")
    mods = sorted(str(_code(m)) for m in items[0].get("modifier", []))
    if mods != sorted(wanted.get("modifiers_47382") or []):
        out.append(f"47382 modifiers {mods}, expected {wanted.get('modifiers_47382')}")
    lines = sorted(
        str(_code(i["productOrService"])) + "".join(f"-{_code(m)}" for m in i.get("modifier", []))
        for i in items[1:]
    )
    if lines != sorted(wanted.get("other_lines") or []):
        out.append(f"other lines {lines}, expected {wanted.get('other_lines')}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help="set names (default: all)")
    parser.add_argument("--block-on", default=None, help="the severity that blocks a Claim")
    args = parser.parse_args()
    pack = load_pack()
    names = args.sets or sorted(p.name for p in CASES.iterdir() if p.is_dir())
    agree = total = 0
    for name in names:
        for expected_path in sorted((CASES / name).glob("*.expected.yaml")):
            case = expected_path.with_name(expected_path.name.replace(".expected.yaml", ".json"))
            expected = yaml.safe_load(expected_path.read_text(encoding="utf-8"))
            outputs = evaluate_paths(
                [case], pack, block_on=args.block_on, now="2026-11-28T00:00:00+00:00"
            )
            differences = [_problems(o, expected) for o in outputs] or [["no case found"]]
            best = min(differences, key=len)
            total += 1
            agree += not best
            print(f"{'agrees' if not best else 'DIFFERS':8} {name}/{case.name}")
            for problem in best:
                print(f"           {problem}")
    print(f"{agree}/{total} cases agree with their authors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
