"""The funnel explorer page in real headless Chromium (Debian's package)."""

import shutil
from pathlib import Path

import pytest

from pipelines import backfill, gold_daily, report
from simulator import traffic

CHROMIUM = "/usr/bin/chromium"
# No network here: keep Chromium from trying (its refused connections are noise, not page errors).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "test-output" / "funnel-explorer.png"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def explorer_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    traffic.generate(traffic.Config(users=1500, days=5, seed=7), str(root / "landing"))
    lake = root / "lake"
    backfill.main(["--input", str(root / "landing" / "*.jsonl"), "--lake", str(lake)])
    gold_daily.main(["--lake", str(lake)])
    report.main(["--lake", str(lake)])
    return lake / "reports" / "funnel.html"


def test_the_explorer_renders_offline_without_console_errors(explorer_page):
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), "Debian's chromium is needed: make browser"
    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(explorer_page.as_uri())
        page.wait_for_selector("#trend .js-plotly-plot .main-svg")
        text = page.inner_text("body")
        charts = page.locator(".js-plotly-plot").count()
        funnel_labels = page.locator("#funnel .js-plotly-plot").inner_text()
        experiments = page.locator("#experiments tr").all_inner_texts()
        # the grain buttons switch the trend to months
        page.get_by_text("month", exact=True).first.click()
        # the funnel's platform picker keeps a title (plotly.js 3 takes title.text, not a title string)
        funnel_chart = page.locator("#funnel .js-plotly-plot")
        funnel_chart.locator(".updatemenu-header-group").click()
        funnel_chart.locator(".updatemenu-dropdown-button", has_text="ios").click()
        platform_title = funnel_chart.locator(".gtitle").text_content()
        # the defined funnels: pick a funnel and a breakdown, then another funnel's cohorts
        steps_chart = page.locator("#defined-funnels .js-plotly-plot").nth(0)
        first_title = steps_chart.locator(".gtitle").text_content()
        steps_chart.locator(".updatemenu-header-group").click()
        steps_chart.locator(".updatemenu-dropdown-button", has_text="journey_7d by country").click()
        page.wait_for_function(
            "() => document.querySelector('#defined-funnels .js-plotly-plot .gtitle').textContent"
            ".includes('journey_7d by country')"
        )
        picked_legend = steps_chart.locator(".legend").text_content()
        cohorts = page.locator("#defined-funnels .js-plotly-plot").nth(2)
        cohorts.locator(".updatemenu-header-group").click()
        cohorts.locator(".updatemenu-dropdown-button", has_text="journey_7d").click()
        cohort_title = cohorts.locator(".gtitle").text_content()
        cohort_legend = cohorts.locator(".legend").text_content()
        funnel_steps = page.locator("#defined-funnel-steps tr").all_inner_texts()
        times = page.locator("#defined-funnels .js-plotly-plot").nth(1)
        times.locator(".updatemenu-header-group").click()
        times.locator(".updatemenu-dropdown-button", has_text="contract, from the step before").click()
        time_title = times.locator(".gtitle").text_content()
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    print(f"screenshot: {SCREENSHOT}")
    assert problems == []
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requests), requests  # offline
    assert charts == 10
    for n, stage in enumerate(
        ("browse", "add_to_cart", "payment_successful", "email_confirmation", "barcode_scanned"), start=1
    ):
        assert f"{n}. {stage}" in funnel_labels
    assert any(row.startswith("checkout_button\tB") for row in experiments), experiments
    assert any(row.startswith("banner_color\tA") and "control" in row for row in experiments)
    assert "Retargeting audience:" in text and "email_failed" in text
    assert platform_title == "Funnel: sessions per stage (ios)"
    # defined funnels: the first of the file, then the picked one with its countries
    assert first_title.startswith("Defined funnel: checkout_strict")
    assert all(country in picked_legend for country in ("GB", "US", "DE", "FR"))  # one bar per country
    assert cohort_title.startswith("Entry cohorts: journey_7d") and "pending" in cohort_legend
    assert "dropped" in cohort_legend and "converted" in cohort_legend
    assert any(row.startswith("contract\t5. barcode_scanned") for row in funnel_steps), funnel_steps
    assert any(row.startswith("engaged_30m\t3. 3 of 3 steps") for row in funnel_steps), funnel_steps
    assert "median from the step before" in funnel_steps[0]
    assert time_title.startswith("Time to convert: contract, from the step before")
    # the data's health: completeness of the recent days, failing checks, revisions
    assert "Data health" in text and "Completeness of the recent days" in text
    assert "failing in each pipeline's latest run" in text and "No gold release has revised" in text
    assert SCREENSHOT.read_bytes()[:4] == b"\x89PNG"
