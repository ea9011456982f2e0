"""The page in a real browser (headless Chromium driven by Selenium): type a query and see the engine's hits as
thumbnails, filter them by caption, turn the page, click one for its neighbours, browse what the CLIP-score filter
dropped, open a data card with its plot. `CLIPMODULE_SCREENSHOTS=DIR` saves each view as a PNG (the README's)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (make sysdeps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 20, poll_frequency=0.05).until(condition, message=what)


def tiles(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results .hit")


def shown(driver, attribute: str = "key") -> list[str]:
    """The tiles' `data-<attribute>`, read in one script (the grid may be redrawn between two WebDriver calls)."""
    return driver.execute_script(f"return [...document.querySelectorAll('#results .hit')]"
                                 f".map(tile => tile.dataset.{attribute})")


def loaded(driver, image) -> bool:
    return bool(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image))


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("CLIPMODULE_SCREENSHOTS")
    if folder:
        from PIL import Image

        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / f"{name}.png"
        driver.save_screenshot(str(path))
        with Image.open(path) as shot:  # a palette of 64 colours: small enough to commit
            shot.convert("RGB").quantize(64).save(path, optimize=True)


def test_search_neighbours_browse_and_a_card_in_chromium(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    engine = served.service.indexes["tiny"]
    expected = [(hit["shard"], hit["key"]) for hit in engine.search("text", "a red circle", 24)]
    browser.get(served.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"), "the index list")
    browser.find_element(By.ID, "query").send_keys("a red circle", Keys.ENTER)
    wait(browser, lambda d: len(tiles(d)) == 24, "24 thumbnails")
    assert [(t.get_attribute("data-shard"), t.get_attribute("data-key")) for t in tiles(browser)] == expected
    first = tiles(browser)[0]
    assert "#1" in first.find_element(By.CLASS_NAME, "score").text
    wait(browser, lambda d: all(loaded(d, t.find_element(By.TAG_NAME, "img")) for t in tiles(d)), "thumbnails")
    screenshot(browser, "search")

    browser.find_element(By.ID, "caption-filter").send_keys("red")
    wait(browser, lambda d: 0 < len(tiles(d)) < 24, "the caption filter")
    assert all("red" in t.find_element(By.CLASS_NAME, "caption").text for t in tiles(browser))
    browser.find_element(By.ID, "caption-filter").clear()
    browser.execute_script("document.getElementById('caption-filter').dispatchEvent(new Event('input'))")
    browser.find_element(By.ID, "next").click()
    wait(browser, lambda d: len(tiles(d)) == 12 and "page=1" in d.current_url, "page 2: the last 12 of 36")

    image_file = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(image_file)
    by_image = [hit["key"] for hit in engine.search("image", Image.open(image_file).convert("RGB"), 24)]
    browser.find_element(By.ID, "image-file").send_keys(str(image_file))  # what a drop hands the page
    wait(browser, lambda d: shown(d) == by_image, "the image's hits")

    clicked = tiles(browser)[3]
    row_id = clicked.get_attribute("data-id")
    clicked.click()
    wait(browser, lambda d: f"#neighbours/tiny/{row_id}" in d.current_url and shown(d, "id")[:1] == [row_id],
         "the neighbours, itself first")
    screenshot(browser, "neighbours")

    browser.get(served.url + "#browse/tiny-work")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples tr.sample")) == 17, "every sample")
    Select(browser.find_element(By.ID, "decision")).select_by_value("filter: clip_score")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples tr.sample")) == 2, "the filter's drops")
    rows = browser.find_elements(By.CSS_SELECTOR, "#samples tr.sample")
    assert all("dropped for clip_score" in row.text and "queries: red" in row.text for row in rows)
    wait(browser, lambda d: all(loaded(d, r.find_element(By.TAG_NAME, "img")) for r in rows), "sample images")
    screenshot(browser, "browse")

    browser.get(served.url + "#cards")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "a.card-link"), "the card list").pop().click()
    wait(browser, lambda d: d.current_url.endswith("/cards/tiny"), "the card page")
    plot = browser.find_element(By.CSS_SELECTOR, "#card img")
    wait(browser, lambda d: loaded(d, plot), "the card's plot")
    assert browser.find_element(By.CSS_SELECTOR, "#card table").text.startswith("count")
    screenshot(browser, "card")
