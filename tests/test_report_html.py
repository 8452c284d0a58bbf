"""The HTML worklist, rendered in Debian's headless Chromium driven by Playwright.

Expectations come from the evaluations themselves, never from hard-coded lists.
`make test` installs /usr/bin/chromium; Playwright's own browser download is not
used. `make screenshots` writes the README's screenshots to docs/.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter import CaseOutput, evaluate_paths, load_pack
from fhir_adapter.billing import code_set_versions
from fhir_adapter.cli import main
from fhir_adapter.pack import Pack
from fhir_adapter.report import render_html

from .conftest import CASES, REPORT_NOW, ROOT, load_expected

playwright_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs it")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")  # `make test` exports its own
# No DNS at all for the browser's own background traffic; what the page asks for is recorded.
ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--disable-domain-reliability",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
]
NOW = REPORT_NOW  # the time the fixtures are evaluated at (conftest)
GENERATED = datetime(2026, 10, 15, 9, 5, tzinfo=UTC)
PAYLOADS = (
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@dataclass
class Log:
    """What a page did besides rendering: requests, CSP violations, errors, dialogs."""

    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[Path], tuple[Any, Log]]]:
    """Open a report file in a fresh context that records (and refuses) any fetch."""
    contexts = []
    logs: list[Log] = []

    def opener(path: Path) -> tuple[Any, Log]:
        log = Log()
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        logs.append(log)

        def route(r: Any) -> None:
            if r.request.url == path.as_uri():
                r.continue_()
            else:
                log.foreign.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        context.on("request", lambda r: log.requests.append(r.url))
        context.add_init_script(
            "window.__csp = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        page = context.new_page()
        page.on("pageerror", lambda e: log.errors.append(str(e)))
        page.on("dialog", lambda d: (log.dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='1']")
        return page, log

    yield opener
    for context in contexts:
        context.close()
    assert [e for log in logs for e in log.errors] == [], "JavaScript errors on the page"
    assert [d for log in logs for d in log.dialogs] == [], "the page opened a dialog"


@pytest.fixture(scope="module")
def report_pack() -> Pack:
    return load_pack()


@pytest.fixture(scope="module")
def outputs(fixture_outputs: list[CaseOutput]) -> list[CaseOutput]:
    return copy.deepcopy(fixture_outputs)


def write_page(tmp_path: Path, outputs: list[Any], pack: Pack | None = None) -> Path:
    path = tmp_path / "report.html"
    path.write_text(
        render_html(outputs, pack=pack, source=["fixtures/cases"], generated=GENERATED),
        encoding="utf-8",
    )
    return path


def shown_procedures(page: Any) -> list[str]:
    return page.locator("#cases tbody tr th a").all_inner_texts()


def show_all_rows(page: Any) -> None:
    page.select_option("#f-size", "500")


def snippets(output: CaseOutput) -> list[str]:
    e = output.evaluation
    groups = [f.evidence for f in e.findings] + [m.evidence for m in e.modifiers]
    groups += [c.evidence for c in e.criteria]
    return [ev.snippet for group in groups for ev in group if ev.snippet]


def test_every_case_finding_modifier_and_snippet_is_visible(
    tmp_path: Path, outputs: list[CaseOutput], report_pack: Pack, open_page: Any
) -> None:
    page, _ = open_page(write_page(tmp_path, outputs, report_pack))
    show_all_rows(page)
    assert shown_procedures(page) == [o.evaluation.procedure for o in outputs]
    # one round trip for the whole table (a locator call per cell costs seconds)
    rows = page.locator("#cases tbody tr").evaluate_all(_ROWS_JS)
    assert [r["case"] for r in rows] == [str(i) for i in range(len(outputs))]
    for row, out in zip(rows, outputs, strict=True):
        e = out.evaluation
        assert row["visible"], e.procedure
        assert row["cells"][5] == e.outcome
        assert row["cells"][6].split(", ") == ([m.code for m in e.modifiers] or ["—"])
        assert row["codes"] == [f.code for f in e.findings]

    assert sum(len(o.evaluation.findings) for o in outputs) > 0
    assert any(o.evaluation.modifiers for o in outputs)
    # every case opened from its link and closed with "back", inside the page (one round
    # trip; Playwright's own click per case costs most of a minute on the test machine)
    shown_cases = page.evaluate(_CASES_JS, list(range(len(outputs))))
    for out, shown in zip(outputs, shown_cases, strict=True):
        e = out.evaluation
        assert shown["heading"] == f"Case {e.procedure}"
        assert shown["caseShown"] and not shown["worklistShown"] and shown["backShown"]
        text = shown["text"]
        for f in e.findings:
            assert f.code in text and f.message in text
        for m in e.modifiers:
            assert m.code in text and m.reason in text
        for c in e.criteria:
            assert c.rule in text
        for snippet in snippets(out):
            assert snippet in text, (e.procedure, snippet)
        assert shown["verdicts"] == ["✓ pass" if c.passed else "✗ fail" for c in e.criteria]
        claims = [r for r in out.resources if r["resourceType"] == "Claim"]
        if claims:
            expected = [i["productOrService"]["coding"][0]["code"] for i in claims[0]["item"]]
            assert shown["claim"] == expected
        assert shown["issues"] == [f.code for f in e.findings]
    # and once the Playwright way, as a user does
    page.locator('#cases tbody tr[data-case="0"] th a').click()
    expect(page.locator("#case-h")).to_have_text(f"Case {outputs[0].evaluation.procedure}")
    page.locator("#case a.back").click()
    expect(page.locator("#worklist")).to_be_visible()


_ROWS_JS = """trs => trs.map(tr => {
  const tds = [...tr.querySelectorAll(':scope > td')];
  return {
    case: tr.dataset.case,
    visible: tr.getClientRects().length > 0,
    cells: tds.map(td => td.innerText),
    codes: [...tds[7].querySelectorAll('.finding-code')].map(c => c.innerText),
  };
})"""

_CASES_JS = """async ids => {
  const shown = el => !!el && el.getClientRects().length > 0;
  const until = async ok => {
    for (let t = 0; t < 500 && !ok(); t++) await new Promise(r => setTimeout(r, 10));
    if (!ok()) throw new Error('the page did not change');
  };
  const texts = sel => [...document.querySelectorAll(sel)].map(e => e.innerText);
  const out = [];
  for (const i of ids) {
    document.querySelector(`#cases tbody tr[data-case="${i}"] th a`).click();
    await until(() => shown(document.querySelector('#case')) && location.hash === `#case-${i}`);
    const claim = document.querySelector('#case-claim ~ table');
    out.push({
      heading: document.querySelector('#case-h').innerText,
      caseShown: shown(document.querySelector('#case')),
      worklistShown: shown(document.querySelector('#worklist')),
      backShown: shown(document.querySelector('#case a.back')),
      text: document.querySelector('#case').innerText,
      verdicts: texts('#case-criteria + table tbody tr td:nth-child(2)'),
      claim: claim ? [...claim.querySelectorAll('tbody tr td:nth-child(2)')].map(e => e.innerText) : [],
      issues: texts('#case-issues + table tbody tr td:first-child'),
      marks: texts('#case mark'),
    });
    document.querySelector('#case a.back').click();
    await until(() => shown(document.querySelector('#worklist')));
  }
  return out;
}"""


def test_filtering_by_finding_code_shows_exactly_the_cases_with_it(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    page, _ = open_page(write_page(tmp_path, outputs))
    show_all_rows(page)
    codes = sorted({f.code for o in outputs for f in o.evaluation.findings})
    options = page.locator("#f-code option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(options[2:]) == codes
    for code in codes:
        page.select_option("#f-code", code)
        expected = [o.evaluation.procedure for o in outputs if code in finding_codes(o)]
        assert shown_procedures(page) == expected, code
    page.select_option("#f-code", "-")
    assert shown_procedures(page) == [
        o.evaluation.procedure for o in outputs if not o.evaluation.findings
    ]
    page.select_option("#f-code", "")
    for outcome in ("claim", "issues"):
        page.select_option("#f-outcome", outcome)
        assert shown_procedures(page) == [
            o.evaluation.procedure for o in outputs if o.evaluation.outcome == outcome
        ]
    page.select_option("#f-outcome", "")
    for severity in ("high", "moderate", "low"):
        page.select_option("#f-severity", severity)
        assert shown_procedures(page) == [
            o.evaluation.procedure
            for o in outputs
            if any(f.severity == severity for f in o.evaluation.findings)
        ]
    page.click("#f-reset")
    assert len(shown_procedures(page)) == len(outputs)


def finding_codes(output: CaseOutput) -> set[str]:
    return {f.code for f in output.evaluation.findings}


def test_overview_counts_and_chart_match_the_batch(
    tmp_path: Path, outputs: list[CaseOutput], report_pack: Pack, open_page: Any
) -> None:
    page, _ = open_page(write_page(tmp_path, outputs, report_pack))
    claims = sum(1 for o in outputs if not o.evaluation.blocked)
    expect(page.locator("#n-cases")).to_have_text(str(len(outputs)))
    expect(page.locator("#n-claims")).to_have_text(str(claims))
    expect(page.locator("#n-blocked")).to_have_text(str(len(outputs) - claims))
    per_code = {
        c: sum(1 for o in outputs if c in finding_codes(o))
        for o in outputs
        for c in finding_codes(o)
    }
    rows = page.locator("#by-code tbody tr").evaluate_all(
        "rs => rs.map(r => [r.cells[0].innerText, Number(r.cells[2].innerText)])"
    )
    assert dict(rows) == per_code
    bars = page.locator("svg.chart g > title").all_text_contents()
    assert len(bars) == len(per_code)
    for code, n in per_code.items():
        assert any(t.startswith(f"{code} (") and t.endswith(f": {n} case(s)") for t in bars)
    facts = page.locator("#run-facts").inner_text()
    assert f"{report_pack.model.pack} {report_pack.model.version}" in facts
    assert "fixtures/cases" in facts and NOW in facts
    for release in _leaves(code_set_versions()):
        assert release in facts
    # The overview's finding buttons filter the worklist.
    code = next(iter(sorted(per_code)))
    page.locator(f'#by-code button[data-filter-code="{code}"]').click()
    assert len(shown_procedures(page)) == per_code[code]


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    return [str(value)]


def test_sorting_and_search_work_from_the_keyboard(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    page, _ = open_page(write_page(tmp_path, outputs))
    show_all_rows(page)
    procedures = [o.evaluation.procedure for o in outputs]
    page.locator('button[data-sort="procedure"]').focus()
    page.keyboard.press("Enter")
    header = page.locator("#cases thead th").first
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert shown_procedures(page) == sorted(procedures)
    page.keyboard.press("Enter")
    expect(header).to_have_attribute("aria-sort", "descending")
    assert shown_procedures(page) == sorted(procedures, reverse=True)
    page.keyboard.press("Space")
    expect(header).to_have_attribute("aria-sort", "ascending")

    target = outputs[len(outputs) // 2].evaluation.procedure
    page.locator("#f-q").focus()
    page.keyboard.type(target)
    expect(page.locator("#cases tbody tr")).to_have_count(1)
    assert shown_procedures(page) == [target]
    page.keyboard.press("Tab")  # into the filters that follow; none of them traps focus
    # Open the case from the keyboard and come back to the same row.
    page.locator("#cases tbody tr th a").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#case-h")).to_be_focused()
    page.go_back()
    expect(page.locator("#cases tbody tr th a")).to_be_focused()


def _searchable(output: CaseOutput) -> str:
    """Everything the search box is documented to look through, for the expectation."""
    e = output.evaluation
    parts = [e.procedure, e.patient or "", e.encounter or ""]
    groups = [(f.code, f.message, f.evidence) for f in e.findings]
    groups += [(m.code, m.reason, m.evidence) for m in e.modifiers]
    groups += [(c.rule, "", c.evidence) for c in e.criteria]
    for code, text, evidence in groups:
        parts += [code, text, *(ev.snippet or "" for ev in evidence)]
        parts += [ev.note or "" for ev in evidence]
    return "\n".join(parts).lower()


def test_search_looks_through_the_quoted_evidence(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    page, _ = open_page(write_page(tmp_path, outputs))
    show_all_rows(page)
    quoted = sorted(
        {
            ev.snippet
            for o in outputs
            for c in o.evaluation.criteria
            for ev in c.evidence
            if ev.snippet
        }
    )
    assert quoted
    for snippet in quoted[:: max(1, len(quoted) // 5)]:
        query = snippet[:24].lower()
        page.locator("#f-q").fill(query)
        expected = [o.evaluation.procedure for o in outputs if query in _searchable(o)]
        assert expected, query
        expect(page.locator("#cases tbody tr th a")).to_have_text(
            expected
        )  # waits out the debounce


def test_page_makes_no_network_request(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    path = write_page(tmp_path, outputs)
    page, log = open_page(path)
    page.locator("#cases tbody tr th a").first.click()
    page.go_back()
    page.select_option("#f-outcome", "issues")
    page.locator("#f-q").fill("Procedure")
    page.emulate_media(media="print")
    page.wait_for_timeout(200)
    assert log.requests == [path.as_uri()]
    assert log.foreign == []
    assert page.evaluate("window.__csp") == []
    links = page.locator("[src], [href], link, iframe, object, embed").evaluate_all(
        "es => es.map(e => e.getAttribute('src') || e.getAttribute('href') || e.tagName)"
    )
    assert all(link.startswith("#") for link in links), links


def _poisoned_fixture(tmp_path: Path) -> Path:
    bundle = json.loads((CASES / "ex1-hcc-ct.json").read_text())
    for entry in bundle["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Procedure" and r.get("note"):
            r["note"][0]["text"] = r["note"][0]["text"].replace(
                "The tumor is unresectable",
                f"The tumor {PAYLOADS[0]} is unresectable {PAYLOADS[1]}",
            )
        if r["resourceType"] == "Condition":
            r["code"]["coding"][0]["display"] += f" {PAYLOADS[1]}"
    directory = tmp_path / "poisoned"
    directory.mkdir()
    (directory / "ex1.json").write_text(json.dumps(bundle))
    return directory


def test_injected_markup_in_a_note_shows_as_text_and_does_not_run(
    tmp_path: Path, report_pack: Pack, open_page: Any
) -> None:
    outputs = evaluate_paths([_poisoned_fixture(tmp_path)], report_pack, now=NOW)
    assert any(PAYLOADS[0] in s for o in outputs for s in snippets(o)), "payload not in evidence"
    # Values the server-side template renders (finding codes, payer, input) get the payload too.
    row = copy.deepcopy(outputs[0].report())
    row["procedure"] = "Procedure/evil"
    row["payer"] = PAYLOADS[1]
    row["code_sets"] = {"ICD-10-CM": PAYLOADS[0]}
    row["findings"] = [
        {"code": PAYLOADS[0], "severity": "high", "message": PAYLOADS[1], "evidence": []}
    ]
    path = tmp_path / "report.html"
    path.write_text(render_html([*outputs, row], source=[PAYLOADS[0]], generated=GENERATED))
    raw = path.read_text()
    for payload in PAYLOADS:
        assert payload not in raw

    page, log = open_page(path)
    assert "<script>window.__pwned=1</script>" in page.locator("#overview").inner_text()
    page.select_option("#f-code", PAYLOADS[0])
    assert shown_procedures(page) == ["Procedure/evil"]
    page.locator("#f-reset").click()
    for n, payloads in ((0, PAYLOADS[:2]), (1, PAYLOADS[:1])):
        link = page.locator("#cases tbody tr th a").nth(n)
        name = link.inner_text()
        link.click()
        expect(page.locator("#case-h")).to_contain_text(name)  # drawn on hashchange
        text = page.locator("#case").inner_text()
        assert all(p in text for p in payloads)
        page.go_back()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 3  # two inert data blocks and the page's own script
    assert page.evaluate("window.__csp") == []
    assert log.dialogs == []


def test_an_empty_batch_is_a_page_that_says_so(tmp_path: Path, open_page: Any) -> None:
    page, _ = open_page(write_page(tmp_path, []))
    expect(page.locator("#n-cases")).to_have_text("0")
    expect(page.locator("#status")).to_have_text("No case matches the filters.")
    expect(page.locator("#cases tbody tr")).to_have_count(0)
    expect(page.locator("#p-next")).to_be_disabled()


def _synthetic(outputs: list[CaseOutput], n: int) -> list[dict[str, Any]]:
    """n report rows: the fixture cases over and over, each with its own procedure id."""
    base = [o.report() for o in outputs]
    rows = []
    for k in range(n):
        row = dict(base[k % len(base)])
        row["procedure"] = f"Procedure/synth-{k:05d}"
        row["patient"] = f"Patient/synth-{k:05d}"
        rows.append(row)
    return rows


def test_ten_thousand_cases_render_a_first_page_and_page_through(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    rows = _synthetic(outputs, 10_000)
    path = write_page(tmp_path, rows)
    page, _ = open_page(path)
    expect(page.locator("#n-cases")).to_have_text("10000")
    body = page.locator("#cases tbody tr")
    expect(body).to_have_count(50)  # only the first page is in the DOM
    expect(page.locator("#status")).to_have_text("Showing 1\u201350 of 10,000 case(s).")
    expect(page.locator("#p-info")).to_have_text("Page 1 of 200")
    expect(page.locator("#p-prev")).to_be_disabled()
    page.click("#p-next")
    expect(page.locator("#p-info")).to_have_text("Page 2 of 200")
    assert shown_procedures(page)[0] == "Procedure/synth-00050"
    page.click("#p-last")
    expect(page.locator("#p-info")).to_have_text("Page 200 of 200")
    assert shown_procedures(page)[-1] == "Procedure/synth-09999"
    expect(page.locator("#p-next")).to_be_disabled()

    code = sorted({f["code"] for r in rows for f in r["findings"]})[0]
    expected = sum(1 for r in rows if any(f["code"] == code for f in r["findings"]))
    page.select_option("#f-code", code)
    expect(page.locator("#status")).to_contain_text(
        f"of {expected:,} case(s) (filtered from 10,000)"
    )
    page.select_option("#f-code", "")
    page.locator("#f-q").fill("synth-09876")
    expect(body).to_have_count(1)
    page.locator("#cases tbody tr th a").click()
    expect(page.locator("#case-h")).to_have_text("Case Procedure/synth-09876")


def test_ruled_out_mentions_are_marked_and_spans_highlighted(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    row = copy.deepcopy(outputs[0].report())
    snippet = "No laparoscopic approach was used; the ablation was percutaneous."
    row["criteria"][0]["evidence"] = [
        {
            "reference": "Procedure/x",
            "path": "Procedure.note[0].text",
            "snippet": snippet,
            "status": "negated",
            "cue": "No",
            "span": [3, 15],
        },
        {
            "reference": "Procedure/x",
            "path": "Procedure.note[0].text",
            "snippet": snippet,
            "status": "affirmed",
            "span": [snippet.index("percutaneous"), len(snippet) - 1],
        },
        {"reference": "Procedure/x", "path": "Procedure.note[0].text", "snippet": snippet},
    ]
    spans = [
        (ev.snippet, ev.span)
        for o in outputs
        for group in [*(f.evidence for f in o.evaluation.findings)]
        + [c.evidence for c in o.evaluation.criteria]
        for ev in group
        if ev.snippet and ev.span
    ]
    page, _ = open_page(write_page(tmp_path, [row, *outputs]))
    page.locator("#cases tbody tr th a").first.click()
    items = page.locator("#case-criteria + table tbody tr").first.locator("ul.evidence > li")
    expect(items).to_have_count(3)
    expect(items.nth(0).locator("mark")).to_have_text("laparoscopic")
    expect(items.nth(0)).to_have_class("ruled-out")
    expect(items.nth(0).locator(".status")).to_have_text("negated — does not count (cue: “No”)")
    expect(items.nth(1).locator("mark")).to_have_text("percutaneous")
    expect(items.nth(1).locator(".status")).to_have_text("affirmed")
    expect(items.nth(2).locator("mark")).to_have_count(0)
    expect(items.nth(2).locator("blockquote")).to_have_text(snippet)
    # Spans the rules produced (when the text engine records them) highlight the same words.
    if spans:
        page.go_back()
        show_all_rows(page)
        shown = page.evaluate(_CASES_JS, list(range(1, len(outputs) + 1)))
        assert [c["heading"] for c in shown] == [f"Case {o.evaluation.procedure}" for o in outputs]
        found = [mark for case in shown for mark in case["marks"]]
        for text, (start, end) in spans:
            assert text[start:end] in found


def test_controls_are_labelled_and_badges_have_enough_contrast(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    page, _ = open_page(write_page(tmp_path, outputs))
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input, select')]"
        ".filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"
    )
    assert unlabelled == []
    assert page.locator("#cases thead th[scope=col]").count() == 9
    assert page.locator("#cases tbody th[scope=row]").count() > 0
    worst, checked = page.evaluate(CONTRAST_JS, ".sev, .outcome, dt, th, td, a")
    assert worst >= 4.5 and checked > 100, (worst, checked)
    # The case view of the richest case: highlights, ruled-out mentions, verdicts; Escape leaves.
    index = outputs.index(max(outputs, key=_showcase))
    page.locator(f'#cases tbody tr[data-case="{index}"] th a').click()
    expect(page.locator("#case")).to_be_visible()
    selector = "#case .status, #case mark, #case .where, #case .note, #case .outcome"
    worst, checked = page.evaluate(CONTRAST_JS, selector)
    assert worst >= 4.5 and checked > 10, (worst, checked)
    page.keyboard.press("Escape")
    expect(page.locator("#worklist")).to_be_visible()


# WCAG 2 contrast of each matching element's text against its first opaque background.
CONTRAST_JS = """sel => {
  const rgb = s => s.match(/[\\d.]+/g).map(Number);
  const lum = c => { const v = c.slice(0, 3).map(x => { x /= 255;
    return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const bg = e => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c; } return [255, 255, 255]; };
  let worst = 21, checked = 0;
  for (const e of document.querySelectorAll(sel)) {
    if (!e.offsetParent || !e.textContent.trim()) continue;
    const a = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
    worst = Math.min(worst, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05));
    checked++;
  }
  return [worst, checked];
}"""


def test_print_hides_the_controls_and_keeps_the_tables(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    page, _ = open_page(write_page(tmp_path, outputs))
    page.emulate_media(media="print")
    for hidden in (".filters", ".pager", ".skip"):
        expect(page.locator(hidden)).to_be_hidden()
    expect(page.locator("#cases")).to_be_visible()
    expect(page.locator("svg.chart")).to_be_visible()
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    page.emulate_media(media="screen")
    expect(page.locator(".filters")).to_be_visible()


def test_cli_writes_the_page_beside_the_bundles_and_on_stdout(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # a few fixtures (claims, findings, two in one session): the page of every fixture is
    # the other tests'
    names = ("ex1-hcc-ct", "v06-two-in-session", "v12-doc-gaps")
    given = tmp_path / "in"
    given.mkdir()
    for name in names:
        shutil.copy(CASES / f"{name}.json", given)
    out = tmp_path / "out"
    assert main(["evaluate", str(given), "--out", str(out), "--format", "html"]) == 1
    stdout = capsys.readouterr().out
    assert stdout.startswith("<!doctype html>")
    wanted = {c["procedure"] for name in names for c in load_expected(name)["cases"]}
    expected = [o.evaluation.procedure for o in outputs if o.evaluation.procedure in wanted]
    assert len(expected) == len(wanted) >= len(names)
    page, _ = open_page(out / "report.html")
    show_all_rows(page)
    assert shown_procedures(page) == expected
    assert re.search(rf"<title>[^<]* {len(expected)} case\(s\)</title>", stdout)


@pytest.mark.server
def test_run_against_a_server_prints_the_page(
    server: Any, tmp_path: Path, open_page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from fhir_adapter.client.rest import FhirClient
    from fhir_adapter.testing.catalog import load_fixtures

    with FhirClient(server.base) as client:
        load_fixtures(client, ["ex1-hcc-ct", "v12-doc-gaps", "v03-laparoscopic"])
    main(["run", "--base-url", server.base, "--dry-run", "--format", "json"])
    cases = json.loads(capsys.readouterr().out)["cases"]
    main(["run", "--base-url", server.base, "--dry-run", "--format", "html"])
    path = tmp_path / "run.html"
    path.write_text(capsys.readouterr().out)
    page, _ = open_page(path)
    assert shown_procedures(page) == [c["procedure"] for c in cases]
    assert server.base in page.locator("#run-facts").inner_text()
    for i, case in enumerate(cases):
        codes = page.locator(f'#cases tbody tr[data-case="{i}"] .finding-code').all_inner_texts()
        assert codes == [f["code"] for f in case["findings"]]


def _showcase(output: CaseOutput) -> tuple[bool, ...]:
    """How much of the case view a case shows off: ruled-out mentions, highlights, a Claim."""
    e = output.evaluation
    evidence = [ev for f in e.findings for ev in f.evidence]
    return (
        any(ev.status not in (None, "affirmed") for ev in evidence),
        any(ev.span is not None for ev in evidence),
        bool(e.findings),
        not e.blocked,
        bool(e.modifiers),
    )


SPARK_PAGE_FIXTURES = ("ex1-hcc-ct", "v03-laparoscopic", "v06-two-in-session", "v12-doc-gaps")


@pytest.mark.spark
def test_spark_engine_writes_the_page_beside_reports_and_bundles(
    spark: Any,
    tmp_path: Path,
    open_page: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    # Spark's Python workers default to `python3` on PATH; this test's interpreter has the deps.
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    from fhir_adapter.testing.catalog import write_fixtures

    # a few fixtures (claims, blocked cases, two in one session): every fixture on Spark as
    # locally is test_spark's; this one is about the page the run writes
    ndjson = tmp_path / "fixtures"
    write_fixtures(ndjson, "ndjson", SPARK_PAGE_FIXTURES)
    for meta in ndjson.glob("*.yaml"):
        meta.unlink()
    out = tmp_path / "out"
    args = ["evaluate", "--engine", "spark", str(ndjson), "--out", str(out), "--format", "csv"]
    assert main(args) == 1
    local = [o.evaluation.procedure for o in evaluate_paths([ndjson])]
    assert len(local) >= len(SPARK_PAGE_FIXTURES)
    printed = capsys.readouterr().out.splitlines()[1:]
    assert list(dict.fromkeys(line.split(",")[0] for line in printed)) == sorted(local)
    page, _ = open_page(out / "report.html")
    show_all_rows(page)
    assert sorted(shown_procedures(page)) == sorted(local)


def test_screenshots_of_the_overview_and_a_case(
    tmp_path: Path, outputs: list[CaseOutput], report_pack: Pack, open_page: Any
) -> None:
    """Writes docs/ screenshots when REPORT_SCREENSHOTS names a directory (make screenshots)."""
    target = Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path)
    if not target.is_absolute():
        target = ROOT / target
    target.mkdir(parents=True, exist_ok=True)
    page, _ = open_page(write_page(tmp_path, outputs, report_pack))
    page.set_viewport_size({"width": 1280, "height": 1500})
    overview = target / "report-overview.png"
    page.screenshot(path=overview, full_page=False)
    page.set_viewport_size({"width": 1280, "height": 1000})
    case = max(outputs, key=_showcase)
    index = outputs.index(case)
    page.locator(f'#cases tbody tr[data-case="{index}"] th a').click()
    page.locator("#case-h").focus()
    case_png = target / "report-case.png"
    page.screenshot(path=case_png, full_page=False)
    for png in (overview, case_png):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(data[16:20], "big") == 1280


def test_highlight_after_an_emoji_or_astral_character_marks_the_matched_words(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    """Spans count code points (Python); JavaScript strings count UTF-16 units."""
    row = copy.deepcopy(outputs[0].report())
    snippet = "Pt 😀 \U0001d49c said: no laparoscopic approach; 🩺 percutaneous ablation."
    row["criteria"][0]["evidence"] = [
        {
            "reference": "Procedure/x",
            "path": "Procedure.note[0].text",
            "snippet": snippet,
            "status": "negated",
            "span": [snippet.index("laparoscopic"), snippet.index(" approach")],
        },
        {
            "reference": "Procedure/x",
            "path": "Procedure.note[0].text",
            "snippet": snippet,
            "status": "affirmed",
            "span": [snippet.index("percutaneous"), snippet.index(" ablation")],
        },
    ]
    page, _ = open_page(write_page(tmp_path, [row]))
    page.locator("#cases tbody tr th a").first.click()
    items = page.locator("#case-criteria + table tbody tr").first.locator("ul.evidence > li")
    expect(items.nth(0).locator("mark")).to_have_text("laparoscopic")
    expect(items.nth(1).locator("mark")).to_have_text("percutaneous")
    expect(items.nth(0).locator("blockquote")).to_have_text(snippet)
    expect(items.nth(1).locator("blockquote")).to_have_text(snippet)


def test_a_findings_message_is_in_the_worklist_for_screen_readers(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    """Not only a mouse tooltip: each finding's message is text of its list item."""
    page, _ = open_page(write_page(tmp_path, outputs))
    show_all_rows(page)
    flagged = [(i, o) for i, o in enumerate(outputs) if o.evaluation.findings]
    assert flagged
    for i, out in flagged:
        cell = page.locator(f'#cases tbody tr[data-case="{i}"] td').nth(7)
        snapshot = cell.aria_snapshot()
        for f, item in zip(out.evaluation.findings, cell.locator("li").all(), strict=True):
            assert f.message in snapshot, (f.code, snapshot)
            assert f.message in (item.text_content() or "")


def test_a_pack_with_its_own_severity_order_sorts_filters_and_colours_by_it(
    tmp_path: Path, outputs: list[CaseOutput], report_pack: Pack, open_page: Any
) -> None:
    """The page takes the severity scale from the pack (least severe first in the pack)."""
    import dataclasses

    scale = ["high", "low", "moderate"]  # here "moderate" is the worst, "high" the mildest
    model = report_pack.model.model_copy(update={"severity_order": scale})
    pack = dataclasses.replace(report_pack, model=model)
    worst_first = scale[::-1]

    def order(scale_worst_first: list[str], sign: int = 1) -> list[str]:
        """Procedures as the Findings header sorts them (sign 1: mildest worst finding first);
        ties keep the batch order either way."""

        def key(item: tuple[int, CaseOutput]) -> tuple[int, int, int]:
            i, out = item
            ranks = [scale_worst_first.index(f.severity) for f in out.evaluation.findings]
            worst = min(ranks, default=len(scale_worst_first))
            return (sign * (len(scale_worst_first) - worst), sign * len(ranks), i)

        return [o.evaluation.procedure for _, o in sorted(enumerate(outputs), key=key)]

    expected = order(worst_first)
    assert expected != order(["high", "moderate", "low"]), "the scales must sort differently"

    page, _ = open_page(write_page(tmp_path, outputs, pack))
    show_all_rows(page)
    options = page.locator("#f-severity option").evaluate_all("os => os.map(o => o.value)")
    assert options[1:] == worst_first
    page.click('#cases thead button[data-sort="findings"]')
    assert shown_procedures(page) == expected
    page.click('#cases thead button[data-sort="findings"]')
    assert shown_procedures(page) == order(worst_first, -1)
    # Colours follow the rank in the pack's scale: its worst severity is styled as the worst.
    badge = page.locator("#cases tbody .sev", has_text="moderate").first
    expect(badge).to_have_class("sev sev-high")
    badge = page.locator("#cases tbody .sev", has_text="high").first
    expect(badge).to_have_class("sev sev-low")
    for severity in worst_first:
        page.select_option("#f-severity", severity)
        shown = set(shown_procedures(page))
        assert shown == {
            o.evaluation.procedure
            for o in outputs
            if any(f.severity == severity for f in o.evaluation.findings)
        }
    by_severity = page.locator("#by-severity tbody td:first-child").all_inner_texts()
    assert by_severity == [s for s in [*worst_first, "no findings"] if s in by_severity]


def test_printing_prints_every_row_of_the_filtered_worklist(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    rows = _synthetic(outputs, 130)
    page, _ = open_page(write_page(tmp_path, rows))
    body = page.locator("#cases tbody tr")
    expect(body).to_have_count(50)
    expect(page.locator("#print-note")).to_contain_text("every case")
    page.emulate_media(media="print")
    expect(body).to_have_count(130)
    expect(page.locator("#cases")).to_be_visible()
    page.emulate_media(media="screen")
    expect(body).to_have_count(50)
    expect(page.locator("#p-info")).to_have_text("Page 1 of 3")

    page.select_option("#f-outcome", "claim")
    expected = [r["procedure"] for r in rows if r["outcome"] == "claim"]
    assert len(expected) > 50
    page.click("#p-next")
    page.emulate_media(media="print")
    expect(body).to_have_count(len(expected))
    assert shown_procedures(page) == expected
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF")
    page.emulate_media(media="screen")
    expect(page.locator("#p-info")).to_have_text("Page 2 of 2")
    expect(body).to_have_count(len(expected) - 50)


@pytest.mark.parametrize("width", [1280, 1024])
def test_the_worklist_fits_the_window_and_shows_every_finding_code_whole(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any, width: int
) -> None:
    """No column is clipped at 1280 px (nor at 1024): the page does not scroll sideways, and
    each finding code is on one line inside its cell."""
    page, _ = open_page(write_page(tmp_path, outputs))
    page.set_viewport_size({"width": width, "height": 900})
    show_all_rows(page)
    layout = page.evaluate(
        """() => {
          const table = document.querySelector('#cases');
          const box = table.parentElement.getBoundingClientRect();
          const codes = [...table.querySelectorAll('tbody ul.codes li code')].map(c => {
            const r = c.getBoundingClientRect(), cell = c.closest('td').getBoundingClientRect();
            return {code: c.textContent, lines: c.getClientRects().length,
                    inside: r.left >= cell.left - 0.5 && r.right <= cell.right + 0.5};
          });
          return {page: document.documentElement.scrollWidth, window: innerWidth,
                  right: table.getBoundingClientRect().right, box: box.right, codes};
        }"""
    )
    assert layout["page"] <= layout["window"], layout["page"]
    assert layout["right"] <= layout["box"] + 0.5
    shown = {c["code"] for c in layout["codes"]}
    assert shown == {f.code for o in outputs for f in o.evaluation.findings}
    assert [c for c in layout["codes"] if c["lines"] != 1 or not c["inside"]] == []


def test_payer_name_policy_filter_and_criteria_in_the_case_view(
    tmp_path: Path, outputs: list[CaseOutput], open_page: Any
) -> None:
    """Each row names the payer (Organization.name) and the policy that judged it; the payer
    filter keeps exactly that payer's cases; the case view lists every criterion."""
    page, _ = open_page(write_page(tmp_path, outputs))
    show_all_rows(page)
    named = {
        o.evaluation.procedure: (o.evaluation.payer_policy or {}).get("payer") for o in outputs
    }
    for payer in sorted({p for p in named.values() if p}):
        page.select_option("#f-payer", payer)
        assert shown_procedures(page) == [k for k, p in named.items() if p == payer], payer
    page.click("#f-reset")
    [aetna] = [
        o for o in outputs if o.evaluation.procedure.startswith("Procedure/v43-same-case-aetna")
    ]
    i = outputs.index(aetna)
    cell = page.locator(f'#cases tr[data-case="{i}"] td').nth(3)
    assert cell.inner_text().split("\n") == ["Aetna Better Health", "aetna-cpb-0274"]
    page.goto(page.url.split("#")[0] + f"#case-{i}")
    rows = page.locator("#case-payer-criteria + table tbody tr")
    criteria = aetna.evaluation.payer_criteria
    assert rows.count() == len(criteria)
    got = page.locator("#case-payer-criteria + table tbody tr td:nth-child(2)").all_inner_texts()
    assert got == [c["result"] for c in criteria]
    assert "not-met" in got
