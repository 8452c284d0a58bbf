"""Benchmark of the HTML worklist at volume (not part of the test suite; `make bench-report`).

A dense synthetic export (every patient a 47382 case, unique ids and text) is
evaluated once; then the page is rendered and driven in Debian's Chromium:
time to the first page of rows, paging, filtering by a finding code, a search
and opening a case. Each browser figure is the median of --repeat runs, beside
the time the same browser needs for an empty page (the noise floor).

    python benchmarks/bench_report.py [--cases 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_adapter import evaluate_paths  # noqa: E402
from fhir_adapter.report import render_csv, render_html  # noqa: E402
from fhir_adapter.testing.synth import generate  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost"]


class Stopwatch:
    """Named laps of one browser session."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.start = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.start
        self.start = now


def drive(browser: Any, page_path: Path, blank: Path, code: str, target: str) -> dict[str, float]:
    """One pass over what a coder does first: open, page, filter, search, open a case."""
    from playwright.sync_api import expect

    page = browser.new_page()
    rows = page.locator("#cases tbody tr")
    watch = Stopwatch()
    page.goto(blank.as_uri())
    watch.lap("blank page load (noise floor)")
    page.goto(page_path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    watch.lap("load to first page of rows")
    page.click("#p-next")
    expect(page.locator("#p-info")).to_contain_text("Page 2 ")
    watch.lap("next page")
    page.select_option("#f-code", code)
    watch.lap("filter by a finding code")
    page.select_option("#f-code", "")
    watch.start = time.perf_counter()
    page.locator("#f-q").fill(target)
    expect(rows).to_have_count(1)
    watch.lap("search for one procedure (incl. 120 ms debounce)")
    page.locator("#cases tbody tr th a").click()
    expect(page.locator("#case")).to_be_visible()
    watch.lap("open the case view")
    page.close()
    return watch.laps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "export"
        generate(data, args.cases, seed=7, dense=True)
        outputs = evaluate_paths([data], workers=4)
        page_path = Path(tmp) / "report.html"
        start = time.perf_counter()
        page_path.write_text(render_html(outputs), encoding="utf-8")
        render_s = time.perf_counter() - start
        start = time.perf_counter()
        render_csv(outputs)
        csv_s = time.perf_counter() - start
        blank = Path(tmp) / "blank.html"
        blank.write_text("<!doctype html><title>blank</title>")
        code = next(f.code for o in outputs for f in o.evaluation.findings)
        target = outputs[len(outputs) // 2].evaluation.procedure
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            runs = [drive(browser, page_path, blank, code, target) for _ in range(args.repeat)]
            browser.close()
        result = {
            "cases": len(outputs),
            "page_mb": round(page_path.stat().st_size / 1e6, 1),
            "render_html_s": round(render_s, 2),
            "render_csv_s": round(csv_s, 2),
            "browser_median_s": {
                name: round(statistics.median(r[name] for r in runs), 3) for name in runs[0]
            },
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
