"""Hostile shapes of note text: the CPU time to read a note of each shape, against a note of
plain clinical prose of the same length, in the same run.

    python benchmarks/bench_hostile_text.py [--chars 200000] [--repeat 2]

A shape costs in proportion to its length when its ratio to prose stays put as --chars
grows. The shapes are what pasted text brings into a note: a ruler of dashes copied many
times, blank padding, a signature line of underscores, a number or a "word" thousands of
characters long, many 20- or 60-digit numbers, a base64 blob.
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_adapter.pack import load_pack  # noqa: E402
from fhir_adapter.rules import Pack, evaluate_case  # noqa: E402
from fhir_adapter.testing.corpus import note_case  # noqa: E402

PROSE = (
    "Percutaneous radiofrequency ablation of a 2.1 cm hepatocellular carcinoma in segment 6 "
    "under CT guidance. Not a surgical candidate because of portal hypertension. RF energy "
    "at 150 W for 12 minutes. Follow-up CT showed complete ablation without residual "
    "enhancement. "
)


def _fill(unit: str, chars: int) -> str:
    return (unit * (chars // len(unit) + 1))[:chars]


def shapes(chars: int) -> dict[str, str]:
    rng = random.Random(7)
    blob = base64.b64encode(rng.randbytes(chars)).decode()
    body = {
        "prose": _fill(PROSE, chars),
        "ruler of dashes": _fill("-" * 5_000 + "\n", chars),
        "blank padding": _fill(" " * 3_000 + "\n", chars),
        "underscores": _fill("_" * 10_000 + "\n", chars),
        "a 20,000-digit number": _fill("7" * 20_000 + "\n", chars),
        "a 40,000-letter word": _fill("x" * 40_000 + "\n", chars),
        "60-digit numbers": _fill("7" * 60 + ". ", chars),
        "20-digit numbers": _fill("7" * 20 + ". ", chars),
        "base64 blob": blob[:chars],
    }
    return {name: PROSE + "\n" + text + "\n" + PROSE for name, text in body.items()}


def read_seconds(pack: Pack, text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        pack.engine.forget()
        case = note_case(pack, text)
        started = time.process_time()
        evaluate_case(pack, case)
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chars", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    pack = load_pack()
    read_seconds(pack, PROSE * 20, 1)  # vocabulary compiled
    texts = shapes(args.chars)
    prose = read_seconds(pack, texts["prose"], args.repeat)
    print(f"{args.chars:,} characters a shape, CPU s (best of {args.repeat})")
    print("| shape | CPU s | x prose |")
    print("|---|---:|---:|")
    for name, text in texts.items():
        took = prose if name == "prose" else read_seconds(pack, text, args.repeat)
        print(f"| {name} | {took:.2f} | {took / prose:.2f} |", flush=True)


if __name__ == "__main__":
    main()
