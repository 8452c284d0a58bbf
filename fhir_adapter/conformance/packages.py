"""The Da Vinci implementation-guide packages, read as published (npm-style `.tgz`).

The packages are vendored under `mappings/ig/` (CC0-1.0) so that a clean checkout has
them; they are read with `tarfile` and nothing is unpacked to disk.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from fhir_adapter.errors import InputError

IG_DIR = Path(__file__).resolve().parent.parent.parent / "mappings" / "ig"
if not IG_DIR.is_dir():  # installed from a wheel: mappings/ travel as package data
    IG_DIR = Path(__file__).resolve().parent.parent / "_data" / "mappings" / "ig"

PAS = "hl7.fhir.us.davinci-pas-2.2.1.tgz"
DTR = "hl7.fhir.us.davinci-dtr-2.0.1.tgz"
CRD = "hl7.fhir.us.davinci-crd-2.0.1.tgz"
PACKAGES = (PAS, DTR, CRD)


def canonical(url: str) -> str:
    """A canonical URL without its `|version`."""
    return url.split("|", 1)[0]


@dataclass
class Package:
    """One package: its StructureDefinitions by canonical URL and its examples."""

    name: str
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)


def _members(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name
                if not member.isfile() or not name.endswith(".json"):
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                try:
                    doc = json.loads(handle.read())
                except ValueError:
                    continue  # package.json's kin that are not FHIR (openapi, .index) are skipped
                if isinstance(doc, dict):
                    yield name, doc
    except (OSError, tarfile.TarError) as exc:
        raise InputError(f"{path}: not a readable IG package ({exc})") from None


@cache
def load_package(name: str) -> Package:
    """The package `name` from `mappings/ig/` (cached: the checker reads it once)."""
    package = Package(name)
    for member, doc in _members(IG_DIR / name):
        parts = member.split("/")
        if parts[:2] == ["package", "example"] and len(parts) == 3:
            package.examples[parts[2]] = doc
        elif (
            len(parts) == 2
            and doc.get("resourceType") == "StructureDefinition"
            and isinstance(doc.get("url"), str)
        ):
            package.definitions[doc["url"]] = doc
    return package


@lru_cache(maxsize=1)
def definitions() -> dict[str, dict[str, Any]]:
    """Every StructureDefinition of the vendored packages, by canonical URL."""
    out: dict[str, dict[str, Any]] = {}
    for name in PACKAGES:
        out.update(load_package(name).definitions)
    return out
