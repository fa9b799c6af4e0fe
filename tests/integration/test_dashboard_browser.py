"""The dashboard in a real headless browser (Debian's chromium through chromedriver and
Selenium): it loads with no console errors, a deployment appears and its replica count
follows a rescale, an application deployed while the page is open appears on it with its
import path, a chart grows while load runs, the logs view shows a line logged after
it opened and finds it by request id, a killed replica shows as replaced. It takes a
screenshot (`$ZEROSERVE_DASHBOARD_SCREENSHOT`: where to keep it, e.g. docs/dashboard.png).

Without chromium and chromedriver the module is skipped, unless
`$ZEROSERVE_REQUIRE_BROWSER=1` (CI installs them and sets it).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import serve

from ..conftest import wait_until
from .dashboard_cluster import DashCluster, Echo, dash_cluster

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("ZEROSERVE_REQUIRE_BROWSER") == "1":
        pytest.fail("the dashboard's browser tests need chromium and chromedriver "
                    "(apt-get install chromium chromium-driver)", pytrace=False)
    pytest.skip("chromium and chromedriver are not installed", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dash() -> Iterator[DashCluster]:
    yield from dash_cluster()


@pytest.fixture(scope="module")
def browser(dash: DashCluster) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1500", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(dash.url + "?token=" + dash.token)  # logs in: a cookie, then the page without the token
        wait_until(lambda: "token=" not in driver.current_url and driver.find_elements(By.ID, "nodes"), 20,
                   "the cluster view after logging in")
        yield driver
    finally:
        driver.quit()


def _errors(driver: Any) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _go(driver: Any, hash_: str) -> None:
    driver.execute_script("location.hash = arguments[0]", hash_)


def _text(driver: Any, css: str) -> str:
    """The text of the elements `css` selects, read in one go (the view re-renders every 2 s)."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)"
                                 ".join(' ')", css)


def test_views_load_without_console_errors(dash: DashCluster, browser: Any) -> None:
    assert "127.0.0.2" in _text(browser, "#nodes")
    _go(browser, "#/serve")
    wait_until(lambda: "2 running" in _text(browser, "tr[data-deployment=Echo] td.replicas"), 20,
               "the deployment in the Serve view")
    assert "127.0.0.2" in _text(browser, "#proxies")
    _go(browser, "#/deployment/dash/Echo")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-rate svg"), 20, "the deployment view")
    _go(browser, "#/logs")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#logfile option"), 20, "the logs view")
    assert _errors(browser) == []


def test_an_application_deployed_while_the_page_is_open_appears_with_its_import_path(dash: DashCluster,
                                                                                    browser: Any) -> None:
    _go(browser, "#/serve")
    wait_until(lambda: "2 running" in _text(browser, "tr[data-deployment=Echo] td.replicas"), 20, "the Serve view")
    assert _text(browser, "div[data-app=fresh]") == ""
    browser.execute_script("window.zeroserveTestMark = 1")  # gone if the page reloads
    serve.run(Echo.options(name="Fresh", num_replicas=1).bind(), name="fresh", route_prefix="/fresh")
    try:
        wait_until(lambda: "1 running" in _text(browser, "div[data-app=fresh] tr[data-deployment=Fresh] td.replicas"),
                   30, "the new application on the open page")
        assert "tests.integration.dashboard_cluster:Echo" in _text(browser, "div[data-app=fresh] .import-path")
        assert browser.execute_script("return window.zeroserveTestMark") == 1  # no reload
    finally:
        serve.delete("fresh")
    wait_until(lambda: _text(browser, "div[data-app=fresh]") == "", 30, "the deleted application gone from the page")
    assert _errors(browser) == []


def test_replica_count_follows_a_rescale(dash: DashCluster, browser: Any) -> None:
    _go(browser, "#/serve")
    wait_until(lambda: "2 running" in _text(browser, "tr[data-deployment=Echo] td.replicas"), 20, "2 replicas")
    dash.deploy(3)
    wait_until(lambda: "3 running" in _text(browser, "tr[data-deployment=Echo] td.replicas"), 40,
               "3 replicas on the page after the rescale, without a reload")
    dash.deploy(2)
    wait_until(lambda: _text(browser, "tr[data-deployment=Echo] td.replicas") == "2 running", 40, "back to 2")


def _points(driver: Any) -> int:
    return int(driver.execute_script("const e = document.querySelector('#chart-rate svg');"
                                     "return e ? Number(e.dataset.points) : -1"))


def test_charts_grow_while_load_runs_and_a_screenshot(dash: DashCluster, browser: Any) -> None:
    _go(browser, "#/deployment/dash/Echo")
    wait_until(lambda: _points(browser) >= 0, 20, "the rate chart")
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not stop.is_set():
                client.get(dash.http + "/echo", params={"fail": "1"} if i % 25 == 0 else {})
                i += 1

    before = _points(browser)
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        wait_until(lambda: _points(browser) >= before + 3, 40, "the rate chart growing under load")
        wait_until(lambda: any(t not in ("", "\u2013", "0.00") for t in
                               _text(browser, "#replicas tr[data-state=RUNNING] td:nth-child(6)").split()),
                   20, "a replica's request rate on the page")
        shot = Path(os.environ.get("ZEROSERVE_DASHBOARD_SCREENSHOT") or
                    Path(os.environ["ZEROSERVE_TMPDIR"]) / "dashboard.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        stop.set()
        worker.join(10)
    assert _errors(browser) == []


def test_logs_view_follows_a_new_line_and_filters_by_request_id(dash: DashCluster, browser: Any) -> None:
    replica = dash.running()[0]["replica_id"]
    _go(browser, "#/logs?target=" + replica)
    wait_until(lambda: browser.find_elements(By.ID, "logtext") and
               replica.rsplit("#", 1)[1] in _text(browser, "#logfile"), 20, "the replica's log in the logs view")
    landed = []

    def one_on_the_replica() -> bool:
        rid = f"browser-{len(landed)}-{os.getpid()}"
        landed.append(rid)
        return httpx.get(dash.http + "/echo", headers={"X-Request-ID": rid}, timeout=10).json()["replica"] == replica

    wait_until(one_on_the_replica, 30, "a request served by the replica", interval=0.05)
    rid = landed[-1]
    wait_until(lambda: f"echo line {rid}" in _text(browser, "#logtext"), 20, "the new line followed on the page")
    box = browser.find_element(By.ID, "logfilter")
    box.send_keys(rid + Keys.ENTER)
    wait_until(lambda: "filter=" in browser.current_url and f"echo line {rid}" in _text(browser, "#logtext"), 20,
               "the filtered view")
    lines = [ln for ln in _text(browser, "#logtext").splitlines() if ln.strip()]
    assert lines and all(rid in ln for ln in lines)
    assert _errors(browser) == []


def test_a_killed_replica_shows_as_replaced(dash: DashCluster, browser: Any) -> None:
    _go(browser, "#/deployment/dash/Echo")
    victim = dash.running()[0]
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f"tr[data-replica='{victim['replica_id']}']"), 20,
               "the replica on the page")
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        rows = dict(browser.execute_script(  # read in one go: the view re-renders every 2 s
            "return [...document.querySelectorAll('#replicas tr[data-replica]')]"
            ".map(e => [e.dataset.replica, e.dataset.state])"))
        running = [r for r, s in rows.items() if s == "RUNNING"]
        return rows.get(victim["replica_id"]) in (None, "DEAD") and len(running) == 2 and \
            victim["replica_id"] not in running

    wait_until(replaced, 60, "the killed replica replaced on the page")
    assert _errors(browser) == []
