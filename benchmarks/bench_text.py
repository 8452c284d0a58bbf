"""Text engine: our ConText against medspaCy's, on the labelled corpus and on a dense export.

    python benchmarks/bench_text.py [--patients 1000] [--site DIR]

Accuracy: every sentence of tests/corpus/ goes through the same target finder
(mappings/text/); what differs is who decides whether each mention counts: our
engine, medspaCy's ConText with its default rules, or medspaCy's ConText given our
cue lists. Cost: the text layer of every case of a generated dense export (every
patient a 47382 case) in µs per case, beside the orjson floor (parsing every line of
the same export), all measured in this run.

medspaCy is optional (`pip install 'fhir-adapter[nlp-compare]'`, or `--site` naming a
site-packages directory that has it); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_adapter.case import assemble  # noqa: E402
from fhir_adapter.pack import load_pack  # noqa: E402
from fhir_adapter.sources.files import read_paths  # noqa: E402
from fhir_adapter.sources.store import ResourceStore  # noqa: E402
from fhir_adapter.text.engine import ContextEngine, Mention  # noqa: E402
from fhir_adapter.text.index import TextIndex  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
CATEGORY = {  # our status -> medspaCy category
    "negated": "NEGATED_EXISTENCE",
    "hypothetical": "HYPOTHETICAL",
    "historical": "HISTORICAL",
    "uncertain": "POSSIBLE_EXISTENCE",
    "other": "OTHER",
}
DIRECTION = {"forward": "FORWARD", "backward": "BACKWARD", "bidirectional": "BIDIRECTIONAL"}

Decide = Callable[[Mention], bool]


def corpus() -> list[tuple[str, str, bool]]:
    out = []
    for path in sorted(CORPUS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        out += [(data["element"], i["text"], bool(i["documents"])) for i in data["items"]]
    return out


def accuracy(
    engine: ContextEngine, items: list[tuple[str, str, bool]], decide: Decide
) -> dict[str, tuple[int, int]]:
    """Per element (right, total): documented = some mention of it is judged affirmed."""
    score: dict[str, tuple[int, int]] = {}
    for element, text, label in items:
        got = any(decide(m) for m in engine.classify(text, element))
        right, total = score.get(element, (0, 0))
        score[element] = (right + (got is label), total + 1)
    return score


class MedspacyConText:
    """medspaCy's ConText deciding our mentions: each mention's sentence is one spaCy doc."""

    def __init__(self, engine: ContextEngine, own_rules: bool) -> None:
        import spacy

        try:
            from loguru import logger

            logger.remove()  # PyRuSH logs at DEBUG through loguru
        except ImportError:
            pass
        from medspacy.context import ConTextRule

        self.spacy = spacy
        self.nlp = spacy.blank("en")
        if own_rules:
            self.context = self.nlp.add_pipe("medspacy_context", config={"rules": None})
            self.context.add(self._rules(engine, ConTextRule))
        else:
            self.context = self.nlp.add_pipe("medspacy_context")
        self.calls = 0

    @staticmethod
    def _rules(engine: ContextEngine, rule: Any) -> list[Any]:
        rules = []
        for mod in engine.cfg.modifiers.values():
            if mod.category == "terminate":
                kw: dict[str, Any] = {"direction": "TERMINATE"}
                category = "TERMINATE"
            elif mod.category == "pseudo":
                kw = {"direction": "PSEUDO"}
                category = "PSEUDO"
            else:
                category = CATEGORY[mod.category]
                kw = {
                    "direction": DIRECTION[mod.direction],
                    # medspaCy counts the scope in tokens and wants at least one
                    "max_scope": max(1, engine.cfg.window if mod.window is None else mod.window),
                }
                if mod.only:
                    kw["allowed_types"] = set(mod.only)
                elif mod.skip:
                    kw["excluded_types"] = set(mod.skip)
            rules += [rule(cue, category, **kw) for cue in mod.cues]
        return rules

    def decide(self, m: Mention) -> bool:
        self.calls += 1
        doc = self.nlp.make_doc(m.sentence)
        for i, tok in enumerate(doc):
            tok.is_sent_start = i == 0
        span = doc.char_span(m.start, m.end, label=m.element, alignment_mode="expand")
        if span is None:
            return True
        doc.ents = [span]
        self.context(doc)
        ent = doc.ents[0]
        ruled_out = {mod.category for mod in ent._.modifiers} & set(CATEGORY.values())
        return not ruled_out


def dense_cases(patients: int) -> tuple[list[Any], float]:
    """Cases of a generated dense export, and the orjson floor per case (parse every line)."""
    from fhir_adapter.testing.synth import generate

    tmp = Path(tempfile.mkdtemp(prefix="bench-text-"))
    generate(tmp, patients, 7, False, dense=True)
    lines = [ln for f in sorted(tmp.glob("*.ndjson")) for ln in f.read_bytes().splitlines()]

    def parse_all() -> None:  # the lean floor: parse every line, keep nothing
        for ln in lines:
            orjson.loads(ln)

    floor = best(parse_all)
    store = ResourceStore()
    for loaded in read_paths([tmp]):
        store.add(loaded.resource)
    pack = load_pack()
    cases = [
        assemble(store, p, pack.procedure_system, pack.procedure_code)
        for p in store.of_type("Procedure")
        if any(
            c.get("code") == pack.procedure_code for c in (p.get("code") or {}).get("coding", [])
        )
    ]
    return cases, floor / len(cases) * 1e6


def best(fn: Callable[[], Any], reps: int = 3, engine: ContextEngine | None = None) -> float:
    gc.collect()
    times = []
    for _ in range(reps):
        if engine is not None:
            engine.forget()  # every repetition is a first pass over the cases
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--site", help="a site-packages directory with medspaCy (appended to sys.path)")
    args = ap.parse_args()
    if args.site:
        sys.path.append(args.site)
    pack = load_pack()
    engine = pack.engine
    items = corpus()
    rows: list[tuple[str, dict[str, tuple[int, int]], float | None]] = []
    cases, floor_us = dense_cases(args.patients)
    elements = sorted(engine.targets)

    def own_text_layer() -> None:
        for case in cases:
            index = TextIndex(case)
            for element in elements:
                for _ in index.mentions(engine, element):
                    pass

    own_us = best(own_text_layer, engine=engine) / len(cases) * 1e6
    rows.append(
        ("own ConText (mappings/text/)", accuracy(engine, items, lambda m: m.affirmed), own_us)
    )
    try:
        import medspacy  # noqa: F401
    except ImportError:
        print("medspaCy is not installed: pip install 'fhir-adapter[nlp-compare]' (rows skipped)\n")
    else:
        for label, own_rules in (
            ("medspaCy ConText, default rules", False),
            ("medspaCy ConText, our cues", True),
        ):
            med = MedspacyConText(engine, own_rules)
            score = accuracy(engine, items, med.decide)

            def med_text_layer(med: MedspacyConText = med) -> None:
                for case in cases:
                    index = TextIndex(case)
                    for element in elements:
                        for _, m in index.mentions(engine, element):
                            med.decide(m)

            med_us = best(med_text_layer, reps=1, engine=engine) / len(cases) * 1e6
            rows.append((label, score, med_us))
    print(f"dense export: {len(cases)} cases; orjson floor {floor_us:.0f} µs per case\n")
    head = "| engine | " + " | ".join(elements_in(items)) + " | all | µs / case | x own | x floor |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label, score, us in rows:
        cells = [f"{score[e][0]}/{score[e][1]}" for e in elements_in(items)]
        right = sum(r for r, _ in score.values())
        total = sum(t for _, t in score.values())
        cost = f"{us:.0f} | {us / own_us:.1f} | {us / floor_us:.1f}" if us is not None else "—"
        print(f"| {label} | " + " | ".join(cells) + f" | {right / total:.1%} | {cost} |")


def elements_in(items: list[tuple[str, str, bool]]) -> list[str]:
    return sorted({e for e, _, _ in items})


if __name__ == "__main__":
    main()
