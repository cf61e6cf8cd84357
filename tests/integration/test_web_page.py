"""The gateway's web page in a real headless browser (Debian's chromium and chromedriver,
driven by Selenium) against the real stack (`styleloop up`, tiny preset, drawn catalog) on
127.0.0.1: a photo finds its item first, a filter chip narrows a search, a chat answer
streams in with its cited cards, a rejected card is gone from the next results, and a
broken backend shows the API's error. Screenshots of each step, at desktop and phone
widths, go to the test's output folder (``STYLELOOP_SCREENSHOTS`` to keep them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from styleloop.processes import stop
from tests.integration.test_up import children, start_up

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTHS = {"desktop": (1280, 900), "phone": (375, 812)}


class Page:
    def __init__(self, driver: Any, url: str, shots: Path) -> None:
        self.driver, self.url, self.shots = driver, url, shots

    def wait(self, condition: Any, timeout: float = 60) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(condition)

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def ids(self, selector: str) -> list[str]:
        """The item ids of the cards ``selector`` finds, read in one step (the page may
        replace a list while it is being read)."""
        return list(
            self.driver.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.itemId)",
                selector,
            )
        )

    def shoot(self, name: str) -> None:
        """The page as it is, at both widths (the phone one must not scroll sideways)."""
        for width_name, (width, height) in WIDTHS.items():
            self.driver.set_window_size(width, height)
            self.driver.save_screenshot(str(self.shots / f"{name}-{width_name}.png"))
            if width_name == "phone":
                overflow = self.driver.execute_script(
                    "return document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, f"{name}: {overflow}px wider than a 375 px phone"
        self.driver.set_window_size(*WIDTHS["desktop"])


@pytest.fixture(scope="module")
def stack(tiny_models: Path, drawn_catalog: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("web")
    proc, base, out = start_up(tiny_models, drawn_catalog, tmp)
    try:
        assert f"Web page: http://127.0.0.1:{base + 3}/" in out.read_text()
        yield proc, f"http://127.0.0.1:{base + 3}"
    finally:
        stop(proc, 60)


@pytest.fixture(scope="module")
def page(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are missing: `make install` installs them (apt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    shots = Path(os.environ.get("STYLELOOP_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    shots.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(stack[1] + "/")
        yield Page(driver, stack[1], shots)
    finally:
        driver.quit()


def catalog_rows(drawn_catalog: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (drawn_catalog / "products.jsonl").open()]


def test_1_a_photo_finds_its_item_first(page: Page, drawn_catalog: Path) -> None:
    page.wait(lambda d: page.css("#chips .chip"))  # the filter chips came from /v1/facets
    row = catalog_rows(drawn_catalog)[5]
    page.css("#photo")[0].send_keys(str(drawn_catalog / row["image"]))
    page.wait(lambda d: page.ids("#results .card"))
    assert page.ids("#results .card")[0] == row["id"]
    # Its photo was fetched through /v1/items/{id}/image and shown.
    page.wait(lambda d: page.css("#results .card img")[0].get_attribute("src").startswith("blob:"))
    page.shoot("1-photo-search")


def test_2_a_chip_filters_the_search(page: Page, drawn_catalog: Path) -> None:
    query = page.css("#query")[0]
    query.clear()
    query.send_keys("t-shirt")
    page.css("#text-form button[type=submit]")[0].click()
    page.wait(lambda d: page.ids("#results .card"))
    chip = next(c for c in page.css("#chips .chip") if c.get_attribute("data-value") == "Red")
    chip.click()
    red = {r["id"] for r in catalog_rows(drawn_catalog) if r["base_colour"] == "Red"}
    page.wait(lambda d: page.ids("#results .card") and set(page.ids("#results .card")) <= red)
    assert chip.get_attribute("aria-pressed") == "true"
    page.shoot("2-filtered")
    chip.click()  # off again for the next steps
    page.wait(lambda d: chip.get_attribute("aria-pressed") == "false")


def test_3_a_chat_answer_streams_in_with_its_cited_cards(page: Page) -> None:
    question = page.css("#question")[0]
    question.send_keys("show me red tshirts")
    page.css("#chat-form button[type=submit]")[0].click()
    page.wait(lambda d: page.css(".turn.assistant[data-finish]"), timeout=180)
    answer = page.css(".turn.assistant")[-1]
    assert answer.get_attribute("data-finish") in ("stop", "length")
    assert answer.find_element("css selector", ".answer-text").text.strip()
    cited = page.ids(".turn.assistant:last-child .cited .card")
    found = cited + page.ids(".turn.assistant:last-child .retrieved .card")
    assert cited, "the answer cites at least one card"
    assert len(found) == len(set(found))  # each retrieved item once, cited or not
    page.shoot("3-chat")


def test_4_a_rejected_card_is_gone_from_the_next_results(page: Page) -> None:
    query = page.css("#query")[0]
    query.clear()
    query.send_keys("skirt")
    page.css("#text-form button[type=submit]")[0].click()
    page.wait(lambda d: page.ids("#results .card"))
    first = page.css("#results .card")[0]
    rejected = first.get_attribute("data-item-id")
    first.find_element("css selector", ".reject").click()
    alert = page.wait(lambda d: d.switch_to.alert)
    alert.send_keys("not my style")
    alert.accept()
    page.wait(lambda d: "rejected" in first.get_attribute("class"))
    page.shoot("4-rejected")

    # The gateway applies the rejection just after accepting it: the next search (asked
    # again until then, at most 30 s) leaves the item out.
    def finished(d: Any) -> bool:
        """The search came back: cards, "Nothing matches." or an error on the page."""
        status = page.css("#results-status")[0].text.strip()
        error = page.css("#error")[0].text.strip()
        return bool(page.ids("#results .card") or error or status not in ("", "Loading…"))

    deadline = time.monotonic() + 30
    while True:
        page.css("#text-form button[type=submit]")[0].click()
        page.wait(finished)
        if rejected not in page.ids("#results .card") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    shown = (page.css("#results-status")[0].text, page.css("#error")[0].text)
    assert not page.css("#error")[0].text.strip(), shown  # the search itself worked
    assert rejected not in page.ids("#results .card"), shown


def test_5_a_broken_backend_shows_the_error_state(page: Page, stack: Any) -> None:
    proc, _url = stack
    recommender = [
        pid
        for pid in children(proc.pid)
        if "services.recommender" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]
    assert recommender, "the stack's recommender process"
    os.kill(recommender[0], signal.SIGKILL)
    page.css("#text-form button[type=submit]")[0].click()
    error = page.wait(lambda d: page.css("#error:not([hidden])"))
    text = error[0].text
    assert "UNAVAILABLE" in text, text  # the API's reason, then its message
    assert len(text) > len("RECOMMENDER_UNAVAILABLE: ")
    page.shoot("5-error")
