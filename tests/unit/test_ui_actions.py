"""/ui buttons: each POST changes state through the same use cases as the API, answers with a redirect to a
page that tells what happened, and a refused action changes nothing and says why."""

from __future__ import annotations

from typing import Any

from adapters.http.ui.bulk import PER_CLICK
from domain.job import State
from tests.unit.http_support import Api, create_schedule
from tests.unit.ui_support import add, finished, running, running_ui


async def press(api: Api, path: str, csrf: str, **form: str) -> Any:
    """POST like the page's form does, then follow to the page it leads to."""
    response = await api.client.post(path, data={"csrf": csrf, **form}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return await api.client.get(response.headers["location"])


async def test_cancel_and_retry_a_job() -> None:
    async with running_ui() as (api, csrf):
        job = running(api)
        page = await press(api, f"/ui/jobs/{job.id}/cancel", csrf)
        assert page.url.path == f"/ui/jobs/{job.id}" and "Job cancelled." in page.text
        assert api.jobs.rows[job.id].state is State.CANCELLED
        assert [r.outcome for r in api.jobs.history[job.id]] == ["cancelled"]
        assert api.container.adapters.cancellations().announced == [job.id]  # its worker is told at once
        page = await press(api, f"/ui/jobs/{job.id}/retry", csrf)
        assert "Job queued again." in page.text and api.jobs.rows[job.id].state is State.QUEUED
        assert await api.container.adapters.dispatcher().size("default") == 1


async def test_the_notice_is_shown_once() -> None:
    async with running_ui() as (api, csrf):
        job = add(api)
        assert "Job cancelled." in (await press(api, f"/ui/jobs/{job.id}/cancel", csrf)).text
        assert "Job cancelled." not in (await api.client.get(f"/ui/jobs/{job.id}")).text


async def test_a_refused_transition_goes_back_with_the_reason_and_changes_nothing() -> None:
    async with running_ui() as (api, csrf):
        done = finished(api)
        page = await press(api, f"/ui/jobs/{done.id}/cancel", csrf)
        assert page.url.path == f"/ui/jobs/{done.id}"
        assert "cannot go from succeeded to cancelled" in page.text and 'class="notice bad"' in page.text
        assert api.jobs.rows[done.id] == done
        page = await press(api, f"/ui/jobs/{done.id}/retry", csrf)
        assert "cannot go from succeeded" in page.text and api.jobs.rows[done.id] == done


async def test_pause_resume_trigger_and_delete_a_schedule() -> None:
    async with running_ui() as (api, csrf):
        schedule = await create_schedule(api, name="nightly/etl")  # a '/' in the name: pages link by id
        base = f"/ui/schedules/{schedule['id']}"
        page = await press(api, f"{base}/pause", csrf, note="db migration")
        stored = api.schedules.rows[schedule["id"]]
        assert stored.paused and stored.pause_note == "db migration"
        assert "paused" in page.text and "“db migration”" in page.text and f"{base}/resume" in page.text
        page = await press(api, f"{base}/resume", csrf)
        assert not api.schedules.rows[schedule["id"]].paused and "resumed" in page.text
        page = await press(api, f"{base}/trigger", csrf)
        [job] = list(api.jobs.rows.values())
        assert job.schedule_id == schedule["id"] and f"Fired job {job.id} now." in page.text
        page = await press(api, f"{base}/delete", csrf)
        assert page.url.path == "/ui/schedules" and "Schedule &#39;nightly/etl&#39; deleted" in page.text
        assert schedule["id"] not in api.schedules.rows and job.id in api.jobs.rows


async def test_resuming_an_active_schedule_is_refused_with_the_reason() -> None:
    async with running_ui() as (api, csrf):
        schedule = await create_schedule(api)
        page = await press(api, f"/ui/schedules/{schedule['id']}/resume", csrf)
        assert "is not paused" in page.text and page.url.path == f"/ui/schedules/{schedule['id']}"


async def test_deleting_needs_the_confirmation_page_to_be_a_post() -> None:
    async with running_ui() as (api, _):
        schedule = await create_schedule(api)
        await api.client.get(f"/ui/schedules/{schedule['id']}/delete")  # only asks
        assert schedule["id"] in api.schedules.rows


async def test_retry_all_retries_the_failed_jobs_of_the_filter_only() -> None:
    async with running_ui() as (api, csrf):
        mail = [finished(api, ok=False, queue="mail") for _ in range(3)]
        other = finished(api, ok=False, queue="reports")
        page = await press(api, "/ui/failed/retry", csrf, state="failed", queue="mail", task="", schedule_id="")
        assert "Queued again 3 jobs." in page.text and page.url.query == b"state=failed&queue=mail"
        assert all(api.jobs.rows[j.id].state is State.QUEUED for j in mail)
        assert api.jobs.rows[other.id].state is State.FAILED
        assert await api.container.adapters.dispatcher().size("mail") == 3


async def test_cancel_all_cancels_what_the_filter_matches_and_skips_what_it_cannot() -> None:
    async with running_ui() as (api, csrf):
        waiting = [add(api, task="report") for _ in range(2)]
        busy = running(api, task="report")
        done = finished(api, task="report")
        other = add(api, task="email")
        page = await press(api, "/ui/failed/cancel", csrf, state="any", task="report")
        assert "Cancelled 3 jobs." in page.text and page.url.query == b"state=cancelled&task=report"
        assert all(api.jobs.rows[j.id].state is State.CANCELLED for j in [*waiting, busy])
        assert api.jobs.rows[done.id] == done and api.jobs.rows[other.id] == other
        page = await press(api, "/ui/failed/cancel", csrf, state="succeeded", task="report")
        assert "Cancelled 0 jobs. Skipped 1" in page.text and api.jobs.rows[done.id] == done


async def test_bulk_actions_say_when_more_jobs_match_than_one_press_takes() -> None:
    async with running_ui() as (api, csrf):
        for _ in range(PER_CLICK + 1):
            finished(api, ok=False)
        page = await press(api, "/ui/failed/retry", csrf, state="failed")
        assert f"Queued again {PER_CLICK} jobs. More jobs match: press again" in page.text
        page = await press(api, "/ui/failed/retry", csrf, state="failed")
        assert "Queued again 1 job." in page.text and "More jobs" not in page.text


async def test_a_bad_bulk_filter_changes_nothing() -> None:
    async with running_ui() as (api, csrf):
        job = add(api)
        page = await press(api, "/ui/failed/cancel", csrf, state="exploded")
        assert "state: must be one of" in page.text and api.jobs.rows[job.id] == job
