"""The dashboard in a real browser (issue 21): Debian's headless chromium driven by
selenium through /usr/bin/chromedriver (Selenium Manager never downloads anything).
One browser for the module; each test serves its own database on a loopback port.

Skipped when /usr/bin/chromium is missing, unless $LITEQ_REQUIRE_BROWSER=1 (CI), which
makes that a failure."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from webclient import served

import liteq
from liteq.cli import cli

pytestmark = pytest.mark.every_engine

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
_MISSING = not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER))

if _MISSING and os.environ.get("LITEQ_REQUIRE_BROWSER") != "1":
    pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium "
                f"chromium-driver); set LITEQ_REQUIRE_BROWSER=1 to fail instead",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402 (only once the browser is known to be there)
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

OPTIONS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--window-size=1280,900"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    assert not _MISSING, f"LITEQ_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in OPTIONS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _after_submit(driver: Any, clicked: Any, css: str) -> Any:
    """The element at *css* on the page that clicking *clicked* (a submit button) loads:
    a click returns before the next page does."""
    wait = WebDriverWait(driver, 30)
    # Asked while the page navigates, chromedriver may answer "unknown error: unhandled
    # inspector error" instead of "stale element" (a .ci/run failed so once): look again.
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.staleness_of(clicked))
    return wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _stats(target: str) -> dict[str, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["--db", target, "stats", "--json"], prog_name="liteq",
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {r["queue"]: r for r in json.loads(result.stdout)}


def test_the_overview_lists_every_queue_with_the_right_counts(browser: Any,
                                                              db: liteq.Database) -> None:
    db.queue("emails").put_many(list(range(4)))
    db.queue("emails").put("later", delay=600)
    db.queue("reports").put_many(list(range(2)))
    db.queue("reports").get()
    db.queue("idle")
    with served(db) as client:
        browser.get(client.base + "/")
        rows = browser.find_elements(By.CSS_SELECTOR, "table.queues tbody tr")
        shown = {cells[0].text: [c.text for c in cells[1:4]]
                 for cells in (r.find_elements(By.TAG_NAME, "td") for r in rows)}
        errors = _console_errors(browser)
    assert shown == {"emails": ["4", "1", "0"], "idle": ["0", "0", "0"],
                     "reports": ["1", "0", "1"]}
    assert errors == []


def test_a_dead_message_is_redriven_from_the_page_and_liteq_stats_shows_it_ready(
        browser: Any, db: liteq.Database, db_target: str) -> None:
    q = db.queue("jobs", max_attempts=1)
    mid = q.put({"n": 1})
    q.get().fail("ValueError: bad input")  # type: ignore[union-attr]
    assert _stats(db_target)["jobs"]["dead"] == 1
    with served(db, allow_actions=True) as client:
        browser.get(client.base + "/dead/jobs")
        browser.find_element(By.CSS_SELECTOR, f'input[name="ids"][value="{mid}"]').click()
        button = browser.find_element(By.ID, "redrive-selected")
        button.click()
        notice = _after_submit(browser, button, "p.notice").text
        errors = _console_errors(browser)
    assert "redrove 1 dead message of jobs" in notice
    stats = _stats(db_target)["jobs"]
    assert (stats["ready"], stats["dead"]) == (1, 0)
    assert errors == []


def test_a_schedule_is_paused_from_the_page(browser: Any, db: liteq.Database) -> None:
    db.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin", queue="reports", payload=1)
    with served(db, allow_actions=True) as client:
        browser.get(client.base + "/schedules")
        button = browser.find_element(By.XPATH, "//button[text()='Pause']")
        button.click()
        _after_submit(browser, button, "p.notice")
        state = browser.find_element(By.CSS_SELECTOR, "table.schedules td span").text
        errors = _console_errors(browser)
    assert state == "paused"
    assert db.schedules()[0].state == "paused"
    assert errors == []


def test_a_payload_with_a_script_tag_renders_as_text_and_runs_nothing(
        browser: Any, db: liteq.Database) -> None:
    evil = "<script>alert(1)</script>"
    mid = db.queue("inbox").put({"body": evil}, key=evil)
    with served(db) as client:
        for path in ("/queue/inbox", f"/message/{mid}"):
            browser.get(client.base + path)
            with pytest.raises(NoAlertPresentException):
                browser.switch_to.alert.text  # noqa: B018 (an alert would be there now)
            assert evil in browser.find_element(By.TAG_NAME, "main").text
        scripts = [s.get_attribute("src") for s in browser.find_elements(By.TAG_NAME, "script")]
        errors = _console_errors(browser)
    assert scripts == [client.base + "/static/app.js"]
    assert errors == []


def test_no_page_logs_a_console_error(browser: Any, db: liteq.Database, tmp_path: Path) -> None:
    q = db.queue("emails", max_attempts=1)
    q.put_many(list(range(3)))
    q.get().fail("boom")  # type: ignore[union-attr]
    db.schedule("hourly", every=3600, queue="emails", payload=0)
    db.topic("orders").subscribe("billing", pattern="order.#")
    with served(db, allow_actions=True) as client:
        for path in ("/", "/?range=week", "/queue/emails", "/message/1", "/dead",
                     "/dead/emails", "/schedules", "/schedule/hourly", "/topics", "/workers"):
            browser.get(client.base + path)
        errors = _console_errors(browser)
    assert errors == []


def test_the_job_page_shows_the_attempts_timeline_and_a_traceback_opens(
        browser: Any, db: liteq.Database) -> None:
    from workerapp_tools import drain

    calls: list[int] = []

    @db.task(name="twice_wrong", backoff=liteq.Backoff(base=0, jitter=0))
    def twice_wrong() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"wrong {len(calls)}")
        return "right"

    job = twice_wrong.delay()
    drain(db)
    with served(db) as client:
        browser.get(client.base + f"/message/{job.id}")
        rows = browser.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
        cells = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
        summary = browser.find_element(By.CSS_SELECTOR, "table.attempts details summary")
        tb = browser.find_element(By.CSS_SELECTOR, "table.attempts details pre")
        hidden = tb.is_displayed()
        summary.click()
        shown = tb.is_displayed()
        text = tb.text
        errors = _console_errors(browser)
    assert [c[:2] for c in cells] == [["1", "retried"], ["2", "retried"], ["3", "done"]]
    worker = db.backend.attempts(job.id)[0].worker
    assert all(c[2] == worker for c in cells)
    assert cells[0][6].startswith("RuntimeError: wrong 1")
    assert (hidden, shown) == (False, True)
    assert "Traceback" in text and "twice_wrong" in text
    assert errors == []
