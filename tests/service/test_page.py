"""The `nhl serve` page in a real browser (headless Chromium driven by selenium): load `/`, run a
search, see k thumbnails, switch the code length and see the results change.

The expected thumbnails are the API's own answer for the same query (the API is checked against
brute force in test_api.py). A screenshot is saved (`NHL_SERVE_SCREENSHOT`, default a tmp path).
Skipped when Chromium, chromedriver or selenium is missing (`.ci/run` installs them); the browser is
the session's (tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from .conftest import LiveServer


def test_the_page_searches_and_switches_lengths(browser, served_model, digits_manifest_dir, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from nhl.service.app import create_app
    from nhl.service.engine import Engine, Source

    engine = Engine(Source(spec=str(served_model), manifest=digits_manifest_dir, cache_dir=tmp_path / "cache"))
    server = LiveServer(create_app(engine))
    # a search re-renders the results: an element read in between is stale, so the waits retry
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))
    try:
        browser.get(server.url + "/")
        wait.until(lambda d: len(Select(d.find_element(By.ID, "item")).options) > 0)
        assert "csq-nhl-full" in browser.find_element(By.ID, "model").text
        assert [o.text for o in Select(browser.find_element(By.ID, "bits")).options] == ["8", "16", "32"]
        item = int(Select(browser.find_element(By.ID, "item")).first_selected_option.get_attribute("value"))
        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys("12")

        def shown(bits: int) -> list[tuple[int, int]]:
            api = requests.get(f"{server.url}/search", params={"item": item, "bits": bits, "k": 12}).json()
            expected = [(r["id"], r["distance"]) for r in api["results"]]

            def ready(d) -> list[list[str]] | bool:
                """The hits' classes once the hits are the API's answer and every thumbnail has loaded."""
                hits = d.find_elements(By.CSS_SELECTOR, "#results .hit")
                got = [(int(h.get_attribute("data-id")), int(h.get_attribute("data-distance"))) for h in hits]
                loaded = got == expected and all(
                    d.execute_script(
                        "return arguments[0].complete && arguments[0].naturalWidth > 0",
                        h.find_element(By.TAG_NAME, "img"),
                    )
                    for h in hits
                )
                return [h.get_attribute("class").split() for h in hits] if loaded else False

            classes = wait.until(ready)
            assert len(classes) == 12
            assert [("relevant" in c) for c in classes] == [r["relevant"] for r in api["results"]]
            return expected

        assert Select(browser.find_element(By.ID, "bits")).first_selected_option.text == "32"
        browser.find_element(By.ID, "go").click()
        at32 = shown(32)
        assert browser.find_element(By.ID, "lat-32").text not in ("", "–")
        Select(browser.find_element(By.ID, "bits")).select_by_value("8")  # switching runs the search
        at8 = shown(8)
        assert at8 != at32
        shot = Path(os.environ.get("NHL_SERVE_SCREENSHOT", tmp_path / "serve.png"))
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
    finally:
        server.stop()
        engine.close()
