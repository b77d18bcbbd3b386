"""Support of the dashboard's browser tests: a real `gnomon dev` process on the test's PostgreSQL database, an
API client to set up data and wait for outcomes, and Debian's headless Chromium driven by Playwright.

Chromium comes from the distribution (`apt-get install chromium`), never from `playwright install`: a missing
browser makes the tests error, as a missing database does. Screenshots of the pages are written to
docs/screenshots/ when GNOMON_SCREENSHOTS=1.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
from attrs import define
from playwright.async_api import Page, async_playwright, expect

from tests.integration.cluster import free_port
from tests.integration.processes import REPO, gnomon, gnomon_env

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN: Final = "ui-" + secrets.token_hex(8)
QUEUES: Final = "default,mail,reports,bulk,live"
SCREENSHOTS: Final = REPO / "docs" / "screenshots"
GUARD: Final = 30.0  # seconds: far beyond a healthy dev process; reaching it means the work was not done


@define
class Api:
    http: httpx.AsyncClient

    async def submit(self, **fields: Any) -> dict[str, Any]:
        response = await self.http.post("/v1/jobs", json={"task": "noop"} | fields)
        assert response.status_code == 201, response.text
        return response.json()

    async def batch(self, count: int, **fields: Any) -> list[str]:
        response = await self.http.post("/v1/jobs/batch", json={"jobs": [{"task": "noop"} | fields] * count})
        assert response.status_code == 201, response.text
        return response.json()["ids"]

    async def create_schedule(self, **fields: Any) -> dict[str, Any]:
        response = await self.http.post("/v1/schedules", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def until(self, job_ids: list[str], done: Callable[[dict[str, Any]], bool], what: str) -> list[dict]:
        """The jobs once `done` holds for each; AssertionError saying where they stood after GUARD seconds."""
        end = time.monotonic() + GUARD
        while True:
            jobs = [await self.job(job_id) for job_id in job_ids]
            if all(done(job) for job in jobs):
                return jobs
            if time.monotonic() > end:
                raise AssertionError(f"jobs never {what}: {[(j['id'], j['state'], j['attempt']) for j in jobs]}")
            await asyncio.sleep(0.1)

    async def until_state(self, job_ids: list[str], *states: str) -> list[dict]:
        return await self.until(job_ids, lambda job: job["state"] in states, f"in {states}")


@asynccontextmanager
async def running_dev(database_url: str) -> AsyncIterator[tuple[str, Api]]:
    """`gnomon dev` on `database_url` (API, scheduler and worker in one process), its URL and an API client."""
    port = free_port()
    env = gnomon_env(database_url, None, api_tokens=TOKEN, shutdown_grace_seconds=1)
    with gnomon("dev", "--port", str(port), "--queues", QUEUES, "--concurrency", "32", env=env) as dev:
        dev.wait_for_log("ready:", timeout=GUARD)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=10) as http:
            yield base, Api(http)


@asynccontextmanager
async def chromium(*, javascript: bool = True) -> AsyncIterator[Page]:
    """A page in headless Chromium; confirmation dialogs are accepted, as a user pressing OK would."""
    expect.set_options(timeout=GUARD * 1000)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1360, "height": 900},
                                                java_script_enabled=javascript)
            page = await context.new_page()
            page.set_default_timeout(GUARD * 1000)
            page.on("dialog", lambda dialog: dialog.accept())
            yield page
        finally:
            await browser.close()


async def log_in(page: Page, base: str, token: str = TOKEN, *, go: bool = True) -> None:
    """Log in through the form (`go`: open it first, else it is the page shown)."""
    if go:
        await page.goto(f"{base}/ui/login")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_load_state()


async def screenshot(page: Page, name: str) -> None:
    """docs/screenshots/<name>.png of the whole page, when GNOMON_SCREENSHOTS=1."""
    if os.environ.get("GNOMON_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
