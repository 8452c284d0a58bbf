"""Every source a rule, value set, modifier or table row names resolves inside the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
TAG = re.compile(r"\[([A-Z][A-Za-z0-9.]*(?:-[A-Za-z0-9.]+)*)\]")


def catalog() -> dict[str, Any]:
    entries: dict[str, Any] = yaml.safe_load((MAPPINGS / "sources.yaml").read_text())["sources"]
    return entries


def sources_in(node: Any) -> list[str]:
    """Every `source:` string anywhere in a YAML document."""
    if isinstance(node, dict):
        out = [v for k, v in node.items() if k == "source" and isinstance(v, str)]
        for v in node.values():
            out += sources_in(v)
        return out
    if isinstance(node, list):
        return [s for v in node for s in sources_in(v)]
    return []


def test_catalog_entries_are_complete() -> None:
    entries = catalog()
    assert len(entries) >= 20
    for tag, entry in entries.items():
        assert TAG.fullmatch(f"[{tag}]"), tag
        assert entry["title"] and entry["url"].startswith(("http://", "https://")), tag
        assert entry["status"] in ("V", "V3", "U"), tag


def test_every_pack_source_names_a_catalogued_tag() -> None:
    entries = catalog()
    # the pack, and each payer overlay (mappings/payers/): every criterion cites its policy
    for pack in [*MAPPINGS.glob("*.yaml"), *MAPPINGS.glob("payers/*.yaml")]:
        if pack.name == "sources.yaml":
            continue
        for source in sources_in(yaml.safe_load(pack.read_text())):
            tags = TAG.findall(source)
            assert tags, f"{pack.name}: source {source!r} names no [TAG]"
            unknown = [t for t in tags if t not in entries]
            assert not unknown, f"{pack.name}: {unknown} not in mappings/sources.yaml"


def test_every_table_source_tag_is_catalogued() -> None:
    """Table provenance (mappings/tables/SOURCES.yaml) may add a URL, but its tags resolve too."""
    path = MAPPINGS / "tables" / "SOURCES.yaml"
    entries = catalog()
    for source in sources_in(yaml.safe_load(path.read_text())):
        unknown = [t for t in TAG.findall(source) if t not in entries]
        assert not unknown, f"tables/SOURCES.yaml: {unknown} not in mappings/sources.yaml"


def test_a_missing_tag_is_caught() -> None:
    assert TAG.findall("[NOT-A-SOURCE] V") == ["NOT-A-SOURCE"]
    assert "NOT-A-SOURCE" not in catalog()
