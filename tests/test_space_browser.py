"""The Space in a real browser: headless Chromium (Debian's `chromium`, which `make install` installs; Playwright
drives it, its own browser download unused) uploads a real WFDB record, types two queries, submits and finds both
queries and their probabilities on the page. The page's screenshot is kept as `artifacts/space_browser.png`
(git-ignored) for a person to look at."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import FIXTURES, REPO

CHROMIUM = Path("/usr/bin/chromium")
SHIPPED = REPO / "checkpoints" / "supreme-ptbxl"
RECORD = FIXTURES / "ptbxl" / "records500" / "00000" / "00040_hr"  # PTB-XL fold 10: "normal ECG" (80 %)
QUERIES = ["sinus rhythm", "atrial fibrillation"]
SCREENSHOT = REPO / "artifacts" / "space_browser.png"


def test_upload_a_record_in_chromium_and_read_the_answers(space_url):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright
    from transformers import pipeline

    classifier = pipeline("zero-shot-ecg-classification", model=str(SHIPPED), trust_remote_code=True)
    expected = {item["label"]: item["score"] for item in classifier(str(RECORD), candidate_labels=QUERIES)}

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)  # a machine busy with other work serves the page slowly
            page.goto(space_url)
            page.locator("input[type=file]").first.set_input_files(
                [str(RECORD.with_suffix(".hea")), str(RECORD.with_suffix(".dat"))]
            )
            for suffix in (".hea", ".dat"):  # the file list shows each upload once it is on the server
                expect(page.get_by_role("row", name=re.compile(re.escape(RECORD.name + suffix)))).to_be_visible(
                    timeout=300_000
                )
            page.get_by_label("Queries, one per line").fill("\n".join(QUERIES))
            page.get_by_role("button", name="Classify").click()
            expect(page.get_by_text(f"uploaded WFDB record {RECORD.name}")).to_be_visible(timeout=300_000)

            table = page.get_by_role("grid", name="probability per query")
            for query, probability in expected.items():  # each query on one row with its probability
                expect(table.get_by_role("row", name=f"{query} {probability:.4f}")).to_be_visible()
            # the framing, read from the model's own card: its first held-out figure, and what the model is not
            first_figure = yaml.safe_load((SHIPPED / "README.md").read_text().split("---")[1])["model-index"][0]
            expect(page.get_by_role("cell", name=first_figure["results"][0]["task"]["name"])).to_be_visible()
            expect(page.get_by_text("Not a medical device.")).to_be_visible()
            for image in ("#ecg-paper img", "#attention img"):  # the printed ECG and the attention map arrived
                expect(page.locator(image)).to_be_visible()
            page.wait_for_timeout(1_000)  # let the bar chart finish drawing for the screenshot
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 300_000  # the page with its two pictures (the page alone: ~220 kB)
