"""Reading FHIR JSON the ways real systems write it, and refusing what is not FHIR."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter import InputError, ResourceStore, read_paths
from fhir_adapter.sources.files import Loaded

from .conftest import CASES, load_bundle


def _write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


@pytest.mark.parametrize("btype", ["collection", "searchset", "transaction", "batch", "document"])
def test_bundles_of_every_type_are_flattened(tmp_path: Path, btype: str) -> None:
    bundle = load_bundle("ex1-hcc-ct")
    bundle["type"] = btype
    loaded = list(read_paths([_write(tmp_path / "b.json", bundle)]))
    assert len(loaded) == len(bundle["entry"])
    assert {x.resource["resourceType"] for x in loaded} >= {"Procedure", "Patient", "Encounter"}


def test_ndjson_gzip_and_directories(tmp_path: Path) -> None:
    resources = [e["resource"] for e in load_bundle("ex1-hcc-ct")["entry"]]
    lines = "\n".join(json.dumps(r) for r in resources) + "\n\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Export.ndjson").write_text(lines)
    with gzip.open(tmp_path / "a" / "more.ndjson.gz", "wt") as fh:
        fh.write(lines)
    (tmp_path / "a" / "README.txt").write_text("not input")
    loaded = list(read_paths([tmp_path]))
    assert len(loaded) == 2 * len(resources)


def test_nested_bundle_and_resourceless_entries(tmp_path: Path) -> None:
    inner = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}],
    }
    outer = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": inner},
            {"request": {"method": "DELETE", "url": "Patient/old"}},
            {"response": {"status": "200 OK"}},
        ],
    }
    loaded = list(read_paths([_write(tmp_path / "n.json", outer)]))
    assert [x.resource["id"] for x in loaded] == ["p1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"resourceType": "Patient",\n "id": }', "malformed JSON"),
        ("[1, 2]", "expected a FHIR resource"),
        ('{"name": "x"}', "no resourceType"),
        ('{"resourceType": "Patinet"}', "unknown resourceType 'Patinet'"),
        (
            '{"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:1"}]}',
            "entry[0] has no resource",
        ),
        ('{"resourceType": "Bundle", "entry": [{"resource": {"id": "x"}}]}', "no resourceType"),
        ('{"resourceType": "Patient", "id": 7}', "id must be a string"),
    ],
)
def test_bad_json_gets_a_clear_error_with_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        list(read_paths([path]))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "resourceType": "Patient",\n  "id": "a",,\n}')
    with pytest.raises(InputError, match=r"bad\.json:3: malformed JSON"):
        list(read_paths([path]))


def test_ndjson_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    path.write_text(
        '{"resourceType": "Patient", "id": "a"}\n\n{"resourceType": "Patient", "id": \n'
    )
    with pytest.raises(InputError, match=r"Patient\.ndjson:3: malformed JSON"):
        list(read_paths([path]))


def test_missing_path_and_truncated_gzip(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(read_paths([tmp_path / "nope.json"]))
    gz = tmp_path / "x.ndjson.gz"
    gz.write_bytes(gzip.compress(b'{"resourceType": "Patient"}\n' * 50)[:30])
    with pytest.raises(InputError, match="cannot read file"):
        list(read_paths([gz]))


def _store(*items: tuple[dict[str, Any], str | None]) -> ResourceStore:
    return ResourceStore(Loaded(r, u, "t") for r, u in items)


def test_references_resolve_every_way() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    anon = {"resourceType": "Encounter"}
    store = _store((patient, "http://srv/fhir/Patient/p1"), (anon, "urn:uuid:abc"))
    assert store.resolve({"reference": "Patient/p1"}) is patient
    assert store.resolve({"reference": "http://srv/fhir/Patient/p1/_history/2"}) is patient
    # an absolute reference to another server names another resource (FHIR R4 3.2.0.1.x)
    assert store.resolve({"reference": "http://other/base/Patient/p1"}) is None
    # ...but a resource that came without a server base (NDJSON, urn:uuid) matches by tail
    bare = _store((patient, None))
    assert bare.resolve({"reference": "http://other/base/Patient/p1"}) is patient
    assert store.resolve({"reference": "Patient/p1/_history/3"}) is patient
    assert store.resolve({"reference": "http://srv/fhir/Patient/p1"}) is patient
    assert store.resolve({"reference": "urn:uuid:abc"}) is anon
    assert store.resolve({"reference": "Patient/missing"}) is None
    assert store.resolve({"display": "no reference"}) is None
    container = {
        "resourceType": "Procedure",
        "contained": [{"resourceType": "Location", "id": "l"}],
    }
    assert store.resolve({"reference": "#l"}, container) == {"resourceType": "Location", "id": "l"}


def test_later_copy_of_same_resource_wins() -> None:
    store = _store(
        ({"resourceType": "Patient", "id": "p", "gender": "male"}, None),
        ({"resourceType": "Patient", "id": "p", "gender": "female"}, None),
    )
    assert len(store) == 1
    assert store.get("Patient/p")["gender"] == "female"  # type: ignore[index]


def test_every_fixture_reads(tmp_path: Path) -> None:
    assert len(list(read_paths([CASES]))) > 200
