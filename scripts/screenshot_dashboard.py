"""Screenshots of the live dashboard on a real model, driven in headless Chromium (selenium).

    python scripts/screenshot_dashboard.py --readers DIR [--model gemma-3-270m] --out figures

Starts ``probes dashboard`` on a free port, writes two turns with UK spelling, takes
``dashboard_uk_reading.png``; pins dialect to US (the dashboard's default band and strength),
regenerates, takes ``dashboard_pinned_us.png``; prints both replies and the readings.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TURNS = (
    "I love the colour of autumn leaves. I took the lift up to my flat and put the football on.",
    "What football team do you think I support?",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--readers", default=None, help="bundle folder (default: fit and cache)")
    parser.add_argument("--out", default="figures")
    parser.add_argument("--attribute", default="dialect")
    parser.add_argument("--pin", default="us")
    args = parser.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "probes.cli",
        "dashboard",
        "--model",
        args.model,
        "--port",
        str(port),
    ]
    if args.readers:
        cmd += ["--readers", args.readers]
    server = subprocess.Popen(cmd)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/api/info", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit("the dashboard did not start") from None
                time.sleep(0.5)
        wait = WebDriverWait(driver, 600)
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card"))
        for n, text in enumerate(TURNS, start=1):
            driver.find_element(By.ID, "message").send_keys(text)
            driver.find_element(By.ID, "send").click()
            wait.until(
                lambda d, n=n: (
                    len(d.find_elements(By.CSS_SELECTOR, "#messages .msg")) == 2 * n
                    and not d.find_elements(By.CSS_SELECTOR, ".live")
                    and not d.find_element(By.ID, "regenerate").get_property("disabled")
                )
            )
        time.sleep(1)
        driver.save_screenshot(str(out / "dashboard_uk_reading.png"))
        card = driver.find_element(By.CSS_SELECTOR, f'.card[data-attribute="{args.attribute}"]')
        Select(card.find_element(By.CSS_SELECTOR, ".pin")).select_by_value(args.pin)
        wait.until(lambda d: "pinned" in card.get_attribute("class"))
        driver.find_element(By.ID, "regenerate").click()
        time.sleep(1)
        wait.until(
            lambda d: (
                not d.find_elements(By.CSS_SELECTOR, ".live")
                and not d.find_element(By.ID, "regenerate").get_property("disabled")
                and d.find_element(By.CSS_SELECTOR, "#reply-steered").is_displayed()
            )
        )
        time.sleep(1)
        driver.save_screenshot(str(out / "dashboard_pinned_us.png"))
        with urllib.request.urlopen(url + "/api/export") as response:
            session = json.loads(response.read())
        for turn in session["turns"]:
            print(turn["role"], repr(turn["text"]), json.dumps(turn.get("replies", ""))[:300])
        print(f"screenshots in {out}")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
