"""Run-on notes, 5 KB to 1 MB: the cost of reading a note must grow with its length alone.

A note with no sentence break and many clinical terms (issue 24's attack: one clause
repeated, joined by commas; a realistic operative note whose sentences are joined by
semicolons) is evaluated as the only narrative of a 47382 case (`evaluate_case`, every
rule), next to the same text split into sentences, in the same run: the split note is
the baseline, and both must give the same findings. Reported: seconds (best of
`--repeat`), microseconds per KB (flat when the cost is linear) and the ratio of the
run-on note to its split twin. Results go to benchmarks/results-runon.json and the table
in benchmarks/README.md.

    python benchmarks/bench_runon.py [--sizes 5,10,20,40,100,200,500,1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_adapter.rules import Pack, evaluate_case, load_pack  # noqa: E402
from fhir_adapter.testing.corpus import note_case  # noqa: E402

KB = 1000  # characters

ATTACK = ["tumor size not measured, ablation of segment 4 lesion with microwave energy"]
NOTE = [
    "The patient has a 3.2 cm hepatocellular carcinoma in segment 7",
    "she is not a surgical candidate because of portal hypertension",
    "cryoablation was considered, but not chosen",
    "under CT guidance a radiofrequency electrode was placed into the tumor",
    "radiofrequency energy was applied at 150 W for 12 minutes",
    "a laparoscopic approach was not used",
    "post-ablation CT showed complete ablation with no residual enhancement",
    "history of open right hepatectomy in 2018",
    "follow-up MRI in 4 weeks to confirm complete ablation",
    "her mother had a liver lesion treated with cryotherapy",
]
# shape -> (its clauses, how the run-on note joins them)
SHAPES = {"attack": (ATTACK, ", "), "operative note": (NOTE, "; ")}


def texts(clauses: list[str], joiner: str, size: int) -> tuple[str, str]:
    """The run-on note of about `size` characters, and the same clauses as sentences."""
    count = max(1, size // (sum(len(c) + 2 for c in clauses) // len(clauses)))
    chosen = [clauses[i % len(clauses)] for i in range(count)]
    run_on = joiner.join(chosen) + "."
    split = " ".join(c[0].upper() + c[1:] + "." for c in chosen)
    return run_on, split


def timed(pack: Pack, text: str, repeat: int) -> tuple[float, list[str]]:
    best = float("inf")
    codes: list[str] = []
    for _ in range(repeat):
        case = note_case(pack, text)
        gc.collect()
        started = time.perf_counter()
        evaluation = evaluate_case(pack, case)
        best = min(best, time.perf_counter() - started)
        codes = sorted(f.code for f in evaluation.findings)
    return best, codes


def measure(pack: Pack, sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for shape, (clauses, joiner) in SHAPES.items():
        timed(pack, texts(clauses, joiner, 2 * KB)[0], 1)  # regexes compiled, caches warm
        for size in sizes:
            run_on, split = texts(clauses, joiner, size * KB)
            run_s, run_codes = timed(pack, run_on, repeat)
            split_s, split_codes = timed(pack, split, repeat)
            row = {
                "shape": shape,
                "kb": len(run_on) / KB,
                "run_on_s": run_s,
                "split_s": split_s,
                "run_on_us_per_kb": run_s / (len(run_on) / KB) * 1e6,
                "split_us_per_kb": split_s / (len(split) / KB) * 1e6,
                "ratio": run_s / split_s,
                "same_findings": run_codes == split_codes,
                "findings": len(run_codes),
            }
            rows.append(row)
            print(
                f"{shape:15} {row['kb']:8.0f} KB  run-on {run_s:7.3f} s "
                f"({row['run_on_us_per_kb']:6.0f} us/KB)  split {split_s:7.3f} s  "
                f"x{row['ratio']:.2f}  same findings: {row['same_findings']}",
                file=sys.stderr,
            )
    return rows


def write_readme(rows: list[dict[str, Any]], machine: str) -> None:
    lines = [
        "<!-- runon -->",
        "| note | KB | run-on s | µs per KB | split into sentences s | µs per KB | run-on / split "
        "| same findings |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['kb']:,.0f} | {r['run_on_s']:.3f} | {r['run_on_us_per_kb']:,.0f} "
            f"| {r['split_s']:.3f} | {r['split_us_per_kb']:,.0f} | {r['ratio']:.2f} "
            f"| {'yes' if r['same_findings'] else '**no**'} |"
        )
    lines += ["", machine, "<!-- /runon -->"]
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.find("<!-- runon -->"), text.find("<!-- /runon -->")
    if start < 0 or end < 0:
        print(
            "benchmarks/README.md has no <!-- runon --> block: table not written", file=sys.stderr
        )
        return
    readme.write_text(
        text[:start] + "\n".join(lines) + text[end + len("<!-- /runon -->") :], encoding="utf-8"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="5,10,20,40,100,200,500,1000", help="KB, comma-separated"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    pack = load_pack()
    rows = measure(pack, sizes, args.repeat)
    machine = (
        f"Machine: {platform.machine()}, Python {platform.python_version()}, best of "
        f"{args.repeat}; measured {time.strftime('%Y-%m-%d')}."
    )
    if not args.no_write:
        out = ROOT / "benchmarks" / "results-runon.json"
        out.write_text(json.dumps({"rows": rows, "machine": machine}, indent=1) + "\n")
        write_readme(rows, machine)
    return 0 if all(r["same_findings"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
