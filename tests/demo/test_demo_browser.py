"""`seqgpt demo` in a real browser: headless Chromium fills the form on the taught tiny model and
reads the rendered page (highlighted spans with labels and scores, textcat bars, the message for
missing labels). CI installs Chromium (.ci/run); elsewhere the test is skipped without it."""
import os

import pytest

from conftest import ROOT, load_script

pytestmark = pytest.mark.slow  # a browser and a server
browser = load_script(ROOT / "scripts" / "demo_screenshot.py")


@pytest.fixture(scope="module")
def page_url(seqgpt_tiny):
    pytest.importorskip("selenium", reason="the browser test drives Chromium with selenium (the [test] extra)")
    if None in browser.browser_paths():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the browser test: .ci/run installs chromium and chromium-driver")
        pytest.skip("needs Chromium and chromedriver on PATH (Debian: apt install chromium chromium-driver)")
    from spacy_seqgpt.demo.engine import DemoEngine

    with browser.served(DemoEngine(seqgpt_tiny)) as url:
        yield url


def test_a_person_sees_spans_categories_and_errors_in_the_browser(page_url, tmp_path):
    from selenium.webdriver.common.by import By

    with browser.chromium_driver() as driver:
        browser.submit(driver, page_url, text="Tim Cook met Olaf Scholz in Berlin.", task="ner",
                       labels="person, organization, location")
        marks = driver.find_elements(By.CSS_SELECTOR, "#spans mark.entity")
        # a mark reads "Tim Cook person": the span's text, then its label
        found = {(mark.text.rsplit(mark.get_attribute("data-label"), 1)[0].strip(), mark.get_attribute("data-label"))
                 for mark in marks}
        assert found == {("Tim Cook", "person"), ("Olaf Scholz", "person"), ("Berlin", "location")}
        assert all("score 0." in mark.get_attribute("title") for mark in marks)  # the score on hover
        assert "took" in driver.find_element(By.ID, "time").text
        driver.save_screenshot(str(tmp_path / "ner.png"))
        # the form keeps what was typed
        assert driver.find_element(By.ID, "labels").get_attribute("value") == "person, organization, location"

        browser.submit(driver, page_url, text="Serena Williams won the final in New York.", task="textcat",
                       labels="sports, politics, business")
        bars = driver.find_elements(By.CSS_SELECTOR, "#cats .cat")
        scores = {bar.get_attribute("data-label"): float(bar.get_attribute("data-score")) for bar in bars}
        assert set(scores) == {"sports", "politics", "business"} and max(scores, key=scores.get) == "sports"
        assert bars[0].get_attribute("data-label") == "sports" and abs(sum(scores.values()) - 1) < 0.01

        browser.submit(driver, page_url, text="Tim Cook met Olaf Scholz in Berlin.", task="ner", labels=" , ")
        assert "Give at least one label" in driver.find_element(By.ID, "error").text
        driver.save_screenshot(str(tmp_path / "error.png"))
    assert (tmp_path / "ner.png").stat().st_size > 10_000 and (tmp_path / "error.png").stat().st_size > 0
