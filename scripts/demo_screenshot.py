"""Drive the demo page in headless Chromium and save a screenshot of the answer: docs/demo.png is
made with it (the browser test uses its helpers).

    python scripts/demo_screenshot.py MODEL_OR_PIPELINE docs/demo.png --task ner \\
        --text "Angela Merkel met Emmanuel Macron in Paris." --labels "person, location"

Needs Chromium and its driver (Debian: apt install chromium chromium-driver) and selenium.
"""
import argparse
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def browser_paths():
    """(browser, driver) found on PATH, each None where missing."""
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    return browser, shutil.which("chromedriver")


@contextmanager
def chromium_driver(width: int = 1100, height: int = 900) -> Iterator:
    """A headless Chromium driven by selenium, with the browser and driver found on PATH (never
    downloaded: selenium's manager is not asked)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = browser_paths()
    if browser is None or driver_path is None:
        raise RuntimeError("needs Chromium and chromedriver on PATH (Debian: apt install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def served(engine) -> Iterator[str]:
    """The demo of ``engine`` served on a free local port in a thread; yields its URL."""
    from spacy_seqgpt.demo.server import make_server

    server = make_server(engine, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def submit(driver, url: str, *, text: str, task: str, labels: str, entity_labels: str = "", timeout: float = 120):
    """Open the page, fill the form as a person would, run it and wait for the answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url)
    for name, value in (("text", text), ("labels", labels), ("entity_labels", entity_labels)):
        fields = driver.find_elements(By.ID, name)
        if fields:
            fields[0].clear()
            fields[0].send_keys(value)
    Select(driver.find_element(By.ID, "task")).select_by_value(task)
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, timeout).until(
        lambda page: page.find_elements(By.CSS_SELECTOR, "#result #time, #result #error"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="model folder or saved pipeline")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--task", default="ner")
    parser.add_argument("--text", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--entity-labels", default="")
    args = parser.parse_args()
    from spacy_seqgpt.demo.engine import DemoEngine

    engine = DemoEngine(args.source)
    with served(engine) as url, chromium_driver() as driver:
        submit(driver, url, text=args.text, task=args.task, labels=args.labels, entity_labels=args.entity_labels)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.output))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
