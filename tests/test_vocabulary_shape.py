"""The rule pack and its text vocabulary (mappings/text/*.yaml) are checked for shape: a
mistake is a load error at its file and line, never a pack that loads and quietly means
something else (a term that never matches, a rule that replaced another)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_adapter import PackError, load_pack
from fhir_adapter.rules import default_pack_path

from .conftest import CASES

TARGETS = "text/cpt-47382-targets.yaml"
CONTEXT = "text/context.yaml"
PACK = "cpt-47382.yaml"


def _edit(tmp_path: Path, name: str, old: str, new: str) -> tuple[Path, Path, int]:
    """A copy of the bundled mappings with one line of `name` changed; (pack, file, line)."""
    root = tmp_path / "mappings"
    shutil.copytree(default_pack_path().parent, root)
    path = root / name
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if old in line)
    lines[at] = lines[at].replace(old, new, 1)
    path.write_text("".join(lines))
    return root / "cpt-47382.yaml", path, at + 1


MISTAKES = [
    # one line indented a step too far: "inoperable - non-operable" would be one term
    pytest.param(
        TARGETS, "      - non-operable", "        - non-operable", "folded into the text", id="fold"
    ),
    # the list a step too shallow for its items: the whole list one string
    pytest.param(
        TARGETS,
        "    terms:\n",
        "    terms:\n      unresectable\n",
        "folded into the text",
        id="list-as-string",
    ),
    # a string where a list belongs
    pytest.param(
        TARGETS,
        "    keywords: [cm, mm, centimet, millimet]",
        "    keywords: cm",
        "valid list",
        id="string-for-list",
    ),
    pytest.param(
        TARGETS,
        "    keywords: [cm, mm, centimet, millimet]",
        "    keyword: [cm]",
        "Extra",
        id="key",
    ),
    pytest.param(
        TARGETS,
        "    keywords: [cm, mm, centimet, millimet]",
        "    keywords: [cm, mm, centimet, millimet]\n    terms: []",
        "at least 1 item",
        id="empty-terms",
    ),
    pytest.param(
        TARGETS, "      - non-operable", "      - 5", "valid string", id="number-for-string"
    ),
    pytest.param(TARGETS, "      - non-operable", '      - "-"', "no letter or digit", id="blank"),
    pytest.param(
        CONTEXT,
        "    headers: [indication, indications,",
        "    headers: [indication, '(indications',",
        None,  # a header is a literal: brackets are fine
        id="header-literal",
    ),
    pytest.param(
        CONTEXT, "sections:", "sections:\n  extra:\n    headers: []", "at least 1", id="no-headers"
    ),
    pytest.param(
        CONTEXT, "  family:", "  family:\n    cues: [mother\n      - father]", "folded", id="cue"
    ),
    # a lexicon that does not exist, among the ones a target requires
    pytest.param(
        TARGETS,
        "    requires: [lesion, lesion-site]",
        "    requires: [lesion, lesion-sites]",
        "requires unknown lexicon 'lesion-sites'",
        id="requires-unknown",
    ),
    # a key written twice: the second silently replaced the first
    pytest.param(
        TARGETS,
        "    keywords: [cm, mm, centimet, millimet]",
        "    keywords: [cm, mm, centimet, millimet]\n    keywords: [cm]",
        "the key 'keywords' is written twice",
        id="twice",
    ),
    # in the pack: the next rule indented into the one above takes its place (the
    # rule above gets the second rule's kind, severity, message and matchers)
    pytest.param(
        PACK,
        "  - finding: approach-mismatch",
        "      - finding: approach-mismatch",
        "the key 'kind' is written twice",
        id="pack-rule-indented",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "message"), MISTAKES)
def test_a_shape_mistake_is_named_at_its_file_and_line(
    tmp_path: Path, name: str, old: str, new: str, message: str | None
) -> None:
    pack, path, line = _edit(tmp_path, name, old, new)
    if message is None:
        load_pack(pack)
        return
    with pytest.raises(PackError) as err:
        load_pack(pack)
    text = str(err.value)
    assert message in text
    # the file that holds the mistake, at the line edited or one it added (or, for a
    # rule indented into the one above, the first key of it that is written twice)
    assert any(text.startswith(f"{path}:{line + n}:") for n in range(3)), text


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"'\bresect(able'", "bad regular expression"),
        (r"'\b(?:resect\w*)?'", "matches the empty string"),
    ],
)
def test_a_pattern_that_cannot_work_is_named_at_its_line(
    tmp_path: Path, pattern: str, message: str
) -> None:
    old = "      - '\\bnot\\s+(?:surgically\\s+|currently\\s+|technically\\s+)?resectable\\b'"
    pack, path, line = _edit(tmp_path, TARGETS, old, f"      - {pattern}")
    with pytest.raises(PackError) as err:
        load_pack(pack)
    assert str(err.value).startswith(f"{path}:{line}:9: ")
    assert message in str(err.value)


def test_a_mis_indented_vocabulary_is_exit_2_from_the_cli(tmp_path: Path) -> None:
    pack, path, line = _edit(tmp_path, TARGETS, "      - non-operable", "        - non-operable")
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "fhir-adapter"),
            "evaluate",
            str(CASES),
            "--rules",
            str(pack),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout[-500:]
    assert proc.stderr.strip().splitlines()[-1].count(f"{path}:{line}:") == 1
    assert "Traceback" not in proc.stderr and not proc.stdout
