"""The text reader on whole clinical notes written by authors who never saw the code, the
vocabulary or the fixtures (benchmarks/blind-notes/<set>/NN-style.yaml). Each note is
labelled, element by element, for what it documents about the session being billed; the
note is the case's only narrative (`Procedure.note`), as in tests/corpus.

Not a test: it reports (note, element) accuracy and the share of notes read entirely
right, per set and per element, so that a change can be measured on writing it was not
tuned on. A set is scored once before anyone reads it; the scores are kept in
benchmarks/README.md ("Whole notes").

    python benchmarks/bench_blind_notes.py [--misses] [--json FILE] [SET ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_adapter.rules import Pack, load_pack  # noqa: E402
from fhir_adapter.testing.corpus import RULES, documented_elements  # noqa: E402

NOTES = ROOT / "benchmarks" / "blind-notes"


def load_notes(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, labelled note) for every note of a set, in file order."""
    notes = []
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        unknown = set(data["elements"]) - set(RULES)
        if unknown or not isinstance(data.get("note"), str):
            raise SystemExit(f"{path}: unknown elements {sorted(unknown)} or no note text")
        notes.append((path.name, data))
    return notes


def score_set(pack: Pack, notes: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-element right/total, notes entirely right, and every miss."""
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    misses: list[dict[str, Any]] = []
    whole = 0
    for name, data in notes:
        wrong = []
        # the session's date, as a case's Procedure.performed[x] gives it
        date = data.get("date_of_service")
        found = documented_elements(pack, data["note"], str(date) if date else None)
        for element, expected in sorted(data["elements"].items()):
            got = found[element]
            total[element] += 1
            if got is bool(expected):
                right[element] += 1
            else:
                wrong.append(element)
                misses.append({"note": name, "element": element, "expected": bool(expected)})
        whole += not wrong
    return {
        "notes": len(notes),
        "notes_right": whole,
        "decisions": sum(total.values()),
        "decisions_right": sum(right.values()),
        "elements": {e: [right[e], total[e]] for e in sorted(total)},
        "misses": misses,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help="set names (default: all)")
    parser.add_argument("--misses", action="store_true", help="list the decisions got wrong")
    parser.add_argument("--json", type=Path, help="also write the scores to this file")
    parser.add_argument("--root", type=Path, default=NOTES, help="where the sets are")
    args = parser.parse_args()
    pack = load_pack()
    names = args.sets or sorted(p.name for p in args.root.iterdir() if p.is_dir())
    results = {}
    for name in names:
        r = results[name] = score_set(pack, load_notes(args.root / name))
        for element, (ok, n) in r["elements"].items():
            print(f"{name:6} {element:30} {ok:3}/{n:3}")
        print(
            f"{name:6} {'decisions':30} {r['decisions_right']:3}/{r['decisions']:3}"
            f" = {r['decisions_right'] / max(r['decisions'], 1):.1%}"
        )
        print(
            f"{name:6} {'notes entirely right':30} {r['notes_right']:3}/{r['notes']:3}"
            f" = {r['notes_right'] / max(r['notes'], 1):.1%}"
        )
        if args.misses:
            for m in r["misses"]:
                print(f"       {m['note']}: {m['element']} expected {m['expected']}")
    d = sum(r["decisions_right"] for r in results.values())
    dt = sum(r["decisions"] for r in results.values())
    n = sum(r["notes_right"] for r in results.values())
    nt = sum(r["notes"] for r in results.values())
    print(
        f"all sets: decisions {d}/{dt} = {d / max(dt, 1):.1%}; notes {n}/{nt} = {n / max(nt, 1):.1%}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
