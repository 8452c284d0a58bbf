"""The rule pack is data: schema-checked on load, and a YAML edit changes behaviour."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_adapter import PackError, load_pack
from fhir_adapter.pack import default_pack_path

from .conftest import by_id, findings_of

ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def _raw() -> dict[str, Any]:
    return yaml.safe_load(default_pack_path().read_text())


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _rule(raw: dict[str, Any], code: str) -> dict[str, Any]:
    return next(r for r in raw["rules"] if r["finding"] == code)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda r: _rule(r, "doc-energy").pop("message"),
            "rule 'doc-energy' (message): Field required",
        ),
        (
            lambda r: _rule(r, "doc-energy").update(severity="urgent"),
            "rule 'doc-energy' (severity)",
        ),
        (
            lambda r: _rule(r, "approach-mismatch")["any"][0]["codes"].update(valueset="nope"),
            "rule 'approach-mismatch': unknown value set 'nope'",
        ),
        (
            lambda r: (
                r["text"]
                .setdefault("targets", {})
                .update({"energy-applied": {"keywords": ["unclosed"], "patterns": ["(unclosed"]}})
            ),
            "text target 'energy-applied': bad regular expression",
        ),
        (  # valid as written, invalid in the lower-cased form that runs: found at load
            lambda r: (
                r["text"]
                .setdefault("targets", {})
                .update({"energy-applied": {"keywords": ["energy"], "patterns": ["energy [Z-a]"]}})
            ),
            "text target 'energy-applied': bad regular expression 'energy [Z-a]'",
        ),
        (  # the whole-note scope rules are checked when the pack loads, like the cues
            lambda r: r["text"].update(
                scope={"cues": {"x": {"status": "negated", "reason": "r", "patterns": ["("]}}}
            ),
            "text: text.scope.cues.x: bad regular expression",
        ),
        (
            lambda r: r["text"].update(scope={"roles": {"no-such-section": ["x"]}}),
            "text.scope.roles: 'no-such-section' is not one of text.sections",
        ),
        (
            lambda r: _rule(r, "procedure-not-completed")["any"].append(
                {"fhirpath": {"from": "procedure", "expression": "status = = 'x'"}}
            ),
            "rule 'procedure-not-completed': bad FHIRPath",
        ),
        (
            lambda r: _rule(r, "procedure-not-completed")["any"][0]["value"].update({"in": ["x"]}),
            "exactly one of `in` and `not_in`",
        ),
        (
            lambda r: _rule(r, "doc-energy")["any"][0]["text"].update({"in": ["emails"]}),
            "rule 'doc-energy': unknown text source 'emails'",
        ),
        (
            lambda r: _rule(r, "coverage-missing")["any"][0]["fact"].update(name="weather"),
            "rule 'coverage-missing': unknown fact 'weather'",
        ),
        (lambda r: _rule(r, "doc-energy").update(extra_key=1), "rule 'doc-energy' (extra_key)"),
        (
            lambda r: r["valuesets"]["pos-covered"]["include"][0].update(system="nosuch"),
            "value set 'pos-covered': unknown system alias 'nosuch'",
        ),
        (
            lambda r: r["rules"].append(dict(_rule(r, "doc-energy"))),
            "rule 'doc-energy': finding code defined twice",
        ),
        (
            lambda r: _rule(r, "approach-mismatch")["any"][0].update(
                {"text": {"patterns": "energy-applied"}}
            ),
            "a matcher has exactly one of codes, text, fhirpath, value, fact",
        ),
        (
            lambda r: _rule(r, "approach-mismatch")["any"].append({}),
            "a matcher has exactly one of codes, text, fhirpath, value, fact",
        ),
        (
            lambda r: r["claim"].update(facility_pos="no-such-set"),
            "claim: unknown value set 'no-such-set'",
        ),
        (
            lambda r: r["claim"]["care_team_role"].update(system="carin-careteamrol"),
            "claim: unknown system alias 'carin-careteamrol'",
        ),
        (
            lambda r: r["claim"]["principal_diagnosis_type"].update(system="diagnosistpye"),
            "claim: unknown system alias 'diagnosistpye'",
        ),
        (
            lambda r: r["claim"].update(taxonomy_system="nuc"),
            "claim: unknown system alias 'nuc'",
        ),
        (
            lambda r: r["claim"].update(rendering_functions="no-such-set"),
            "claim: unknown value set 'no-such-set'",
        ),
        (
            lambda r: _rule(r, "approach-mismatch")["any"][0]["codes"].update(
                {"from": ["procedure", "emails"]}
            ),
            "rule 'approach-mismatch': unknown collection 'emails'",
        ),
        (  # strict types: a quoted number is a string, not a number
            lambda r: r["claim"].update(max_diagnoses="12"),
            "claim.max_diagnoses: Input should be a valid integer",
        ),
        (
            lambda r: r["facts"]["units"].update(default_max_units=True),
            "facts.units.default_max_units: Input should be a valid integer",
        ),
        (
            lambda r: r["valuesets"]["cpt-surgery-other"]["include"][0]["ranges"].append(["1"]),
            "List should have at least 2 items",
        ),
        (
            lambda r: r["system_aliases"].update(cpx=["urn:oid:2.16.840.1.113883.6.12"]),
            "system_aliases: unknown system alias 'cpx'",
        ),
        (
            lambda r: r["system_aliases"]["cpt"].append("2.16.840.1.113883.6.12"),
            "system_aliases.cpt: '2.16.840.1.113883.6.12' is not a URI",
        ),
        (
            lambda r: r["system_aliases"]["cpt"].append(r["systems"]["icd10cm"]),
            "is the URL of a system in `systems`",
        ),
        (
            lambda r: r["system_aliases"].update(hcpcs=r["system_aliases"]["cpt"]),
            "is an alias of 'cpt' already",
        ),
        (
            lambda r: r["system_aliases"].update(cpt="urn:oid:2.16.840.1.113883.6.12"),
            "system_aliases.cpt: Input should be a valid list",
        ),
    ],
)
def test_broken_pack_names_file_and_rule(tmp_path: Path, breakage: Any, message: str) -> None:
    raw = _raw()
    breakage(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(PackError) as err:
        load_pack(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unreadable_and_non_yaml(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="cannot read"):
        load_pack(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(PackError, match="not valid YAML"):
        load_pack(bad)


def test_a_pack_not_in_utf8_is_one_line_naming_it(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: r\u00e9gion\n".encode("latin-1"))
    with pytest.raises(PackError) as err:
        load_pack(latin1)
    assert (
        str(err.value) == f"{latin1}: cannot read rule pack: not UTF-8 text (byte 0xe9 at offset 7)"
    )


def test_an_include_not_in_utf8_names_the_include(tmp_path: Path) -> None:
    raw = _raw()
    raw["text"]["include"] = ["latin1.yaml"]
    (tmp_path / "latin1.yaml").write_bytes("negations: [s\u00e9]\n".encode("latin-1"))
    path = _write(tmp_path, raw)
    with pytest.raises(PackError) as err:
        load_pack(path)
    message = str(err.value)
    assert str(tmp_path / "latin1.yaml") in message and "not UTF-8 text" in message
    assert len(message.splitlines()) == 1


def test_an_endless_include_is_refused_by_size(tmp_path: Path) -> None:
    """`/dev/zero` (or any huge file) ends in an error, not a hang."""
    raw = _raw()
    raw["text"]["include"] = [os.path.relpath("/dev/zero", tmp_path)]
    with pytest.raises(PackError, match=r"/dev/zero: cannot read: larger than 16 MB"):
        load_pack(_write(tmp_path, raw))


def test_a_new_code_is_a_yaml_edit(tmp_path: Path, good_case: list[dict[str, Any]]) -> None:
    by_id(good_case, "ex1-hcc-ct-dx")["code"] = {"coding": [{"system": ICD, "code": "D01.5"}]}
    stock = load_pack()
    assert "diagnosis-unsupported" in findings_of(stock, good_case)["Procedure/ex1-hcc-ct-rfa"]
    raw = _raw()
    raw["valuesets"]["liver-tumor-dx"]["include"][0]["codes"].append("D01.5")
    edited = load_pack(_write(tmp_path, raw))
    assert "diagnosis-unsupported" not in findings_of(edited, good_case)["Procedure/ex1-hcc-ct-rfa"]


def test_a_severity_is_a_yaml_edit(tmp_path: Path, good_case: list[dict[str, Any]]) -> None:
    raw = _raw()
    _rule(raw, "specialty-unexpected")["severity"] = "high"
    pack = load_pack(_write(tmp_path, raw))
    by_id(good_case, "ex1-hcc-ct-role")["specialty"] = []
    from fhir_adapter import evaluate_store

    from .conftest import store_of

    out = evaluate_store(store_of(good_case), pack)[0]
    assert out.evaluation.outcome == "issues"


def test_every_rule_names_its_source() -> None:
    pack = load_pack()
    assert all(r.source for r in pack.model.rules)
    assert all(vs.source for vs in pack.model.valuesets.values())


def test_a_fhirpath_rule_in_a_payer_pack(tmp_path: Path, good_case: list[dict[str, Any]]) -> None:
    raw = _raw()
    raw["rules"].append(
        {
            "finding": "payer-outcome-uncoded",
            "kind": "forbid",
            "severity": "moderate",
            "message": "Procedure.outcome carries no SNOMED CT coding",
            "source": "example payer policy",
            "any": [
                {
                    "fhirpath": {
                        "from": "procedure",
                        "expression": "outcome.coding.where(system = 'http://snomed.info/sct').empty()",
                    }
                }
            ],
        }
    )
    pack = load_pack(_write(tmp_path, raw))
    assert "payer-outcome-uncoded" not in findings_of(pack, good_case)["Procedure/ex1-hcc-ct-rfa"]
    by_id(good_case, "ex1-hcc-ct-rfa")["outcome"] = {"text": "fine"}
    assert "payer-outcome-uncoded" in findings_of(pack, good_case)["Procedure/ex1-hcc-ct-rfa"]


def test_which_conditions_are_void_is_a_yaml_edit(
    tmp_path: Path, good_case: list[dict[str, Any]]
) -> None:
    """An entered-in-error diagnosis is no evidence (stock pack); drop the status from the
    pack's void_verification and it is an uncertain diagnosis, named as left out."""
    from fhir_adapter import evaluate_store

    from .conftest import store_of

    by_id(good_case, "ex1-hcc-ct-dx")["verificationStatus"] = {
        "coding": [{"code": "entered-in-error"}]
    }

    def cues(pack: Any) -> set[str | None]:
        [out] = evaluate_store(store_of(good_case), pack, now="2026-11-27T00:00:00+00:00")
        [f] = [f for f in out.evaluation.findings if f.code == "diagnosis-unsupported"]
        return {e.cue for e in f.evidence}

    assert "entered-in-error" not in cues(load_pack())
    raw = _raw()
    raw["facts"]["diagnoses"]["void_verification"] = ["refuted"]
    assert "entered-in-error" in cues(load_pack(_write(tmp_path, raw)))


def test_the_merged_pack_is_written_by_libyaml_and_reads_back_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The merged YAML shipped to Spark's executors (`source_text`) is written by libyaml
    (the pure-Python emitter took a second for the shipped pack), never folded, and
    compiles to the same pack."""
    from fhir_adapter.pack import pack_from_text

    if not hasattr(yaml, "CSafeDumper"):
        pytest.skip("PyYAML without libyaml")

    def pure_python(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("the merged pack was written by the pure-Python emitter")

    monkeypatch.setattr(yaml, "safe_dump", pure_python)
    pack = load_pack()
    text = pack.source_text
    assert yaml.load(text, Loader=yaml.CSafeLoader)["procedure"]["code"] == pack.procedure_code
    assert pack_from_text(text, "<shipped>").model == pack.model


def test_a_pack_named_by_nobody_is_compiled_once_until_its_files_change(tmp_path: Path) -> None:
    """`evaluate_paths`/`evaluate_store` without a pack use `cached_pack()`: the same
    compiled pack while mappings/ is unchanged, a new one after an edit there (an
    included file's too), so an edit always takes effect."""
    import shutil

    from fhir_adapter.pack import cached_pack

    mappings = tmp_path / "mappings"
    shutil.copytree(default_pack_path().parent, mappings)
    path = mappings / default_pack_path().name
    first = cached_pack(path)
    assert cached_pack(path) is first
    assert cached_pack() is cached_pack()  # the bundled one
    path.write_text(path.read_text() + "\n# an edit to the pack\n")
    second = cached_pack(path)
    assert second is not first and cached_pack(path) is second
    included = sorted((mappings / "text").glob("*.yaml"))[0]
    included.write_text(included.read_text() + "\n# an edit to an included file\n")
    assert cached_pack(path) is not second
