"""The dashboard end to end: a real `gnomon dev` process on PostgreSQL, driven through headless Chromium as a
person would (log in, read each page, press the buttons), checked through the API. GNOMON_SCREENSHOTS=1 also
saves a screenshot of every page, with real data, to docs/screenshots/.

Waits are for outcomes with generous bounds, never assertions on timing."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Page, expect

from tests.integration.browser import Api, chromium, log_in, running_dev, screenshot

SLOW = {"task": "sleep", "payload": {"seconds": 300}}
LATER = {"delay_seconds": 3600}


def short(job_id: str) -> str:
    return job_id[-12:]


async def notice(page: Page, text: str) -> None:
    await expect(page.get_by_role("status")).to_contain_text(text)


async def populate(api: Api) -> dict[str, Any]:
    """A little of everything: successes in three queues, failures with and without retries left, running,
    scheduled, retrying and waiting jobs, results, schedules in three zones (one paused, one fired twice)."""
    done = await api.batch(40) + await api.batch(12, queue="mail")
    done += [(await api.submit(task="sleep", payload={"seconds": 0.2, "report": "daily"}))["id"]]
    failed = await api.batch(4, task="fail", queue="mail", max_attempts=1,
                             payload={"message": "SMTP 554: mailbox unavailable"})
    twice = await api.submit(task="fail", queue="reports", max_attempts=2, payload={"message": "upstream 502"},
                             backoff={"base_seconds": 0.1, "factor": 1, "max_seconds": 0.1, "jitter": False})
    retrying = await api.batch(2, task="fail", queue="mail", max_attempts=3, payload={"message": "timeout"},
                               backoff={"base_seconds": 3600, "factor": 2, "max_seconds": 7200, "jitter": False})
    running = await api.batch(2, queue="reports", **SLOW)
    await api.batch(5, queue="reports", **LATER)
    await api.batch(3, queue="exports")  # no worker serves this queue: its jobs wait
    nightly = await api.create_schedule(name="nightly-report", cron="0 3 * * *", timezone="Europe/Paris",
                                        job={"task": "sleep", "queue": "reports", "payload": {"seconds": 0.1}})
    await api.create_schedule(name="heartbeat", interval_seconds=300, job={"task": "noop"})
    hourly = await api.create_schedule(name="hourly-sync", cron="0 * * * 1-5", timezone="America/New_York",
                                       job={"task": "noop", "queue": "mail"})
    assert (await api.http.post(f"/v1/schedules/{hourly['id']}/pause", json={"note": "vendor API down"})).is_success
    fired = [(await api.http.post(f"/v1/schedules/{nightly['id']}/trigger")).json()["id"] for _ in range(2)]
    await api.until_state(done + fired, "succeeded")
    await api.until_state([*failed, twice["id"]], "failed")
    await api.until_state(retrying, "retry")
    await api.until_state(running, "running")
    return {"failed": failed, "twice": twice["id"], "nightly": nightly, "sleepy": done[-1]}


async def test_every_page_renders_with_real_data(pg_url: str) -> None:
    async with running_dev(pg_url) as (base, api), chromium() as page:
        data = await populate(api)
        await page.goto(f"{base}/ui/login")
        await screenshot(page, "login")
        await log_in(page, base)
        await expect(page.locator(".stat.s-succeeded .n")).to_have_text("55")
        await expect(page.locator(".stat.s-queued .n")).to_have_text("3")
        await expect(page.locator(".stat").last).to_contain_text(re.compile(r"\d+ s\s*oldest waiting"))
        await expect(page.locator("table.queues")).to_contain_text("reports")
        assert await page.locator("svg.chart rect").count() > 0  # the throughput chart has bars
        await screenshot(page, "overview")

        await page.get_by_role("link", name="Jobs", exact=True).click()
        await expect(page.locator("table.list tbody tr")).to_have_count(50)  # a full first page
        await page.get_by_role("link", name="Older »").click()
        await expect(page.locator("table.list tbody tr")).not_to_have_count(0)
        await page.goto(f"{base}/ui/jobs")
        await screenshot(page, "jobs")

        await page.goto(f"{base}/ui/jobs/{data['twice']}")
        await expect(page.locator("table.list tbody tr")).to_have_count(2)  # both attempts, with their errors
        await expect(page.locator("pre.error")).to_have_text("RuntimeError: upstream 502")
        await screenshot(page, "job")
        await page.goto(f"{base}/ui/jobs/{data['sleepy']}")
        await expect(page.locator("pre.json").last).to_contain_text('"slept": 0.2')

        await page.get_by_role("link", name="Failed", exact=True).click()
        await expect(page.locator("table.list tbody tr")).to_have_count(5)
        await screenshot(page, "failed")

        await page.get_by_role("link", name="Schedules", exact=True).click()
        await expect(page.locator("table.list tbody tr")).to_have_count(3)
        await expect(page.locator("table.list")).to_contain_text("Europe/Paris")
        await screenshot(page, "schedules")
        await page.get_by_role("link", name="nightly-report").click()
        local_fire = re.compile(r"03:00 CES?T \(\+0[12]:00\)")  # the next fire times on Paris's wall clock
        await expect(page.locator("main")).to_contain_text(local_fire)
        await expect(page.get_by_text("fired", exact=True)).to_have_count(2)
        await screenshot(page, "schedule")
        await page.get_by_role("link", name="Delete…").click()
        await expect(page.get_by_role("heading")).to_contain_text("Delete schedule “nightly-report”?")
        await screenshot(page, "delete-schedule")


async def test_login_is_required_and_logout_ends_the_session(pg_url: str) -> None:
    async with running_dev(pg_url) as (base, _), chromium() as page:
        await page.goto(f"{base}/ui/jobs")
        await expect(page).to_have_url(f"{base}/ui/login?next=%2Fui%2Fjobs")
        await log_in(page, base, token="not-the-token", go=False)
        await expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
        await log_in(page, base, go=False)
        await expect(page).to_have_url(f"{base}/ui/jobs")  # where the visitor was going
        await page.get_by_role("button", name="Log out").click()
        await notice(page, "You are logged out.")
        await page.goto(f"{base}/ui")
        await expect(page).to_have_url(f"{base}/ui/login")


async def test_cancel_and_retry_buttons_change_the_job(pg_url: str) -> None:
    async with running_dev(pg_url) as (base, api), chromium() as page:
        job = await api.submit(**SLOW)
        await api.until_state([job["id"]], "running")
        await log_in(page, base)
        await page.goto(f"{base}/ui/jobs/{job['id']}")
        await page.get_by_role("button", name="Cancel", exact=True).click()
        await notice(page, "Job cancelled.")
        await expect(page.locator("h1 .badge")).to_have_text("cancelled")
        await expect(page.locator("table.list")).to_contain_text("cancelled")  # the run, closed as cancelled
        assert (await api.job(job["id"]))["state"] == "cancelled"
        await page.get_by_role("button", name="Retry", exact=True).click()
        await notice(page, "Job queued again.")
        await api.until_state([job["id"]], "running")
        assert (await api.http.post(f"/v1/jobs/{job['id']}/cancel")).is_success


async def test_schedule_buttons_pause_resume_trigger_and_delete(pg_url: str) -> None:
    async with running_dev(pg_url) as (base, api), chromium() as page:
        schedule = await api.create_schedule(name="every hour", interval_seconds=3600, job={"task": "noop"})
        url = f"/v1/schedules/{schedule['id']}"
        await log_in(page, base)
        await page.get_by_role("link", name="Schedules", exact=True).click()
        await page.get_by_role("link", name="every hour").click()
        await page.get_by_label("Pause note").fill("maintenance")
        await page.get_by_role("button", name="Pause").click()
        await notice(page, "paused")
        await expect(page.locator("main")).to_contain_text("“maintenance”")
        assert (await api.get(url)).json()["paused"] is True
        await page.get_by_role("button", name="Resume").click()
        await notice(page, "resumed")
        assert (await api.get(url)).json()["paused"] is False
        await page.get_by_role("button", name="Trigger now").click()
        await notice(page, "Fired job")
        fired = (await api.get(f"/v1/jobs?schedule_id={schedule['id']}")).json()["items"]
        assert len(fired) == 1
        await expect(page.locator("main")).to_contain_text(short(fired[0]["id"]))
        await page.get_by_role("link", name="Delete…").click()
        await page.get_by_role("button", name="Delete schedule").click()
        await notice(page, "Schedule 'every hour' deleted")
        assert (await api.get(url)).status_code == 404
        assert (await api.job(fired[0]["id"]))["id"] == fired[0]["id"]  # its job stays


async def test_bulk_retry_and_cancel_for_a_filter(pg_url: str) -> None:
    async with running_dev(pg_url) as (base, api), chromium() as page:
        failed = await api.batch(6, task="fail", queue="bulk", max_attempts=1)
        other = await api.batch(2, task="fail", queue="mail", max_attempts=1)
        await api.until_state(failed + other, "failed")
        await log_in(page, base)
        await page.goto(f"{base}/ui/failed?queue=bulk")
        await expect(page.locator("table.list tbody tr")).to_have_count(6)
        await page.get_by_role("button", name="Retry all").click()
        await notice(page, "Queued again 6 jobs.")
        await api.until(failed, lambda job: job["attempt"] == 2 and job["state"] == "failed", "retried once")
        assert all(job["attempt"] == 1 for job in await api.until_state(other, "failed"))

        later = await api.batch(4, queue="bulk", **LATER)
        await page.goto(f"{base}/ui/failed?state=scheduled&queue=bulk")
        await expect(page.locator("table.list tbody tr")).to_have_count(4)
        await page.get_by_role("button", name="Cancel all").click()
        await notice(page, "Cancelled 4 jobs.")
        await api.until_state(later, "cancelled")


async def test_pages_and_buttons_work_without_javascript(pg_url: str) -> None:
    async with running_dev(pg_url) as (base, api), chromium(javascript=False) as page:
        job = await api.submit(**LATER)
        await log_in(page, base)
        await expect(page).to_have_url(f"{base}/ui")
        await page.goto(f"{base}/ui/jobs")
        await expect(page.locator("label.live")).to_have_count(1)
        await expect(page.locator("label.live")).to_be_hidden()  # live refresh needs the script
        await page.get_by_role("link", name=short(job["id"])).click()
        await page.get_by_role("button", name="Cancel", exact=True).click()
        await notice(page, "Job cancelled.")
        assert (await api.job(job["id"]))["state"] == "cancelled"


async def test_live_refresh_shows_new_jobs_without_a_reload(pg_url: str) -> None:
    async with running_dev(pg_url) as (base, api), chromium() as page:
        await log_in(page, base)
        await page.goto(f"{base}/ui/jobs?queue=live")
        await expect(page.get_by_label("Live")).to_be_checked()
        job = await api.submit(queue="live", **LATER)
        await expect(page.get_by_role("link", name=short(job["id"]))).to_be_visible()
