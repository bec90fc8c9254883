"""The admin in a real browser: headless Chromium (the Debian packages ``chromium`` and
``chromium-driver``, driven by Selenium) against the live server, with tasks that really ran
through the Pub/Sub emulator's push. Saves screenshots in ``build/screenshots/`` (or
``$I3TASKS_SCREENSHOT_DIR``); ``docs/admin-*.png`` are copies of two of them.

Skips, saying why, only where no Chromium or chromedriver is installed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_i3tasks import TaskGroup
from django_i3tasks.models import ExecutionStatus, TaskExecution
from tests.browser import find_chromium
from tests.helpers import wait_for
from tests.testapp.chain_tasks import broken_link, link, member
from tests.testapp.tasks import add, fails_once

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 1366
PASSWORD = "browser-test-password"  # noqa: S105 - a throwaway user of the test database


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium, 1366 px wide; skipped (with the reason) where none is installed."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium, driver_path = find_chromium()  # as scripts/test.sh finds them
    if chromium is None or driver_path is None:
        pytest.skip("admin browser test needs the Debian packages chromium and chromium-driver "
                    "(scripts/test.sh installs them when run as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--window-size={WIDTH},900",
                     "--hide-scrollbars", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver: Any, name: str) -> Path:
    """The whole page (the window grows to the page's height), at the test width."""
    folder = Path(os.environ.get("I3TASKS_SCREENSHOT_DIR") or ROOT / "build" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script(
        "window.scrollTo(0, 0); return document.documentElement.scrollHeight"
    )
    driver.set_window_size(WIDTH, min(max(int(height) + 120, 600), 3000))
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    driver.set_window_size(WIDTH, 900)
    return path


def _fits_width(driver: Any) -> None:
    """Nothing on the page is wider than the window (no horizontal scrolling)."""
    scroll, inner = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll <= inner, f"page is {scroll} px wide in a {inner} px window"
    clipped = driver.execute_script(
        "return [...document.querySelectorAll('.results, .inline-group, fieldset')]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.className || e.id)"
    )
    assert not clipped, f"content wider than its box (scrolls inside it): {clipped}"


def _ran_for_real(push_queue: str) -> dict[str, Any]:
    """Tasks through the emulator's push to the live server: a success, a retry that then
    succeeded, a failure with its skipped chain step, and a group with its callback."""
    group = TaskGroup.create(callback=link.build_chain("joined"), total_count=3)
    handles = {
        "add": add.delay(2, 3),
        "fails_once": fails_once.delay("browser"),
        "broken": broken_link.delay("browser"),
    }
    handles["broken"].then(link, "never")
    member.map([1, 2, 3], group=group)
    wait_for(lambda: not TaskExecution.objects.filter(
        status__in=[ExecutionStatus.PENDING, ExecutionStatus.WAITING]
    ).exists(), timeout=60)
    group.refresh_from_db()
    return {**{name: handle.task_execution for name, handle in handles.items()}, "group": group}


def test_operator_walks_through_the_admin(browser, live_server, push_queue,
                                          django_user_model) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    rows = _ran_for_real(push_queue)
    assert rows["group"].status == "success"
    django_user_model.objects.create_superuser("operator", "op@example.com", PASSWORD)

    # Log in.
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # click() does not wait for the next page: wait for it (a loaded machine is slow).
    WebDriverWait(browser, 30).until(
        lambda driver: driver.find_elements(By.ID, "user-tools"),
        message="the admin index did not appear after logging in",
    )

    # The executions list: every row, the columns an operator needs, within 1366 px.
    browser.get(f"{live_server.url}/admin/django_i3tasks/taskexecution/")
    headers = [th.text.strip().lower()
               for th in browser.find_elements(By.CSS_SELECTOR, "#result_list thead th")]
    for column in ("uuid", "task", "status", "tries", "duration", "queue", "created"):
        assert column in headers, headers
    body_rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(body_rows) == TaskExecution.objects.count() == 8
    statuses = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".i3-status")}
    assert {"success", "failed", "skipped"} <= statuses
    row_heights = {r.size["height"] for r in body_rows}
    assert max(row_heights) < 2 * min(row_heights), f"rows wrap: heights {row_heights}"
    _screenshot(browser, "admin-executions")
    _fits_width(browser)

    # An execution whose first try failed: both tries, the folded traceback, the result.
    retried = rows["fails_once"]
    browser.get(f"{live_server.url}/admin/django_i3tasks/taskexecution/{retried.pk}/change/")
    tries = browser.find_elements(By.CSS_SELECTOR, "#tries-group tbody tr.has_original, "
                                                   "#tries-group tbody tr.form-row")
    assert len([t for t in tries if t.text.strip()]) == 2
    assert "RuntimeError" in browser.find_element(By.ID, "tries-group").text
    summary = browser.find_element(By.CSS_SELECTOR, ".i3-traceback summary")
    summary.click()
    assert "Traceback" in browser.find_element(By.CSS_SELECTOR, ".i3-traceback pre").text
    assert "first try fails" in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "#result-group .i3-pre")
    assert not browser.find_elements(By.NAME, "_save"), "a read-only page offers Save"
    assert not browser.find_elements(By.NAME, "_continue")
    assert browser.find_elements(By.CSS_SELECTOR, "a.deletelink"), "delete should stay"
    _screenshot(browser, "admin-execution")
    _fits_width(browser)

    # The group: progress and its callback.
    group = rows["group"]
    browser.get(f"{live_server.url}/admin/django_i3tasks/taskgroup/{group.pk}/change/")
    text = browser.find_element(By.ID, "content").text
    assert "3 of 3 succeeded, 0 failed" in text
    assert "tests.testapp.chain_tasks.link" in text and "3 members" in text
    _screenshot(browser, "admin-group")
    _fits_width(browser)
    browser.get(f"{live_server.url}/admin/django_i3tasks/taskgroup/")
    _screenshot(browser, "admin-groups")
    _fits_width(browser)

    # Retry the failed execution from the list; it runs again (and fails again).
    broken = rows["broken"]
    browser.get(f"{live_server.url}/admin/django_i3tasks/taskexecution/?status__exact=failed")
    browser.find_element(
        By.CSS_SELECTOR, f"input[name=_selected_action][value='{broken.pk}']"
    ).click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("retry")
    browser.find_element(By.CSS_SELECTOR, "button[name=index], button.button").click()
    messages = WebDriverWait(browser, 30).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, ".messagelist"),
        message="no message after the retry action",
    )
    assert "1 execution(s) retried." in messages[0].text
    wait_for(lambda: broken.tries.filter(status="failed").count() == 2, timeout=60)
    wait_for(lambda: TaskExecution.objects.get(pk=broken.pk).status == "failed", timeout=30)
    browser.get(f"{live_server.url}/admin/django_i3tasks/taskexecution/{broken.pk}/change/")
    assert browser.find_element(By.ID, "tries-group").text.count("RuntimeError") == 2
    assert not browser.find_elements(By.ID, "result-group"), "no result, no result section"
    _screenshot(browser, "admin-after-retry")

    # The dashboard, reached from the app's index: the stacked chart, the tasks table with
    # sparklines, the open executions; no JavaScript needed, within 1366 px.
    browser.get(f"{live_server.url}/admin/django_i3tasks/")
    browser.find_element(By.CSS_SELECTOR, "a[href='/admin/django_i3tasks/dashboard/']").click()
    WebDriverWait(browser, 30).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, "svg.i3-chart"),
        message="the dashboard's chart did not appear",
    )
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.i3-chart rect")
    assert bars and all(bar.size["height"] > 0 for bar in bars[:5])
    text = browser.find_element(By.ID, "content").text
    assert "failure rate" in text and "tests.testapp.tasks.fails_once" in text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.i3-spark")) >= 4
    _screenshot(browser, "admin-dashboard")
    _fits_width(browser)


def test_execution_page_draws_its_workflow(browser, live_server, push_queue,
                                           django_user_model) -> None:
    """A chain (``pipe`` then ``then``) whose second step failed, with failure handlers, and
    a ``pass_results`` group with a failing member, run through the emulator's push: the
    execution pages draw the chain, the group and the handlers, coloured by status.
    ``docs/admin-workflow.png`` is a copy of the chain's screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.testapp.workflow_tasks import alert, breaks, fetch, square_or_break, summarize

    first = fetch.delay("admin")
    second = first.pipe(breaks).on_failure(alert, "ops")
    third = second.then(square_or_break, 3).on_failure(alert, "pager")
    group = TaskGroup.create(callback=summarize, total_count=4, pass_results=True,
                             on_failure=alert)
    square_or_break.map([5, 6, 7, 8], group=group)
    wait_for(lambda: TaskExecution.objects.filter(task_name=alert.name).count() == 3
             and not TaskExecution.objects.filter(status__in=[ExecutionStatus.PENDING]).exists(),
             timeout=60)
    django_user_model.objects.create_superuser("operator", "op@example.com", PASSWORD)
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda driver: driver.find_elements(By.ID, "user-tools"))

    browser.get(f"{live_server.url}/admin/django_i3tasks/taskexecution/{second.id}/change/")
    flow = browser.find_element(By.CSS_SELECTOR, ".i3-flow")
    nodes = flow.find_elements(By.CSS_SELECTOR, ".i3-row:first-child .i3-node")
    assert [n.find_element(By.TAG_NAME, "b").text for n in nodes] == [
        "fetch", "breaks", "square_or_break"]
    assert [n.find_element(By.CSS_SELECTOR, ".i3-status").text for n in nodes] == [
        "success", "failed", "skipped"]
    classes = [n.get_attribute("class") for n in nodes]
    assert "i3-ok" in classes[0] and "i3-bad" in classes[1] and "i3-off" in classes[2]
    assert "i3-this" in classes[1]
    assert [a.text for a in flow.find_elements(By.CSS_SELECTOR, ".i3-arrow")] == [
        "─value▶", "──▶"]
    handlers = flow.find_elements(By.CSS_SELECTOR, ".i3-handlers")
    assert [h.text for h in handlers] == ["on failure: alert success"] * 2
    # A green handler box colour is the handler execution's own status; follow its link.
    assert nodes[2].get_attribute("href").endswith(f"/{third.id}/change/")
    shot = _screenshot(browser, "admin-workflow")
    _fits_width(browser)
    if os.environ.get("I3TASKS_UPDATE_DOCS_SCREENSHOTS"):
        shutil.copy(shot, ROOT / "docs" / "admin-workflow.png")

    # A member of the failed group: members by status, the skipped callback, the handler.
    member_id = TaskExecution.objects.filter(group=group).order_by("position")[0].pk
    browser.get(f"{live_server.url}/admin/django_i3tasks/taskexecution/{member_id}/change/")
    text = browser.find_element(By.CSS_SELECTOR, ".i3-flow").text
    assert "failed 1" in text and "success 3" in text, text
    assert "summarize" in text and "skipped" in text and "─values▶" in text
    assert "on failure: alert success" in text
    _screenshot(browser, "admin-workflow-group")
    _fits_width(browser)
