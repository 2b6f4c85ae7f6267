"""End to end in a real headless Chromium: the real server (``probes dashboard``) on a free
port with a planted tiny bundle; type, send, wait for the cards, pin, move a slider,
regenerate, and check what the page shows."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.unit.dashboard.conftest import planted_bundle

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path, tiny_gemma):
    folder = tmp_path / "bundle"
    planted_bundle(tiny_gemma).save(folder)
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "probes.cli",
        "dashboard",
        "--model",
        "tiny-gemma3",
        "--readers",
        str(folder),
        "--port",
        str(port),
        "--band",
        "0-3",
        "--strength",
        "1.5",
        "--max-new-tokens",
        "6",
    ]
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "server.log").read_text())
            try:
                urllib.request.urlopen(url + "/api/info", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_chat_cards_slider_and_regenerate_in_a_real_browser(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(server)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '.card[data-attribute="age"]')))
    box = browser.find_element(By.ID, "message")
    box.send_keys("I love the colour of autumn leaves.")
    browser.find_element(By.ID, "send").click()
    # the cards fill in: every class of every card shows a reading, and they sum to one
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.card[data-attribute="dialect"] .prob'))
    wait.until(lambda d: not d.find_element(By.ID, "regenerate").get_property("disabled"))
    for name, n in (("dialect", 2), ("age", 3)):
        values = browser.find_elements(By.CSS_SELECTOR, f'.card[data-attribute="{name}"] .value')
        assert len(values) == n
        total = sum(float(v.get_attribute("data-reading")) for v in values)
        assert total == pytest.approx(1.0, abs=2e-3)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#messages .msg")) == 2
    assert browser.find_elements(By.CSS_SELECTOR, "#heatmap span")  # the token heatmap
    assert browser.find_element(By.CSS_SELECTOR, '.card[data-attribute="dialect"] .chart svg')

    card = browser.find_element(By.CSS_SELECTOR, '.card[data-attribute="dialect"]')
    Select(card.find_element(By.CSS_SELECTOR, ".pin")).select_by_value("us")
    wait.until(lambda d: "pinned" in card.get_attribute("class"))
    slider = card.find_element(By.CSS_SELECTOR, ".strength")
    before = float(slider.get_attribute("value"))
    for _ in range(10):
        slider.send_keys(Keys.ARROW_RIGHT)
    shown = card.find_element(By.CSS_SELECTOR, ".strength-value")
    wait.until(lambda d: float(shown.text) == pytest.approx(before + 0.10, abs=1e-6))
    browser.find_element(By.ID, "regenerate").click()
    steered = browser.find_element(By.CSS_SELECTOR, "#reply-steered .text")
    wait.until(lambda d: steered.is_displayed() and steered.text)
    unsteered = browser.find_element(By.CSS_SELECTOR, "#reply-unsteered .text").text
    assert steered.text != unsteered
    assert "dialect" in browser.find_element(By.CSS_SELECTOR, "#reply-steered .mini").text
    assert browser.find_element(By.ID, "status").text == ""
    last = browser.find_elements(By.CSS_SELECTOR, "#messages .msg")[-1]
    assert (
        "steered" in last.text
        and len(browser.find_elements(By.CSS_SELECTOR, "#messages .msg")) == 2
    )
    # the pin (with the slider's strength) went to the server and is in the export
    with urllib.request.urlopen(server + "/api/export") as response:
        import json

        exported = json.loads(response.read())
    assert exported["pins"]["dialect"]["strength"] == pytest.approx(before + 0.10, abs=1e-6)
    # every asset came from this server: no CDN
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls and all(u.startswith(server) for u in urls)
    assert browser.execute_script("return typeof Plotly") == "object"
