"""The ``whyserve demo`` page in a real browser: Debian's Chromium, headless, driven by Selenium
through Debian's ChromeDriver (scripts/browser installs both), in front of a real TorchServe
serving the real EfficientNet-Lite0 and the B-cos flowers archives with token auth on
(configs/production.properties): the demo holds the keys, the page never sees them.

Screenshots go to a temporary folder (``pytest -s`` prints where), and are copied to the folder
named by ``WHYSERVE_SHOTS`` when that is set, for a person to look at."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from selenium.webdriver import Chrome, ChromeOptions
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from serving_helpers import MODEL, start_server
from whyserve.data.flowers import CLASS_NAMES, make_flower
from whyserve.demo import Upstream, make_server, read_token_file
from whyserve.photos import photo_path

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BCOS = "flowers_bcos"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1250",
)  # fmt: skip

# A coarse picture of a canvas: 16 x 16 cells of mean RGB, and how many distinct colours it has.
CANVAS_SIGNATURE = """
const canvas = document.getElementById(arguments[0]);
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const cells = new Array(16 * 16 * 3).fill(0), colours = new Set();
for (let y = 0; y < canvas.height; y++) for (let x = 0; x < canvas.width; x++) {
  const i = 4 * (y * canvas.width + x), c = 3 * (Math.floor(16 * y / canvas.height) * 16 + Math.floor(16 * x / canvas.width));
  for (let k = 0; k < 3; k++) cells[c + k] += data[i + k];
  colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
}
const n = canvas.width * canvas.height / 256;
return {cells: cells.map((v) => v / n), colours: colours.size};
"""


# Fetches the given paths from the page's own origin; hands their texts, joined, to Selenium.
FETCH_ALL = """
const done = arguments[arguments.length - 1];
Promise.all(arguments[0].map((p) => fetch(p).then((r) => r.text()))).then((texts) => done(texts.join("\\n")));
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ts = start_server(tmp_path_factory, "production.properties", models=(MODEL, BCOS))
    yield ts
    ts.stop()


@pytest.fixture(scope="module")
def demo(server):
    keys = read_token_file(server.workdir / "key_file.json")  # the demo holds them; the page must not
    httpd = make_server(Upstream(server.inference_url, server.management_url, *keys, timeout=120))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {folder}")
    yield folder
    if os.environ.get("WHYSERVE_SHOTS"):
        Path(os.environ["WHYSERVE_SHOTS"]).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.png")):
            shutil.copy(path, os.environ["WHYSERVE_SHOTS"])


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium / ChromeDriver missing: run scripts/browser (the test command does)")
    options = ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = Chrome(options=options, service=Service(CHROMEDRIVER, log_output=str(log)))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def open_page(browser, demo: str, model: str) -> None:
    browser.get(demo)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2, "the served models")
    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    wait(browser, lambda d: d.find_element(By.ID, "status").text == "ready", "the page to settle")


def wait(browser, condition, what: str, timeout: float = 180):
    return WebDriverWait(browser, timeout).until(condition, message=f"waited {timeout:.0f} s for {what}")


def answers(browser) -> int:
    return int(browser.find_element(By.ID, "result").get_attribute("data-answers"))


def answered(browser, before: int, state: str = "done") -> None:
    """Waits until the page has its next answer, and checks that it ended in ``state``."""
    wait(browser, lambda d: answers(d) > before, "the server's answer")
    result = browser.find_element(By.ID, "result")
    assert result.get_attribute("data-state") == state, browser.find_element(By.ID, "error").text


def upload(browser, path: Path, state: str = "done") -> None:
    before = answers(browser)
    browser.find_element(By.ID, "file").send_keys(str(path))
    answered(browser, before, state)


def signature(browser, canvas: str = "canvas") -> tuple[np.ndarray, int]:
    found = browser.execute_script(CANVAS_SIGNATURE, canvas)
    return np.asarray(found["cells"]).reshape(16, 16, 3), found["colours"]


def set_opacity(browser, percent: int) -> None:
    browser.execute_script(
        "const s = document.getElementById('opacity'); s.value = arguments[0]; s.dispatchEvent(new Event('input'));", percent
    )


def labels(browser) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#predictions .label")]


def test_chelsea_top5_and_overlay(browser, demo, shots):
    open_page(browser, demo, MODEL)
    methods = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#method option")]
    assert methods == ["gradcam", "contrastive", "scorecam"]  # what the archive's model-config serves
    assert len(browser.find_elements(By.CSS_SELECTOR, "#classes option")) == 1000  # label autocompletion
    upload(browser, photo_path("chelsea"))
    assert labels(browser)[0] == "tiger cat" and len(labels(browser)) == 5
    bars = browser.find_elements(By.CSS_SELECTOR, "#predictions .bar span")
    widths = [float(e.value_of_css_property("width").removesuffix("px")) for e in bars]
    assert widths == sorted(widths, reverse=True) and widths[0] > 2 * widths[-1]  # probability bars
    assert browser.find_element(By.ID, "question").text == "gradcam: why tiger cat?"
    assert "predict" in browser.find_element(By.ID, "timings").text and "torch:cpu" in browser.find_element(By.ID, "timings").text
    overlaid, colours = signature(browser)
    assert colours > 1000 and overlaid.std() > 10  # a photo with a heatmap, not a blank canvas
    set_opacity(browser, 0)
    photo_only, _ = signature(browser)
    set_opacity(browser, 50)
    assert np.abs(overlaid - photo_only).mean() > 10  # the heatmap is drawn over the photo
    assert photo_only[8, 8].sum() > 0  # and the photo is under it
    browser.save_screenshot(str(shots / "1_chelsea_gradcam.png"))


def test_contrastive_with_a_typed_label(browser, demo, shots):
    open_page(browser, demo, MODEL)
    upload(browser, photo_path("chelsea"))
    gradcam, _ = signature(browser)
    assert not browser.find_element(By.ID, "contrast").is_enabled()  # gradcam takes no contrast
    Select(browser.find_element(By.ID, "method")).select_by_value("contrastive")
    browser.find_element(By.ID, "contrast").send_keys("Egyptian cat")
    before = answers(browser)
    browser.find_element(By.ID, "explain").click()
    answered(browser, before)
    assert browser.find_element(By.ID, "question").text == "contrastive: why tiger cat, rather than Egyptian cat?"
    contrastive, colours = signature(browser)
    assert colours > 1000 and np.abs(contrastive - gradcam).mean() > 3  # another question, another map
    browser.save_screenshot(str(shots / "2_chelsea_contrastive.png"))


def test_a_non_image_shows_the_servers_message(browser, demo, shots, tmp_path):
    open_page(browser, demo, MODEL)
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a photo\n")
    upload(browser, notes, state="error")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert "HTTP 400: the body is not an image PIL can identify" in error.text and "valid: JPEG, PNG, WEBP" in error.text
    browser.save_screenshot(str(shots / "3_not_an_image.png"))


def test_bcos_colour_image_and_methods_side_by_side(browser, demo, shots, tmp_path):
    open_page(browser, demo, BCOS)
    methods = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#method option")]
    assert methods == ["bcos", "gradcam", "contrastive", "scorecam"]
    assert browser.find_element(By.ID, "contrast").is_enabled()  # B-cos takes a contrast
    flower = tmp_path / "flower.png"
    Image.fromarray(make_flower(4242, 0, label=5).image).save(flower)
    upload(browser, flower)
    assert labels(browser)[0] == CLASS_NAMES[5]
    assert browser.find_element(By.ID, "question").text == f"bcos: why {CLASS_NAMES[5]}?"
    assert browser.find_element(By.ID, "bcos-figure").is_displayed()
    colour, colours = signature(browser, "bcos")
    assert colours > 50 and colour.std() > 5  # the B-cos colour image is drawn
    browser.save_screenshot(str(shots / "4_flower_bcos.png"))
    browser.find_element(By.ID, "compare-button").click()
    wait(browser, lambda d: d.find_element(By.ID, "compare").get_attribute("data-state") == "done", "the comparison")
    cells = browser.find_elements(By.CSS_SELECTOR, "#compare figure")
    assert [c.get_attribute("data-method") for c in cells] == methods
    assert all(c.find_elements(By.TAG_NAME, "canvas") for c in cells), [c.text for c in cells]
    browser.execute_script("document.getElementById('compare-section').scrollIntoView()")
    browser.save_screenshot(str(shots / "5_methods_side_by_side.png"))


def test_the_keys_stay_in_the_demo(browser, demo, server):
    keys = read_token_file(server.workdir / "key_file.json")
    open_page(browser, demo, MODEL)
    upload(browser, photo_path("coffee"))
    assert labels(browser)[0] == "espresso"  # answered through the demo, which sent the key
    refused = requests.post(f"{server.inference_url}/predictions/{MODEL}", data=b"x", timeout=30)
    assert refused.status_code in (400, 401) and "Token Authorization failed" in refused.text  # auth is on
    seen = browser.execute_async_script(FETCH_ALL, ["/", "/demo.js", "/api/models", f"/api/classes/{MODEL}", "/api/photos"])
    seen += browser.page_source
    assert all(key and key not in seen for key in keys)
