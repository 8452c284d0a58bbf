"""The fixtures as a product: listing, writing in three forms, and the pytest plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_adapter import evaluate_paths
from fhir_adapter.cli import main
from fhir_adapter.testing.catalog import list_fixtures

pytest_plugins = ["pytester"]


def test_list_has_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fixtures", "list", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in doc] == [c.name for c in list_fixtures()]
    assert len(doc) >= 15 and all(d["description"] and d["cases"] for d in doc)
    assert main(["fixtures", "list"]) == 0
    assert "ex1-hcc-ct" in capsys.readouterr().out


@pytest.mark.parametrize("form", ["bundle", "transaction", "ndjson"])
def test_written_forms_evaluate_the_same(tmp_path: Path, form: str) -> None:
    """Every fixture, written in each form, gives what its expected.yaml says (NDJSON too:
    its `urn:uuid:` references are rewritten to `Type/id`, as a server would store them)."""
    assert main(["fixtures", "write", str(tmp_path), "--as", form]) == 0
    got = {
        o.evaluation.procedure: (
            o.evaluation.outcome,
            sorted(f.code for f in o.evaluation.findings),
            sorted(m.code for m in o.evaluation.modifiers),
        )
        for o in evaluate_paths([tmp_path])
    }
    want = {
        c["procedure"]: (c["outcome"], sorted(c["findings"]), sorted(c.get("modifiers") or []))
        for f in list_fixtures()
        for c in f.expected
    }
    assert got == want


def test_ndjson_form_has_no_bundle_local_references(tmp_path: Path) -> None:
    """A `urn:uuid:` means nothing outside its Bundle: the NDJSON form has none."""
    assert main(["fixtures", "write", str(tmp_path), "--as", "ndjson"]) == 0
    text = "".join(p.read_text() for p in tmp_path.glob("*.ndjson"))
    assert '"reference":"urn:' not in text
    assert '"reference":"Patient/' in text


def test_transaction_form_is_idempotent_puts() -> None:
    case = next(c for c in list_fixtures() if c.name == "ex1-hcc-ct")
    tx = case.transaction()
    assert tx["type"] == "transaction"
    assert all(e["request"]["method"] == "PUT" for e in tx["entry"])


def test_pytest_plugin_parametrizes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_each(fhir_adapter_case):
            assert fhir_adapter_case.bundle()["resourceType"] == "Bundle"
            assert fhir_adapter_case.expected[0]["outcome"] in ("claim", "issues")

        def test_untouched():
            pass
        """
    )
    result = pytester.runpytest()  # the pytest11 entry point registers the plugin
    result.assert_outcomes(passed=len(list_fixtures()) + 1)


def test_every_fixture_loads_in_one_transaction_of_at_most_fifty_writes() -> None:
    """The test server refuses a transaction of more than 50 updates (Medplum's limit)."""
    from fhir_adapter.testing.catalog import list_fixtures

    sizes = {case.name: len(case.transaction()["entry"]) for case in list_fixtures()}
    assert sizes and max(sizes.values()) <= 50, {k: v for k, v in sizes.items() if v > 50}


def test_written_fixtures_can_be_a_few_named_ones(tmp_path: Path) -> None:
    """Only the named fixtures' resources and summaries; a name that is no fixture is an
    error, not an empty directory."""
    from fhir_adapter.testing.catalog import write_fixtures

    names = ["ex1-hcc-ct", "v06-two-in-session"]
    write_fixtures(tmp_path, "ndjson", names)
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == [f"{n}.expected.yaml" for n in names]
    wanted = {c.name: c for c in list_fixtures() if c.name in names}
    ids = {r["id"] for c in wanted.values() for r in c.server_resources()}
    written = {
        json.loads(line)["id"]
        for p in tmp_path.glob("*.ndjson")
        for line in p.read_text().splitlines()
    }
    assert written == ids
    found = {o.evaluation.procedure for o in evaluate_paths([tmp_path])}
    assert found == {c["procedure"] for w in wanted.values() for c in w.expected}
    with pytest.raises(ValueError, match="no-such-fixture"):
        write_fixtures(tmp_path / "x", "ndjson", ["ex1-hcc-ct", "no-such-fixture"])
