"""Cards and the CRD extension built without a server: what record text can do in markdown,
and the coverage assertion id."""

from __future__ import annotations

import copy
import datetime as dt
import re
from types import SimpleNamespace
from typing import Any

from fhir_adapter.findings import Evidence, Finding
from fhir_adapter.hooks import cards, handlers
from fhir_adapter.pack import Pack

EVIL = "see [x](https://evil.example) <img src=x onerror=alert(1)> **bold** `code` &amp; _u_"
_UNESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def _finding(text: str) -> Finding:
    return Finding(
        "diagnosis-unsupported",
        "high",
        "No liver-tumor diagnosis",
        (Evidence("DocumentReference/d`1", "DocumentReference.content", text, text),),
        source=text,
    )


def test_record_text_in_card_markdown_makes_no_link_or_html(pack: Pack) -> None:
    card = cards.finding_card(pack, _finding(EVIL), "ServiceRequest/sr-1")
    detail = card["detail"]
    assert "[x](" not in detail and "](https" not in detail
    assert "<img" not in detail and "<" not in detail and ">" not in detail
    assert "**bold**" not in detail and "&amp;" not in detail
    # every ASCII punctuation character of the record text is backslash-escaped
    escaped = cards._md(EVIL)
    plain = _UNESCAPE.sub(r"\1", escaped.replace("&lt;", "<").replace("&gt;", ">"))
    assert plain == EVIL
    bare = escaped.replace("\\\\", "").replace("&lt;", "").replace("&gt;", "")
    assert not re.search(r"(?<!\\)[!-/:-@\[\]^_`{-~]", bare)
    assert escaped in detail
    # a reference is a code span that its own backticks cannot close
    assert "`` DocumentReference/d`1 ``" in detail
    assert "ServiceRequest/sr-1" in detail
    assert "\n" not in cards._md("a\nb\r\nc")


def _coverage_case() -> Any:
    cov = {"resourceType": "Coverage", "id": "cov-1"}
    return SimpleNamespace(coverage=[cov], ref=lambda r: f"{r['resourceType']}/{r['id']}")


def _order(rid: str, extension: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    order: dict[str, Any] = {"resourceType": "ServiceRequest", "id": rid, "status": "draft"}
    if extension is not None:
        order["extension"] = extension
    return order


def _parts(action: dict[str, Any]) -> dict[str, Any]:
    [ext] = action["resource"]["extension"]
    return {e["url"]: next(v for k, v in e.items() if k != "url") for e in ext["extension"]}


def test_coverage_assertion_id_names_the_order(pack: Pack) -> None:
    a = handlers._coverage_action(pack, _order("sr-a"), _coverage_case(), set(), "order-sign")
    b = handlers._coverage_action(pack, _order("sr-b"), _coverage_case(), set(), "order-sign")
    assert a is not None and b is not None
    id_a, id_b = _parts(a)["coverage-assertion-id"], _parts(b)["coverage-assertion-id"]
    assert id_a != id_b
    again = handlers._coverage_action(pack, _order("sr-a"), _coverage_case(), set(), "order-sign")
    assert again is not None and _parts(again)["coverage-assertion-id"] == id_a
    # the date is today in UTC
    assert _parts(a)["date"] == dt.datetime.now(dt.UTC).date().isoformat()


def test_an_unchanged_assertion_from_another_day_gets_no_system_action(pack: Pack) -> None:
    first = handlers._coverage_action(pack, _order("sr-a"), _coverage_case(), set(), "order-sign")
    assert first is not None
    [ext] = first["resource"]["extension"]
    stale = copy.deepcopy(ext)
    for part in stale["extension"]:
        if part["url"] == "date":
            part["valueDate"] = "2026-01-02"
        if part["url"] == "coverage-assertion-id":
            part["valueString"] = "an-id-the-ehr-or-an-older-version-gave"
    order = _order("sr-a", [stale])
    assert handlers._coverage_action(pack, order, _coverage_case(), set(), "order-sign") is None
    # something asserted differently is new
    shown = {"diagnosis-unsupported"}
    changed = handlers._coverage_action(pack, order, _coverage_case(), shown, "order-sign")
    assert changed is not None and _parts(changed)["covered"] == "conditional"
    assert len(changed["resource"]["extension"]) == 1


def test_prefetch_templates_take_only_fhir_ids() -> None:
    from fhir_adapter.hooks.services import render

    template = "Coverage?beneficiary=Patient/{{context.patientId}}"
    assert render(template, {"patientId": "p-1.a"}) == "Coverage?beneficiary=Patient/p-1.a"
    for bad in ("p1,p2", "p&_id=x", "a/b", "e" * 65, "p q", "p%2Cq"):
        assert render(template, {"patientId": bad}) is None, bad
