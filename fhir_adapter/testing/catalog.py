"""The bundled fixtures as a product: known 47382 cases with known answers.

Other teams use them in their own pipelines' integration tests, through
`fhir-adapter fixtures ...` or the pytest plugin.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from fhir_adapter.errors import AdapterError

if TYPE_CHECKING:
    from fhir_adapter.client.rest import FhirClient


def fixtures_dir() -> Path:
    """fixtures/cases of the source tree, else the copy installed with the package."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "fixtures" / "cases", here / "_data" / "fixtures" / "cases"):
        if candidate.is_dir():
            return candidate
    raise AdapterError("the bundled fixtures are missing from this install")


@dataclass(frozen=True)
class FixtureCase:
    """One fixture Bundle and what the adapter must conclude about each case in it."""

    name: str
    description: str
    exercises: list[str]
    expected: list[dict[str, Any]]
    path: Path = field(repr=False)

    def bundle(self) -> dict[str, Any]:
        """The fixture as stored (a collection or transaction Bundle)."""
        value: dict[str, Any] = orjson.loads(self.path.read_bytes())
        return value

    def resources(self) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.bundle().get("entry", [])]

    def transaction(self) -> dict[str, Any]:
        """An idempotent transaction: every entry is a PUT to a fixed id.

        Resources that have no id (the urn:uuid fixture) get the UUID of their
        fullUrl as id, so loading twice stores nothing new and no entry needs a
        conditional search.
        """
        source = self.bundle()
        entries = []
        for entry in source.get("entry", []):
            resource = copy.deepcopy(entry["resource"])
            rtype = resource["resourceType"]
            url = entry.get("fullUrl") or ""
            if not resource.get("id"):
                if not url.startswith("urn:uuid:"):
                    raise AdapterError(
                        f"fixture {self.name}: a {rtype} has neither id nor urn:uuid"
                    )
                resource["id"] = url.removeprefix("urn:uuid:")
            request = {"method": "PUT", "url": f"{rtype}/{resource['id']}"}
            entries.append({"fullUrl": url or None, "resource": resource, "request": request})
        for entry in entries:
            if entry["fullUrl"] is None:
                del entry["fullUrl"]
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    def server_resources(self) -> list[dict[str, Any]]:
        """The resources as a server stores them (what a Bulk export of it gives): every
        one with an id (see `transaction`), `urn:uuid:` references rewritten to `Type/id`,
        since outside its Bundle a fullUrl means nothing."""
        entries = self.transaction()["entry"]
        local = {
            e["fullUrl"]: e["request"]["url"]
            for e in entries
            if str(e.get("fullUrl", "")).startswith("urn:")
        }
        return [_relinked(e["resource"], local) for e in entries]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "exercises": self.exercises,
            "cases": self.expected,
        }


def _relinked(value: Any, local: dict[str, str]) -> Any:
    """`value` with every Reference to a key of `local` pointing at its value instead."""
    if isinstance(value, list):
        return [_relinked(v, local) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _relinked(v, local) for k, v in value.items()}
    ref = out.get("reference")
    if isinstance(ref, str) and ref in local:
        out["reference"] = local[ref]
    return out


def list_fixtures() -> list[FixtureCase]:
    out = []
    for meta in sorted(fixtures_dir().glob("*.expected.yaml")):
        name = meta.name[: -len(".expected.yaml")]
        doc = yaml.safe_load(meta.read_text(encoding="utf-8"))
        out.append(
            FixtureCase(
                name,
                doc["description"],
                list(doc.get("exercises") or []),
                list(doc["cases"]),
                meta.with_name(f"{name}.json"),
            )
        )
    return out


def write_fixtures(directory: Path, form: str = "bundle") -> list[Path]:
    """Write every fixture as `bundle` (as stored), `transaction` or `ndjson` (one file per type)."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    cases = list_fixtures()
    if form == "ndjson":
        by_type: dict[str, list[bytes]] = defaultdict(list)
        for case in cases:
            for resource in case.server_resources():
                by_type[resource["resourceType"]].append(orjson.dumps(resource))
        for rtype, lines in sorted(by_type.items()):
            path = directory / f"{rtype}.ndjson"
            path.write_bytes(b"\n".join(lines) + b"\n")
            written.append(path)
    else:
        for case in cases:
            value = case.bundle() if form == "bundle" else case.transaction()
            path = directory / f"{case.name}.json"
            path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2))
            written.append(path)
    for case in cases:
        meta = directory / f"{case.name}.expected.yaml"
        meta.write_text(yaml.safe_dump(case.summary(), sort_keys=False), encoding="utf-8")
        written.append(meta)
    return written


def load_fixtures(client: FhirClient, names: list[str] | None = None) -> int:
    """Load fixtures into a server, one idempotent transaction each; returns how many."""
    count = 0
    for case in list_fixtures():
        if names is None or case.name in names:
            client.transaction(case.transaction())
            count += 1
    return count
