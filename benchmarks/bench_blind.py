"""The text reader on blind sets: sentences written by other authors who never saw
mappings/ or tests/corpus/ (benchmarks/blind/<set>/<element>.yaml). Not a test: it
reports accuracy per set and element, so that a vocabulary change can be measured on
writing it was not tuned on. The history of these sets is in
benchmarks/README.md (Text engine).

    python benchmarks/bench_blind.py [--misses] [SET ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_adapter.pack import load_pack  # noqa: E402
from fhir_adapter.testing.corpus import RULES, documented, load_sentences  # noqa: E402

BLIND = ROOT / "benchmarks" / "blind"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help="set names (default: all)")
    parser.add_argument("--misses", action="store_true", help="list the sentences got wrong")
    args = parser.parse_args()
    pack = load_pack()
    names = args.sets or sorted(p.name for p in BLIND.iterdir() if p.is_dir())
    right = total = 0
    for name in names:
        sentences = load_sentences(BLIND / name)
        set_right = set_total = 0
        for element in sorted(sentences):
            if element not in RULES:
                print(f"{name}: unknown element {element}", file=sys.stderr)
                return 2
            items = sentences[element]
            misses = [
                i for i in items if documented(pack, element, i["text"]) is not i["documents"]
            ]
            set_right += len(items) - len(misses)
            set_total += len(items)
            print(f"{name:4} {element:30} {len(items) - len(misses):3}/{len(items):3}")
            if args.misses:
                for i in misses:
                    print(f"       expected {i['documents']!s:5} ({i['category']}): {i['text']}")
        print(f"{name:4} {'all':30} {set_right:3}/{set_total:3} = {set_right / set_total:.1%}")
        right += set_right
        total += set_total
    print(f"all sets: {right}/{total} = {right / max(total, 1):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
