"""The page in a real browser: Debian's chromium driven by Playwright. Upload a photo, see k
results with thumbnails, click one for more like it, see new results; a bad file is told in
words. Skips, saying why, only where no chromium can be found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium; `make test` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_upload_results_and_more_like_this(browser, server, photos, tmp_path):
    from playwright.sync_api import expect

    (tmp_path / "query.jpg").write_bytes(photos[0])
    (tmp_path / "notes.jpg").write_text("not a photo")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    expect(page.locator("#about")).to_contain_text("40 images")  # the page's CSP allows no eval: locators only
    assert "efficientnet_lite0" in page.text_content("#about")

    page.fill("#k", "6")
    page.set_input_files("#file", str(tmp_path / "query.jpg"))
    page.wait_for_selector("#grid li >> nth=5")
    cards = page.locator("#grid button")
    assert cards.count() == 6
    first_ids = [cards.nth(i).get_attribute("data-id") for i in range(6)]
    expect(page.locator("#status")).to_contain_text("6 nearest images to your photo")
    images = page.locator("#grid img")
    for i in range(6):
        images.nth(i).scroll_into_view_if_needed()
        expect(images.nth(i)).to_have_js_property("complete", True)
        assert images.nth(i).evaluate("img => img.naturalWidth") > 0, "a thumbnail did not load"
    assert page.is_visible("#query-img") and page.is_hidden("#error")

    target = first_ids[0]
    cards.nth(0).focus()
    page.keyboard.press("Enter")  # "more like this", from the keyboard
    expect(page.locator("#status")).to_contain_text(f"to image {target}")
    new_ids = [cards.nth(i).get_attribute("data-id") for i in range(cards.count())]
    assert len(new_ids) == 6 and target not in new_ids and new_ids != first_ids
    assert page.locator(":focus").get_attribute("data-id") == new_ids[0]

    page.set_input_files("#file", str(tmp_path / "notes.jpg"))
    expect(page.locator("#error")).to_contain_text("not an image")
    assert page.locator("#grid li").count() == 0
    assert not errors, errors
    page.close()


def test_a_server_that_needs_a_read_key(browser, thread_server, photos, tmp_path):
    from playwright.sync_api import expect

    from .conftest import READ_KEY

    keys = tmp_path / "keys"
    keys.write_text(f"read {READ_KEY}\n")
    server = thread_server(api_key_file=keys)
    (tmp_path / "query.jpg").write_bytes(photos[1])
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    expect(page.locator("#about")).to_contain_text("key")  # 401: the page says a key is needed
    assert page.locator("#keybox").get_attribute("open") is not None  # and opens the key field

    page.fill("#key", READ_KEY)
    page.click("#keyform button[type=submit]")
    expect(page.locator("#about")).to_contain_text("40 images")
    expect(page.locator("#keystate")).to_have_text("a key is set")
    assert page.locator("#keybox").get_attribute("open") is None  # out of the way once a key is set
    page.fill("#k", "3")
    page.set_input_files("#file", str(tmp_path / "query.jpg"))
    page.wait_for_selector("#grid li >> nth=2")
    images = page.locator("#grid img")
    for i in range(3):  # thumbnails fetched with the key (an <img src> could not send it)
        expect(images.nth(i)).to_have_js_property("complete", True)
        expect(images.nth(i)).not_to_have_js_property("naturalWidth", 0)
    page.screenshot(path=str(tmp_path / "with-key.png"))
    page.click("#keybox summary")
    page.click("#forget")
    expect(page.locator("#keystate")).to_have_text("no key set")
    expect(page.locator("#about")).to_contain_text("key")
    assert not errors, errors
    page.close()
