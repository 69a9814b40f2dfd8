"""The dashboard refreshes on news, in headless Chromium: with the periodic refresh pushed ten
minutes away, a job still reaches the Jobs tab and the summary, and the Live tab, hidden while the
job ran, shows its task when opened. Screenshots are saved in the test's tmp dir."""

from __future__ import annotations

import pytest

from dtf_bus.testing.cluster import wait_for
from dtf_dashboard.options import REFRESH_ENV

pytestmark = pytest.mark.monitoring


def test_a_job_reaches_the_jobs_tab_on_news_without_the_periodic_refresh(monitored, browser, tmp_path, monkeypatch):
    monkeypatch.setenv(REFRESH_ENV, "600000")  # the dashboard's periodic refresh: never, within this test
    cluster = monitored(workers={"w1": {"slots": 1}})
    url = cluster.start_dashboard()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(url + "&tab=jobs")
    page.locator('[data-metric="jobs_shown"]').wait_for(timeout=30_000)

    with cluster.client() as client:
        job = client.submit([{"name": "probe", "plugin": "sim", "params": {"seconds": 0.2}}], name="news")
        wait_for(lambda: page.locator(f'[data-job="{job}"]').count(), 15, "the job's row, on news")
        wait_for(lambda: page.locator(f'[data-job="{job}"][data-done="true"]').count(), 15, "the job done, on news")
    succeeded = page.locator('[data-metric="succeeded"]')  # the summary heads every tab
    wait_for(lambda: succeeded.inner_text() == "1", 10, "the summary to count the task")
    page.screenshot(path=str(tmp_path / "dashboard-jobs-news.png"), full_page=True)

    # The Live tab was hidden while the task ran: nothing of it was sent then, all of it comes on opening it.
    placeholder = page.locator('[data-placeholder="task-stream"]')
    assert placeholder.count() == 1
    page.locator(".bk-tab", has_text="Live").click()
    wait_for(lambda: not placeholder.is_visible(), 10, "the task stream to replace its placeholder")
    wait_for(lambda: page.locator(".dtf-workers .slick-row").count() >= 2, 10, "the worker tables")
    page.screenshot(path=str(tmp_path / "dashboard-live-after-jobs.png"), full_page=True)
    assert not problems, "\n".join(problems)
