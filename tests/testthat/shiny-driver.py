"""Drive the example Shiny app (inst/shiny/app.R) in headless Chromium.

Usage: CHROMIUM=/usr/bin/chromium CHROMEDRIVER=/usr/bin/chromedriver \
         python3 shiny-driver.py URL OUTDIR PROFILE_DIR

Opens two browser windows on URL (two Shiny sessions), logs every change of
the outputs (clock, result, progress) in the page itself (a MutationObserver stamps each change with the
browser's clock), presses the button in session 1, takes screenshots of both
sessions into OUTDIR, waits for session 1's result (any text but the one
before the click and "Computing..."), and writes what it saw to
OUTDIR/observations.json. It asserts nothing: test-shiny.R judges the log.
Run by test-shiny.R; exits non-zero (with the reason on stderr) when the page
does not behave as a Shiny page should (no connection, no result in time).
"""

import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

STARTUP_TIMEOUT = 90  # a slow, shared 2-core machine: be generous
RESULT_TIMEOUT = 90

# Records [Date.now(), text] for every change of output `id` in window.__log[id].
OBSERVE_JS = """
const id = arguments[0];
window.__log = window.__log || {};
const el = document.getElementById(id);
const log = window.__log[id] = [[Date.now(), el.textContent]];
new MutationObserver(() => log.push([Date.now(), el.textContent]))
  .observe(el, {childList: true, characterData: true, subtree: true});
"""

CONNECTED_JS = """
return !!(window.Shiny && Shiny.shinyapp && Shiny.shinyapp.isConnected() &&
          document.getElementById('clock').textContent.length > 0);
"""


def open_session(driver, url):
    driver.get(url)
    WebDriverWait(driver, STARTUP_TIMEOUT, poll_frequency=0.2).until(
        lambda d: d.execute_script(CONNECTED_JS))
    for output in ("clock", "result", "progress"):
        driver.execute_script(OBSERVE_JS, output)
    return driver.execute_script("return Shiny.shinyapp.config.sessionId;")


def main():
    url, outdir, profile = sys.argv[1:4]
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ["CHROMIUM"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--window-size=900,600",
                "--user-data-dir=" + profile,
                # Two windows share one browser: keep the one not in front
                # running at full speed.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows"):
        opts.add_argument(arg)
    service = Service(
        executable_path=os.environ["CHROMEDRIVER"],
        log_path=os.path.join(outdir, "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    obs = {"url": url, "screenshots": []}
    try:
        driver.set_page_load_timeout(STARTUP_TIMEOUT)

        def shot(window, name):
            driver.switch_to.window(window)
            path = os.path.join(outdir, name)
            driver.save_screenshot(path)
            obs["screenshots"].append(path)

        w1 = driver.current_window_handle
        sid1 = open_session(driver, url)
        driver.switch_to.new_window("window")
        w2 = driver.current_window_handle
        sid2 = open_session(driver, url)
        obs["sessions"] = [sid1, sid2]

        driver.switch_to.window(w1)
        waiting = (driver.find_element(By.ID, "result").text, "Computing...")
        obs["click"] = time.time()
        driver.find_element(By.ID, "go").click()
        time.sleep(1.5)
        shot(w2, "session2-while-session1-computes.png")
        shot(w1, "session1-computing.png")
        WebDriverWait(driver, RESULT_TIMEOUT, poll_frequency=0.2).until(
            lambda d: d.find_element(By.ID, "result").text not in waiting)
        shot(w1, "session1-result.png")
        shot(w2, "session2-after.png")

        logs = {}
        for name, window in (("session1", w1), ("session2", w2)):
            driver.switch_to.window(window)
            logs[name] = driver.execute_script("return window.__log;")
        obs["log"] = logs
    finally:
        driver.quit()
        with open(os.path.join(outdir, "observations.json"), "w") as f:
            json.dump(obs, f, indent=1)


if __name__ == "__main__":
    main()
